//! Zero-downtime upgrade: on `SIGUSR2` the server starts a new copy of its
//! program (the same path, so a new build installed there runs), hands it
//! the listening socket, waits until the new process says it is ready, then
//! stops accepting and lets the connections it holds finish, and returns.
//! No connection is refused meanwhile: the socket is the same, listening
//! all along, and whatever the old process no longer accepts waits in its
//! queue for the new one.
//!
//! ```no_run
//! use socketserver::activation::{self, Listener};
//! use socketserver::reload::{Served, Upgrade};
//! use socketserver::transport::Tcp;
//! use socketserver::{Server, Signal, StreamRequest, Threading};
//!
//! // Take the socket over from the previous process, if there is one.
//! let transport = match activation::listeners()?.pop() {
//!     Some(Listener::Tcp(l)) => Tcp::from_std(l)?,
//!     _ => Tcp::bind("127.0.0.1:8000", &Default::default())?,
//! };
//! let server = Server::builder()
//!     .strategy(Threading::new())
//!     .build(transport, |r: &mut StreamRequest| r.echo().map(drop))?;
//! server.shutdown_handle().shutdown_on_signals(&[Signal::Int, Signal::Term])?;
//! match Upgrade::new()?.serve(&server)? {
//!     Served::Stopped => drop(server), // SIGTERM: the usual graceful close
//!     Served::Upgraded { successor, .. } => eprintln!("now served by {successor}"),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Why `SIGUSR2`
//!
//! It is what nginx uses for the same job ("upgrade the executable on the
//! fly"), so operators know it. `SIGHUP` means "reload the configuration in
//! place" to nginx, Apache and most daemons, and it is also what a process
//! started from a terminal gets when the terminal goes away: a server that
//! re-executed itself on `SIGHUP` would start a copy of itself every time
//! its ssh session dropped. [`Upgrade::signal`] picks another signal.
//!
//! ## The hand-over, step by step
//!
//! 1. The signal arrives; a thread of [`Upgrade::serve`] wakes (the handler
//!    only writes a byte to a socket pair). Under `Forking` and `PreFork`,
//!    which must fork from a single thread, there is no such thread: the
//!    byte wakes the server loop, which returns, and the thread that called
//!    [`Upgrade::serve`] goes on from step 2 (serving again if the upgrade
//!    fails).
//! 2. It starts the program (default: this process's executable path, as
//!    [`std::env::current_exe`] saw it at [`Upgrade::new`], with the same
//!    arguments) with the listening socket as fd 3, `LISTEN_FDS=1` and
//!    `LISTEN_PID` set to the new process's pid: the convention
//!    [`activation::listeners`](crate::activation::listeners) reads, so
//!    the new process adopts the socket as it would one from systemd. A
//!    socket-pair end goes along as fd 4, named by
//!    `SOCKETSERVER_READY_FD` (with `SOCKETSERVER_READY_PID`). A server on
//!    several sockets ([`Listeners`](crate::transport::Listeners)) hands
//!    over all of them, in order, as fds 3, 4, ... (`LISTEN_FDS=N`, see
//!    [`Upgradable::listeners`]); the new process rebuilds its set from
//!    them in the same order.
//! 3. The new process serves, and says so with [`notify_ready`] (which
//!    [`Upgrade::serve`] calls for it, once its own signal handler is in
//!    place, so that it can be upgraded in turn).
//! 4. Only then does the old process stop accepting: its transport is
//!    marked handed over (its graceful close no longer shuts the socket
//!    down, which would stop the new process's accepts too, nor removes a
//!    Unix socket file), its loop returns, and its open connections end on
//!    their own terms: nothing is closed for being idle, since a client of
//!    a long-lived connection cannot know it should go elsewhere (a
//!    `PreFork` parent tells its children to stop accepting and do the
//!    same). After [`Upgrade::drain_timeout`] what is left is closed
//!    gracefully; SIGTERM or SIGINT meanwhile closes gracefully at once,
//!    with the server's close timeout.
//!
//! If the new process exits before it is ready, or is not ready within
//! [`Upgrade::ready_timeout`] (it is killed then), the old one logs why and
//! serves on, ready for another try. A shutdown (`SIGTERM`) during an
//! upgrade kills the unfinished successor.
//!
//! The old process is the new one's parent until it exits; then init (or
//! the nearest subreaper) adopts the new one. Under systemd, prefer socket
//! activation and a restart (see `docs/deploy.md`).

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::transport::Transport;
use crate::{DrainReport, Handler, Server, Signal, Strategy};

