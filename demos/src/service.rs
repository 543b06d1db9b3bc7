//! The life of a demo server: a bound server of any transport, strategy
//! and handler as a [`Service`]; serving several at once until stopped
//! ([`Running`], the showcase and the tests; the command line's
//! `serve_all` is in [`serve`](crate::serve)); the graceful close with its
//! drain deadline; and [`Handshakes`], the connections a stopping server
//! closes before they authenticate.
//!
//! A server process started by an upgrade (`SIGUSR2`, see
//! `socketserver::reload`) adopts its predecessor's sockets instead of
//! binding new ones: the services take the inherited sockets in the order
//! they are made ([`stream_service`], [`datagram_service`]), which is the
//! order [`serve_all`](crate::serve::serve_all) hands them over in.

use std::collections::VecDeque;
use std::io;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::activation::{self, Listener};
use socketserver::reload::{Upgradable, Upgrade, Watch};
use socketserver::transport::{ListenerTls, Listeners, StreamListener, Tcp, Udp, Unix, Unixgram};
use socketserver::{
    Address, Builder, Conn, DatagramHandler, Handler, Server, ShutdownHandle, Strategy,
    StreamHandler, Transport,
};

use socketserver::pidfile::PidFile;

use crate::cli::Addresses;

/// How long a server lets running handlers finish after SIGINT/SIGTERM
/// before it cuts their connections: 1 s, part of the command-line
/// contract (`docs/demos.md`).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(1);

/// A bound server of any transport, strategy and handler, ready to run:
/// what [`serve_all`](crate::serve::serve_all) and [`Running`] need to know about it.
pub trait Service: Send {
    /// `SCHEME://ADDR` with the real port (on several sockets, each one's,
    /// joined by `", "`).
    fn url(&self) -> String;
    /// `SCHEME://ADDR` of each of its sockets, in order: one `listening
    /// on` line each.
    fn urls(&self) -> Vec<String> {
        vec![self.url()]
    }
    /// The bound address.
    fn address(&self) -> Address;
    /// A handle that stops [`run`](Self::run).
    fn shutdown_handle(&self) -> ShutdownHandle;
    /// The server, for an upgrade to hand over.
    fn upgradable(&self) -> Arc<dyn Upgradable>;
    /// The server, for its metrics.
    fn metrics_source(&self) -> Arc<dyn socketserver::metrics::Source>;
    /// Whether its strategy forks (`forking`, `prefork`): its process must
    /// then have no other thread, an upgrade watcher's included.
    fn forks(&self) -> bool;
    /// Serves until shutdown, runs the stop hooks (e.g. the chat room says
    /// goodbye to its members), then closes gracefully: running handlers get
    /// up to `drain` to finish, the rest are cut. After an upgrade (when
    /// `upgrading` says a new process took over) the connections are left
    /// to end on their own instead, up to the upgrade's drain timeout.
    fn run(self: Box<Self>, drain: Duration, upgrading: Option<&Upgrading>) -> io::Result<()>;
}

/// An upgrade watch over the services of this process (see
/// [`serve_all`](crate::serve::serve_all)).
#[derive(Debug)]
pub struct Upgrading {
    upgrade: Upgrade,
    watch: Watch,
}

impl Upgrading {
    /// Starts watching for `SIGUSR2` on behalf of `services`; the new
    /// process takes `pid_file` over.
    pub fn start(
        services: &[Box<dyn Service>],
        pid_file: Option<&PidFile>,
    ) -> io::Result<Upgrading> {
        let mut upgrade = Upgrade::new()?;
        if let Some(p) = pid_file {
            upgrade = upgrade.pid_file(p)?;
        }
        let watch = upgrade.watch(services.iter().map(|s| s.upgradable()).collect())?;
        Ok(Upgrading { upgrade, watch })
    }
}

/// The sockets this process inherited from the one it upgrades, not taken
/// yet (read once, from `LISTEN_FDS`).
fn inherited() -> io::Result<Option<Listener>> {
    static INHERITED: OnceLock<Mutex<VecDeque<Listener>>> = OnceLock::new();
    let queue = match INHERITED.get() {
        Some(q) => q,
        None => {
            let listeners = activation::listeners()?;
            INHERITED.get_or_init(|| Mutex::new(listeners.into()))
        }
    };
    Ok(queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop_front())
}

