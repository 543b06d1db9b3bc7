//! [`Server`]: the loop and the lifecycle; [`Builder`]: every option in one
//! place.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::connections::{Limits, Registry};
use crate::handler::Handler;
use crate::request::sealed::Tracked;
use crate::request::{Attachment, ReadTimeouts};
use crate::shutdown::{wake_pair, Stop, WakeReceiver};
use crate::strategy::{deadline_after, Job, Strategy, Synchronous};
use crate::sys;
use crate::transport::{Next, SocketOptions, Tcp, Transport, Udp, Unix, Unixgram};
use crate::{
    Address, DatagramHandler, DrainReport, LimitPolicy, Peer, RequestError, ShutdownHandle, Stats,
    StreamHandler,
};

/// Most requests taken off the socket per wake-up before the loop looks at
/// its wake-up fd again.
const BATCH: usize = 64;

/// Longest time one batch may take before the loop looks at its wake-up fd
/// again. A shutdown asked in this process also sets a flag the batch checks
/// after every request, but one that arrives only as a byte on the wake-up
/// socket (a signal through `shutdown_on_signals`, or the handle used from a
/// forked child) is seen at the next `poll`. Without this bound a batch of 64
/// slow starts (`Forking`: one `fork` each, ~0.2 ms) delayed such a shutdown
/// by up to 64 of them: `demos compare` measured a median of 7.8 ms and a p99
/// of 16.5 ms for a busy `Forking` server. Reading the clock costs ~20 ns per
/// request (vDSO), nothing next to an accept or a `recvfrom`.
const BATCH_TIME: Duration = Duration::from_millis(1);

/// A server: a [`Transport`] (where requests come from), a [`Strategy`]
/// (how each runs) and a handler `H` (what it does). Python: `BaseServer`.
///
/// Use the aliases (`TcpServer`, `ThreadingTcpServer`, ...) and their
/// `bind`, or [`Server::builder`] for options.
///
/// ```
/// use socketserver::{StreamRequest, ThreadingTcpServer};
/// use std::io::{Read, Write};
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// let addr = server.local_addr().unwrap();
/// let stop = server.shutdown_handle();
/// let running = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// let mut reply = [0; 5];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"hello");
/// // Closing (when the thread drops the server) closes our idle
/// // connection at once: the handler waits for its next bytes.
///
/// stop.shutdown();
/// running.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<T: Transport, S: Strategy, H> {
    core: Arc<Core<T, S, H>>,
}

/// What a [`Server`] is made of, behind an `Arc` so that a strategy may
/// run the server loop on a thread of its own ([`ServerLoop::detach`]).
///
/// [`ServerLoop::detach`]: crate::strategy::ServerLoop::detach
struct Core<T: Transport, S: Strategy, H> {
    transport: T,
    strategy: S,
    handler: Arc<H>,
    shutdown: ShutdownHandle,
    wake: WakeReceiver,
    timeout: Option<Duration>,
    service_interval: Option<Duration>,
    timeouts: Timeouts,
    close_timeout: Duration,
    busy_message: Option<Arc<[u8]>>,
    registry: Arc<Registry>,
    running: AtomicBool,
    /// A graceful close ran (or runs): the server serves no more.
    closed: AtomicBool,
    /// Set when a graceful close gave up on requests that would not stop.
    skip_strategy_close: AtomicBool,
    /// Oversized datagrams since the last report to `handle_error`, and when
    /// that was.
    oversized_reported: Mutex<Option<Instant>>,
    /// The PROXY protocol, when on.
    proxy: Option<Arc<crate::proxy::Gate>>,
    /// TLS, when on.
    tls: Option<Arc<crate::tls_session::Gate>>,
}

/// The timeouts of every accepted connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    read: ReadTimeouts,
    write: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            read: ReadTimeouts {
                read: Some(DEFAULT_READ_TIMEOUT),
                message: Some(DEFAULT_MESSAGE_TIMEOUT),
                min_rate: Some(DEFAULT_MIN_DATA_RATE),
                write: Some(DEFAULT_WRITE_TIMEOUT),
            },
            write: Some(DEFAULT_WRITE_TIMEOUT),
        }
    }
}

/// Default read timeout of a connection (one read's longest wait, which is
/// how long an idle client may stay): 10 minutes.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Default write timeout of a connection (one write's longest wait): 60 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time from a message's first byte to its end: 20 s (Apache's
/// `mod_reqtimeout` starts header reads at 20 s).
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default minimum data rate of a message: each 500 bytes received extend
/// its deadline by a second (as `mod_reqtimeout`'s `MinRate=500`).
pub const DEFAULT_MIN_DATA_RATE: u32 = 500;
/// Default longest time closing a server waits for busy requests: 5 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl<T: Transport, S: Strategy, H> std::fmt::Debug for Server<T, S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.url())
            .field("strategy", &self.core.strategy.name())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`]: pick a strategy and options, then bind with
/// [`tcp`](Self::tcp), [`udp`](Self::udp), [`unix`](Self::unix),
/// [`unixgram`](Self::unixgram), or [`build`](Self::build) on a transport
/// made elsewhere.
///
/// ```
/// use socketserver::{Pool, Server, StreamRequest};
///
/// let server = Server::builder()
///     .strategy(Pool::new(8))
///     .reuse_port(true)
///     .tcp("[::1]:0", |r: &mut StreamRequest| r.echo().map(drop));
/// # drop(server);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Builder does nothing until tcp, udp, unix, unixgram or build makes the server"]
pub struct Builder<S = Synchronous> {
    strategy: S,
    options: SocketOptions,
    timeout: Option<Duration>,
    service_interval: Option<Duration>,
    timeouts: Timeouts,
    close_timeout: Duration,
    busy_message: Option<Arc<[u8]>>,
    limits: Limits,
    proxy: crate::proxy::Config,
    tls: crate::tls_session::Config,
}

