//! What every demo server and client shares: addresses, the strategy
//! choice, binding a server of either kind, the `listening on` lines,
//! signals and the graceful close, and client sockets for both transports.

use std::io::{self, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::{
    log_request_error, Address, Builder, Conn, DatagramHandler, Handler, RequestError, Server,
    ShutdownHandle, Strategy, StreamHandler, Transport,
};

/// How long a server lets running handlers finish after SIGINT/SIGTERM
/// before it cuts their connections: 1 s, part of the command-line
/// contract (`docs/demos.md`).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(1);

/// Where servers listen unless told otherwise: loopback, a free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// Parses a command-line address: `HOST:PORT` (host names resolve, e.g.
/// `localhost:7000`), `[V6]:PORT` or `unix:PATH`. The error is one line.
pub fn parse_address(s: &str) -> Result<Address, String> {
    if s == "unix:" {
        return Err("unix: needs a path, e.g. unix:/tmp/chat.sock".into());
    }
    Address::resolve(s).map_err(|e| {
        format!("{e} (expected HOST:PORT, [V6]:PORT or unix:PATH, e.g. 127.0.0.1:7000)")
    })
}

/// The four strategies of the library, by the names the CLI accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum StrategyName {
    /// One request at a time, inline in the server loop.
    Synchronous,
    /// A new thread per connection (or datagram).
    Threading,
    /// A fixed set of worker threads fed by a queue.
    Pool,
    /// A child process per connection (or datagram).
    Forking,
}

impl StrategyName {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [StrategyName; 4] = [
        StrategyName::Synchronous,
        StrategyName::Threading,
        StrategyName::Pool,
        StrategyName::Forking,
    ];

    /// The CLI name, e.g. `threading`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Synchronous => "synchronous",
            StrategyName::Threading => "threading",
            StrategyName::Pool => "pool",
            StrategyName::Forking => "forking",
        }
    }

    /// The strategy with the library's defaults; `workers` sizes a pool
    /// (default: the library's, 16 or twice the cores).
    pub fn build(self, workers: Option<usize>) -> Box<dyn Strategy> {
        match (self, workers) {
            (StrategyName::Pool, Some(n)) => Box::new(socketserver::Pool::new(n.max(2))),
            _ => socketserver::strategy::from_name(self.as_str())
                .expect("every StrategyName is a library strategy name"),
        }
    }
}

impl StrategyName {
    /// Like [`build`](Self::build), tuned: `stack` bytes of stack for every
    /// request thread of `threading` and every worker of `pool` (ignored by
    /// `synchronous` and `forking`, which start no threads; small stacks let
    /// thousands of idle connections fit), and `keep_alive` for
    /// `threading`'s threads (see `socketserver::Threading::keep_alive`).
    /// `demos echo serve --stack-size --keep-alive`.
    pub fn build_with(
        self,
        workers: Option<usize>,
        stack: Option<usize>,
        keep_alive: Option<Duration>,
    ) -> Box<dyn Strategy> {
        match self {
            StrategyName::Threading if stack.is_some() || keep_alive.is_some() => {
                let mut t = socketserver::Threading::new();
                if let Some(keep) = keep_alive {
                    t = t.keep_alive(keep);
                }
                if let Some(n) = stack {
                    t = t.stack_size(n);
                }
                Box::new(t)
            }
            StrategyName::Pool if stack.is_some() => {
                let pool = match workers {
                    Some(w) => socketserver::Pool::new(w.max(2)),
                    None => socketserver::Pool::default(),
                };
                Box::new(pool.stack_size(stack.unwrap_or_default()))
            }
            _ => self.build(workers),
        }
    }
}

impl std::fmt::Display for StrategyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bound server of any transport, strategy and handler, ready to run:
/// what [`serve_all`] and [`Running`] need to know about it.
pub trait Service: Send {
    /// `SCHEME://ADDR` with the real port.
    fn url(&self) -> String;
    /// The bound address.
    fn address(&self) -> Address;
    /// A handle that stops [`run`](Self::run).
    fn shutdown_handle(&self) -> ShutdownHandle;
    /// Serves until shutdown, runs the stop hooks (e.g. the chat room says
    /// goodbye to its members), then closes gracefully: running handlers get
    /// up to `drain` to finish, the rest are cut.
    fn run(self: Box<Self>, drain: Duration) -> io::Result<()>;
}

