//! [`Server`]: the loop and the lifecycle; [`Builder`]: every option in one
//! place.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connections::{Limits, Registry};
use crate::handler::Handler;
use crate::request::sealed::Tracked;
use crate::shutdown::{wake_pair, WakeReceiver};
use crate::strategy::{Job, Strategy, Synchronous};
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
/// let addr = server.server_address().as_inet().unwrap();
/// let stop = server.shutdown_handle();
/// let running = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// let mut reply = [0; 5];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"hello");
/// drop(client); // closing waits for running requests: end ours first
///
/// stop.shutdown();
/// running.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<T: Transport, S: Strategy, H> {
    transport: T,
    strategy: S,
    handler: Arc<H>,
    shutdown: ShutdownHandle,
    wake: WakeReceiver,
    timeout: Option<Duration>,
    service_interval: Option<Duration>,
    stream_timeouts: StreamTimeouts,
    registry: Arc<Registry>,
    running: AtomicBool,
    /// Set when a graceful close gave up on requests that would not stop.
    skip_strategy_close: bool,
}

/// Read and write timeouts set on every accepted connection.
#[derive(Debug, Clone, Copy)]
struct StreamTimeouts {
    read: Option<Duration>,
    write: Option<Duration>,
}

impl Default for StreamTimeouts {
    fn default() -> Self {
        StreamTimeouts {
            read: Some(DEFAULT_READ_TIMEOUT),
            write: Some(DEFAULT_WRITE_TIMEOUT),
        }
    }
}

/// Default idle (read) timeout of a connection: 10 minutes.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Default write timeout of a connection: 60 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