/// The variable naming the descriptor a new process reports readiness on.
pub const READY_FD_VAR: &str = "SOCKETSERVER_READY_FD";
/// The pid [`READY_FD_VAR`] is meant for (as `LISTEN_PID` for
/// `LISTEN_FDS`).
pub const READY_PID_VAR: &str = crate::activation::UPGRADE_PID_VAR;

/// Default [`Upgrade::ready_timeout`]: 10 s.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Upgrade::drain_timeout`]: 60 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How to upgrade a server to a new process on a signal; see the
/// [module docs](self).
#[derive(Debug, Clone)]
#[must_use = "an Upgrade does nothing until serve runs the server with it"]
pub struct Upgrade {
    program: PathBuf,
    argv: Vec<OsString>,
    signal: Signal,
    ready_timeout: Duration,
    drain_timeout: Duration,
    /// Descriptors handed to the new process besides the sockets, each
    /// with the variable that names its number there.
    passed: Vec<(&'static str, Arc<OwnedFd>)>,
}

/// How [`Upgrade::serve`] ended.
#[derive(Debug)]
#[must_use = "on Stopped the caller closes the server as usual"]
pub enum Served {
    /// The server was shut down (a handle, or a signal such as `SIGTERM`);
    /// close it as usual.
    Stopped,
    /// A new process took over; this one's connections have finished (or
    /// were closed at the drain timeout) and the server is closed.
    Upgraded {
        /// The new process's pid.
        successor: u32,
        /// From the signal to the new process's readiness.
        handover: Duration,
        /// How the connections of this process ended.
        report: DrainReport,
    },
}

impl Upgrade {
    /// On `SIGUSR2`, run this process's executable again with the same
    /// arguments; wait [`DEFAULT_READY_TIMEOUT`] for it, and
    /// [`DEFAULT_DRAIN_TIMEOUT`] for this process's connections to end.
    ///
    /// The executable's path is read now (`/proc/self/exe` on Linux), so
    /// that a new build installed at the same path later is what runs; a
    /// path the kernel reports as `(deleted)` (replaced already) is taken
    /// without that suffix.
    pub fn new() -> io::Result<Upgrade> {
        let exe = std::env::current_exe()?;
        let program = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(s) => PathBuf::from(s),
            None => exe,
        };
        Ok(Upgrade {
            program,
            argv: std::env::args_os().collect(),
            signal: Signal::Usr2,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            passed: Vec::new(),
        })
    }

    /// Hands `pid_file` to the new process too: it inherits a descriptor
    /// sharing the lock, and its [`PidFile::create`] with the same path
    /// takes it over and writes its own pid (see [`crate::pidfile`]).
    ///
    /// [`PidFile::create`]: crate::pidfile::PidFile::create
    pub fn pid_file(mut self, pid_file: &crate::pidfile::PidFile) -> io::Result<Self> {
        self.passed
            .push((crate::pidfile::PID_FILE_FD_VAR, Arc::new(pid_file.share()?)));
        Ok(self)
    }

