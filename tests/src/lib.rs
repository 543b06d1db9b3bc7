//! Helpers shared by the integration tests: deadlines on every wait, loopback
//! clients with timeouts, a running-server guard, a log capture, and /proc
//! counters (fds, threads, zombies).
//!
//! Every blocking wait in a test goes through one of these, so a bug fails a
//! test after a few seconds instead of hanging the suite.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::{Address, Handler, Server, ShutdownHandle, Strategy, Transport};

pub mod netns;
pub mod serving;
pub mod tls;

pub use serving::Serving;

/// The default deadline for one blocking step of a test.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The bound for "at once" in a test (a stop, an exit, a client served
/// while others hang): generous, because the tests run in debug builds on
/// loaded shared machines. Tests that use it print the real figure; what a
/// test proves comes from order and counts, not from this number.
pub const PROMPT: Duration = Duration::from_secs(5);

/// Whether `python3` can be run here (checked once per test process). When
/// it cannot, prints that `test` is skipped and why, so a test that needs
/// Python starts with `if !python3_available("name") { return; }`.
pub fn python3_available(test: &str) -> bool {
    static FOUND: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(|| {
        match std::process::Command::new("python3")
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("`python3 --version` exited with {s}")),
            Err(e) => Err(format!("python3 cannot be started: {e}")),
        }
    });
    match found {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skipped {test}: {why}");
            false
        }
    }
}