impl Default for Builder<Synchronous> {
    fn default() -> Self {
        Builder {
            strategy: Synchronous,
            options: SocketOptions::default(),
            timeout: None,
            service_interval: None,
            timeouts: Timeouts::default(),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            busy_message: None,
            limits: Limits::default(),
            proxy: crate::proxy::Config::default(),
            tls: crate::tls_session::Config::default(),
        }
    }
}

impl Builder<Synchronous> {
    /// Defaults: [`Synchronous`], `SO_REUSEADDR` on, backlog `SOMAXCONN`,
    /// `TCP_NODELAY` on, datagrams up to 65,507 bytes, `handle_request`
    /// waits forever; connections: read timeout
    /// [`DEFAULT_READ_TIMEOUT`] (10 min), write timeout
    /// [`DEFAULT_WRITE_TIMEOUT`] (60 s), message deadline
    /// [`DEFAULT_MESSAGE_TIMEOUT`] (20 s) at a minimum of
    /// [`DEFAULT_MIN_DATA_RATE`] (500 bytes/s); closing waits at most
    /// [`DEFAULT_CLOSE_TIMEOUT`] (5 s) for busy requests; no connection
    /// limits.
    pub fn new() -> Self {
        Builder::default()
    }
}

impl<S: Strategy> Builder<S> {
    /// The concurrency strategy.
    pub fn strategy<S2: Strategy>(self, strategy: S2) -> Builder<S2> {
        Builder {
            strategy,
            options: self.options,
            timeout: self.timeout,
            service_interval: self.service_interval,
            timeouts: self.timeouts,
            close_timeout: self.close_timeout,
            busy_message: self.busy_message,
            limits: self.limits,
            proxy: self.proxy,
            tls: self.tls,
        }
    }

