//! The remote shell server: its configuration and the [`Shell`] handler
//! (authentication, then one command after another, each run by
//! [`exec`](super::exec) in the session's directory).

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketserver::auth::{Gatekeeper, Key};
use socketserver::{Address, StreamHandler, StreamRequest};

use super::exec::{self, Exit, Limits};
use super::protocol::{Reply, COMMAND_FRAMING, MAX_OUTPUT_LIMIT};
use super::session::{cd_request, Session};

/// Default per-command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on each of stdout and stderr: 1 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;

/// How long a client gets for the whole authentication handshake, however
/// it spreads its bytes.
pub const AUTH_TIMEOUT: Duration = socketserver::auth::DEFAULT_HANDSHAKE_DEADLINE;

/// Default cap on connections that have not authenticated yet.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = socketserver::auth::DEFAULT_MAX_PENDING;

/// Default idle time after which a session is closed.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// How a shell server behaves.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The shared key clients must prove they hold.
    pub key: Key,
    /// Wall-clock limit per command; the process group is killed at it.
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr (at most
    /// [`MAX_OUTPUT_LIMIT`]).
    pub max_output: usize,
    /// Where each session starts (and where a bare `cd` goes when `HOME`
    /// is not set).
    pub start_dir: PathBuf,
    /// A session that sends nothing for this long is closed (`None`:
    /// never); [`Shell::configure`] gives it to the server's builder.
    pub idle: Option<Duration>,
    /// Total time a client gets to authenticate ([`AUTH_TIMEOUT`]).
    pub auth_timeout: Duration,
    /// At most this many connections authenticating at once
    /// ([`DEFAULT_MAX_UNAUTHENTICATED`]); a new one beyond it takes the
    /// place of the one waiting longest, which is closed. Per process: under
    /// `Forking` each session process counts only itself.
    pub max_unauthenticated: usize,
}

impl ShellConfig {
    /// Defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_OUTPUT`], sessions
    /// start in the current directory, [`DEFAULT_IDLE`].
    pub fn new(key: Key) -> io::Result<ShellConfig> {
        Ok(ShellConfig {
            key,
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            start_dir: std::env::current_dir()?,
            idle: Some(DEFAULT_IDLE),
            auth_timeout: AUTH_TIMEOUT,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
        })
    }
}

/// The remote shell server: a [`StreamHandler`] serving one session per
/// connection. Cloning shares the configuration.
///
/// ```
/// use demos::shell::{client::Session, Shell, ShellConfig};
/// use socketserver::{auth::Key, Server, Threading};
/// use std::time::Duration;
///
/// let key = Key::new("correct horse battery staple")?;
/// let server = Server::builder()
///     .strategy(Threading::new())
///     .tcp("127.0.0.1:0", Shell::new(ShellConfig::new(key.clone())?))?;
/// let addr = server.server_address().clone();
/// let handle = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever());
///
/// let mut session = Session::connect(&addr, &key, Duration::from_secs(5))?;
/// let reply = session.run("echo hi; exit 3")?;
/// assert_eq!(reply.stdout, b"hi\n");
/// assert_eq!(reply.header.exit_code, Some(3));
/// drop(session);
/// handle.shutdown();
/// t.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Shell {
    config: Arc<ShellConfig>,
    gate: Gatekeeper,
    /// Connections authenticating, closed at once when the server stops.
    handshakes: crate::service::Handshakes,
    /// The process that made the server: a session running in another
    /// one was forked for it (the `Forking` strategy).
    server_pid: u32,
}