/// A [`Server`] with hooks to run between `serve_forever` returning and the
/// graceful close.
pub struct Bound<T: Transport, S: Strategy, H> {
    server: Server<T, S, H>,
    on_stop: Vec<Box<dyn FnOnce() + Send>>,
}

impl<T: Transport, S: Strategy, H> Bound<T, S, H> {
    /// Wraps a server.
    pub fn new(server: Server<T, S, H>) -> Self {
        Bound {
            server,
            on_stop: Vec::new(),
        }
    }

    /// Runs `hook` once `serve_forever` has returned, before the drain.
    #[must_use]
    pub fn on_stop(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_stop.push(Box::new(hook));
        self
    }

    /// Boxes it as a [`Service`].
    pub fn boxed(self) -> Box<dyn Service>
    where
        H: Handler<T::Request>,
    {
        Box::new(self)
    }
}

impl<T, S, H> Service for Bound<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    fn url(&self) -> String {
        self.server.url()
    }

    fn address(&self) -> Address {
        self.server.server_address().clone()
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        self.server.shutdown_handle()
    }

    fn run(self: Box<Self>, drain: Duration) -> io::Result<()> {
        let Bound { server, on_stop } = *self;
        let served = server.serve_forever();
        let url = server.url();
        log::info!("{url}: shutting down (drain deadline {drain:?})");
        for hook in on_stop {
            hook();
        }
        // Logs what it did (finished, cut) at info level.
        server.close_gracefully(drain);
        served
    }
}

/// Binds a stream service: TCP for `HOST:PORT`, Unix stream for
/// `unix:PATH`. `on_stop` runs after `serve_forever` returns, before the
/// drain.
pub fn stream_service<S: Strategy, H: StreamHandler>(
    builder: Builder<S>,
    addr: &Address,
    handler: H,
    on_stop: Option<Box<dyn FnOnce() + Send>>,
) -> io::Result<Box<dyn Service>> {
    Ok(match addr {
        Address::Inet(a) => {
            let mut bound = Bound::new(builder.tcp(*a, handler)?);
            bound.on_stop.extend(on_stop);
            bound.boxed()
        }
        Address::Unix(Some(p)) => {
            let mut bound = Bound::new(builder.unix(p, handler)?);
            bound.on_stop.extend(on_stop);
            bound.boxed()
        }
        Address::Unix(None) => return Err(unnamed()),
    })
}

/// Binds a datagram service: UDP for `HOST:PORT`, Unix datagram for
/// `unix:PATH`.
pub fn datagram_service<S: Strategy, H: DatagramHandler>(
    builder: Builder<S>,
    addr: &Address,
    handler: H,
) -> io::Result<Box<dyn Service>> {
    Ok(match addr {
        Address::Inet(a) => Bound::new(builder.udp(*a, handler)?).boxed(),
        Address::Unix(Some(p)) => Bound::new(builder.unixgram(p, handler)?).boxed(),
        Address::Unix(None) => return Err(unnamed()),
    })
}

fn unnamed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "a Unix address needs a path")
}

/// Prints `listening on SCHEME://ADDR` for each service, one line each, and
/// flushes.
pub fn print_listening(out: &mut impl Write, services: &[Box<dyn Service>]) -> io::Result<()> {
    for s in services {
        writeln!(out, "listening on {}", s.url())?;
    }
    out.flush()
}

