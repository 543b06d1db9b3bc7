//! [`Builder`]: every option of a server in one place, then a transport
//! (`tcp`, `udp`, `unix`, `unixgram`, or `build` on one made elsewhere).

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::admission::AccessList;
use crate::connections::Limits;
use crate::handler::Handler;
use crate::strategy::{Strategy, Synchronous};
use crate::timeouts::Timeouts;
use crate::transport::{SocketOptions, Tcp, Transport, Udp, Unix, Unixgram};
use crate::{DatagramHandler, IpNet, LimitPolicy, Server, StreamHandler, DEFAULT_CLOSE_TIMEOUT};

/// Builds a [`Server`]: pick a strategy and options, then bind with
/// [`tcp`](Self::tcp), [`udp`](Self::udp), [`unix`](Self::unix),
/// [`unixgram`](Self::unixgram), or [`build`](Self::build) on a transport
/// made elsewhere.
///
/// ```no_run
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
    pub(crate) strategy: S,
    pub(crate) options: SocketOptions,
    /// `user_timeout` was set: it no longer follows the write timeout.
    pub(crate) user_timeout_set: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) service_interval: Option<Duration>,
    pub(crate) timeouts: Timeouts,
    pub(crate) close_timeout: Duration,
    pub(crate) busy_message: Option<Arc<[u8]>>,
    pub(crate) limits: Limits,
    pub(crate) access: AccessList,
    pub(crate) proxy: crate::proxy::Config,
    pub(crate) tls: crate::tls_session::Config,
}

impl Default for Builder<Synchronous> {
    fn default() -> Self {
        Builder {
            strategy: Synchronous,
            options: SocketOptions::default(),
            user_timeout_set: false,
            timeout: None,
            service_interval: None,
            timeouts: Timeouts::default(),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            busy_message: None,
            limits: Limits::default(),
            access: AccessList::default(),
            proxy: crate::proxy::Config::default(),
            tls: crate::tls_session::Config::default(),
        }
    }
}

impl Builder<Synchronous> {
    /// Defaults: [`Synchronous`], `SO_REUSEADDR` on, backlog `SOMAXCONN`,
    /// `TCP_NODELAY` on, TCP keepalive 15 s + 3 x 5 s and `TCP_USER_TIMEOUT`
    /// 30 s on accepted connections, datagrams up to 65,507 bytes, `handle_request`
    /// waits forever; connections: read timeout
    /// [`DEFAULT_READ_TIMEOUT`](crate::DEFAULT_READ_TIMEOUT) (10 min), write timeout
    /// [`DEFAULT_WRITE_TIMEOUT`](crate::DEFAULT_WRITE_TIMEOUT) (60 s), message deadline
    /// [`DEFAULT_MESSAGE_TIMEOUT`](crate::DEFAULT_MESSAGE_TIMEOUT) (20 s) at a minimum of
    /// [`DEFAULT_MIN_DATA_RATE`](crate::DEFAULT_MIN_DATA_RATE) (500 bytes/s); closing waits at most
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
            user_timeout_set: self.user_timeout_set,
            timeout: self.timeout,
            service_interval: self.service_interval,
            timeouts: self.timeouts,
            close_timeout: self.close_timeout,
            busy_message: self.busy_message,
            limits: self.limits,
            access: self.access,
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