    /// `SO_REUSEADDR` (default on). Python: `allow_reuse_address`.
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.options.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT` (default off). Python: `allow_reuse_port`.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.options.reuse_port = on;
        self
    }

    /// Listen backlog (default `SOMAXCONN`). Python: `request_queue_size`.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.options.backlog = backlog;
        self
    }

    /// `TCP_NODELAY` on accepted connections (default on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.options.nodelay = on;
        self
    }

    /// `IPV6_V6ONLY` for IPv6 addresses (default: the OS's, dual stack on
    /// Linux).
    pub fn only_v6(mut self, on: bool) -> Self {
        self.options.only_v6 = Some(on);
        self
    }

    /// Largest datagram served (default 65,507). Larger ones are dropped and
    /// reported to `handle_error`, never truncated.
    pub fn max_datagram_size(mut self, bytes: usize) -> Self {
        self.options.max_datagram_size = bytes.max(1);
        self
    }

    /// How long `handle_request` waits (default: forever). Python: `timeout`.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Wake the loop at least this often to run `service_actions` (default:
    /// only after events; the loop never polls on a timer unless asked).
    pub fn service_interval(mut self, every: Option<Duration>) -> Self {
        self.service_interval = every;
        self
    }

    /// Read timeout of a connection: the longest **one read** waits for
    /// data; a read that waits longer fails with `TimedOut` (`read timed out
    /// after ... (read_timeout)`), which ends the request. This is how long
    /// an idle client may stay connected (default
    /// [`DEFAULT_READ_TIMEOUT`], 10 minutes; `None`: wait forever). It is a
    /// per-operation timer, reset by every byte: it does not stop a client
    /// that sends one byte now and then. That is what
    /// [`message_timeout`](Self::message_timeout) is for.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.read.read = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Write timeout of a connection: the longest one write waits for room
    /// in the socket buffer, i.e. for a client that does not read (default
    /// [`DEFAULT_WRITE_TIMEOUT`], 60 s; `None`: wait forever). A
    /// per-operation timer, like the read timeout.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.write = timeout.filter(|t| !t.is_zero());
        self.timeouts.read.write = self.timeouts.write;
        self
    }

    /// The slowloris defence: once the first byte of a message is in, the
    /// whole message must arrive within this time, extended by a second for
    /// every [`min_data_rate`](Self::min_data_rate) bytes received (default
    /// [`DEFAULT_MESSAGE_TIMEOUT`], 20 s; `None`: no deadline). Applies to
    /// message-level reads: [`StreamRequest::read_message`] and what uses
    /// it (`read_line`, `lines`, `read_until`, `echo`, a `framing` read
    /// wrapped in `read_message`); a
    /// client past the deadline gets its request ended with `TimedOut`.
    /// Modelled on Apache's `mod_reqtimeout` and nginx's
    /// `client_header_timeout`.
    ///
    /// [`StreamRequest::read_message`]: crate::StreamRequest::read_message
    ///
    /// ```
    /// use socketserver::{Server, StreamRequest, Threading};
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new())
    ///     .message_timeout(Some(Duration::from_secs(5)))
    ///     .min_data_rate(Some(1000))
    ///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn message_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.read.message = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Bytes per second that extend a message's deadline by one second
    /// (default [`DEFAULT_MIN_DATA_RATE`], 500; `None` or 0: no extension,
    /// a message must arrive within `message_timeout` whatever its size).
    pub fn min_data_rate(mut self, bytes_per_second: Option<u32>) -> Self {
        self.timeouts.read.min_rate = bytes_per_second.filter(|&r| r > 0);
        self
    }

    /// The longest closing the server ([`Server::server_close`], `Drop`)
    /// waits for busy requests before cutting them (default
    /// [`DEFAULT_CLOSE_TIMEOUT`], 5 s). Idle connections are closed at once
    /// whatever this is. See [`Server::close_gracefully`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Bytes sent to a client refused by `max_connections` or `max_per_ip`
    /// before its connection is closed (default: nothing, a bare close),
    /// e.g. `"ERR server busy, try later\n"`. Sent without waiting: a
    /// message larger than the socket buffer is cut short.
    pub fn busy_message(mut self, message: impl Into<Vec<u8>>) -> Self {
        let message: Vec<u8> = message.into();
        self.busy_message = (!message.is_empty()).then(|| Arc::from(message));
        self
    }

    /// Most stream connections open at once (default: no limit); what
    /// happens at the limit is [`limit_policy`](Self::limit_policy).
    /// Counted in this process, so it does not apply to `Forking` (use
    /// `Forking::max_children`).
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.limits.max_connections = max;
        self
    }

    /// Most stream connections open at once from one IP address (default:
    /// no limit). Over it, a connection is refused (closed at once).
    pub fn max_per_ip(mut self, max: Option<usize>) -> Self {
        self.limits.max_per_ip = max;
        self
    }

    /// Longest a stream connection may stay open, however busy (default: no
    /// limit). Older connections are shut down (the handler's next read sees
    /// end-of-file, its next write fails), once, and logged once. While this
    /// is set, the loop wakes when the oldest connection not yet cut reaches
    /// the lifetime (at most every 10 ms).
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.limits.max_lifetime = lifetime;
        self
    }

    /// Refuse or wait at `max_connections` (default: refuse).
    pub fn limit_policy(mut self, policy: LimitPolicy) -> Self {
        self.limits.policy = policy;
        self
    }

    /// Takes the client's address from a PROXY protocol header (versions 1
    /// and 2, as `HAProxy`'s `send-proxy` and `send-proxy-v2` send) on stream
    /// connections from trusted proxies (default
    /// [`ProxyProtocol::Off`](crate::proxy::ProxyProtocol::Off)). The header
    /// is read in the request's thread before `verify_request`; then
    /// [`StreamRequest::peer_addr`](crate::StreamRequest::peer_addr),
    /// `verify_request`, `max_per_ip` (counted once the header is read;
    /// `max_connections` still applies at accept) and the logs see the
    /// client. See [`proxy`](crate::proxy) for the details.
    ///
    /// ```
    /// use socketserver::proxy::ProxyProtocol;
    /// use socketserver::{Server, StreamRequest, Threading};
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new())
    ///     .proxy_protocol(ProxyProtocol::Required {
    ///         trusted: vec!["10.0.0.0/8".parse()?, "127.0.0.1".parse()?],
    ///     })
    ///     .max_per_ip(Some(20)) // per client, not per proxy
    ///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn proxy_protocol(mut self, mode: crate::proxy::ProxyProtocol) -> Self {
        self.proxy.mode = mode;
        self
    }

    /// The longest the whole PROXY header may take to arrive (default
    /// [`DEFAULT_HEADER_TIMEOUT`](crate::proxy::DEFAULT_HEADER_TIMEOUT),
    /// 3 s), however it is split.
    pub fn proxy_header_timeout(mut self, timeout: Duration) -> Self {
        self.proxy.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// TLS on every connection of a TCP or Unix stream server (feature
    /// `tls`; datagram servers ignore it). The handler is unchanged: it
    /// reads and writes plaintext. The handshake runs in the request's
    /// thread after `verify_request` (and after a PROXY header), within
    /// [`tls_handshake_timeout`](Self::tls_handshake_timeout); a failed one
    /// is logged at `info`, counted as failed and never reaches the
    /// handler. See [`tls`](crate::tls), and
    /// [`tls::server_config`](crate::tls::server_config) to load PEM files.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<crate::tls::ServerConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// The longest a whole TLS handshake may take (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::tls::DEFAULT_HANDSHAKE_TIMEOUT),
    /// 10 s), however the client splits it.
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tls.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The socket options collected so far.
    #[must_use]
    pub fn socket_options(&self) -> &SocketOptions {
        &self.options
    }

    /// A TCP server on the first of `addr` that binds.
    pub fn tcp<H: StreamHandler>(
        self,
        addr: impl ToSocketAddrs,
        handler: H,
    ) -> io::Result<Server<Tcp, S, H>> {
        let transport = Tcp::bind(addr, &self.options)?;
        self.build(transport, handler)
    }

    /// A UDP server on the first of `addr` that binds.
    pub fn udp<H: DatagramHandler>(
        self,
        addr: impl ToSocketAddrs,
        handler: H,
    ) -> io::Result<Server<Udp, S, H>> {
        let transport = Udp::bind(addr, &self.options)?;
        self.build(transport, handler)
    }

    /// A Unix stream server at `path` (removed again when the server closes).
    pub fn unix<H: StreamHandler>(
        self,
        path: impl AsRef<Path>,
        handler: H,
    ) -> io::Result<Server<Unix, S, H>> {
        let transport = Unix::bind(path, &self.options)?;
        self.build(transport, handler)
    }

    /// A Unix datagram server at `path` (removed again when the server
    /// closes).
    pub fn unixgram<H: DatagramHandler>(
        self,
        path: impl AsRef<Path>,
        handler: H,
    ) -> io::Result<Server<Unixgram, S, H>> {
        let transport = Unixgram::bind(path, &self.options)?;
        self.build(transport, handler)
    }

    /// A server on a transport made elsewhere, e.g. [`Tcp::from_std`] for an
    /// inherited listener. Builds only: call `serve_forever` to serve.
    ///
    /// ```
    /// use socketserver::transport::Tcp;
    /// use socketserver::{Server, StreamRequest};
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let server = Server::builder().build(Tcp::from_std(listener)?, |r: &mut StreamRequest| r.echo().map(drop))?;
    /// assert_ne!(server.port(), Some(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build<T, H>(self, transport: T, handler: H) -> io::Result<Server<T, S, H>>
    where
        T: Transport,
        H: Handler<T::Request>,
    {
        let (shutdown, wake) = wake_pair()?;
        let registry = Arc::new(Registry::new(self.limits, shutdown.clone()));
        crate::handler::route_panics_to_log();
        let proxy = (self.proxy.mode != crate::proxy::ProxyProtocol::Off).then(|| {
            Arc::new(crate::proxy::Gate {
                config: self.proxy,
                busy_message: self.busy_message.clone(),
            })
        });
        let core = Core {
            timeouts: self.timeouts,
            close_timeout: self.close_timeout,
            busy_message: self.busy_message,
            registry,
            transport,
            strategy: self.strategy,
            handler: Arc::new(handler),
            shutdown,
            wake,
            timeout: self.timeout,
            service_interval: self.service_interval,
            running: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            skip_strategy_close: AtomicBool::new(false),
            oversized_reported: Mutex::new(None),
            proxy,
            tls: self.tls.gate(),
        };
        Ok(Server {
            core: Arc::new(core),
        })
    }
}

