//! Transports: the listening side of TCP, UDP, Unix stream and Unix datagram
//! sockets, built with `socket2` and the defaults a server wants.
//!
//! | transport | request | scheme |
//! |---|---|---|
//! | [`Tcp`] | [`StreamRequest`](crate::StreamRequest) | `tcp` |
//! | [`Udp`] | [`DatagramRequest`](crate::DatagramRequest) | `udp` |
//! | [`Unix`] | [`StreamRequest`](crate::StreamRequest) | `unix` |
//! | [`Unixgram`] | [`DatagramRequest`](crate::DatagramRequest) | `unixgram` |
//! | [`Listeners`] | [`StreamRequest`](crate::StreamRequest) | each listener's: `tcp`, `unix` |
//!
//! Sockets are made non-blocking (the server waits with `poll(2)` on the
//! socket and its wake-up fd together) and close-on-exec; accepted
//! connections are blocking, which is what handler code expects.

mod keepalive;
mod listeners;
mod tcp;
mod udp;
mod unix;

pub(crate) use keepalive::AcceptOptions;
pub use keepalive::{
    Keepalive, DEFAULT_KEEPALIVE_COUNT, DEFAULT_KEEPALIVE_IDLE, DEFAULT_KEEPALIVE_INTERVAL,
};
#[cfg(feature = "tls")]
pub use listeners::ListenerTls;
pub use listeners::{Listeners, StreamListener};
pub use tcp::Tcp;
pub use udp::Udp;
pub use unix::{Unix, Unixgram};

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use crate::{Address, ShutdownHandle};

/// Socket options a transport is built with; set through
/// [`Builder`](crate::Builder) (or start from `SocketOptions::default()` and
/// set fields, for a transport's own `bind`).
///
/// ```no_run
/// use socketserver::transport::{SocketOptions, Tcp};
///
/// let mut options = SocketOptions::default();
/// options.backlog = 16;
/// let tcp = Tcp::bind("127.0.0.1:0", &options)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `SO_REUSEADDR` (default `true`): restart at once while old
    /// connections sit in `TIME_WAIT`. Python: `allow_reuse_address`.
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (default `false`): several processes share one port and
    /// the kernel spreads connections. Python: `allow_reuse_port`.
    pub reuse_port: bool,
    /// `listen(2)` backlog (default `SOMAXCONN`). Python:
    /// `request_queue_size` (5 there).
    pub backlog: i32,
    /// `TCP_NODELAY` on accepted connections (default `true`): small replies
    /// go out at once instead of waiting for Nagle's algorithm.
    pub nodelay: bool,
    /// `IPV6_V6ONLY` for IPv6 listeners; `None` keeps the OS default (dual
    /// stack on Linux).
    pub only_v6: Option<bool>,
    /// Largest datagram accepted whole (default 65,507, the IPv4 UDP
    /// maximum). A larger one is dropped and reported, never truncated.
    pub max_datagram_size: usize,
    /// TCP keepalive on accepted connections (default
    /// [`Keepalive::default()`]: 15 s idle, probes every 5 s, 3 probes, so
    /// a vanished idle peer is noticed within about 30 s); `None` leaves
    /// the OS default (off). See [`Keepalive`].
    pub keepalive: Option<Keepalive>,
    /// `TCP_USER_TIMEOUT` on accepted connections: data left unacknowledged
    /// this long ends the connection (a peer that vanished while the server
    /// wrote to it). Default: the default write timeout (60 s) capped at the
    /// default keepalive's time to notice (30 s), since on Linux it also
    /// replaces the keepalive probe count; `None` leaves the OS default
    /// (retransmissions for about 15 minutes).
    pub user_timeout: Option<Duration>,
}

/// The default `TCP_USER_TIMEOUT` for a write timeout and keepalive: the
/// write timeout, capped at the keepalive's time to notice a vanished peer
/// (the user timeout, once set, is also the keepalive's limit on Linux);
/// none when writes may wait forever.
pub(crate) fn default_user_timeout(
    write_timeout: Option<Duration>,
    keepalive: Option<Keepalive>,
) -> Option<Duration> {
    match (write_timeout, keepalive) {
        (Some(w), Some(k)) => Some(w.min(k.time_to_notice())),
        (Some(w), None) => Some(w),
        (None, _) => None,
    }
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            reuse_address: true,
            reuse_port: false,
            backlog: libc::SOMAXCONN,
            nodelay: true,
            only_v6: None,
            max_datagram_size: 65_507,
            keepalive: Some(Keepalive::default()),
            user_timeout: default_user_timeout(
                Some(crate::DEFAULT_WRITE_TIMEOUT),
                Some(Keepalive::default()),
            ),
        }
    }
}

/// The listening socket (or sockets) a server serves. Implemented by
/// [`Tcp`], [`Udp`], [`Unix`], [`Unixgram`] and [`Listeners`] (several
/// stream sockets); the trait is sealed.
pub trait Transport: sealed::Source + Send + Sync + 'static {
    /// The address the socket is bound to (the real port when bound to 0);
    /// the first one's for [`Listeners`].
    fn address(&self) -> &Address;

    /// The URL scheme: `tcp`, `udp`, `unix` or `unixgram`.
    fn scheme(&self) -> &'static str;

    /// `SCHEME://ADDR` of every listening socket, in order: one for a
    /// single socket, one per listener for [`Listeners`].
    fn urls(&self) -> Vec<String> {
        vec![url_of(self.scheme(), self.address())]
    }
}