impl<T: Transport, S: Strategy, H> std::fmt::Debug for Server<T, S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.url())
            .field("strategy", &self.strategy.name())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`]: pick a strategy and options, then bind with
/// [`tcp`](Self::tcp), [`udp`](Self::udp), [`unix`](Self::unix),
/// [`unixgram`](Self::unixgram) or [`serve`](Self::serve).
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
pub struct Builder<S = Synchronous> {
    strategy: S,
    options: SocketOptions,
    timeout: Option<Duration>,
    service_interval: Option<Duration>,
    stream_timeouts: StreamTimeouts,
    limits: Limits,
}

impl Default for Builder<Synchronous> {
    fn default() -> Self {
        Builder {
            strategy: Synchronous,
            options: SocketOptions::default(),
            timeout: None,
            service_interval: None,
            stream_timeouts: StreamTimeouts::default(),
            limits: Limits::default(),
        }
    }
}

impl Builder<Synchronous> {
    /// Defaults: [`Synchronous`], `SO_REUSEADDR` on, backlog `SOMAXCONN`,
    /// `TCP_NODELAY` on, datagrams up to 65,507 bytes, no timeout.
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
            stream_timeouts: self.stream_timeouts,
            limits: self.limits,
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

    /// Idle timeout of a connection: a read that waits longer fails with
    /// `WouldBlock`/`TimedOut`, which ends the request (default 10 minutes;
    /// `None`: wait forever). A slowloris client cannot hold a thread longer.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stream_timeouts.read = timeout;
        self
    }

    /// Write timeout of a connection: a write to a client that does not read
    /// fails after this long (default 60 s; `None`: wait forever).
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stream_timeouts.write = timeout;
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
    /// end-of-file, its next write fails). While this is set and connections
    /// are open, the loop wakes every tenth of the lifetime (at least every
    /// second, at most every 10 ms) to check.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.limits.max_lifetime = lifetime;
        self
    }

    /// Refuse or wait at `max_connections` (default: refuse).
    pub fn limit_policy(mut self, policy: LimitPolicy) -> Self {
        self.limits.policy = policy;
        self
    }

    /// The socket options collected so far.
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
        self.serve(transport, handler)
    }

    /// A UDP server on the first of `addr` that binds.
    pub fn udp<H: DatagramHandler>(
        self,
        addr: impl ToSocketAddrs,
        handler: H,
    ) -> io::Result<Server<Udp, S, H>> {
        let transport = Udp::bind(addr, &self.options)?;
        self.serve(transport, handler)
    }

    /// A Unix stream server at `path` (removed again when the server closes).
    pub fn unix<H: StreamHandler>(
        self,
        path: impl AsRef<Path>,
        handler: H,
    ) -> io::Result<Server<Unix, S, H>> {
        let transport = Unix::bind(path, &self.options)?;
        self.serve(transport, handler)
    }

    /// A Unix datagram server at `path` (removed again when the server
    /// closes).
    pub fn unixgram<H: DatagramHandler>(
        self,
        path: impl AsRef<Path>,
        handler: H,
    ) -> io::Result<Server<Unixgram, S, H>> {
        let transport = Unixgram::bind(path, &self.options)?;
        self.serve(transport, handler)
    }

    /// A server on a transport made elsewhere, e.g. [`Tcp::from_std`] for an
    /// inherited listener.
    pub fn serve<T, H>(self, transport: T, handler: H) -> io::Result<Server<T, S, H>>
    where
        T: Transport,
        H: Handler<T::Request>,
    {
        let (shutdown, wake) = wake_pair()?;
        let registry = Arc::new(Registry::new(self.limits, shutdown.clone()));
        Ok(Server {
            stream_timeouts: self.stream_timeouts,
            registry,
            transport,
            strategy: self.strategy,
            handler: Arc::new(handler),
            shutdown,
            wake,
            timeout: self.timeout,
            service_interval: self.service_interval,
            running: AtomicBool::new(false),
            skip_strategy_close: false,
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
        self.until = Some(Instant::now() + delay);
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
        self.transport.address()
    }

    /// `SCHEME://ADDR`, e.g. `tcp://127.0.0.1:8000`, `unix:///tmp/s.sock`.
    pub fn url(&self) -> String {
        match self.transport.address() {
            Address::Unix(Some(p)) => format!("{}://{}", self.transport.scheme(), p.display()),
            a => format!("{}://{a}", self.transport.scheme()),
        }
    }

    /// A handle that stops `serve_forever` from any thread, or from inside a
    /// handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Asks `serve_forever` to return; does not wait (see
    /// [`ShutdownHandle::shutdown`]). Python: `shutdown()`.
    pub fn shutdown(&self) {
        self.shutdown.shutdown()
    }

    /// The handler (and the state it shares between requests).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The strategy.
    pub fn strategy(&self) -> &S {
        &self.strategy
    }

    /// The transport (the listening socket).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Counters: open connections, running requests, accepted, refused,
    /// completed, failed.
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let r = &self.registry;
        Stats {
            connections: r.connections(),
            active: self.strategy.active(),
            accepted: r.accepted.load(Relaxed),
            refused: r.refused.load(Relaxed),
            completed: r.completed.load(Relaxed),
            failed: r.failed.load(Relaxed),
        }
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
    /// running on another thread.
    pub fn serve_forever(&self) -> io::Result<()> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(io::Error::other(
                "serve_forever is already running for this server",
            ));
        }
        // A request left from an earlier run is forgotten; one made before
        // this run still has its byte pending and ends the loop at once. The
        // flag stays set after the loop returns, so that handlers still
        // running (and a graceful close) can see it.
        self.shutdown.clear();
        let result = self.serve_loop();
        self.shutdown.shutdown_flag_only();
        self.running.store(false, Ordering::SeqCst);
        result
    }

    fn serve_loop(&self) -> io::Result<()> {
        let mut buf = vec![0u8; self.transport.buffer_size()];
        let mut backoff = Backoff::default();
        loop {
            let pause = backoff.remaining();
            let timeout = min_timeout(
                min_timeout(self.strategy.next_wakeup(), self.service_interval),
                min_timeout(pause, self.lifetime_check_interval()),
            );
            // Not accepting while paused after an error or full (policy Wait).
            let accepting = pause.is_none() && !self.registry.must_wait();
            let socket = accepting.then(|| self.transport.fd());
            let ready = sys::poll_read(socket, self.wake.fd(), timeout)?;
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

    /// How often to look for connections past `max_lifetime`, if any are
    /// open.
    fn lifetime_check_interval(&self) -> Option<Duration> {
        let lifetime = self.registry.max_lifetime()?;
        (self.registry.connections() > 0)
            .then(|| (lifetime / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)))
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
                Ok(Next::Rejected(peer, err)) => {
                    self.handler.report_error(&peer, &RequestError::Io(err))
                }
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

    fn process(&self, mut req: T::Request) {
        use std::sync::atomic::Ordering::Relaxed;
        self.registry.accepted.fetch_add(1, Relaxed);
        let peer = req.peer().clone();
        if let Some(conn) = req.conn() {
            use std::os::fd::AsRawFd;
            match self.registry.admit(conn.as_raw_fd(), &peer) {
                Ok(registration) => {
                    self.apply_timeouts(conn);
                    req.attach(registration);
                }
                Err(why) => return self.registry.refused(&peer, &why),
            }
        }
        if !self.handler.verify(&peer) {
            self.registry.refused.fetch_add(1, Relaxed);
            log::debug!("{peer} refused by verify_request");
            return;
        }
        let handler = Arc::clone(&self.handler);
        let registry = Arc::clone(&self.registry);
        let job = Job::new(peer, move || {
            let ok = handler.serve_request(req);
            let counter = if ok {
                &registry.completed
            } else {
                &registry.failed
            };
            counter.fetch_add(1, Relaxed);
            ok
        });
        let peer_for_log = job.peer().clone();
        if let Err(e) = self.strategy.execute(job, &self.shutdown) {
            log::error!(
                "cannot start a {} request for {peer_for_log}: {e}",
                self.strategy.name()
            );
        }
    }

    fn apply_timeouts(&self, conn: &crate::Conn) {
        let StreamTimeouts { read, write } = self.stream_timeouts;
        // Best effort: a socket that cannot take options is already broken
        // and the handler will see that.
        if read.is_some() {
            let _ = conn.set_read_timeout(read);
        }
        if write.is_some() {
            let _ = conn.set_write_timeout(write);
        }
    }

    /// Stops serving and closes, letting running requests finish first: the
    /// graceful end of a server, for SIGTERM in production.
    ///
    /// Call it after `serve_forever` has returned. It waits up to `deadline`
    /// for running requests (queued ones in a [`Pool`](crate::Pool)
    /// included) to finish on their own; handlers can watch
    /// [`ShutdownHandle::is_shutdown_requested`] to finish early. At the
    /// deadline it cuts what is left: open connections are shut down in both
    /// directions (a blocked read returns end-of-file, a blocked write
    /// fails), `Forking` children get SIGTERM. It then waits a short grace
    /// period (a tenth of the deadline, at least 50 ms) for the cut requests
    /// to return, and closes the server. Requests still running after that
    /// are abandoned (their threads finish on their own or die with the
    /// process) and counted in the report.
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// use std::time::Duration;
    ///
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// server.shutdown();
    /// server.serve_forever()?;
    /// let report = server.close_gracefully(Duration::from_secs(1));
    /// assert_eq!(report.cut, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close_gracefully(mut self, deadline: Duration) -> DrainReport {
        let start = Instant::now();
        let running = self.strategy.active();
        let mut report = DrainReport {
            running,
            ..DrainReport::default()
        };
        if !self.strategy.wait_idle(deadline) {
            let left = self.strategy.active();
            report.cut = left;
            report.finished = running.saturating_sub(left);
            self.registry.cut_all();
            self.strategy.terminate();
            let grace = (deadline / 10).max(Duration::from_millis(50));
            if !self.strategy.wait_idle(grace) {
                report.abandoned = self.strategy.active();
                log::warn!(
                    "{}: {} requests still running {} ms after being cut; not waiting for them",
                    self.url(),
                    report.abandoned,
                    start.elapsed().as_millis()
                );
                self.skip_strategy_close = true;
            }
        } else {
            report.finished = running;
        }
        report.elapsed = start.elapsed();
        log::info!("{}: closed gracefully: {report:?}", self.url());
        drop(self);
        report
    }

    /// Waits for one request (at most the builder's `timeout`) and serves
    /// it. Returns `Ok(true)` when a request was taken, `Ok(false)` when the
    /// timeout passed (after calling `handle_timeout`) or a shutdown is
    /// pending. Python: `handle_request()`.
    pub fn handle_request(&self) -> io::Result<bool> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut buf = vec![0u8; self.transport.buffer_size()];
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining.is_some_and(|r| r.is_zero()) {
                self.handler.timed_out();
                return Ok(false);
            }
            let ready = sys::poll_read(Some(self.transport.fd()), self.wake.fd(), remaining)?;
            if ready.wake && self.wake.drain().shutdown {
                // Leave the request for serve_forever, should it run next.
                self.shutdown.shutdown();
                return Ok(false);
            }
            if !ready.socket {
                continue;
            }
            match self.transport.next(&mut buf, &self.shutdown) {
                Ok(Next::Request(req)) => {
                    self.process(req);
                    self.strategy.service();
                    return Ok(true);
                }
                Ok(Next::Empty) => {}
                Ok(Next::Rejected(peer, err)) => {
                    self.handler.report_error(&peer, &RequestError::Io(err))
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(crate::Error::wrap("accept", self.url(), e)),
            }
        }
    }

    /// Closes the server: waits for running requests as the strategy's
    /// policy says, closes the socket and removes a Unix socket file.
    /// Dropping the server does the same. Python: `server_close()`.
    pub fn server_close(self) {
        drop(self)
    }
}

impl<T: Transport, S: Strategy, H> Drop for Server<T, S, H> {
    fn drop(&mut self) {
        if !self.skip_strategy_close {
            self.strategy.close();
        }
        self.transport.cleanup();
    }
}