impl Server<Tcp, Synchronous, ()> {
    /// A [`Builder`] with the defaults.
    pub fn builder() -> Builder<Synchronous> {
        Builder::new()
    }
}

impl<S: Strategy + Default, H: StreamHandler> Server<Tcp, S, H> {
    /// Binds a TCP server with the strategy's defaults. Python:
    /// `TCPServer(address, Handler)`.
    pub fn bind(addr: impl ToSocketAddrs, handler: H) -> io::Result<Self> {
        Builder::new().strategy(S::default()).tcp(addr, handler)
    }
}

impl<S: Strategy + Default, H: DatagramHandler> Server<Udp, S, H> {
    /// Binds a UDP server with the strategy's defaults. Python:
    /// `UDPServer(address, Handler)`.
    pub fn bind(addr: impl ToSocketAddrs, handler: H) -> io::Result<Self> {
        Builder::new().strategy(S::default()).udp(addr, handler)
    }
}

impl<S: Strategy + Default, H: StreamHandler> Server<Unix, S, H> {
    /// Binds a Unix stream server at `path`. Python:
    /// `UnixStreamServer(path, Handler)`.
    pub fn bind(path: impl AsRef<Path>, handler: H) -> io::Result<Self> {
        Builder::new().strategy(S::default()).unix(path, handler)
    }
}

impl<S: Strategy + Default, H: DatagramHandler> Server<Unixgram, S, H> {
    /// Binds a Unix datagram server at `path`. Python:
    /// `UnixDatagramServer(path, Handler)`.
    pub fn bind(path: impl AsRef<Path>, handler: H) -> io::Result<Self> {
        Builder::new()
            .strategy(S::default())
            .unixgram(path, handler)
    }
}

/// The server as [`Strategy::run`] sees it.
struct ThisLoop<T: Transport, S: Strategy, H>(Arc<Core<T, S, H>>);

impl<T, S, H> crate::strategy::ServerLoop for ThisLoop<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    fn serve(&self) -> io::Result<()> {
        self.0.serve_loop()
    }

    fn serve_in_child(&self) -> io::Result<()> {
        self.0.serve_in_child()
    }

    fn wait(
        &self,
        also: Option<std::os::fd::BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let server = &*self.0;
        if server.shutdown.is_shutdown_requested() {
            return Ok(true);
        }
        let ready = sys::poll_read(also, server.wake.raw_fd(), timeout)?;
        Ok((ready.wake && server.wake.drain().shutdown) || server.shutdown.is_shutdown_requested())
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        self.0.shutdown.clone()
    }

    fn close_timeout(&self) -> Duration {
        self.0.close_timeout
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn detach(&self) -> Option<Arc<dyn crate::strategy::ServerLoop + Send + Sync>> {
        Some(Arc::new(ThisLoop(Arc::clone(&self.0))))
    }
}