    /// TCP keepalive on accepted connections (default
    /// [`Keepalive::default()`](crate::transport::Keepalive): 15 s idle,
    /// probes every 5 s, 3 probes): a client that vanishes without a word
    /// (its link cut, its machine off) is noticed within about 30 s instead
    /// of holding its connection (and its thread, worker or process) until
    /// the read timeout. `None`: off. Such a connection's next read or write
    /// fails with `ETIMEDOUT`, counted in
    /// [`Stats::peer_gone`](crate::Stats::peer_gone).
    ///
    /// ```no_run
    /// use socketserver::transport::Keepalive;
    /// use socketserver::{Server, StreamRequest, Threading};
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new())
    ///     .keepalive(Some(Keepalive::default().idle(Duration::from_secs(60))))
    ///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn keepalive(mut self, keepalive: Option<crate::transport::Keepalive>) -> Self {
        self.options.keepalive = keepalive;
        self.follow_write_timeout();
        self
    }

    /// `TCP_USER_TIMEOUT` on accepted connections: data the peer has not
    /// acknowledged for this long ends the connection, e.g. a client that
    /// vanished while a large reply was being written to it. Default: the
    /// [`write_timeout`](Self::write_timeout), capped at the keepalive's
    /// [`time_to_notice`](crate::transport::Keepalive::time_to_notice) (30 s
    /// with the defaults): on Linux, once set, it is also the limit for
    /// unanswered keepalive probes, so a longer one delays noticing an idle
    /// vanished peer to it. It also ends the connection of a client that is
    /// there but reads nothing for this long (its receive window stays
    /// shut), as the write timeout does: whichever is shorter cuts it.
    /// `None`: the OS default (retransmissions for about 15 minutes).
    pub fn user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.user_timeout = timeout.filter(|t| !t.is_zero());
        self.user_timeout_set = true;
        self
    }

    /// The default user timeout follows the write timeout and keepalive
    /// until `user_timeout` is set.
    fn follow_write_timeout(&mut self) {
        if !self.user_timeout_set {
            self.options.user_timeout =
                crate::transport::default_user_timeout(self.timeouts.write, self.options.keepalive);
        }
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
    /// [`DEFAULT_READ_TIMEOUT`](crate::DEFAULT_READ_TIMEOUT), 10 minutes; `None`: wait forever). It is a
    /// per-operation timer, reset by every byte: it does not stop a client
    /// that sends one byte now and then. That is what
    /// [`message_timeout`](Self::message_timeout) is for.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.read = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Write timeout of a connection: the longest one write waits for room
    /// in the socket buffer, i.e. for a client that does not read (default
    /// [`DEFAULT_WRITE_TIMEOUT`](crate::DEFAULT_WRITE_TIMEOUT), 60 s; `None`: wait forever). A
    /// per-operation timer, like the read timeout.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.write = timeout.filter(|t| !t.is_zero());
        self.follow_write_timeout();
        self
    }

    /// The slowloris defence: once the first byte of a message is in, the
    /// whole message must arrive within this time, extended by a second for
    /// every [`min_data_rate`](Self::min_data_rate) bytes received (default
    /// [`DEFAULT_MESSAGE_TIMEOUT`](crate::DEFAULT_MESSAGE_TIMEOUT), 20 s; `None`: no deadline). Applies to
    /// message-level reads: [`StreamRequest::read_message`] and what uses
    /// it (`read_line`, `lines`, `read_until`, `echo`, a `framing` read
    /// wrapped in `read_message`); a
    /// client past the deadline gets its request ended with `TimedOut`.
    /// Modelled on Apache's `mod_reqtimeout` and nginx's
    /// `client_header_timeout`.
    ///
    /// [`StreamRequest::read_message`]: crate::StreamRequest::read_message
    ///
    /// ```no_run
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
        self.timeouts.message = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Bytes per second that extend a message's deadline by one second
    /// (default [`DEFAULT_MIN_DATA_RATE`](crate::DEFAULT_MIN_DATA_RATE), 500; `None` or 0: no extension,
    /// a message must arrive within `message_timeout` whatever its size).
    pub fn min_data_rate(mut self, bytes_per_second: Option<u32>) -> Self {
        self.timeouts.min_rate = bytes_per_second.filter(|&r| r > 0);
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
    /// Global to the server under every strategy that supports it;
    /// refused under `Forking` when the server is built (each connection
    /// is counted in a child of its own: use `Forking::max_children`).
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.limits.max_connections = max;
        self
    }

    /// Most stream connections open at once from one IP address (default:
    /// no limit). Over it, a connection is refused (closed at once).
    /// Refused under `Forking` when the server is built, as
    /// [`max_connections`](Self::max_connections) is.
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

    /// Most stream connections that have not reached their handler yet
    /// (default: no limit): connections whose PROXY header or TLS handshake
    /// is still under way, or whose handler runs a handshake of its own
    /// inside [`StreamRequest::pre_handler`]. When one more arrives, the
    /// **oldest** of them is closed to make room (its pending read ends
    /// with end-of-file), counted in
    /// [`Refusals::pre_handler_budget`](crate::Refusals::pre_handler_budget)
    /// and logged at most once a second. Silent or dribbling clients
    /// (a handshake flood) then hold at most `max` threads, children,
    /// coroutines and descriptors, and a client that completes its
    /// handshake promptly always gets in: it is never the oldest for long.
    ///
    /// [`StreamRequest::pre_handler`]: crate::StreamRequest::pre_handler
    ///
    /// ```no_run
    /// use socketserver::{Server, StreamRequest, Threading};
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new())
    ///     .max_pre_handler(Some(64))
    ///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_pre_handler(mut self, max: Option<usize>) -> Self {
        self.limits.max_pre_handler = max.map(|m| m.max(1));
        self
    }

    /// Accepts clients from `net` only (repeatable: any of the networks;
    /// default: everyone). A [`deny`](Self::deny) rule wins over an allow
    /// rule. Checked against the real client: the socket's peer, or behind
    /// the PROXY protocol the client its header names. A refused client is
    /// closed at once, counted in
    /// [`Refusals::denied`](crate::Refusals::denied) and logged at most
    /// once a second. Unix socket peers have no IP address: the lists do
    /// not apply to them. IPv4 rules match IPv4-mapped IPv6 peers
    /// (`::ffff:a.b.c.d`, as a dual-stack socket sees IPv4 clients).
    ///
    /// ```
    /// use socketserver::{IpNet, Server, StreamRequest, Threading};
    ///
    /// let server = Server::builder()
    ///     .strategy(Threading::new())
    ///     .allow("127.0.0.0/8".parse::<IpNet>()?)
    ///     .allow("::1".parse::<IpNet>()?)
    ///     .deny("127.0.0.66".parse::<IpNet>()?)
    ///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow(mut self, net: IpNet) -> Self {
        self.access.allow.push(net);
        self
    }

    /// Refuses clients from `net` (repeatable), whatever the allow rules
    /// say. See [`allow`](Self::allow).
    pub fn deny(mut self, net: IpNet) -> Self {
        self.access.deny.push(net);
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

    /// The strategy chosen so far (to adapt other options to it, e.g.
    /// [`max_pre_handler`](Self::max_pre_handler), refused under a
    /// strategy that serves in the loop).
    #[must_use]
    pub fn chosen_strategy(&self) -> &S {
        &self.strategy
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
    pub fn build<T, H>(self, mut transport: T, handler: H) -> io::Result<Server<T, S, H>>
    where
        T: Transport,
        H: Handler<T::Request>,
    {
        transport.adopt_options(&self.options);
        Server::assemble(self, transport, handler)
    }
}