    /// The program to start (default: this process's executable).
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = path.into();
        self
    }

    /// Its arguments after `argv[0]` (default: this process's).
    pub fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(mut self, args: I) -> Self {
        self.argv.truncate(1);
        if self.argv.is_empty() {
            self.argv.push(self.program.clone().into_os_string());
        }
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// The signal that starts an upgrade (default `SIGUSR2`).
    pub fn signal(mut self, signal: Signal) -> Self {
        self.signal = signal;
        self
    }

    /// How long the new process has to report ready before it is killed
    /// and the upgrade abandoned (default [`DEFAULT_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long, once the new process serves, this one waits for its
    /// connections to end on their own before closing them gracefully
    /// (default [`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Serves `server` (its `serve_forever`) until it is shut down
    /// ([`Served::Stopped`]) or a new process took over after the signal
    /// ([`Served::Upgraded`]: the connections of this one have ended and
    /// the server is closed; the caller exits). Reports readiness to the
    /// process that started this one, if any ([`notify_ready`]), once the
    /// signal's handler is in place. For several servers in one process
    /// (a TCP and a UDP port, say), see [`watch`](Self::watch).
    ///
    /// Under a strategy that forks (`Forking`, `PreFork`), which must fork
    /// from a process with no other thread, no thread watches for the
    /// signal: it makes the server loop return, the calling thread starts
    /// the successor (new connections wait in the listen backlog meanwhile;
    /// running requests go on in their children) and serves again if the
    /// upgrade fails. Other strategies keep serving while a watcher thread
    /// starts the successor.
    pub fn serve<T, S, H>(&self, server: &Server<T, S, H>) -> io::Result<Served>
    where
        T: Transport,
        S: Strategy,
        H: Handler<T::Request>,
    {
        if matches!(server.strategy().name(), "forking" | "prefork") {
            return self.serve_on_this_thread(server);
        }
        let watch = self.watch_servers(vec![server as &dyn Upgradable])?;
        let served = std::thread::scope(|scope| {
            let watcher = std::thread::Builder::new()
                .name("upgrade".into())
                .spawn_scoped(scope, || watch.run())?;
            let served = server.serve_forever();
            watch.stop();
            let _ = watcher.join();
            served
        });
        served?;
        match watch.outcome() {
            None => Ok(Served::Stopped),
            Some((successor, handover)) => Ok(Served::Upgraded {
                successor,
                handover,
                report: self.drain(server),
            }),
        }
    }

    /// [`serve`](Self::serve) with no watcher thread: the signal ends the
    /// server loop, and this thread starts the successor.
    fn serve_on_this_thread<T, S, H>(&self, server: &Server<T, S, H>) -> io::Result<Served>
    where
        T: Transport,
        S: Strategy,
        H: Handler<T::Request>,
    {
        let _unregister = Unregister(server.return_on_signal(self.signal.number())?);
        if let Err(e) = notify_ready() {
            log::warn!(
                "{}: cannot tell the previous process we are ready: {e}",
                server.url()
            );
        }
        let url = server.url();
        loop {
            server.serve_forever()?;
            if !server.take_upgrade_request() {
                return Ok(Served::Stopped);
            }
            let started = Instant::now();
            log::info!(
                "{url}: {:?}: starting {}",
                self.signal,
                self.program.display()
            );
            let stop = Stop {
                fd: server.wake_fd(),
                asked: &|| server.shutdown_pending(),
            };
            match self.start_successor(&Upgradable::listeners(server), &stop) {
                Ok(Some(pid)) => {
                    let handover = started.elapsed();
                    server.hand_over();
                    // A strategy that took the loop over (`PreFork`) hands
                    // its children over as its loop ends.
                    server.serve_forever()?;
                    log::info!(
                        "{url}: process {pid} serves now (ready after {} ms); finishing the \
                         connections of this one",
                        handover.as_millis()
                    );
                    return Ok(Served::Upgraded {
                        successor: pid,
                        handover,
                        report: self.drain(server),
                    });
                }
                Ok(None) => return Ok(Served::Stopped),
                Err(e) => log::error!("{url}: upgrade failed: {e}; serving on"),
            }
        }
    }

    /// Watches for the signal on behalf of several servers of this process
    /// (each served by the caller, on threads of its choosing): on the
    /// signal, the new process gets all their listening sockets, in the
    /// order given (`LISTEN_FDS` = their number), and once it is ready
    /// every one of them is marked handed over and shut down, so their
    /// `serve_forever` calls return. Then [`Watch::upgraded`] is true, and
    /// each server should [`drain`](Self::drain) instead of closing at once.
    /// Reports readiness to the process that started this one, if any.
    ///
    /// ```no_run
    /// use socketserver::reload::{Upgradable, Upgrade};
    /// use socketserver::{DatagramRequest, Server, StreamRequest};
    /// use std::sync::Arc;
    ///
    /// let tcp = Arc::new(Server::builder().tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?);
    /// let udp = Arc::new(Server::builder().udp("127.0.0.1:0", |r: &mut DatagramRequest| {
    ///     let data = r.data().to_vec();
    ///     std::io::Write::write_all(r.wfile(), &data)
    /// })?);
    /// let upgrade = Upgrade::new()?;
    /// let watch = upgrade.watch(vec![tcp.clone() as Arc<dyn Upgradable>, udp.clone()])?;
    /// let udp_thread = { let udp = udp.clone(); std::thread::spawn(move || udp.serve_forever()) };
    /// tcp.serve_forever()?;
    /// udp_thread.join().unwrap()?;
    /// if watch.upgraded() {
    ///     upgrade.drain(&*tcp);
    ///     upgrade.drain(&*udp);
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn watch(&self, servers: Vec<Arc<dyn Upgradable>>) -> io::Result<Watch> {
        let watcher = self.watch_servers(servers)?;
        let shared = Arc::new(watcher);
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("upgrade".into())
                .spawn(move || shared.run())?
        };
        Ok(Watch {
            watcher: shared,
            thread: Some(thread),
        })
    }

    fn watch_servers<U: AsUpgradable>(&self, servers: Vec<U>) -> io::Result<Watcher<U>> {
        let (signals, signal_writer) = UnixStream::pair()?;
        signals.set_nonblocking(true)?;
        signal_writer.set_nonblocking(true)?;
        let id = signal_hook::low_level::pipe::register(self.signal.number(), signal_writer)?;
        // From here on, the signal no longer ends this process: a later one
        // (during the drain) does nothing.
        let unregister = Unregister(id);
        let (stop, stop_writer) = UnixStream::pair()?;
        let watcher = Watcher {
            upgrade: self.clone(),
            servers,
            signals,
            stop,
            stop_writer,
            outcome: std::sync::Mutex::new(None),
            upgraded: AtomicBool::new(false),
            _unregister: unregister,
        };
        if let Some(first) = watcher.servers.first() {
            if let Err(e) = notify_ready() {
                log::warn!(
                    "{}: cannot tell the previous process we are ready: {e}",
                    first.get().url()
                );
            }
        }
        Ok(watcher)
    }

    /// Starts the successor and waits until it is ready (`Some(pid)`), or
    /// `stop` is readable (`None`, the successor killed).
    fn start_successor(
        &self,
        listeners: &[BorrowedFd<'_>],
        stop: &Stop<'_>,
    ) -> io::Result<Option<u32>> {
        let (ready, ready_writer) = UnixStream::pair()?;
        let cstring = |s: &std::ffi::OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} contains a NUL byte", s.display()),
                )
            })
        };
        let program = cstring(self.program.as_os_str())?;
        let mut argv = self
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
        if argv.is_empty() {
            argv.push(program.clone());
        }
        let mut fds = listeners.to_vec();
        fds.push(ready_writer.as_fd());
        let ready_fd = crate::activation::LISTEN_FDS_START
            + i32::try_from(listeners.len()).map_err(|_| io::Error::other("too many listeners"))?;
        // The passed descriptors follow the readiness socket.
        fds.extend(self.passed.iter().map(|(_, fd)| fd.as_fd()));
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            // This process's own, if it was started so: not the new one's.
            let skip = [
                "LISTEN_PID",
                "LISTEN_FDS",
                "LISTEN_FDNAMES",
                READY_FD_VAR,
                READY_PID_VAR,
                crate::pidfile::PID_FILE_FD_VAR,
            ];
            let passed = self.passed.iter().any(|(var, _)| name == *var);
            if !passed && !skip.iter().any(|s| name == *s) {
                let mut entry = name.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                if let Ok(entry) = CString::new(entry) {
                    env.push(entry);
                }
            }
        }
        env.push(CString::new(format!("LISTEN_FDS={}", listeners.len())).expect("no NUL"));
        env.push(CString::new(format!("{READY_FD_VAR}={ready_fd}")).expect("no NUL"));
        for (i, (var, _)) in self.passed.iter().enumerate() {
            let fd = ready_fd + 1 + i as i32;
            env.push(CString::new(format!("{var}={fd}")).expect("no NUL"));
        }
        let pid = crate::sys::spawn_with_fds(&crate::sys::Spawn {
            program: &program,
            argv: &argv,
            env: &env,
            pid_vars: &["LISTEN_PID", READY_PID_VAR],
            fds: &fds,
            first_fd: crate::activation::LISTEN_FDS_START,
        })?;
        drop(ready_writer);
        let end = Instant::now() + self.ready_timeout;
        let failed = |why: String| -> io::Result<Option<u32>> {
            crate::sys::kill(pid, libc::SIGKILL);
            let status = crate::sys::waitpid(pid, true)?;
            Err(io::Error::other(format!(
                "process {pid} ({}) {why} (exit: {status:?})",
                self.program.display()
            )))
        };
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return failed(format!(
                    "was not ready within {} ms; killed",
                    self.ready_timeout.as_millis()
                ));
            }
            let r = crate::sys::poll_read(Some(ready.as_fd()), stop.fd, Some(left))?;
            if r.wake && (stop.asked)() {
                crate::sys::kill(pid, libc::SIGKILL);
                crate::sys::waitpid(pid, true)?;
                log::info!("upgrade abandoned: this server is shutting down; process {pid} killed");
                return Ok(None);
            }
            if r.socket {
                let mut byte = [0u8; 1];
                match (&ready).read(&mut byte) {
                    Ok(1) => return Ok(Some(pid as u32)),
                    Ok(_) => return failed("ended before it was ready".into()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return failed(format!("cannot be heard from: {e}")),
                }
            }
        }
    }

    /// After the hand-over: waits for the connections and requests of
    /// `server` to end on their own, then closes it gracefully with what is
    /// left of [`drain_timeout`](Self::drain_timeout) (at least 100 ms).
    /// [`serve`](Self::serve) calls it; after a [`watch`](Self::watch),
    /// call it for each server once [`Watch::upgraded`] says so.
    ///
    /// A stop signal (SIGTERM or SIGINT, as given to
    /// [`ShutdownHandle::shutdown_on_signals`](crate::ShutdownHandle::shutdown_on_signals))
    /// before or during this wait ends it: the server closes gracefully at
    /// once, with its own close timeout, as it would have without the
    /// upgrade (a supervisor's stop is not held up by the drain timeout).
    pub fn drain(&self, server: &dyn Upgradable) -> DrainReport {
        let end = Instant::now() + self.drain_timeout;
        while !server.is_idle() && Instant::now() < end {
            if server.stop_signalled() {
                log::info!(
                    "{}: stop signal during the upgrade's drain; closing gracefully",
                    server.url()
                );
                return server.close_gracefully(server.close_timeout());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = end.saturating_duration_since(Instant::now());
        server.close_gracefully(left.max(Duration::from_millis(100)))
    }
}

/// What ends the wait for a successor: `fd` readable and `asked()` true
/// (the watcher's stop socket; or the server's wake-up socket, which a mere
/// poke also makes readable).
struct Stop<'a> {
    fd: std::os::fd::RawFd,
    asked: &'a dyn Fn() -> bool,
}