fn wrong_inherited(addr: &Address, got: &Listener) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot serve {addr} on the inherited socket: it is a {got:?}"),
    )
}

/// A [`Server`] with hooks to run between `serve_forever` returning and the
/// graceful close.
pub struct Bound<T: Transport, S: Strategy, H> {
    server: Arc<Server<T, S, H>>,
    on_stop: Vec<Box<dyn FnOnce() + Send>>,
}

impl<T: Transport, S: Strategy, H> Bound<T, S, H> {
    /// Wraps a server.
    pub fn new(server: Server<T, S, H>) -> Self {
        Bound {
            server: Arc::new(server),
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

    fn urls(&self) -> Vec<String> {
        self.server.urls()
    }

    fn address(&self) -> Address {
        self.server.server_address().clone()
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        self.server.shutdown_handle()
    }

    fn upgradable(&self) -> Arc<dyn Upgradable> {
        self.server.clone()
    }

    fn metrics_source(&self) -> Arc<dyn socketserver::metrics::Source> {
        self.server.clone()
    }

    fn forks(&self) -> bool {
        matches!(self.server.strategy().name(), "forking" | "prefork")
    }

    fn run(self: Box<Self>, drain: Duration, upgrading: Option<&Upgrading>) -> io::Result<()> {
        let Bound { server, on_stop } = *self;
        let served = server.serve_forever();
        let url = server.url();
        let upgraded = upgrading.filter(|u| u.watch.upgraded());
        if upgraded.is_some() {
            log::info!("{url}: handed over; the open connections finish here");
        } else {
            log::info!("{url}: shutting down (drain deadline {drain:?})");
        }
        // After an upgrade too: the chat room tells its members to
        // reconnect (to the new process) rather than keep half a room.
        for hook in on_stop {
            hook();
        }
        match upgraded {
            // Waits for the connections to end on their own, then closes.
            Some(u) => {
                u.upgrade.drain(&*server);
            }
            // Logs what it did (finished, cut) at info level.
            None => {
                server.close_gracefully(drain);
            }
        }
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
    stream_service_on(builder, &Addresses::one(addr.clone()), handler, on_stop)
}

/// Binds a stream service on every address of `addrs`: one server, one
/// handler, one set of counters, on a socket of its own each (TCP for
/// `HOST:PORT`, Unix stream for `unix:PATH`; the `plain` ones without the
/// builder's TLS). On one address it is a plain `Tcp` or `Unix` server, as
/// [`stream_service`] makes. In a process started by an upgrade it adopts
/// the inherited sockets, in the same order (`listen`, then `plain`).
pub fn stream_service_on<S: Strategy, H: StreamHandler>(
    builder: Builder<S>,
    addrs: &Addresses,
    handler: H,
    on_stop: Option<Box<dyn FnOnce() + Send>>,
) -> io::Result<Box<dyn Service>> {
    if let ([addr], []) = (&addrs.listen[..], &addrs.plain[..]) {
        return single_stream_service(builder, addr, handler, on_stop);
    }
    let options = builder.socket_options().clone();
    let mut set = Listeners::new()?;
    let all = addrs.listen.iter().map(|a| (a, false));
    for (addr, plain) in all.chain(addrs.plain.iter().map(|a| (a, true))) {
        let listener: StreamListener = match (addr, inherited()?) {
            (Address::Inet(_), Some(Listener::Tcp(l))) => Tcp::from_std(l)?.into(),
            (Address::Unix(_), Some(Listener::Unix(l))) => Unix::from_std(l)?.into(),
            (_, Some(other)) => return Err(wrong_inherited(addr, &other)),
            (Address::Inet(a), None) => Tcp::bind(*a, &options)?.into(),
            (Address::Unix(Some(p)), None) => Unix::bind(p, &options)?.into(),
            (Address::Unix(None), None) => return Err(crate::net::unnamed()),
        };
        let tls = if plain {
            ListenerTls::Plain
        } else {
            ListenerTls::Server
        };
        set.push_with_tls(listener, tls)?;
    }
    let mut bound = Bound::new(builder.build(set, handler)?);
    bound.on_stop.extend(on_stop);
    Ok(bound.boxed())
}

fn single_stream_service<S: Strategy, H: StreamHandler>(
    builder: Builder<S>,
    addr: &Address,
    handler: H,
    on_stop: Option<Box<dyn FnOnce() + Send>>,
) -> io::Result<Box<dyn Service>> {
    let inherited = inherited()?;
    Ok(match (addr, inherited) {
        (Address::Inet(_), Some(Listener::Tcp(l))) => {
            let mut bound = Bound::new(builder.build(Tcp::from_std(l)?, handler)?);
            bound.on_stop.extend(on_stop);
            bound.boxed()
        }
        (Address::Unix(_), Some(Listener::Unix(l))) => {
            let mut bound = Bound::new(builder.build(Unix::from_std(l)?, handler)?);
            bound.on_stop.extend(on_stop);
            bound.boxed()
        }
        (_, Some(other)) => return Err(wrong_inherited(addr, &other)),
        (Address::Inet(a), None) => {
            let mut bound = Bound::new(builder.tcp(*a, handler)?);
            bound.on_stop.extend(on_stop);
            bound.boxed()
        }
        (Address::Unix(Some(p)), None) => {
            let mut bound = Bound::new(builder.unix(p, handler)?);
            bound.on_stop.extend(on_stop);
            bound.boxed()
        }
        (Address::Unix(None), None) => return Err(crate::net::unnamed()),
    })
}

/// Binds a datagram service: UDP for `HOST:PORT`, Unix datagram for
/// `unix:PATH`.
pub fn datagram_service<S: Strategy, H: DatagramHandler>(
    builder: Builder<S>,
    addr: &Address,
    handler: H,
) -> io::Result<Box<dyn Service>> {
    Ok(match (addr, inherited()?) {
        (Address::Inet(_), Some(Listener::Udp(s))) => {
            Bound::new(builder.build(Udp::from_std(s)?, handler)?).boxed()
        }
        (Address::Unix(_), Some(Listener::Unixgram(s))) => {
            Bound::new(builder.build(Unixgram::from_std(s)?, handler)?).boxed()
        }
        (_, Some(other)) => return Err(wrong_inherited(addr, &other)),
        (Address::Inet(a), None) => Bound::new(builder.udp(*a, handler)?).boxed(),
        (Address::Unix(Some(p)), None) => Bound::new(builder.unixgram(p, handler)?).boxed(),
        (Address::Unix(None), None) => return Err(crate::net::unnamed()),
    })
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
                    let _ = tx.send(s.run(drain, None));
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

/// Runs the server side of the HMAC authentication ([`Gatekeeper`]) on a
/// request, within the gate's deadline; a failure is counted in the
/// server's metrics (`socketserver_handshake_failures_total{stage="auth"}`). Without TLS, straight on the
/// socket (nothing was read through `req` yet). Under TLS, through the
/// session (the socket carries ciphertext), with the request's reads held
/// to the gate's deadline by `StreamRequest::read_within`.
///
/// [`Gatekeeper`]: socketserver::auth::Gatekeeper
pub fn authenticate(
    gate: &socketserver::auth::Gatekeeper,
    req: &mut socketserver::StreamRequest,
) -> io::Result<()> {
    // Counted in the server's pre-handler budget, with the TLS handshakes
    // and PROXY headers under way (`Builder::max_pre_handler`).
    let result = req.pre_handler(|req| {
        if req.tls_info().is_none() {
            return gate.server_handshake(&mut req.stream());
        }
        req.read_within(gate.deadline(), |r| {
            gate.server_handshake(&mut ThroughRequest(r))
        })
    });
    if result.is_err() {
        req.count_handshake_failure(socketserver::counters::HandshakeStage::Auth);
    }
    result
}

/// `max` as the builder's pre-handler budget (connections in their PROXY
/// header, TLS or authentication handshake; the oldest is closed to make
/// room), where the strategy serves connections side by side: under one
/// that serves in the loop (`Synchronous`) a handshake holds the loop, and
/// the budget is refused.
pub fn with_pre_handler_budget<S: socketserver::Strategy>(
    builder: socketserver::Builder<S>,
    max: usize,
) -> socketserver::Builder<S> {
    if builder.chosen_strategy().runs_inline() {
        builder
    } else {
        builder.max_pre_handler(Some(max))
    }
}

/// A request seen as a stream with a descriptor: reads and writes through
/// the request (and its TLS session), the descriptor of its socket.
struct ThroughRequest<'a>(&'a mut socketserver::StreamRequest);

impl io::Read for ThroughRequest<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for ThroughRequest<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl std::os::fd::AsFd for ThroughRequest<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.stream().as_fd()
    }
}