/// The graceful close's pause between looks at the loop: in a green
/// coroutine (a handler closing a server) only that coroutine waits.
fn nap() {
    crate::green::sleep(Duration::from_millis(1));
}

/// The server loop's wait for its socket or its wake-up socket (see
/// [`sys::poll_read`]); a coroutine's wait in its reactor when `Green` runs
/// the loop on one of its workers.
fn wait_ready(
    socket: Option<std::os::fd::BorrowedFd<'_>>,
    wake: std::os::fd::RawFd,
    timeout: Option<Duration>,
) -> io::Result<sys::Ready> {
    if crate::green::is_green() {
        return crate::green::poll_read(socket, wake, timeout);
    }
    sys::poll_read(socket, wake, timeout)
}

/// Exponential backoff after accept errors that a retry cannot fix at once
/// (out of file descriptors or buffers): 5 ms doubling to 1 s.
#[derive(Debug, Default)]
struct Backoff {
    delay: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn fail(&mut self, what: &str, err: &io::Error) {
        let delay = self.delay.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        // Logged once per step, so at most about once a second at the cap.
        log::warn!(
            "{what}: {err}; pausing accepts for {} ms",
            delay.as_millis()
        );
        self.delay = Some(delay);
        self.until = deadline_after(delay);
    }

    fn succeed(&mut self) {
        self.delay = None;
        self.until = None;
    }

    /// Time left to pause, if pausing.
    fn remaining(&mut self) -> Option<Duration> {
        let until = self.until?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.until = None;
            None
        } else {
            Some(left)
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

fn min_timeout(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<T: Transport, S: Strategy, H> Server<T, S, H> {
    /// The address the server is bound to, with the real port when bound to
    /// port 0. Python: `server_address`.
    pub fn server_address(&self) -> &Address {
        self.core.transport.address()
    }

    /// The IP address and port the server is bound to (the real port when
    /// bound to port 0); `None` for Unix sockets.
    ///
    /// ```
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// let server = TcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// let addr = server.local_addr().unwrap();
    /// assert_eq!(addr.ip().to_string(), "127.0.0.1");
    /// assert_eq!(server.port(), Some(addr.port()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.core.transport.address().as_inet()
    }

    /// The port the server is bound to; `None` for Unix sockets.
    pub fn port(&self) -> Option<u16> {
        self.local_addr().map(|a| a.port())
    }

    /// `SCHEME://ADDR`, e.g. `tcp://127.0.0.1:8000`, `unix:///tmp/s.sock`.
    pub fn url(&self) -> String {
        self.core.url()
    }

    /// A handle that stops `serve_forever` from any thread, or from inside a
    /// handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.core.shutdown.clone()
    }

    /// Asks `serve_forever` to return; does not wait (see
    /// [`ShutdownHandle::shutdown`]). Python: `shutdown()`.
    pub fn shutdown(&self) {
        self.core.shutdown.shutdown()
    }

    /// The handler (and the state it shares between requests).
    pub fn handler(&self) -> &H {
        &self.core.handler
    }

    /// The strategy.
    pub fn strategy(&self) -> &S {
        &self.core.strategy
    }

    /// The transport (the listening socket).
    pub fn transport(&self) -> &T {
        &self.core.transport
    }

    /// Counters: open connections, running requests, accepted, refused,
    /// completed, failed. Under `PreFork`, the parent's `accepted` counts
    /// the requests its children took (the other counters are each
    /// child's own).
    pub fn stats(&self) -> Stats {
        let mut stats = self.core.registry.stats();
        stats.active = self.running_requests();
        stats.accepted += self.core.strategy.accepted_elsewhere();
        stats.green_blocked_ms = self.core.strategy.blocked_ms();
        stats
    }

    /// Requests running now: the strategy's count, or the requests running
    /// inline in the loop (`Synchronous`).
    fn running_requests(&self) -> usize {
        self.core
            .strategy
            .active()
            .max(self.core.registry.running())
    }

    /// Stops serving and closes gracefully, the end of a server for SIGTERM
    /// in production; callable from any thread, while `serve_forever` runs
    /// on another (it is asked to return) or after it returned.
    ///
    /// 1. New clients are refused from now on (the listening socket is
    ///    closed to them; a Unix socket file stays until the server drops).
    /// 2. Connections **idle** at a message boundary (a handler waiting in
    ///    [`read_message`](crate::StreamRequest::read_message), `read_line`,
    ///    `lines`, `echo`, or a `framing` read wrapped in `read_message`, with
    ///    nothing buffered) are
    ///    closed at once: their read returns end-of-file and the handler
    ///    finishes as if the client had left. One that reaches a boundary
    ///    later closes there. `Forking` children get SIGTERM, which does the
    ///    same inside them.
    /// 3. Busy requests get until `deadline` to finish on their own;
    ///    handlers can watch
    ///    [`ShutdownHandle::is_shutdown_requested`] to finish early.
    /// 4. At the deadline what is left is cut: connections are shut down in
    ///    both directions (a blocked read returns end-of-file, a blocked
    ///    write fails), `Forking` children get SIGKILL; a grace period (a
    ///    tenth of the deadline, at least 50 ms) lets them return. Requests
    ///    still running then are abandoned (their threads finish on their
    ///    own or die with the process) and counted in the report.
    ///
    /// The server serves no more afterwards; dropping it releases the rest.
    /// Closing without calling this ([`server_close`](Self::server_close),
    /// `Drop`) does the same with the builder's
    /// [`close_timeout`](Builder::close_timeout).
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// use std::io::Write;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let server = Arc::new(ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| {
    ///     r.echo().map(drop)
    /// })?);
    /// let serving = Arc::clone(&server);
    /// let thread = std::thread::spawn(move || serving.serve_forever());
    ///
    /// let mut idle_client = std::net::TcpStream::connect(server.local_addr().unwrap())?;
    /// idle_client.write_all(b"hi")?;
    ///
    /// // SIGTERM arrives: the idle client does not hold the close up.
    /// let report = server.close_gracefully(Duration::from_secs(5));
    /// thread.join().unwrap()?;
    /// assert_eq!(report.cut, 0);
    /// assert!(report.elapsed < Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close_gracefully(&self, deadline: Duration) -> DrainReport {
        self.drain_and_close(deadline, true)
    }