/// What an [`Upgrade`] needs of a server: implemented by every
/// [`Server`]; object-safe, so that servers of different transports and
/// handlers can be upgraded together ([`Upgrade::watch`]).
pub trait Upgradable: Send + Sync {
    /// The listening (or bound datagram) socket handed to the new process.
    fn listener(&self) -> BorrowedFd<'_>;
    /// Every listening socket handed to the new process, in order (a
    /// server on [`Listeners`](crate::transport::Listeners) has several).
    /// Default: the one of [`listener`](Self::listener).
    fn listeners(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.listener()]
    }
    /// Marks the socket handed over (closing the server no longer shuts it
    /// down nor removes its file) and stops `serve_forever`.
    fn hand_over_and_stop(&self);
    /// Marks the socket handed over without stopping `serve_forever`. An
    /// upgrade marks every server of the set before it stops any: a caller
    /// that stops all its servers when one of them returns (as a process
    /// serving several sockets does) must not shut down a socket the new
    /// process already serves. Default: nothing (then only
    /// [`hand_over_and_stop`](Self::hand_over_and_stop) marks it).
    fn mark_handed_over(&self) {}
    /// `SCHEME://ADDR`, for logs.
    fn url(&self) -> String;
    /// Whether no connection is open and no request runs.
    fn is_idle(&self) -> bool;
    /// [`Server::close_gracefully`].
    fn close_gracefully(&self, deadline: Duration) -> DrainReport;
    /// Whether a stop signal (SIGTERM, SIGINT: those given to
    /// [`ShutdownHandle::shutdown_on_signals`](crate::ShutdownHandle::shutdown_on_signals))
    /// reached the process: [`Upgrade::drain`] then stops waiting for the
    /// connections to end on their own and closes gracefully at once.
    /// Default `false`.
    fn stop_signalled(&self) -> bool {
        false
    }
    /// The deadline of the graceful close a stop signal switches the drain
    /// to (a [`Server`]: its [`close_timeout`](crate::Builder::close_timeout)).
    /// Default [`DEFAULT_CLOSE_TIMEOUT`](crate::DEFAULT_CLOSE_TIMEOUT).
    fn close_timeout(&self) -> Duration {
        crate::DEFAULT_CLOSE_TIMEOUT
    }
}