/// The command-line life of a server process: installs SIGINT/SIGTERM
/// handling, prints every `listening on` line (all of them before any
/// serving starts), serves each service on its own thread (the last one on
/// the calling thread, so a lone forking server stays single-threaded), and
/// returns once all have stopped and closed gracefully. When one stops for
/// any reason, the others are stopped too.
pub fn serve_all(mut services: Vec<Box<dyn Service>>, drain: Duration) -> io::Result<()> {
    let handles: Vec<ShutdownHandle> = services.iter().map(|s| s.shutdown_handle()).collect();
    // Before the `listening on` lines: a script may signal as soon as it has
    // read them.
    for h in &handles {
        h.shutdown_on_signals(&[socketserver::Signal::Int, socketserver::Signal::Term])?;
    }
    print_listening(&mut io::stdout().lock(), &services)?;
    let Some(last) = services.pop() else {
        return Ok(());
    };
    let stop_all = {
        let handles = handles.clone();
        move || handles.iter().for_each(ShutdownHandle::shutdown)
    };
    let mut threads = Vec::new();
    for s in services {
        let stop_all = stop_all.clone();
        let name = format!("serve {}", s.url());
        threads.push(thread::Builder::new().name(name).spawn(move || {
            let r = s.run(drain);
            stop_all();
            r
        })?);
    }
    let mut result = last.run(drain);
    stop_all();
    for t in threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a server thread panicked")));
        result = result.and(r);
    }
    result
}

/// Servers running on background threads in this process (for the showcase
/// and tests). [`stop`](Self::stop) shuts them down with a deadline;
/// dropping does the same.
pub struct Running {
    addresses: Vec<Address>,
    handles: Vec<ShutdownHandle>,
    done: mpsc::Receiver<io::Result<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts each service on its own thread.
    pub fn start(services: Vec<Box<dyn Service>>, drain: Duration) -> io::Result<Running> {
        let (tx, done) = mpsc::channel();
        let mut running = Running {
            addresses: services.iter().map(|s| s.address()).collect(),
            handles: services.iter().map(|s| s.shutdown_handle()).collect(),
            done,
            threads: Vec::new(),
        };
        for s in services {
            let tx = tx.clone();
            let t = thread::Builder::new()
                .name(format!("serve {}", s.url()))
                .spawn(move || {
                    let _ = tx.send(s.run(drain));
                })?;
            running.threads.push(t);
        }
        Ok(running)
    }

    /// The bound address of the `i`-th service.
    pub fn address(&self, i: usize) -> &Address {
        &self.addresses[i]
    }

    /// Shuts every service down and waits until all have returned (at most
    /// `deadline`); returns how long that took.
    pub fn stop(mut self, deadline: Duration) -> io::Result<Duration> {
        self.stop_inner(deadline)
    }

    fn stop_inner(&mut self, deadline: Duration) -> io::Result<Duration> {
        let start = Instant::now();
        self.handles.iter().for_each(ShutdownHandle::shutdown);
        let mut result = Ok(());
        for _ in 0..std::mem::take(&mut self.threads).len() {
            let left = deadline.saturating_sub(start.elapsed());
            match self.done.recv_timeout(left) {
                Ok(r) => result = result.and(r),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("servers did not stop within {deadline:?}"),
                    ))
                }
            }
        }
        result.map(|()| start.elapsed())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = self.stop_inner(Duration::from_secs(5));
        }
    }
}