    fn drain_and_close(&self, deadline: Duration, wait: bool) -> DrainReport {
        let start = Instant::now();
        let end = deadline_after(deadline);
        let left = || end.map(|e| e.saturating_duration_since(Instant::now()));
        if self.core.closed.swap(true, Ordering::SeqCst) {
            return DrainReport::default();
        }
        self.core.shutdown.shutdown();
        self.core.transport.stop_listening();
        let mut report = DrainReport {
            running: self.running_requests(),
            ..DrainReport::default()
        };
        if !wait {
            // Python's daemon threads: neither waited for nor disturbed.
            report.elapsed = start.elapsed();
            return report;
        }
        self.core.registry.begin_drain();
        self.core.strategy.begin_drain();
        // The loop returns at once, unless a request runs inline in it
        // (`Synchronous`): that one ends at its next message boundary.
        while self.core.running.load(Ordering::SeqCst) && left() != Some(Duration::ZERO) {
            nap();
        }
        let idle = !self.core.running.load(Ordering::SeqCst)
            && self
                .core
                .strategy
                .wait_idle(left().unwrap_or(Duration::MAX));
        if !idle {
            let still = self.running_requests();
            report.cut = still;
            self.core.registry.cut_all();
            self.core.strategy.terminate();
            let grace = (deadline / 10).clamp(Duration::from_millis(50), Duration::from_secs(5));
            let grace_end = deadline_after(grace);
            while self.core.running.load(Ordering::SeqCst)
                && grace_end.is_some_and(|g| Instant::now() < g)
            {
                nap();
            }
            let rest = grace_end.map_or(Duration::ZERO, |g| {
                g.saturating_duration_since(Instant::now())
            });
            if self.core.running.load(Ordering::SeqCst) || !self.core.strategy.wait_idle(rest) {
                report.abandoned = self.running_requests().max(1);
                log::warn!(
                    "{}: {} requests still running {} ms after being cut; not waiting for them",
                    self.url(),
                    report.abandoned,
                    start.elapsed().as_millis()
                );
                self.core.skip_strategy_close.store(true, Ordering::SeqCst);
            }
        }
        report.finished = report.running.saturating_sub(report.cut);
        report.idle_closed = self.core.registry.idle_closed();
        report.elapsed = start.elapsed();
        log::info!("{}: closed gracefully: {report:?}", self.url());
        report
    }
}

impl<T, S, H> Server<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    /// Serves requests until shutdown is asked. Python: `serve_forever()`.
    ///
    /// The loop sleeps in `poll(2)` on the socket and the shutdown fd
    /// together, so shutdown takes effect at once and an idle server uses no
    /// CPU. Accept errors never end the loop: interrupted or aborted
    /// connections are retried at once; running out of file descriptors or
    /// buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM) is logged and accepting
    /// pauses 5 ms, doubling up to 1 s, while running requests go on.
    ///
    /// Returns an error only if `poll` itself fails or the loop is already
    /// running on another thread. On a server already closed by
    /// [`close_gracefully`](Self::close_gracefully) it returns `Ok` at once.
    pub fn serve_forever(&self) -> io::Result<()> {
        if self.core.closed.load(Ordering::SeqCst) {
            // Closed before this thread got to serve (a close right after
            // spawning the serving thread): nothing to serve, not an error.
            log::debug!(
                "{}: serve_forever on a closed server returns at once",
                self.url()
            );
            return Ok(());
        }
        if self.core.running.swap(true, Ordering::SeqCst) {
            return Err(io::Error::other(
                "serve_forever is already running for this server",
            ));
        }
        // A request left from an earlier run is forgotten; one made before
        // this run still has its byte pending and ends the loop at once. The
        // flag stays set after the loop returns, so that handlers still
        // running (and a graceful close) can see it.
        self.core.shutdown.clear();
        let result = self.core.strategy.run(&ThisLoop(Arc::clone(&self.core)));
        self.core.shutdown.shutdown_flag_only();
        self.core.running.store(false, Ordering::SeqCst);
        result
    }

    /// Waits for one request (at most the builder's `timeout`) and serves
    /// it. Returns `Ok(true)` when a request was taken, `Ok(false)` when the
    /// timeout passed (after calling `handle_timeout`) or a shutdown is
    /// pending. Python: `handle_request()`.
    pub fn handle_request(&self) -> io::Result<bool> {
        // A timeout too large to represent waits forever.
        let deadline = self.core.timeout.and_then(deadline_after);
        let mut buf = vec![0u8; self.core.transport.buffer_size()];
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero()) {
                self.core.handler.timed_out();
                return Ok(false);
            }
            let ready = sys::poll_read(
                Some(self.core.transport.fd()),
                self.core.wake.raw_fd(),
                remaining,
            )?;
            if ready.wake && self.core.wake.drain().shutdown {
                // Leave the request for serve_forever, should it run next.
                self.core.shutdown.shutdown();
                return Ok(false);
            }
            if !ready.socket {
                continue;
            }
            match self.core.transport.next(&mut buf, &self.core.shutdown) {
                Ok(Next::Request(req)) => {
                    self.core.process(req);
                    self.core.strategy.service();
                    return Ok(true);
                }
                Ok(Next::Empty) => {}
                Ok(Next::Rejected(peer, err)) => self.core.rejected(&peer, err),
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(crate::Error::wrap("accept", self.url(), e)),
            }
        }
    }

    /// Closes the server gracefully with the builder's
    /// [`close_timeout`](Builder::close_timeout) (see
    /// [`close_gracefully`](Self::close_gracefully)): idle connections close
    /// at once, busy requests get up to the timeout (unless the strategy
    /// does not block on close, e.g. `Threading` with `daemon_threads`),
    /// then the socket closes and a Unix socket file is removed. Dropping
    /// the server does the same. Python: `server_close()`.
    pub fn server_close(self) {
        drop(self)
    }
}