impl Shell {
    /// A server with this configuration (`max_output` is clamped to
    /// [`MAX_OUTPUT_LIMIT`]).
    pub fn new(mut config: ShellConfig) -> Shell {
        config.max_output = config.max_output.min(MAX_OUTPUT_LIMIT);
        let gate = Gatekeeper::new(config.key.clone())
            .with_deadline(config.auth_timeout)
            .with_max_pending(config.max_unauthenticated);
        Shell {
            config: Arc::new(config),
            gate,
            handshakes: crate::service::Handshakes::default(),
            server_pid: std::process::id(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ShellConfig {
        &self.config
    }

    /// Gives `builder` this configuration's timeouts: `idle` as the read
    /// and write timeout of every connection, so that the server's own
    /// message reads (which wait for the next command, and watch for a
    /// shutdown meanwhile) close a session silent for that long; and
    /// `max_unauthenticated` as the server's pre-handler budget, so that
    /// connections stuck in their TLS or authentication handshake cannot
    /// keep the key holder out (the oldest is closed to make room; not
    /// under a strategy that serves in the loop). Build the server from the
    /// result.
    ///
    /// ```
    /// use demos::shell::{Shell, ShellConfig};
    /// use socketserver::{auth::Key, Server};
    ///
    /// let shell = Shell::new(ShellConfig::new(Key::new("k")?)?);
    /// let server = shell.configure(Server::builder()).tcp("127.0.0.1:0", shell)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn configure<S: socketserver::Strategy>(
        &self,
        builder: socketserver::Builder<S>,
    ) -> socketserver::Builder<S> {
        let builder = builder
            .read_timeout(self.config.idle)
            .write_timeout(self.config.idle);
        crate::service::with_pre_handler_budget(builder, self.config.max_unauthenticated)
    }

    /// Closes the connections still authenticating and refuses new ones:
    /// for when the server stops (they are not sessions yet and have
    /// nothing to finish; sessions waiting for a command are closed by the
    /// graceful close, sessions running one get its drain deadline).
    pub fn close_handshakes(&self) {
        self.handshakes.close();
    }

    /// The authentication gate (handshakes in progress, clients turned
    /// away).
    pub fn gatekeeper(&self) -> &Gatekeeper {
        &self.gate
    }

    /// Runs one request line in `session` and builds the reply. `watch`
    /// is the client's socket (a hang-up kills the command).
    fn execute(
        &self,
        session: &mut Session,
        line: &[u8],
        watch: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> io::Result<Reply> {
        let Ok(line) = std::str::from_utf8(line) else {
            return Ok(Reply::failure(
                2,
                "demos shell: the command line is not valid UTF-8; nothing was run".into(),
            ));
        };
        if line.contains('\0') {
            return Ok(Reply::failure(
                2,
                "demos shell: the command line holds a NUL byte; nothing was run".into(),
            ));
        }
        if let Some(cd) = cd_request(line) {
            return Ok(session.cd(cd, &self.config.start_dir));
        }
        let limits = Limits {
            timeout: self.config.timeout,
            max_output: self.config.max_output,
        };
        let outcome = match run_off_reactor(line, &session.dir, &limits, watch) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return Err(e),
            Err(e) => {
                return Ok(Reply::failure(
                    127,
                    format!(
                        "demos shell: cannot run {} in {}: {e}",
                        exec::SHELL,
                        session.dir.display()
                    ),
                ))
            }
        };
        let mut stderr = outcome.stderr;
        let (exit_code, timed_out, note) = match outcome.exit {
            Exit::Code(c) => (Some(c), false, None),
            Exit::Signal(s) => (
                None,
                false,
                Some(format!("killed by signal {s} ({})", signal_name(s))),
            ),
            Exit::TimedOut => (
                None,
                true,
                Some(format!(
                    "timed out after {}; the command's process group was killed (SIGKILL)",
                    secs(self.config.timeout)
                )),
            ),
        };
        let mut notes: Vec<String> = note.into_iter().collect();
        if outcome.pipes_left_open {
            notes.push(
                "stopped reading output: a process that left the command's process group \
                 still holds it"
                    .into(),
            );
        }
        let truncated = append_notes(&mut stderr, &notes) || outcome.truncated;
        Ok(Reply::new(
            exit_code,
            outcome.stdout,
            stderr,
            truncated,
            timed_out,
        ))
    }
}

impl StreamHandler for Shell {
    fn handle_error(&self, peer: &socketserver::Address, error: &socketserver::RequestError) {
        crate::logging::log_client_error("shell", peer, error);
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let peer = req.peer_addr().clone();
        if std::process::id() != self.server_pid {
            // A session process of its own (Forking): when the server ends
            // it, the running command must go too.
            exec::kill_group_on_fatal_signals()?;
        }
        let Some(handshake) = self.handshakes.enter(req.stream())? else {
            return Ok(());
        };
        if let Err(e) = crate::service::authenticate(&self.gate, req) {
            crate::logging::log_auth_failure("shell", &peer, &e);
            return Ok(());
        }
        drop(handshake);
        log::info!("shell: {peer}: authenticated");
        // The handshake left its own timeouts on the socket: back to the
        // server's (see `configure`).
        req.stream().set_read_timeout(self.config.idle)?;
        req.stream().set_write_timeout(self.config.idle)?;
        let mut session = Session::new(self.config.start_dir.clone());
        let mut commands = 0u64;
        loop {
            // One frame is one message: between commands the session is
            // idle (a graceful close ends it at once); a command frame
            // must come whole within the server's message deadline.
            let line = match req.read_message(|r| COMMAND_FRAMING.read_frame(r)) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) if is_timeout(&e) => {
                    log::info!("shell: {peer}: idle for {:?}, closing", self.config.idle);
                    break;
                }
                Err(e) => return Err(e),
            };
            commands += 1;
            let started = Instant::now();
            // The raw socket is watched for hang-ups while the command runs.
            let reply = self.execute(&mut session, &line, Some(req.stream().as_fd()));
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    log::info!("shell: {peer}: {e}");
                    return Ok(());
                }
            };
            let h = &reply.header;
            let exit = match (h.exit_code, h.timed_out) {
                (_, true) => "timed out".to_owned(),
                (Some(c), _) => format!("exit {c}"),
                (None, _) => "killed".to_owned(),
            };
            log::info!(
                "shell: {peer}: {:?} -> {exit}{} in {} ms ({} + {} bytes)",
                String::from_utf8_lossy(&line[..line.len().min(80)]),
                if h.truncated { ", truncated" } else { "" },
                started.elapsed().as_millis(),
                h.stdout,
                h.stderr,
            );
            reply.write_to(req)?;
        }
        log::info!(
            "shell: {peer}: closed after {commands} command{}",
            if commands == 1 { "" } else { "s" }
        );
        Ok(())
    }
}