/// Connects a stream client: TCP for `HOST:PORT` (at most `timeout`), Unix
/// stream for `unix:PATH`. Read and write timeouts are set to `timeout`.
pub fn connect_stream(addr: &Address, timeout: Duration) -> io::Result<Conn> {
    let conn = match addr {
        Address::Inet(a) => Conn::Tcp(TcpStream::connect_timeout(a, timeout)?),
        Address::Unix(Some(p)) => Conn::Unix(UnixStream::connect(p)?),
        Address::Unix(None) => return Err(unnamed()),
    };
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

/// A datagram client connected to one server: UDP, or Unix datagram bound
/// to a temporary path of its own (so that the server can answer), which is
/// removed on drop.
#[derive(Debug)]
pub enum DatagramClient {
    /// A UDP socket on the loopback (or wildcard) address of the server's
    /// family.
    Udp(UdpSocket),
    /// A Unix datagram socket and the path it is bound to.
    Unix(UnixDatagram, PathBuf),
}

impl DatagramClient {
    /// Binds a client socket and connects it to `server`; receive timeout
    /// `timeout`.
    pub fn connect(server: &Address, timeout: Duration) -> io::Result<DatagramClient> {
        let client = match server {
            Address::Inet(a) => {
                let local = match (a.is_ipv4(), a.ip().is_loopback()) {
                    (true, true) => "127.0.0.1:0",
                    (true, false) => "0.0.0.0:0",
                    (false, true) => "[::1]:0",
                    (false, false) => "[::]:0",
                };
                let s = UdpSocket::bind(local)?;
                s.connect(a)?;
                DatagramClient::Udp(s)
            }
            Address::Unix(Some(p)) => {
                static N: AtomicUsize = AtomicUsize::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let mine = std::env::temp_dir()
                    .join(format!("demos-client-{}-{n}.sock", std::process::id()));
                let _ = std::fs::remove_file(&mine);
                let s = UnixDatagram::bind(&mine)?;
                if let Err(e) = s.connect(p) {
                    let _ = std::fs::remove_file(&mine);
                    return Err(e);
                }
                DatagramClient::Unix(s, mine)
            }
            Address::Unix(None) => return Err(unnamed()),
        };
        client.set_read_timeout(Some(timeout))?;
        Ok(client)
    }

    /// Sends one datagram to the server.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DatagramClient::Udp(s) => s.send(buf),
            DatagramClient::Unix(s, _) => s.send(buf),
        }
    }

    /// Receives one datagram from the server (waits at most the timeout).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramClient::Udp(s) => s.recv(buf),
            DatagramClient::Unix(s, _) => s.recv(buf),
        }
    }

    /// Sets the receive timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            DatagramClient::Udp(s) => s.set_read_timeout(t),
            DatagramClient::Unix(s, _) => s.set_read_timeout(t),
        }
    }

    /// A second handle to the same socket (for a reader thread). The
    /// clone does not own the Unix path.
    pub fn try_clone(&self) -> io::Result<DatagramClient> {
        Ok(match self {
            DatagramClient::Udp(s) => DatagramClient::Udp(s.try_clone()?),
            DatagramClient::Unix(s, _) => DatagramClient::Unix(s.try_clone()?, PathBuf::new()),
        })
    }

    /// The client's own address.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            DatagramClient::Unix(_, p) if !p.as_os_str().is_empty() => Some(p),
            _ => None,
        }
    }
}

