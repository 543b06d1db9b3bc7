//! [`Server`]: the loop and the lifecycle; [`Builder`]: every option in one
//! place.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::admission::Admission;
use crate::builder::Builder;
use crate::connections::Registry;
use crate::handler::Handler;
use crate::pipeline::Pipeline;
use crate::request::sealed::Tracked;
use crate::request::Attachment;
use crate::shutdown::{wake_pair, Stop, WakeReceiver};
use crate::strategy::{Job, Strategy, Synchronous};
use crate::sys;
use crate::timeouts::deadline_after;
use crate::timeouts::Timeouts;
use crate::transport::{Next, Tcp, Transport, Udp, Unix, Unixgram};
use crate::{
    Address, DatagramHandler, DrainReport, Peer, RequestError, ShutdownHandle, Stats, StreamHandler,
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

/// How often a forked child that stopped accepting looks whether its last
/// connection ended (see `Core::linger_in_child`).
const LINGER_LOOK: Duration = Duration::from_millis(5);

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
    /// What a connection goes through after accept.
    pipeline: Arc<Pipeline>,
    registry: Arc<Registry>,
    running: AtomicBool,
    /// A graceful close ran (or runs): the server serves no more.
    closed: AtomicBool,
    /// Set when a graceful close gave up on requests that would not stop.
    skip_strategy_close: AtomicBool,
    /// The upgrade signal arrived (an upgrade watched without a thread,
    /// `reload::Upgrade::serve` under a forking strategy): the loop returns
    /// so that the caller starts the successor.
    upgrade_requested: Arc<AtomicBool>,
    /// Oversized datagrams since the last report to `handle_error`, and when
    /// that was.
    oversized_reported: Mutex<Option<Instant>>,
    /// What a child forked for a connection closes: the wake-up socket and
    /// every listening descriptor.
    stream_fds: crate::strategy::ServerFds,
    /// What a child forked for a datagram closes: the wake-up socket (it
    /// replies through the bound socket).
    datagram_fds: crate::strategy::ServerFds,
}

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

