//! Remote shell: the textbook remote command runner (`subprocess.Popen(cmd,
//! shell=True)` behind a socket), made safe to leave running.
//!
//! # Protocol (`docs/protocols.md`, "The remote shell", says why each rule is there)
//!
//! Every message is a frame of [`socketserver::framing`]: a 4-byte
//! big-endian length, then the payload.
//!
//! 1. Authentication first ([`socketserver::auth`]): the server sends a
//!    32-byte challenge, the client answers with HMAC-SHA256(key,
//!    challenge), the server sends `OK` or closes.
//! 2. Then each request is one frame holding a UTF-8 command line; the
//!    reply is three frames: the JSON header [`ReplyHeader`]
//!    (`{"exit_code": int or null, "stdout": N, "stderr": M, "truncated":
//!    bool, "timed_out": bool}`), then N bytes of stdout, then M bytes of
//!    stderr, as the command wrote them (not necessarily UTF-8).
//! 3. The connection stays open for more commands until the client closes
//!    it.
//!
//! # What the server does with a command
//!
//! * `cd DIR` is a builtin that changes the session's directory (each
//!   connection has its own, starting in [`ShellConfig::start_dir`]); see
//!   [`cd_request`] for exactly which lines count as `cd`.
//! * Everything else runs as `/bin/sh -c COMMAND` in the session's
//!   directory, in a process group of its own, stdin from `/dev/null`,
//!   stdout and stderr captured separately and concurrently (see
//!   [`exec`]).
//! * At [`ShellConfig::timeout`] the whole process group is killed:
//!   `timed_out` is true, `exit_code` null.
//! * Each stream keeps its first [`ShellConfig::max_output`] bytes; the
//!   rest is read and discarded (the command runs on, so its exit code
//!   still means something) and `truncated` is true.
//! * `exit_code` is null when the command was killed by a signal or timed
//!   out; the server then appends one line saying which to the stderr
//!   bytes (`demos shell: killed by signal 9 (SIGKILL)`), after the
//!   command's own output and the cap.
//! * A command line that is not UTF-8, or holds a NUL byte, is not run:
//!   exit code 2 and a line on stderr, as a shell does for a syntax error.
//! * When the client goes away while a command runs (it closes or
//!   half-closes the connection, its process dies, the connection is reset
//!   or cut by the server's shutdown), the command's process group is
//!   killed at once. A client keeps its sending side open until the reply
//!   has come.
//! * The stderr frame always fits the frame limit (16 MiB): when the
//!   command's own stderr fills it, it is cut to leave room for the
//!   server's note, and `truncated` is true.
//!
//! # Security
//!
//! Commands run as the server's user with its environment: whoever holds
//! the key can do anything that user can. The key never crosses the wire,
//! but nothing after the handshake is encrypted or protected: on a network
//! you do not trust, tunnel it (SSH, TLS). The CLI refuses a non-loopback
//! address without `--allow-remote`.
//!
//! # Limits
//!
//! * A process that leaves the command's process group on purpose
//!   (`setsid`, `setpgid`) escapes the timeout and the cleanup.
//! * Under the `Forking` strategy, the server's shutdown ends a session
//!   process still running at the drain deadline with SIGTERM (a ^C in
//!   the server's terminal, with SIGINT); the session process then kills
//!   its running command's group first. Under `Threading` and `Pool`, the
//!   drain's cut of the connection kills it. A SIGKILL to the server or a
//!   session process leaves the command running.
//! * `truncated` and the cap apply to each stream separately; a command
//!   that writes forever runs until its timeout.

pub mod cli;
pub mod client;
pub mod exec;

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socketserver::auth::{Gatekeeper, Key};
use socketserver::framing::{Framing, DEFAULT_MAX_FRAME_SIZE};
use socketserver::{Address, StreamHandler, StreamRequest};

use exec::{Exit, Limits};

/// Default per-command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on each of stdout and stderr: 1 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;

/// The largest `max_output`: one reply frame (16 MiB).
pub const MAX_OUTPUT_LIMIT: usize = DEFAULT_MAX_FRAME_SIZE;

/// The longest command line accepted, in bytes (a frame announcing more
/// closes the connection).
pub const MAX_COMMAND: usize = 64 * 1024;

/// How long a client gets for the whole authentication handshake, however
/// it spreads its bytes.
pub const AUTH_TIMEOUT: Duration = socketserver::auth::DEFAULT_HANDSHAKE_DEADLINE;

/// Default cap on connections that have not authenticated yet.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = socketserver::auth::DEFAULT_MAX_PENDING;

/// Default idle time after which a session is closed.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// The framing of command frames (server side): at most [`MAX_COMMAND`].
pub const COMMAND_FRAMING: Framing = Framing::new().with_max_frame_size(MAX_COMMAND);

/// The reply's first frame (exactly these fields; see `docs/protocols.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHeader {
    /// The exit status; `None` (JSON null) if killed by a signal or timed out.
    pub exit_code: Option<i32>,
    /// Bytes of stdout in the second frame.
    pub stdout: u64,
    /// Bytes of stderr in the third frame.
    pub stderr: u64,
    /// Whether stdout or stderr was cut at the server's cap.
    pub truncated: bool,
    /// Whether the command was killed at the server's timeout.
    pub timed_out: bool,
}