impl Drop for DatagramClient {
    fn drop(&mut self) {
        if let Some(p) = self.local_path() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `scheme://addr` for a client-side address, as in error messages.
pub fn url(addr: &Address, datagram: bool) -> String {
    match (addr, datagram) {
        (Address::Unix(Some(p)), false) => format!("unix://{}", p.display()),
        (Address::Unix(Some(p)), true) => format!("unixgram://{}", p.display()),
        (a, false) => format!("tcp://{a}"),
        (a, true) => format!("udp://{a}"),
    }
}

/// Reads the `listening on SCHEME://ADDR` line format back: returns the
/// scheme and the address (`tcp://127.0.0.1:4000` gives `("tcp",
/// 127.0.0.1:4000)`; `unix:///tmp/s` gives `("unix", unix:/tmp/s)`).
pub fn parse_listening_line(line: &str) -> Option<(String, Address)> {
    let url = line.trim_end().strip_prefix("listening on ")?;
    let (scheme, rest) = url.split_once("://")?;
    let addr = match scheme {
        "tcp" | "udp" => Address::Inet(rest.parse().ok()?),
        "unix" | "unixgram" if rest.starts_with('/') || !rest.is_empty() => {
            Address::Unix(Some(PathBuf::from(rest)))
        }
        _ => return None,
    };
    Some((scheme.to_owned(), addr))
}

/// Connections still in their authentication handshake, so that a server
/// that stops can close them at once ([`close`](Self::close), an
/// `on_stop` hook of [`stream_service`]) instead of waiting for their
/// handshake deadline: such a connection is not a session yet, and has
/// nothing to finish. Cloning gives another handle to the same set.
#[derive(Debug, Clone, Default)]
pub struct Handshakes {
    inner: std::sync::Arc<parking_lot::Mutex<HandshakeSet>>,
}

#[derive(Debug, Default)]
struct HandshakeSet {
    closing: bool,
    next: u64,
    conns: std::collections::HashMap<u64, Conn>,
}

impl Handshakes {
    /// Records `conn` until the returned guard is dropped (when the
    /// handshake is over, either way); `None` if the server is stopping
    /// (the caller closes the connection).
    pub fn enter(&self, conn: &Conn) -> io::Result<Option<HandshakeGuard>> {
        let conn = conn.try_clone()?;
        let mut set = self.inner.lock();
        if set.closing {
            return Ok(None);
        }
        let id = set.next;
        set.next += 1;
        set.conns.insert(id, conn);
        Ok(Some(HandshakeGuard {
            set: self.clone(),
            id,
        }))
    }

    /// Shuts down every connection still in its handshake (its handshake
    /// fails at once) and refuses new ones.
    pub fn close(&self) {
        let mut set = self.inner.lock();
        set.closing = true;
        for conn in set.conns.values() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A connection in its handshake (see [`Handshakes::enter`]); forgotten on
/// drop.
#[derive(Debug)]
pub struct HandshakeGuard {
    set: Handshakes,
    id: u64,
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.set.inner.lock().conns.remove(&self.id);
    }
}

/// Logs a failed authentication handshake at the level it deserves: a wrong
/// key at warn (someone tried), everything else a client can cause (a
/// timeout, a close, a cut to make room for newer clients) at info, so no
/// client can flood the error log.
pub fn log_auth_failure(what: &str, peer: &Address, e: &io::Error) {
    if e.kind() == io::ErrorKind::PermissionDenied {
        log::warn!("{what}: {peer}: {e}");
    } else {
        log::info!("{what}: {peer}: not authenticated: {e}");
    }
}

/// Logs a failed request the way a server facing the network should:
/// what a client can cause is never an error of the server. The peer's
/// going away is at debug, a timeout at info, bad input (`InvalidData`,
/// `InvalidInput`: a malformed or oversized frame, bad JSON, invalid
/// UTF-8, an oversized datagram) at warn, throttled to one line a second
/// for the whole process with the count of lines not shown, so that no
/// client can flood the log. Anything else (a panic, a local I/O error) is
/// the server's and logged at error, as the library's default does.
pub fn log_client_error(what: &str, peer: &Address, error: &RequestError) {
    let RequestError::Io(e) = error else {
        return log_request_error(peer, error);
    };
    if error.is_disconnect() {
        log::debug!("{what}: {peer}: {e}");
    } else if error.is_timeout() {
        log::info!("{what}: {peer}: timed out: {e}");
    } else if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    ) {
        if let Some(not_shown) = CLIENT_ERRORS.allow(Instant::now()) {
            let more = match not_shown {
                0 => String::new(),
                n => format!(" ({n} more like it in the last second not shown)"),
            };
            log::warn!("{what}: {peer}: bad input from the client: {e}{more}");
        }
    } else {
        log_request_error(peer, error);
    }
}

/// One log line a second at most, counting the ones not shown.
struct Throttle {
    state: parking_lot::Mutex<(Option<Instant>, u64)>,
}

static CLIENT_ERRORS: Throttle = Throttle {
    state: parking_lot::const_mutex((None, 0)),
};

impl Throttle {
    /// `Some(lines not shown since the last one)` if a line may be logged
    /// now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let (last, not_shown) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < Duration::from_secs(1) => {
                *not_shown += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(not_shown))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse() {
        let (s, a) = parse_listening_line("listening on tcp://127.0.0.1:4000\n").unwrap();
        assert_eq!(
            (s.as_str(), a.to_string().as_str()),
            ("tcp", "127.0.0.1:4000")
        );
        let (s, a) = parse_listening_line("listening on udp://[::1]:53").unwrap();
        assert_eq!((s.as_str(), a.as_inet().unwrap().port()), ("udp", 53));
        let (s, a) = parse_listening_line("listening on unixgram:///tmp/x.sock").unwrap();
        assert_eq!(s, "unixgram");
        assert_eq!(a.as_path().unwrap(), Path::new("/tmp/x.sock"));
        assert!(parse_listening_line("listening on ftp://1.2.3.4:5").is_none());
        assert!(parse_listening_line("hello").is_none());
    }

    #[test]
    fn addresses_parse_with_one_line_errors() {
        assert!(parse_address("127.0.0.1:0").is_ok());
        assert!(parse_address("[::1]:0").is_ok());
        assert!(parse_address("unix:/tmp/a.sock").is_ok());
        let e = parse_address("nonsense").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(parse_address("unix:").is_err());
    }
}