/// Runs `f` on a thread and returns its result, or panics naming `what` if
/// it takes longer than `limit`.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("deadline: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Polls `cond` every 5 ms until it is true; panics naming `what` after
/// `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not true within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP client of `to` from the loopback address `from` (e.g.
/// `127.0.0.2`: a second client address on one machine), with `DEADLINE`
/// on connecting, reading and writing.
pub fn tcp_client_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: std::net::IpAddr = from.parse().expect("a loopback address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("a socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(&to.into(), DEADLINE)
        .unwrap_or_else(|e| panic!("connect {to} from {from}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// A TCP client with 5 s read and write timeouts.
pub fn tcp_client(addr: &Address) -> TcpStream {
    let a = addr.as_inet().expect("an IP address");
    let s = TcpStream::connect_timeout(&a, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {a}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A Unix stream client with 5 s timeouts.
pub fn unix_client(addr: &Address) -> UnixStream {
    let p = addr.as_path().expect("a Unix path");
    let s = UnixStream::connect(p).unwrap_or_else(|e| panic!("connect {}: {e}", p.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A UDP client bound to the loopback of `server`'s family, connected to
/// it, with 5 s timeouts.
pub fn udp_client(server: &Address) -> UdpSocket {
    let a = server.as_inet().expect("an IP address");
    let local: SocketAddr = if a.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()
    .unwrap();
    let s = UdpSocket::bind(local).unwrap();
    s.connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A Unix datagram client bound to its own path in `dir` (so the server can
/// reply), connected to `server`, with 5 s timeouts.
pub fn unixgram_client(server: &Address, dir: &Path, name: &str) -> UnixDatagram {
    let s = UnixDatagram::bind(dir.join(name)).unwrap();
    s.connect(server.as_path().expect("a Unix path")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `msg` on a stream and reads exactly as many bytes back.
pub fn stream_roundtrip(mut s: impl Read + Write, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// An echo stream handler: `req.echo()`.
pub fn echo_stream(req: &mut socketserver::StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// An echo datagram handler: replies with the payload.
pub fn echo_datagram(req: &mut socketserver::DatagramRequest) -> io::Result<()> {
    let data = req.take_data();
    req.reply(&data)
}

/// A server running `serve_forever` on its own thread. Stopping it (or
/// dropping the guard) shuts it down with a deadline.
pub struct Running {
    /// The bound address.
    pub address: Address,
    /// Its shutdown handle.
    pub handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    stats: Box<dyn Fn() -> Option<socketserver::Stats> + Send + Sync>,
}

impl Running {
    /// Starts `server.serve_forever()` on a thread; the server is closed
    /// (dropped) on that thread when the loop returns.
    pub fn start<T, S, H>(server: Server<T, S, H>) -> Running
    where
        T: Transport,
        S: Strategy,
        H: Handler<T::Request>,
    {
        let address = server.server_address().clone();
        let handle = server.shutdown_handle();
        // The thread holds the server; `stats` only looks while it lives.
        let server = std::sync::Arc::new(server);
        let weak = std::sync::Arc::downgrade(&server);
        let thread = thread::Builder::new()
            .name("serve_forever".into())
            .spawn(move || {
                let r = server.serve_forever();
                drop(server);
                r
            })
            .unwrap();
        Running {
            address,
            handle,
            thread: Some(thread),
            stats: Box::new(move || weak.upgrade().map(|s| s.stats())),
        }
    }

    /// The server's [`Stats`](socketserver::Stats), until it is closed.
    pub fn stats(&self) -> Option<socketserver::Stats> {
        (self.stats)()
    }

    /// Requests running now (`Stats::active`; 0 once the server closed).
    pub fn active(&self) -> usize {
        self.stats().map_or(0, |s| s.active)
    }

    /// Shuts down and waits (at most `DEADLINE`) until `serve_forever` has
    /// returned and the server is closed; returns how long that took.
    pub fn stop(mut self) -> Duration {
        self.stop_inner()
    }

    /// Whether `serve_forever` has returned and the server is closed.
    pub fn is_finished(&self) -> bool {
        match &self.thread {
            Some(t) => t.is_finished(),
            None => true,
        }
    }

    /// Waits, without asking for shutdown, until `serve_forever` returns on
    /// its own (e.g. a handler shut the server down) and the server is
    /// closed; panics after `limit`. Returns `serve_forever`'s result.
    pub fn wait(mut self, limit: Duration) -> io::Result<()> {
        let thread = self.thread.take().expect("still running");
        let end = Instant::now() + limit;
        while !thread.is_finished() {
            if Instant::now() >= end {
                self.handle.shutdown();
                panic!(
                    "server at {} did not stop by itself within {limit:?}",
                    self.address
                );
            }
            thread::sleep(Duration::from_micros(200));
        }
        thread.join().expect("serve_forever panicked")
    }

    fn stop_inner(&mut self) -> Duration {
        let Some(thread) = self.thread.take() else {
            return Duration::ZERO;
        };
        let start = Instant::now();
        self.handle.shutdown();
        let end = start + DEADLINE;
        while !thread.is_finished() {
            assert!(
                Instant::now() < end,
                "server at {} did not stop within {DEADLINE:?}",
                self.address
            );
            thread::sleep(Duration::from_micros(200));
        }
        let took = start.elapsed();
        thread
            .join()
            .expect("serve_forever panicked")
            .expect("serve_forever failed");
        took
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.stop_inner();
        } else if self.thread.is_some() {
            self.handle.shutdown();
        }
    }
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it; `tag` ends up in the name.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ss-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Threads of this process whose name starts with `prefix` (names as the
/// kernel keeps them: at most 15 bytes).
pub fn threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim_end().starts_with(prefix))
        })
        .count()
}

/// One process as /proc/PID/stat tells it.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// Its pid.
    pub pid: u32,
    /// Its state (`'Z'`: a zombie).
    pub state: char,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
}

/// Every process of the machine (zombies included), from /proc/*/stat.
pub fn processes() -> Vec<ProcStat> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Format: pid (comm) state ppid pgrp ...; comm may hold spaces and
        // parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let mut number = || fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let (ppid, pgrp) = (number(), number());
        out.push(ProcStat {
            pid,
            state,
            ppid,
            pgrp,
        });
    }
    out
}

/// (pid, state) of every child process of `parent`; state `'Z'` is a
/// zombie.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == parent)
        .map(|p| (p.pid, p.state))
        .collect()
}

/// (pid, state) of every process (zombies included) whose process group is
/// `pgid`.
pub fn group_members(pgid: u32) -> Vec<(u32, char)> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| (p.pid, p.state))
        .collect()
}

/// Prints `listening on URL` for whoever started this process (after the
/// shutdown signals are in place, so that it may signal at once), serves
/// until SIGTERM or SIGINT, then closes the server. For the test servers
/// in src/bin.
pub fn serve_until_signalled<T, S, H>(server: socketserver::Server<T, S, H>) -> io::Result<()>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    announce(&server)?;
    server.serve_forever()?;
    server.server_close();
    Ok(())
}

/// SIGTERM and SIGINT shut `server` down from now on; then `listening on
/// URL` on stdout, for whoever started this process.
fn announce<T, S, H>(server: &socketserver::Server<T, S, H>) -> io::Result<()>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    server
        .shutdown_handle()
        .shutdown_on_signals(&[socketserver::Signal::Term, socketserver::Signal::Int])?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {}", server.url())?;
    out.flush()
}

/// [`serve_until_signalled`], and SIGUSR2 upgrades the server as well
/// (`reload::Upgrade::serve`): a new copy of the program, started with the
/// same arguments, takes the listening sockets over, and this one returns
/// once its connections are done, saying `now served by process PID` on
/// stderr. For the test servers in src/bin started with `--upgrade`.
pub fn serve_upgradable<T, S, H>(server: socketserver::Server<T, S, H>) -> io::Result<()>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    use socketserver::reload::{Served, Upgrade};
    announce(&server)?;
    match Upgrade::new()?.serve(&server)? {
        Served::Stopped => server.server_close(),
        Served::Upgraded { successor, .. } => {
            eprintln!("now served by process {successor}");
        }
    }
    Ok(())
}

/// Log records captured by [`LogCapture`].
static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS
            .lock()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

/// Captures every `log` record of the process (installed once per test
/// binary). Tests look for the messages they caused, by content.
pub struct LogCapture;

impl LogCapture {
    /// Installs the capturing logger (idempotent).
    pub fn install() -> LogCapture {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            log::set_logger(&CaptureLogger).expect("another logger is installed");
            log::set_max_level(log::LevelFilter::Debug);
        });
        LogCapture
    }

    /// Captured records at `level` whose text contains every one of `parts`.
    pub fn find(&self, level: log::Level, parts: &[&str]) -> Vec<String> {
        RECORDS
            .lock()
            .iter()
            .filter(|(l, m)| *l == level && parts.iter().all(|p| m.contains(p)))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Waits (up to `DEADLINE`) until a record matching `level` and `parts`
    /// exists; returns it.
    pub fn wait_for(&self, level: log::Level, parts: &[&str]) -> String {
        let mut found = None;
        wait_until(
            DEADLINE,
            &format!("a {level} log containing {parts:?}"),
            || {
                found = self.find(level, parts).into_iter().next();
                found.is_some()
            },
        );
        found.unwrap()
    }
}

/// Runs each named test function (`fn name(strategy: impl Strategy)`) once
/// per strategy, as `#[test] fn name` in a module named after it:
///
/// ```ignore
/// socketserver_tests::per_strategy! {
///     [an_idle_connection_is_closed, a_slow_client_is_cut]
///     threading: Threading::new();
///     green: Green::new().threads(2);
/// }
/// ```
#[macro_export]
macro_rules! per_strategy {
    ($tests:tt $($module:ident: $make:expr;)*) => {$(
        $crate::per_strategy!(@module $module ($make) $tests);
    )*};
    (@module $module:ident ($make:expr) [$($test:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(#[test] fn $test() { super::$test($make) })*
        }
    };
}

/// The `Uid:`, `Gid:` and `Groups:` lines of /proc/PID/status (real,
/// effective, saved, filesystem ids; supplementary groups).
pub fn process_ids(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// A test server binary (`fork_server`, `prefork_server`) run as a process
/// group of its own: started with a deadline on its `listening on URL`
/// line, both pipes drained on threads (so it never blocks on a full pipe),
/// its stderr collected, and the whole group killed (SIGKILL) when dropped
/// (the server, and a successor of an upgrade that outlived it).
pub struct ServerProcess {
    child: std::process::Child,
    /// The URL of its `listening on URL` line.
    pub url: String,
    stderr: std::sync::Arc<Mutex<String>>,
    stderr_closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ServerProcess {
    /// Starts `exe args` (`RUST_LOG=warn`) and waits for its first line.
    pub fn start(exe: &str, args: &[&str]) -> ServerProcess {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            // A backtrace per panicking child costs ~60 ms (symbolizing).
            .env("RUST_BACKTRACE", "0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_closed = Arc::new(AtomicBool::new(false));
        let pipe = child.stderr.take().unwrap();
        let (text, closed) = (Arc::clone(&stderr), Arc::clone(&stderr_closed));
        thread::spawn(move || {
            for line in io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = text.lock();
                text.push_str(&line);
                text.push('\n');
            }
            closed.store(true, Ordering::SeqCst);
        });
        let (tx, first_line) = mpsc::channel();
        let pipe = child.stdout.take().unwrap();
        thread::spawn(move || {
            let mut lines = io::BufReader::new(pipe).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match first_line.recv_timeout(DEADLINE) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "{exe} did not say where it listens ({other:?}); stderr: {}",
                stderr.lock()
            ),
        };
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        ServerProcess {
            child,
            url,
            stderr,
            stderr_closed,
        }
    }

    /// Its pid (and process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of its `SCHEME://ADDR` URL (`tcp`, `udp`: `IP:PORT`;
    /// `unix`, `unixgram`: a path).
    pub fn address(&self) -> Address {
        let (scheme, rest) = self.url.split_once("://").expect("SCHEME://ADDR");
        match scheme {
            "tcp" | "udp" => Address::Inet(rest.parse().expect("IP:PORT")),
            "unix" | "unixgram" => Address::Unix(Some(PathBuf::from(rest))),
            _ => panic!("unknown scheme in {}", self.url),
        }
    }

    /// The IP address of a `tcp://` or `udp://` URL.
    pub fn inet(&self) -> SocketAddr {
        self.address().as_inet().expect("an IP address")
    }

    /// Its (live, zombie) children.
    pub fn children(&self) -> (usize, usize) {
        let all = children_of(self.pid());
        let zombies = all.iter().filter(|&&(_, s)| s == 'Z').count();
        (all.len() - zombies, zombies)
    }

    /// The pids of its live (not zombie) children.
    pub fn live_children(&self) -> Vec<u32> {
        children_of(self.pid())
            .into_iter()
            .filter(|&(_, s)| s != 'Z')
            .map(|(p, _)| p)
            .collect()
    }

    /// Polls (every 10 ms, at most `DEADLINE`) until `cond` holds for the
    /// number of its live children; panics naming `what` otherwise.
    pub fn wait_children(&self, what: &str, cond: impl Fn(usize) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            let (live, _) = self.children();
            if cond(live) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{what}: {live} children after {DEADLINE:?}; stderr: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: i32) {
        let r = kill(self.pid() as libc::pid_t, signal);
        r.unwrap_or_else(|e| panic!("kill: {e}"));
    }

    /// Sends `signal` to its whole process group (the server and every
    /// process it started).
    pub fn signal_group(&self, signal: i32) {
        let r = kill(-(self.pid() as libc::pid_t), signal);
        r.unwrap_or_else(|e| panic!("kill: {e}"));
    }

    /// Waits at most `limit` for it to exit; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "the server did not exit within {limit:?}; stderr: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether it has exited (it is not waited for).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// SIGTERM, then its exit status (within `limit`) and how long the exit
    /// took after the signal.
    pub fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        let status = self.wait_exit(limit);
        (status, start.elapsed())
    }

    /// What it (and its children) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().clone()
    }

    /// Everything it (and its children) wrote to stderr, once the pipe is
    /// closed: every process holding it has exited (waits at most
    /// `DEADLINE`).
    pub fn final_stderr(&self) -> String {
        wait_until(DEADLINE, "stderr closed", || {
            self.stderr_closed.load(std::sync::atomic::Ordering::SeqCst)
        });
        self.stderr()
    }
}

impl Drop for ServerProcess {
    /// Kills its process group: the server, if it still runs, and whatever
    /// it started that outlives it (a successor after an upgrade).
    fn drop(&mut self) {
        let running = self.child.try_wait().ok().flatten().is_none();
        if running || !group_members(self.pid()).is_empty() {
            let _ = kill(-(self.pid() as libc::pid_t), libc::SIGKILL);
        }
        if running {
            let _ = self.child.wait();
        }
    }
}

/// `kill(target, signal)`: a pid, or a process group as a negative pid.
/// Callers pass the pid of a child not yet waited for, so it (and its
/// group) cannot have been reused.
fn kill(target: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: kill only reads its integer arguments.
    if unsafe { libc::kill(target, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The full name of the calling module's test `name` in whichever test
/// binary runs it (the module path without the crate's name), for
/// `--exact` when a test runs itself again in a child process.
#[macro_export]
macro_rules! test_name {
    ($name:expr $(,)?) => {
        $crate::qualified_test_name(module_path!(), $name)
    };
}

/// `module::name` without the crate's own first segment (see
/// [`test_name!`]).
pub fn qualified_test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}

/// Recurses until the stack runs out (1 KiB a frame): what a handler that
/// overflows its stack runs.
#[inline(never)]
pub fn bottomless(n: u64) -> u64 {
    let frame = std::hint::black_box([n as u8; 1024]);
    if std::hint::black_box(n) == u64::MAX {
        return 0;
    }
    bottomless(n + 1) + u64::from(frame[n as usize % 1024])
}

/// Asserts that `promtool check metrics` accepts `text` without a
/// complaint; skips, saying so, when promtool is not installed (Debian
/// package prometheus).
pub fn promtool_accepts(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool check: skipped: promtool is not installed (Debian package prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