impl<T, S, H> Upgradable for Server<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    fn listener(&self) -> BorrowedFd<'_> {
        // The first listening socket (a `Listeners` set's `fd` is its
        // epoll instance, which no other process can use).
        let transport = self.transport();
        transport
            .listening_fds()
            .into_iter()
            .next()
            .unwrap_or_else(|| transport.fd())
    }
    fn listeners(&self) -> Vec<BorrowedFd<'_>> {
        self.transport().listening_fds()
    }
    fn hand_over_and_stop(&self) {
        Server::hand_over(self);
    }
    fn mark_handed_over(&self) {
        Server::mark_handed_over(self);
    }
    fn url(&self) -> String {
        Server::url(self)
    }
    fn is_idle(&self) -> bool {
        let stats = self.stats();
        stats.connections == 0 && stats.active == 0
    }
    fn close_gracefully(&self, deadline: Duration) -> DrainReport {
        Server::close_gracefully(self, deadline)
    }
    fn stop_signalled(&self) -> bool {
        Server::stop_signalled(self)
    }
    fn close_timeout(&self) -> Duration {
        self.configured_close_timeout()
    }
}

/// A borrowed or shared [`Upgradable`].
trait AsUpgradable: Send + Sync {
    fn get(&self) -> &dyn Upgradable;
}