impl<T, S, H> Server<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    /// The server a [`Builder`] describes, on `transport`.
    pub(crate) fn assemble(builder: Builder<S>, transport: T, handler: H) -> io::Result<Self> {
        let limited =
            builder.limits.max_connections.is_some() || builder.limits.max_per_ip.is_some();
        if limited && builder.strategy.name() == crate::strategy::FORKING {
            // The parent lets go of each connection once its child runs it:
            // counted there, the limits would see every connection end at
            // once.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_connections and max_per_ip cannot be kept under the forking strategy: \
                 each connection is served and counted in a child process of its own; \
                 bound it with Forking::max_children, or use PreFork, whose children share \
                 one count",
            ));
        }
        if builder.limits.max_pre_handler.is_some() && builder.strategy.runs_inline() {
            // A handshake runs in the loop itself: no other connection is
            // admitted (or closed to make room) until it ends.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "max_pre_handler cannot be kept under the {} strategy: it serves one \
                     connection at a time in the server loop, so a handshake under way holds \
                     the loop and no connection can be closed to make room; bound handshakes \
                     with proxy_header_timeout and tls_handshake_timeout, or serve with \
                     Threading, Pool or Green",
                    builder.strategy.name()
                ),
            ));
        }
        transport.check()?;
        if builder.strategy.name() == crate::strategy::GREEN {
            // Where stack guards cost mappings, `vm.max_map_count` may
            // close connections before `max_connections` does.
            crate::green::report_stack_ceiling(builder.limits.max_connections);
        }
        let (shutdown, wake) = wake_pair()?;
        let registry = Arc::new(Registry::new(builder.limits, shutdown.clone())?);
        crate::handler::route_panics_to_log();
        let pipeline = Pipeline {
            admission: Admission {
                access: builder.access,
                busy_message: builder.busy_message,
            },
            proxy: (builder.proxy.mode != crate::proxy::ProxyProtocol::Off).then_some(
                crate::proxy::Gate {
                    config: builder.proxy,
                },
            ),
            tls: crate::pipeline::TlsGates {
                server: builder.tls.gate(),
                #[cfg(feature = "tls")]
                listeners: builder.tls.listener_gates(transport.listener_tls()),
                #[cfg(not(feature = "tls"))]
                listeners: Vec::new(),
            },
        };
        let mut stream_fds = vec![wake.raw_fd()];
        stream_fds.extend(transport.own_fds());
        let core = Core {
            stream_fds: crate::strategy::ServerFds::new(stream_fds),
            datagram_fds: crate::strategy::ServerFds::new(vec![wake.raw_fd()]),
            timeouts: builder.timeouts,
            close_timeout: builder.close_timeout,
            pipeline: Arc::new(pipeline),
            registry,
            transport,
            strategy: builder.strategy,
            handler: Arc::new(handler),
            shutdown,
            wake,
            timeout: builder.timeout,
            service_interval: builder.service_interval,
            running: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            skip_strategy_close: AtomicBool::new(false),
            upgrade_requested: Arc::new(AtomicBool::new(false)),
            oversized_reported: Mutex::new(None),
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
        // A request running inline (`Synchronous`) holds the loop: a
        // watch cuts it at the close deadline once a stop is asked. (Not
        // in a `PreFork` child, which serves through `serve_in_child`: its
        // parent's drain bounds it.)
        let _watch = self
            .0
            .strategy
            .runs_inline()
            .then(|| InlineDeadline::start(&self.0))
            .transpose()?;
        self.0.serve_loop()
    }

    fn serve_in_child(&self, linger: &dyn Fn() -> Option<Duration>) -> io::Result<()> {
        self.0.serve_in_child(linger)
    }

    fn handed_over(&self) -> bool {
        self.0.shutdown.is_handed_over()
    }

    fn stop_listening(&self) {
        // The transport's own check leaves a handed-over socket alone.
        self.0.transport.stop_listening();
    }

    fn wait(
        &self,
        also: Option<std::os::fd::BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let server = &*self.0;
        if server.shutdown.is_shutdown_requested() || self.upgrade_requested() {
            return Ok(true);
        }
        let ready = sys::poll_read(also, server.wake.raw_fd(), timeout)?;
        Ok((ready.wake && server.wake.drain().shutdown)
            || server.shutdown.is_shutdown_requested()
            || self.upgrade_requested())
    }

    fn upgrade_requested(&self) -> bool {
        self.0.upgrade_requested.load(Ordering::SeqCst)
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

/// Under a strategy that runs requests inline in the loop (`Synchronous`),
/// nothing else runs while a request does: a stop asked meanwhile (a
/// signal, `shutdown()`) would wait for the request to end on its own,
/// however long, and `close_gracefully`'s deadline could not start before
/// the loop returns. This watch, a thread blocked in `poll(2)` on the loop's
/// wake-up socket (never reading it) and on its own stop socket, sees the
/// stop, gives the running request the close timeout, then cuts its
/// connection (a handler blocked on the socket sees end-of-file; one that
/// watches its socket, as the shell demo's command runner does, stops).
/// An idle server's watch makes no system call.
struct InlineDeadline {
    stop: std::os::unix::net::UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InlineDeadline {
    fn start<T, S, H>(core: &Arc<Core<T, S, H>>) -> io::Result<Self>
    where
        T: Transport,
        S: Strategy,
        H: Handler<T::Request>,
    {
        let (stop, stopped) = std::os::unix::net::UnixStream::pair()?;
        let core = Arc::clone(core);
        let thread = std::thread::Builder::new()
            .name("inline-deadline".into())
            .spawn(move || core.watch_inline(&stopped))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("starting the inline-request watch: {e}"))
            })?;
        Ok(InlineDeadline {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for InlineDeadline {
    fn drop(&mut self) {
        let _ = std::io::Write::write(&mut &self.stop, b"x");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    /// `SCHEME://ADDR`, e.g. `tcp://127.0.0.1:8000`, `unix:///tmp/s.sock`;
    /// on several sockets ([`Listeners`](crate::transport::Listeners)),
    /// each one's, joined by `", "`.
    pub fn url(&self) -> String {
        self.core.url()
    }

    /// `SCHEME://ADDR` of each listening socket, in order (one, but for a
    /// server on [`Listeners`](crate::transport::Listeners)).
    pub fn urls(&self) -> Vec<String> {
        self.core.transport.urls()
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

    /// The socket serves a successor process now (an upgrade): marks it
    /// handed over (closing no longer stops it listening nor removes its
    /// file) and stops `serve_forever`, whose strategy lets the
    /// connections end on their own terms.
    pub(crate) fn hand_over(&self) {
        // First the marks, then the loop's end: the close that follows must
        // not stop the socket listening, and a strategy that takes the loop
        // over (`PreFork`) must know why it ended.
        self.mark_handed_over();
        self.core.shutdown.shutdown();
    }

    /// Marks the socket handed over without stopping the loop: closing the
    /// server from now on leaves the socket listening for the new process.
    pub(crate) fn mark_handed_over(&self) {
        self.core.transport.hand_over();
        self.core.shutdown.mark_handed_over();
    }

    /// Whether SIGTERM (or another signal given to
    /// [`ShutdownHandle::shutdown_on_signals`]) reached this process since
    /// the server was built.
    pub(crate) fn stop_signalled(&self) -> bool {
        self.core.shutdown.stop_signalled()
    }

    /// On `signal`, the loop returns (without a shutdown) so that the caller
    /// can start an upgrade: no thread watches for the signal. See
    /// [`take_upgrade_request`](Self::take_upgrade_request).
    pub(crate) fn return_on_signal(&self, signal: i32) -> io::Result<signal_hook::SigId> {
        sys::on_signal_flag_and_byte(
            signal,
            Arc::clone(&self.core.upgrade_requested),
            self.core.shutdown.wake_writer()?,
            crate::shutdown::POKE,
        )
    }

    /// Whether the loop returned for the signal of
    /// [`return_on_signal`](Self::return_on_signal) (and forgets it).
    pub(crate) fn take_upgrade_request(&self) -> bool {
        self.core.upgrade_requested.swap(false, Ordering::SeqCst)
    }

    /// While an upgrade started from the loop's thread waits for the
    /// successor: whether a shutdown was asked meanwhile (a byte on the
    /// wake-up socket other than a poke, or a stop signal). Reads the
    /// socket.
    pub(crate) fn shutdown_pending(&self) -> bool {
        self.core.wake.drain().shutdown || self.core.shutdown.stop_signalled()
    }

    /// The loop's wake-up socket (readable when a shutdown is asked).
    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        self.core.wake.raw_fd()
    }

    /// The builder's [`close_timeout`](Builder::close_timeout).
    pub(crate) fn configured_close_timeout(&self) -> Duration {
        self.core.close_timeout
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
        stats.green_blocked_ms = self.core.strategy.blocked_ms();
        stats
    }

    /// The registry of connections and counters (for `counters`).
    pub(crate) fn registry(&self) -> &crate::connections::Registry {
        &self.core.registry
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
            && self.core.wait_idle(left().unwrap_or(Duration::MAX));
        if !idle {
            let still = self.running_requests();
            report.cut = still;
            self.core.registry.counters.cut(still);
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
            if self.core.running.load(Ordering::SeqCst) || !self.core.wait_idle(rest) {
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
    /// Waits, at most `timeout`, until the server's own jobs ended, then
    /// what the strategy runs elsewhere (children); returns whether all did.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let end = deadline_after(timeout);
        let left = || {
            end.map_or(Duration::MAX, |e| {
                e.saturating_duration_since(Instant::now())
            })
        };
        self.registry.wait_jobs(timeout) && self.strategy.wait_idle(left())
    }

    /// The inline-request watch's thread (see [`InlineDeadline`]).
    fn watch_inline(&self, stopped: &std::os::unix::net::UnixStream) {
        use std::os::fd::AsFd;
        loop {
            let Ok(ready) = sys::poll_read(Some(stopped.as_fd()), self.wake.raw_fd(), None) else {
                return;
            };
            if ready.socket {
                return;
            }
            if !self.shutdown.is_shutdown_requested() {
                // A wake-up that is no stop (a freed slot), left for the
                // loop to read: look again once it had the chance, unless
                // the loop returns meanwhile (a sleep here held the loop's
                // return up to 10 ms while it joined this thread).
                if sys::poll_read(Some(stopped.as_fd()), -1, Some(Duration::from_millis(10)))
                    .is_ok_and(|r| r.socket)
                {
                    return;
                }
                continue;
            }
            let end = deadline_after(self.close_timeout);
            while self.registry.running() > 0 && end.is_none_or(|e| Instant::now() < e) {
                if sys::poll_read(Some(stopped.as_fd()), -1, Some(Duration::from_millis(10)))
                    .is_ok_and(|r| r.socket)
                {
                    return;
                }
            }
            if self.registry.running() > 0 {
                log::warn!(
                    "{}: the running request did not end within {:?} of the stop; cutting its connection",
                    self.url(),
                    self.close_timeout
                );
                self.registry.cut_all();
            }
            return;
        }
    }

    /// `SCHEME://ADDR` of every listening socket, for logs.
    fn url(&self) -> String {
        self.transport.urls().join(", ")
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
    fn serve_in_child(&self, linger: &dyn Fn() -> Option<Duration>) -> io::Result<()> {
        sys::child_stop_onto(self.wake.raw_fd())?;
        let result = self.serve_loop();
        self.shutdown.shutdown_flag_only();
        if !sys::child_stop_requested() {
            self.linger_in_child(linger());
        }
        self.registry.begin_drain();
        self.strategy.begin_drain();
        if !self.wait_idle(self.close_timeout) {
            self.registry.cut_all();
            self.strategy.terminate();
            self.wait_idle(Duration::from_millis(100));
        }
        result
    }

    /// In a forked child whose loop ended without SIGTERM: waits, accepting
    /// nothing and closing nothing, until no connection is open and no
    /// request runs, SIGTERM comes, or `limit` passes.
    fn linger_in_child(&self, limit: Option<Duration>) {
        let end = limit.and_then(deadline_after);
        while !sys::child_stop_requested() {
            if self.registry.connections() == 0
                && self.registry.jobs() == 0
                && self.strategy.active() == 0
            {
                return;
            }
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                log::debug!(
                    "{}: connections still open after {limit:?}; closing them gracefully",
                    self.url()
                );
                return;
            }
            let nap = left.map_or(LINGER_LOOK, |l| l.min(LINGER_LOOK));
            // The stop pipe sits where the wake-up socket was: SIGTERM ends
            // the wait at once.
            if sys::poll_read(None, self.wake.raw_fd(), Some(nap)).is_ok_and(|r| r.wake) {
                self.wake.drain();
            }
            self.strategy.service();
        }
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
            if self.upgrade_requested.load(Ordering::SeqCst) {
                return Ok(());
            }
            let pause = backoff.remaining();
            let timeout = min_timeout(
                min_timeout(self.strategy.next_wakeup(), self.service_interval),
                min_timeout(pause, self.lifetime_check_interval()),
            );
            // Not accepting while paused after an error or full (policy Wait).
            let accepting = pause.is_none() && !self.registry.must_wait();
            let timeout = min_timeout(timeout, self.registry.recheck());
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
        // Full since the wait began (policy Wait): the connection that woke
        // the loop stays queued. Under `PreFork` another child may have
        // filled the server meanwhile.
        if self.registry.must_wait() {
            return;
        }
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
            .counters
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

    /// The loop's part of a connection's [pipeline](crate::pipeline):
    /// admission, `verify_request` when the socket's peer is the client,
    /// then the rest is handed to the strategy as one job.
    fn process(&self, mut req: T::Request) {
        use std::sync::atomic::Ordering::Relaxed;
        self.registry.counters.accepted.fetch_add(1, Relaxed);
        let peer = req.peer().clone();
        let proxied = self.pipeline.proxied(&req);
        let mut registration = None;
        if let Some(conn) = req.conn() {
            let admission = &self.pipeline.admission;
            let Some(admitted) = admission.admit(&self.registry, conn, &peer, proxied) else {
                return;
            };
            if let Some(write) = self.timeouts.write {
                // Best effort: a socket that cannot take options is
                // already broken, and the handler will see that.
                let _ = conn.set_new_write_timeout(Some(write));
            }
            registration = Some(admitted);
        }
        // Behind the PROXY protocol, verify_request waits for the header.
        if !proxied && !crate::pipeline::verified(&peer, &self.registry, |a| self.handler.verify(a))
        {
            return;
        }
        let stop = self.strategy.runs_inline().then(|| Stop::Server {
            wake: self.wake.clone(),
            handle: self.shutdown.clone(),
        });
        let attached = req.attach(Attachment {
            registration,
            registry: Arc::clone(&self.registry),
            timeouts: self.timeouts,
            stop,
        });
        if let Err(e) = attached {
            log::debug!("{peer}: cannot set the connection's timeouts: {e}");
            return;
        }
        // A forked child closes the listening sockets, but keeps a datagram
        // socket: its reply goes out through it.
        let server_fds = if req.conn().is_some() {
            self.stream_fds.clone()
        } else {
            self.datagram_fds.clone()
        };
        let handler = Arc::clone(&self.handler);
        let registry = Arc::clone(&self.registry);
        let pipeline = Arc::clone(&self.pipeline);
        // Counted from now until the job ran or was dropped unrun: what a
        // graceful close waits for, under every strategy.
        let alive = self.registry.job_alive();
        let job = Job::new(peer, move || {
            let _alive = alive;
            // Should the request's coroutine be abandoned (a stack overflow
            // under `Green`), its worker closes the socket and releases it.
            let _abandon = crate::green::is_green().then(|| abandon_with(&mut req, &registry));
            pipeline.run(req, &*handler, &registry)
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

/// What a green worker gives back should the coroutine of `req` be
/// abandoned where it stands (a stack overflow): the connection's socket
/// and registration, or (a datagram) only the request's counts.
fn abandon_with<R: crate::request::sealed::Tracked>(
    req: &mut R,
    registry: &Arc<crate::connections::Registry>,
) -> crate::green::Abandon {
    let registration = req
        .as_stream()
        .and_then(|s| s.registration_mut())
        .map(|r| r.on_abandon());
    match registration {
        Some((fd, release)) => crate::green::on_abandon(Some(fd), release),
        None => {
            let registry = Arc::clone(registry);
            crate::green::on_abandon(None, move |lost| registry.abandoned(lost))
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