impl<T: Transport, S: Strategy, H> Core<T, S, H> {
    /// `SCHEME://ADDR`, for logs.
    fn url(&self) -> String {
        match self.transport.address() {
            Address::Unix(Some(p)) => format!("{}://{}", self.transport.scheme(), p.display()),
            a => format!("{}://{a}", self.transport.scheme()),
        }
    }
}

impl<T, S, H> Core<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    /// In a forked child that serves (`PreFork`): the loop with the child's
    /// SIGTERM as its stop, then this process's own graceful close (the
    /// shared listening socket stays open, a Unix socket file stays).
    fn serve_in_child(&self) -> io::Result<()> {
        sys::child_stop_onto(self.wake.raw_fd())?;
        let result = self.serve_loop();
        self.shutdown.shutdown_flag_only();
        self.registry.begin_drain();
        self.strategy.begin_drain();
        if !self.strategy.wait_idle(self.close_timeout) {
            self.registry.cut_all();
            self.strategy.terminate();
            self.strategy.wait_idle(Duration::from_millis(100));
        }
        result
    }

    fn serve_loop(&self) -> io::Result<()> {
        let mut buf = vec![0u8; self.transport.buffer_size()];
        let mut backoff = Backoff::default();
        loop {
            // Asked to stop (the flag is set before the byte is written),
            // or a request running inline took the byte and left the flag
            // (see `Stop`). The byte, if still there, belongs to this run:
            // consume it, or it would end the next `serve_forever` at once.
            if self.shutdown.is_shutdown_requested() {
                self.wake.drain();
                return Ok(());
            }
            let pause = backoff.remaining();
            let timeout = min_timeout(
                min_timeout(self.strategy.next_wakeup(), self.service_interval),
                min_timeout(pause, self.lifetime_check_interval()),
            );
            // Not accepting while paused after an error or full (policy Wait).
            let accepting = pause.is_none() && !self.registry.must_wait();
            let socket = accepting.then(|| self.transport.fd());
            let ready = wait_ready(socket, self.wake.raw_fd(), timeout)?;
            if ready.wake && self.wake.drain().shutdown {
                return Ok(());
            }
            if ready.socket {
                self.drain(&mut buf, &mut backoff);
            }
            self.strategy.service();
            if let Some(lifetime) = self.registry.max_lifetime() {
                let cut = self.registry.cut_older_than(lifetime);
                if cut > 0 {
                    log::info!(
                        "{}: closed {cut} connections older than {lifetime:?}",
                        self.url()
                    );
                }
            }
            self.handler.service();
        }
    }

    /// When to look for connections past `max_lifetime` next: when the
    /// oldest one not cut yet reaches it (at least 10 ms from now).
    fn lifetime_check_interval(&self) -> Option<Duration> {
        let lifetime = self.registry.max_lifetime()?;
        let next = self.registry.next_expiry(lifetime)?;
        Some(
            next.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        )
    }

    /// Takes up to [`BATCH`] requests off the socket, until it would block
    /// or [`BATCH_TIME`] has passed.
    fn drain(&self, buf: &mut [u8], backoff: &mut Backoff) {
        let started = Instant::now();
        for _ in 0..BATCH {
            match self.transport.next(buf, &self.shutdown) {
                Ok(Next::Request(req)) => {
                    backoff.succeed();
                    self.process(req);
                }
                Ok(Next::Empty) => return,
                Ok(Next::Rejected(peer, err)) => self.rejected(&peer, err),
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    backoff.fail(&format!("receiving on {}", self.url()), &e);
                    return;
                }
            }
            if self.shutdown.is_shutdown_requested()
                || self.registry.must_wait()
                || started.elapsed() >= BATCH_TIME
            {
                return;
            }
        }
    }

    /// A datagram dropped unread (too large): counted always, reported to
    /// `handle_error` at most once a second, with the count so far.
    fn rejected(&self, peer: &Address, err: io::Error) {
        let total = self
            .registry
            .oversized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut last = self.oversized_reported.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            drop(last);
            let err = io::Error::new(err.kind(), format!("{err} ({total} dropped so far)"));
            self.handler.report_error(peer, &RequestError::Io(err));
        }
    }

    fn process(&self, mut req: T::Request) {
        use std::sync::atomic::Ordering::Relaxed;
        self.registry.accepted.fetch_add(1, Relaxed);
        let peer = req.peer().clone();
        let mut registration = None;
        // Behind the PROXY protocol the client is known once its header is
        // read, in the request's thread: per-IP limits and verify_request
        // wait for it there (`proxy::admit`).
        let proxy = self.proxy.clone().filter(|_| req.conn().is_some());
        if let Some(conn) = req.conn() {
            use std::os::fd::AsRawFd;
            let admitted = if proxy.is_some() {
                self.registry.admit_without_ip(conn.as_raw_fd())
            } else {
                self.registry.admit(conn.as_raw_fd(), &peer)
            };
            match admitted {
                Ok(r) => {
                    if let Some(write) = self.timeouts.write {
                        // Best effort: a socket that cannot take options is
                        // already broken, and the handler will see that.
                        let _ = conn.set_new_write_timeout(Some(write));
                    }
                    registration = Some(r);
                }
                Err(why) => {
                    if let Some(message) = &self.busy_message {
                        use std::io::Write;
                        // Non-blocking: nothing waits for a refused client.
                        let _ = sys::send_nowait(conn.as_raw_fd(), message);
                        let _ = (&*conn).flush();
                    }
                    return self.registry.refused(&peer, &why);
                }
            }
        }
        if proxy.is_none() && !self.handler.verify(&peer) {
            self.registry.refused.fetch_add(1, Relaxed);
            log::debug!("{peer} refused by verify_request");
            return;
        }
        // Should the request's coroutine be abandoned (a stack overflow
        // under `Green`), its worker closes the socket and releases this.
        let abandon = registration
            .as_ref()
            .map(crate::connections::Registration::on_abandon);
        let stop = self.strategy.runs_inline().then(|| Stop::Server {
            wake: self.wake.clone(),
            handle: self.shutdown.clone(),
        });
        let attached = req.attach(Attachment {
            registration,
            registry: Arc::clone(&self.registry),
            timeouts: self.timeouts.read,
            stop,
        });
        if let Err(e) = attached {
            log::debug!("{peer}: cannot set the connection's timeouts: {e}");
            return;
        }
        // A forked child closes the listening socket, but keeps a datagram
        // socket: its reply goes out through it.
        let mut server_fds = crate::strategy::ServerFds::default();
        server_fds.push(self.wake.raw_fd());
        if req.conn().is_some() {
            server_fds.push(std::os::fd::AsRawFd::as_raw_fd(&self.transport.fd()));
        }
        let handler = Arc::clone(&self.handler);
        let registry = Arc::clone(&self.registry);
        let tls = self.tls.clone();
        let job = Job::new(peer, move || {
            let _running = registry.start_request();
            let _abandon = match abandon {
                Some((fd, release)) => crate::green::on_abandon(Some(fd), release),
                // A datagram: nothing of its own to close.
                None => {
                    let registry = Arc::clone(&registry);
                    crate::green::on_abandon(None, move || registry.abandoned())
                }
            };
            if let (Some(gate), Some(stream)) = (&proxy, req.as_stream()) {
                if !crate::proxy::admit(stream, gate, &registry, |a| handler.verify(a)) {
                    return false;
                }
            }
            if let (Some(gate), Some(stream)) = (&tls, req.as_stream()) {
                if !crate::tls_session::handshake(stream, gate, &registry) {
                    return false;
                }
                #[cfg(feature = "tls")]
                if !crate::tls::verified(stream, &registry, |p, i| handler.verify_session(p, i)) {
                    return false;
                }
            }
            let ok = handler.serve_request(req);
            let counter = if ok {
                &registry.completed
            } else {
                &registry.failed
            };
            counter.fetch_add(1, Relaxed);
            ok
        })
        .with_server_fds(server_fds);
        let peer_for_log = job.peer().clone();
        if let Err(e) = self.strategy.execute(job, &self.shutdown) {
            log::error!(
                "cannot start a {} request for {peer_for_log}: {e}",
                self.strategy.name()
            );
        }
    }
}

impl<T: Transport, S: Strategy, H> Drop for Server<T, S, H> {
    fn drop(&mut self) {
        let wait = self.core.strategy.blocks_on_close();
        self.drain_and_close(self.core.close_timeout, wait);
        if !self.core.skip_strategy_close.load(Ordering::SeqCst) {
            self.core.strategy.close();
        }
    }
}

impl<T: Transport, S: Strategy, H> Drop for Core<T, S, H> {
    /// The last of the server (after [`Server`]'s drop closed it, and any
    /// detached loop handle is gone): a Unix socket file is removed.
    fn drop(&mut self) {
        self.transport.cleanup();
    }
}