impl AsUpgradable for &dyn Upgradable {
    fn get(&self) -> &dyn Upgradable {
        *self
    }
}

impl AsUpgradable for Arc<dyn Upgradable> {
    fn get(&self) -> &dyn Upgradable {
        &**self
    }
}

/// The signal watcher of a set of servers.
struct Watcher<U> {
    upgrade: Upgrade,
    servers: Vec<U>,
    signals: UnixStream,
    stop: UnixStream,
    stop_writer: UnixStream,
    outcome: std::sync::Mutex<Option<(u32, Duration)>>,
    upgraded: AtomicBool,
    _unregister: Unregister,
}

impl<U: AsUpgradable> Watcher<U> {
    fn url(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(|s| s.get().url()).collect();
        urls.join(", ")
    }

    /// Waits for signals until one leads to a ready successor (then hands
    /// the servers over and stops them), or [`stop`](Self::stop).
    fn run(&self) {
        let url = self.url();
        let upgrade = &self.upgrade;
        loop {
            let ready = match crate::sys::poll_read(
                Some(self.signals.as_fd()),
                self.stop.as_raw_fd(),
                None,
            ) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("{url}: waiting for the upgrade signal: {e}; upgrades are off");
                    return;
                }
            };
            if ready.wake {
                return;
            }
            if !ready.socket {
                continue;
            }
            let mut buf = [0u8; 64];
            while matches!((&self.signals).read(&mut buf), Ok(n) if n > 0) {}
            let started = Instant::now();
            log::info!(
                "{url}: {:?}: starting {}",
                upgrade.signal,
                upgrade.program.display()
            );
            let listeners: Vec<BorrowedFd<'_>> = self
                .servers
                .iter()
                .flat_map(|s| s.get().listeners())
                .collect();
            let stop = Stop {
                fd: self.stop.as_raw_fd(),
                asked: &|| true,
            };
            match upgrade.start_successor(&listeners, &stop) {
                Ok(Some(pid)) => {
                    let took = started.elapsed();
                    *self
                        .outcome
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((pid, took));
                    self.upgraded.store(true, Ordering::SeqCst);
                    // Every mark before any stop: a stopped server may stop
                    // the others, and the close of one not yet marked would
                    // shut down a socket the new process serves.
                    for s in &self.servers {
                        s.get().mark_handed_over();
                    }
                    for s in &self.servers {
                        s.get().hand_over_and_stop();
                    }
                    log::info!(
                        "{url}: process {pid} serves now (ready after {} ms); finishing the connections of this one",
                        took.as_millis()
                    );
                    return;
                }
                Ok(None) => return,
                Err(e) => log::error!("{url}: upgrade failed: {e}; serving on"),
            }
        }
    }

    /// Ends [`run`](Self::run), or the upgrade under way (its unfinished
    /// successor is killed).
    fn stop(&self) {
        let _ = (&self.stop_writer).write(b"s");
    }

    fn outcome(&self) -> Option<(u32, Duration)> {
        *self
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The watcher started by [`Upgrade::watch`]; dropping it stops watching
/// (and kills a successor that is not ready yet).
pub struct Watch {
    watcher: Arc<Watcher<Arc<dyn Upgradable>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("upgraded", &self.upgraded())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Whether a new process took over: the servers were handed over and
    /// stopped. True before their `serve_forever` calls return.
    pub fn upgraded(&self) -> bool {
        self.watcher.upgraded.load(Ordering::SeqCst)
    }

    /// The new process's pid and how long from the signal to its readiness,
    /// once [`upgraded`](Self::upgraded).
    pub fn successor(&self) -> Option<(u32, Duration)> {
        self.watcher.outcome()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watcher.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Unregisters a signal action when dropped.
struct Unregister(signal_hook::SigId);

impl Drop for Unregister {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.0);
    }
}

/// Tells the process that started this one for an upgrade that this one
/// serves now (writes a byte to the descriptor named by [`READY_FD_VAR`],
/// if [`READY_PID_VAR`] names this process), once: a later call tells no
/// one. Returns whether there was someone to tell. [`Upgrade::serve`]
/// calls it; a server that serves otherwise calls it once it accepts
/// connections. The variables stay in the environment (changing it in a
/// running process is not thread-safe): a child process started later
/// inherits them, naming a pid not its own, and tells no one.
pub fn notify_ready() -> io::Result<bool> {
    static TOLD: AtomicBool = AtomicBool::new(false);
    let Ok(fd) = std::env::var(READY_FD_VAR) else {
        return Ok(false);
    };
    if !crate::activation::started_by_upgrade() || TOLD.swap(true, Ordering::SeqCst) {
        return Ok(false);
    }
    let fd: i32 = fd
        .trim()
        .parse()
        .ok()
        .filter(|&fd| fd >= crate::activation::LISTEN_FDS_START)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{READY_FD_VAR}={fd:?} is not an inherited descriptor"),
            )
        })?;
    // The descriptor is ours by the same protocol as LISTEN_FDS (the pid
    // variable names this process, and both are cleared above, so nothing
    // adopts it again); `adopt_fd` checks it is open.
    let mut stream = UnixStream::from(crate::sys::adopt_fd(fd)?);
    stream.write_all(b"R")?;
    Ok(true)
}