/// `SCHEME://ADDR`, e.g. `tcp://127.0.0.1:8000`, `unix:///tmp/s.sock`.
pub(crate) fn url_of(scheme: &str, address: &Address) -> String {
    match address {
        Address::Unix(Some(p)) => format!("{scheme}://{}", p.display()),
        a => format!("{scheme}://{a}"),
    }
}

pub(crate) use sealed::{Next, Source};

pub(crate) mod sealed {
    use super::*;

    /// What taking one request off the socket gave.
    pub enum Next<R> {
        /// A request to serve.
        Request(R),
        /// Nothing pending (the socket would block).
        Empty,
        /// Something arrived and was dropped (e.g. an oversized datagram).
        Rejected(Address, io::Error),
    }

    /// The server loop's view of a transport.
    pub trait Source {
        /// What one request is for this transport:
        /// [`StreamRequest`](crate::StreamRequest) or
        /// [`DatagramRequest`](crate::DatagramRequest).
        type Request: crate::Peer + crate::request::sealed::Tracked + Send + 'static;
        /// The fd to wait on for readability.
        fn fd(&self) -> BorrowedFd<'_>;
        /// Size of the receive buffer the loop must pass to `next` (0 for
        /// stream transports).
        fn buffer_size(&self) -> usize;
        /// Takes one request without blocking.
        fn next(
            &self,
            buf: &mut [u8],
            shutdown: &ShutdownHandle,
        ) -> io::Result<Next<Self::Request>>;
        /// Releases what outlives the socket (a Unix socket file).
        fn cleanup(&mut self) {}
        /// A graceful close begins: refuse new connections from now on
        /// (a socket this transport bound itself; an inherited one may be
        /// shared with a supervisor or a successor process, and is left as
        /// it is).
        fn stop_listening(&self) {}
        /// The socket now serves a successor process too (a zero-downtime
        /// upgrade): from now on closing neither stops it listening nor
        /// removes its file.
        fn hand_over(&self) {}
        /// The [`Builder`](crate::Builder)'s options, for a transport made
        /// without any (`from_std`): what it gives accepted connections.
        /// A transport bound with options of its own keeps them.
        fn adopt_options(&mut self, _opts: &SocketOptions) {}
        /// The listening sockets, in order: what an upgrade hands to the
        /// new process (one, [`fd`](Self::fd), but for [`Listeners`]).
        fn listening_fds(&self) -> Vec<BorrowedFd<'_>> {
            vec![self.fd()]
        }
        /// Every descriptor of the transport, which a process forked to
        /// serve one connection closes.
        fn own_fds(&self) -> Vec<RawFd> {
            use std::os::fd::AsRawFd;
            vec![self.fd().as_raw_fd()]
        }
        /// Whether a server can be built on it (an empty [`Listeners`]
        /// cannot).
        fn check(&self) -> io::Result<()> {
            Ok(())
        }
        /// What TLS each listener speaks, when listeners differ
        /// ([`Listeners`]); empty: as the server.
        #[cfg(feature = "tls")]
        fn listener_tls(&self) -> Vec<ListenerTls> {
            Vec::new()
        }
    }
}

/// Calls `bind` with each address `addrs` resolves to and returns the first
/// success, or the last error.
pub(crate) fn bind_first<T>(
    addrs: impl std::net::ToSocketAddrs,
    scheme: &str,
    bind: impl Fn(std::net::SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for addr in addrs.to_socket_addrs()? {
        match bind(addr) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bind {scheme}: the address resolved to nothing"),
        )
    }))
}

/// Creates an IP socket of `ty` for `addr` with the address-reuse and IPv6
/// options of `opts`; returns it with `SCHEME://ADDR` for error messages.
pub(crate) fn inet_socket(
    addr: std::net::SocketAddr,
    ty: socket2::Type,
    proto: socket2::Protocol,
    opts: &SocketOptions,
) -> io::Result<(socket2::Socket, String)> {
    use crate::error::at;
    let scheme = if ty == socket2::Type::STREAM {
        "tcp"
    } else {
        "udp"
    };
    let target = format!("{scheme}://{addr}");
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(proto))
        .map_err(at("socket", &target))?;
    socket
        .set_reuse_address(opts.reuse_address)
        .map_err(at("setsockopt SO_REUSEADDR", &target))?;
    if opts.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(at("setsockopt SO_REUSEPORT", &target))?;
    }
    if let (std::net::SocketAddr::V6(_), Some(only)) = (addr, opts.only_v6) {
        socket
            .set_only_v6(only)
            .map_err(at("setsockopt IPV6_V6ONLY", &target))?;
    }
    Ok((socket, target))
}

/// Receives one datagram into `buf` (which is `max + 1` bytes, so that a
/// larger datagram shows as `max + 1` bytes instead of being silently cut).
pub(crate) fn next_datagram(
    socket: &std::sync::Arc<crate::DatagramSocket>,
    buf: &mut [u8],
    shutdown: &ShutdownHandle,
) -> io::Result<Next<crate::DatagramRequest>> {
    let max = buf.len() - 1;
    match socket.recv_from(buf) {
        Ok((n, peer)) if n > max => Ok(Next::Rejected(
            peer.clone(),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "datagram from {peer} is larger than max_datagram_size ({max} bytes): dropped"
                ),
            ),
        )),
        Ok((n, peer)) => Ok(Next::Request(crate::DatagramRequest::new(
            buf[..n].to_vec(),
            peer,
            socket.clone(),
            shutdown.clone(),
        ))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Next::Empty),
        Err(e) => Err(e),
    }
}