/// A full reply: the header and both streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The JSON header.
    pub header: ReplyHeader,
    /// What the command wrote to stdout (up to the cap).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (up to the cap), plus the server's note if
    /// it was killed.
    pub stderr: Vec<u8>,
}

impl Reply {
    /// A reply from bytes; the header's counts follow the bytes.
    pub fn new(
        exit_code: Option<i32>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        truncated: bool,
        timed_out: bool,
    ) -> Reply {
        Reply {
            header: ReplyHeader {
                exit_code,
                stdout: stdout.len() as u64,
                stderr: stderr.len() as u64,
                truncated,
                timed_out,
            },
            stdout,
            stderr,
        }
    }

    /// A failure that ran nothing: `exit_code`, and `message` as stderr.
    fn failure(exit_code: i32, message: String) -> Reply {
        Reply::new(
            Some(exit_code),
            Vec::new(),
            format!("{message}\n").into_bytes(),
            false,
            false,
        )
    }

    /// Writes the three frames and flushes.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        let framing = Framing::new();
        framing.write_json(w, &self.header)?;
        framing.write_frame(w, &self.stdout)?;
        framing.write_frame(w, &self.stderr)?;
        w.flush()
    }
}

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
    handshakes: crate::common::Handshakes,
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
            handshakes: crate::common::Handshakes::default(),
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
    /// shutdown meanwhile) close a session silent for that long. Build the
    /// server from the result.
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
        builder
            .read_timeout(self.config.idle)
            .write_timeout(self.config.idle)
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
        session: &mut SessionState,
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
        let outcome = match exec::run(line, &session.dir, &limits, watch) {
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
        crate::common::log_client_error("shell", peer, error);
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
        // Straight on the socket: nothing was read through `req` yet.
        if let Err(e) = self.gate.server_handshake(&mut req.stream()) {
            crate::common::log_auth_failure("shell", &peer, &e);
            return Ok(());
        }
        drop(handshake);
        log::info!("shell: {peer}: authenticated");
        // The handshake left its own timeouts on the socket: back to the
        // server's (see `configure`).
        req.stream().set_read_timeout(self.config.idle)?;
        req.stream().set_write_timeout(self.config.idle)?;
        let mut session = SessionState::new(self.config.start_dir.clone());
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

/// One session's state: its directory and the one before (`cd -`).
#[derive(Debug)]
struct SessionState {
    dir: PathBuf,
    previous: Option<PathBuf>,
}

impl SessionState {
    fn new(dir: PathBuf) -> SessionState {
        SessionState {
            dir,
            previous: None,
        }
    }

    /// The `cd` builtin: exit code 0 (with the new directory on stdout for
    /// `cd -`, as a shell does) or 1 with the reason on stderr.
    fn cd(&mut self, request: Result<CdTarget, String>, start: &Path) -> Reply {
        let target = match request {
            Ok(t) => t,
            Err(why) => return Reply::failure(1, format!("cd: {why}")),
        };
        let home = || {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| start.to_path_buf())
        };
        let (shown, path, print) = match target {
            CdTarget::Home => ("~".to_owned(), home(), false),
            CdTarget::Previous => match &self.previous {
                Some(p) => ("-".to_owned(), p.clone(), true),
                None => return Reply::failure(1, "cd: no previous directory".into()),
            },
            CdTarget::Path(p) => {
                let expanded = match p.strip_prefix('~') {
                    Some("") => home(),
                    Some(rest) if rest.starts_with('/') => {
                        home().join(rest.trim_start_matches('/'))
                    }
                    _ => PathBuf::from(&p),
                };
                (p, self.dir.join(expanded), false)
            }
        };
        let resolved = match std::fs::canonicalize(&path) {
            Ok(r) => r,
            Err(e) => return Reply::failure(1, format!("cd: {shown}: {}", os_message(&e))),
        };
        if !resolved.is_dir() {
            return Reply::failure(1, format!("cd: {shown}: Not a directory"));
        }
        self.previous = Some(std::mem::replace(&mut self.dir, resolved));
        let stdout = if print {
            let mut s = self.dir.as_os_str().as_encoded_bytes().to_vec();
            s.push(b'\n');
            s
        } else {
            Vec::new()
        };
        Reply::new(Some(0), stdout, Vec::new(), false, false)
    }
}

/// An I/O error's message without the ` (os error N)` tail.
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Where a `cd` builtin goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdTarget {
    /// `cd` alone: `HOME` (or the start directory if `HOME` is unset).
    Home,
    /// `cd -`: the directory before the last `cd`.
    Previous,
    /// `cd PATH`, relative to the session's directory; a leading `~` is
    /// `HOME`.
    Path(String),
}