/// Appends each note as a line `demos shell: NOTE` to the command's
/// `stderr`, first cutting the command's bytes if the whole would not fit
/// one frame ([`MAX_OUTPUT_LIMIT`]); returns whether it cut.
fn append_notes(stderr: &mut Vec<u8>, notes: &[String]) -> bool {
    let lines: Vec<String> = notes
        .iter()
        .map(|n| format!("demos shell: {n}\n"))
        .collect();
    if lines.is_empty() {
        return false;
    }
    // One byte more for a line end before the notes.
    let room = MAX_OUTPUT_LIMIT - lines.iter().map(String::len).sum::<usize>() - 1;
    let cut = stderr.len() > room;
    stderr.truncate(room);
    if !stderr.is_empty() && !stderr.ends_with(b"\n") {
        stderr.push(b'\n');
    }
    for line in lines {
        stderr.extend_from_slice(line.as_bytes());
    }
    cut
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A few signal names for the stderr note.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "another signal",
    }
}

/// Runs a command with [`exec::run`]; under `Green` on a helper thread
/// (`socketserver::green::blocking`), since the whole run waits on the
/// command's pipes and exit: the other connections of the worker go on.
fn run_off_reactor(
    line: &str,
    dir: &std::path::Path,
    limits: &Limits,
    watch: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<exec::Outcome> {
    if !socketserver::green::is_green() {
        return exec::run(line, dir, limits, watch);
    }
    // The helper needs its own handles: a duplicate of the watched socket.
    let watch = watch.map(|fd| fd.try_clone_to_owned()).transpose()?;
    let (line, dir, limits) = (line.to_owned(), dir.to_path_buf(), *limits);
    socketserver::green::blocking(move || {
        use std::os::fd::AsFd;
        exec::run(&line, &dir, &limits, watch.as_ref().map(AsFd::as_fd))
    })
}

/// Whether `addr` may be served without `--allow-remote`: loopback
/// addresses and Unix sockets only.
///
/// ```
/// use demos::shell::needs_allow_remote;
/// assert!(!needs_allow_remote(&"127.0.0.1:0".parse().unwrap()));
/// assert!(!needs_allow_remote(&"[::1]:0".parse().unwrap()));
/// assert!(!needs_allow_remote(&"unix:/tmp/shell.sock".parse().unwrap()));
/// assert!(needs_allow_remote(&"0.0.0.0:7000".parse().unwrap()));
/// assert!(needs_allow_remote(&"[::]:7000".parse().unwrap()));
/// ```
pub fn needs_allow_remote(addr: &Address) -> bool {
    !addr.is_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_always_fit_one_frame() {
        let note = vec!["timed out after 1 s".to_owned()];
        let mut full = vec![b'x'; MAX_OUTPUT_LIMIT];
        assert!(append_notes(&mut full, &note));
        assert_eq!(full.len(), MAX_OUTPUT_LIMIT);
        assert!(full.ends_with(b"x\ndemos shell: timed out after 1 s\n"));
        let mut small = b"oops".to_vec();
        assert!(!append_notes(&mut small, &note));
        assert_eq!(small, b"oops\ndemos shell: timed out after 1 s\n");
        let mut untouched = vec![b'x'; MAX_OUTPUT_LIMIT];
        assert!(!append_notes(&mut untouched, &[]));
        assert_eq!(untouched.len(), MAX_OUTPUT_LIMIT);
    }
}