/// Whether `line` is the session's `cd` builtin, and where it goes.
///
/// A line is the builtin when its first word is `cd` and it holds no
/// command separator or redirection (`;`, `&`, `|`, `<`, `>`, `(`, `)`,
/// newline) outside quotes: `cd /tmp`, `cd 'my dir'`, `cd "a b"`,
/// `cd a\ b`, `cd ~/src`, `cd -`, `cd`. Such a line never reaches the
/// shell. `Some(Err(..))` is a builtin that cannot be done: more than one
/// argument, or an expansion (`$`, backquote, `*`, `?`, `[`) that only a
/// shell could perform.
///
/// Other lines (`cd /tmp && ls`, `echo cd`) run in `/bin/sh`, where a `cd`
/// lasts only for that command.
///
/// ```
/// use demos::shell::{cd_request, CdTarget};
/// assert_eq!(cd_request("cd /tmp"), Some(Ok(CdTarget::Path("/tmp".into()))));
/// assert_eq!(cd_request("  cd  'my dir' "), Some(Ok(CdTarget::Path("my dir".into()))));
/// assert_eq!(cd_request("cd"), Some(Ok(CdTarget::Home)));
/// assert_eq!(cd_request("cd -"), Some(Ok(CdTarget::Previous)));
/// assert!(cd_request("cd a b").unwrap().is_err());
/// assert!(cd_request("cd $HOME").unwrap().is_err());
/// assert_eq!(cd_request("cd /tmp && ls"), None);
/// assert_eq!(cd_request("cdrom"), None);
/// ```
pub fn cd_request(line: &str) -> Option<Result<CdTarget, String>> {
    let rest = line.trim().strip_prefix("cd")?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let words = match split_words(rest) {
        Words::Separator => return None,
        Words::Expansion(c) => {
            return Some(Err(format!(
                "{c:?}: the session's cd takes a plain path (no variables, substitutions or \
                 patterns)"
            )))
        }
        Words::Unterminated => return Some(Err("unterminated quote".into())),
        Words::Ok(w) => w,
    };
    Some(match words.as_slice() {
        [] => Ok(CdTarget::Home),
        [w] if w == "-" => Ok(CdTarget::Previous),
        [w] => Ok(CdTarget::Path(w.clone())),
        _ => Err("too many arguments".into()),
    })
}

enum Words {
    Ok(Vec<String>),
    Separator,
    Expansion(char),
    Unterminated,
}

/// Splits like a shell, without expansions: whitespace separates words;
/// `'...'` is literal; `"..."` is literal except `\"`, `\\`; `\x` is `x`.
fn split_words(s: &str) -> Words {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() && c != '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '\n' => return Words::Separator,
            '$' | '`' | '*' | '?' | '[' => return Words::Expansion(c),
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Words::Unterminated,
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Words::Unterminated,
                        },
                        Some(c @ ('$' | '`')) => return Words::Expansion(c),
                        Some(c) => word.push(c),
                        None => return Words::Unterminated,
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Words::Unterminated,
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Words::Ok(words)
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

    #[test]
    fn cd_lines() {
        assert_eq!(
            cd_request(r"cd a\ b"),
            Some(Ok(CdTarget::Path("a b".into())))
        );
        assert_eq!(
            cd_request(r#"cd "x\"y""#),
            Some(Ok(CdTarget::Path("x\"y".into())))
        );
        assert_eq!(
            cd_request("cd\t/tmp"),
            Some(Ok(CdTarget::Path("/tmp".into())))
        );
        assert_eq!(cd_request("cd ~/x"), Some(Ok(CdTarget::Path("~/x".into()))));
        assert_eq!(cd_request("cd /tmp; ls"), None);
        assert_eq!(cd_request("cd /tmp | cat"), None);
        assert_eq!(cd_request("cd /tmp\nls"), None);
        assert_eq!(cd_request("echo cd"), None);
        assert!(cd_request("cd 'x").unwrap().is_err());
        assert!(cd_request("cd \"$HOME\"").unwrap().is_err());
        assert!(cd_request("cd *").unwrap().is_err());
        assert_eq!(
            cd_request("cd '$HOME'"),
            Some(Ok(CdTarget::Path("$HOME".into())))
        );
    }

    #[test]
    fn cd_changes_only_this_session() {
        let start = std::env::temp_dir();
        let mut a = SessionState::new(start.clone());
        let r = a.cd(Ok(CdTarget::Path("/".into())), &start);
        assert_eq!(r.header.exit_code, Some(0));
        assert_eq!(a.dir, Path::new("/"));
        let r = a.cd(Ok(CdTarget::Path("no-such-dir-here".into())), &start);
        assert_eq!(r.header.exit_code, Some(1));
        assert_eq!(
            String::from_utf8_lossy(&r.stderr),
            "cd: no-such-dir-here: No such file or directory\n"
        );
        assert_eq!(a.dir, Path::new("/"), "a failed cd changes nothing");
        let r = a.cd(Ok(CdTarget::Previous), &start);
        assert_eq!(r.header.exit_code, Some(0));
        assert_eq!(a.dir, start.canonicalize().unwrap());
        let r = a.cd(Ok(CdTarget::Path("/etc/passwd".into())), &start);
        assert_eq!(
            String::from_utf8_lossy(&r.stderr),
            "cd: /etc/passwd: Not a directory\n"
        );
    }
}
