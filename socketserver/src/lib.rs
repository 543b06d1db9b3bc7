//! # socketserver
//!
//! Python's [`socketserver`](https://docs.python.org/3/library/socketserver.html)
//! for Rust: you write a handler; the server owns the socket, the loop, the
//! concurrency, errors and shutdown.
//!
//! ```
//! use socketserver::{StreamRequest, ThreadingTcpServer};
//! use std::io::{BufRead, Write};
//!
//! let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
//!     let mut line = String::new();
//!     while req.rfile().read_line(&mut line)? > 0 {
//!         req.wfile().write_all(line.to_uppercase().as_bytes())?;
//!         line.clear();
//!     }
//!     Ok(())
//! })?;
//! println!("listening on {}", server.url());
//! # server.shutdown(); // so that the doctest ends
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A server is three parts, each swappable on its own:
//!
//! * a **transport** ([`transport`]): TCP, UDP, Unix stream, Unix datagram;
//!   IPv4 and IPv6;
//! * a **strategy** ([`strategy`]): [`Synchronous`], [`Threading`] (a thread
//!   per connection), [`Pool`] (N workers), [`Forking`] (a process per
//!   connection);
//! * a **handler**: a [`StreamHandler`] or a [`DatagramHandler`] (or a
//!   closure), with Python's `setup` / `handle` / `finish` and the server
//!   hooks `verify_request`, `handle_error`, `handle_timeout`,
//!   `service_actions`.
//!
//! Changing the strategy is one line: `ThreadingTcpServer::bind` becomes
//! `ForkingTcpServer::bind`, or `Server::builder().strategy(Pool::new(8))`.
//!
//! ## Python → Rust
//!
//! | Python | Rust |
//! |---|---|
//! | `BaseServer` | [`Server<T, S, H>`](Server) |
//! | `TCPServer`, `UDPServer`, `UnixStreamServer`, `UnixDatagramServer` | [`TcpServer`], [`UdpServer`], [`UnixStreamServer`], [`UnixDatagramServer`] |
//! | `ThreadingTCPServer`, `ForkingUDPServer`, ... | [`ThreadingTcpServer`], [`ForkingUdpServer`], ... ([`aliases`]) |
//! | `ThreadingMixIn`, `ForkingMixIn` | [`Threading`], [`Forking`] (and [`Pool`]); under `Forking`, changes to shared state stay in the child |
//! | `BaseRequestHandler`, `StreamRequestHandler`, `DatagramRequestHandler` | [`StreamHandler`], [`DatagramHandler`] |
//! | `self.request`, `self.client_address` | [`StreamRequest::stream`], [`StreamRequest::peer_addr`] |
//! | `self.x = ...` in `setup`, read in `finish` (a handler object per request) | [`StreamRequest::state`] (a value per connection, by type); shared state on `&self` |
//! | `self.rfile`, `self.wfile` | [`StreamRequest::rfile`], [`StreamRequest::wfile`] (buffered, auto-flushed) |
//! | `serve_forever()`, `handle_request()` | [`Server::serve_forever`], [`Server::handle_request`] |
//! | `shutdown()` (from another thread only) | [`ShutdownHandle::shutdown`] (from anywhere, also a handler; never blocks) |
//! | `server_close()`, `with server:` | [`Server::server_close`], `Drop` (a graceful drain bounded by `close_timeout`) |
//! | (none: Go's `Server.Shutdown`) | [`Server::close_gracefully`]: idle connections closed at once, busy ones get a deadline |
//! | `verify_request`, `handle_error`, `handle_timeout`, `service_actions` | methods of the handler traits |
//! | `allow_reuse_address`, `allow_reuse_port`, `request_queue_size`, `timeout` | [`Builder`] options (better defaults) |
//! | `daemon_threads`, `block_on_close` | [`Threading::daemon_threads`], [`Threading::block_on_close`] |
//! | `max_children` | [`Forking::max_children`] |
//!
//! ## Where it differs from Python, on purpose
//!
//! * `shutdown` is immediate: the loop waits on its socket and a wake-up fd
//!   together, instead of waking every 0.5 s to check a flag.
//! * A handler that panics costs its connection, not the server; the panic is
//!   logged with the peer's address.
//! * Accept errors such as running out of file descriptors are logged and
//!   retried with backoff instead of spinning or being ignored.
//! * Datagrams up to 65,507 bytes are received whole (Python: 8,192), and a
//!   larger one is reported, not silently truncated.
//! * `SO_REUSEADDR` is on, the listen backlog is `SOMAXCONN` (Python: 5),
//!   `TCP_NODELAY` is on.
//!
//! Logging goes through the [`log`](https://docs.rs/log) crate; nothing is
//! printed by the library. A handler's panic is logged there too, with the
//! peer, instead of being printed by the default panic hook (set
//! `RUST_BACKTRACE=1` for its backtrace, logged at debug level); panics
//! outside handlers still reach the hook that was installed before.
//!
//! ## Per-connection state
//!
//! One handler value serves every connection (`&self` is shared, across
//! threads): that is where shared state lives. State of one connection, what
//! Python keeps in `self` of its per-request handler object, lives in the
//! request: [`StreamRequest::state`] gives the connection's value of any
//! `Default` type, from `setup` through `handle` to `finish`. Under
//! [`Forking`], the handler's shared state is the child's copy: changes do
//! not outlive the request (see [`Forking`]).
//!
//! ## Cargo features
//!
//! | feature | default | what | dependencies |
//! |---|---|---|---|
//! | `framing` | yes | length-prefixed frames (`framing`) | none |
//! | `json` | no | JSON frames (`framing::read_json`, `write_json`) | `serde`, `serde_json` |
//! | `auth` | no | HMAC-SHA256 challenge-response (`auth`) | `hmac`, `sha2`, `getrandom` |
//! | `green` | yes | the `Green` strategy (`green`): coroutines over epoll | `corosensei`, `mio` |
//! | `tls` | no | TLS on stream servers (`Builder::tls`, `tls`), the names of client certificates | `rustls` (with `ring`), `rustls-pki-types`, `x509-parser` |
//! | `metrics` | no | Prometheus text exposition of the servers' counters, and a `GET /metrics` endpoint (`metrics`) | none |
//!
//! With the defaults the library builds in 17 crates (itself included);
//! without `green` (`default-features = false, features = ["framing"]`) in
//! 15. The crypto of `auth` is opt-in so that a plain server compiles none.
//!
//! ## Platforms
//!
//! Unix only (Linux first, also macOS and the BSDs): the library is built on
//! `fork`, `poll`, Unix sockets and signals, and does not compile elsewhere.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(rust_2018_idioms)]

#[cfg(not(unix))]
compile_error!(
    "socketserver supports Unix only (Linux first): it is built on fork, poll, Unix sockets and \
     signals. Build it on Linux, macOS or a BSD."
);

pub mod activation;
mod address;
mod admission;
pub mod aliases;
#[cfg(feature = "auth")]
pub mod auth;
mod builder;
mod conn;
mod connections;
#[allow(unsafe_code)] // `Counters` may live in shared memory (`ZeroAtomics`); see its SAFETY note
pub mod counters;
mod error;
#[cfg(feature = "framing")]
pub mod framing;
#[cfg(feature = "green")]
pub mod green;
#[cfg(not(feature = "green"))]
#[path = "green_off.rs"]
mod green;
mod handler;
mod ipnet;
mod jobs;
mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "tls")]
mod peer_names;
#[allow(unsafe_code)] // flock(2); see its docs
pub mod pidfile;
pub mod pipeline;
#[allow(unsafe_code)] // setgroups, setgid, setuid, getpwnam_r; see its docs
pub mod privilege;
pub mod proxy;
mod refusal;
pub mod reload;
mod request;
mod server;
mod shutdown;
pub mod strategy;
#[allow(unsafe_code)] // the OS layer: the calls std does not offer; see its docs
mod sys;
mod throttle;
mod timeouts;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tls")]
use tls as tls_session;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls_session;
pub mod transport;

pub use address::{Address, AddressParseError};
pub use aliases::{
    ForkingTcpServer, ForkingUdpServer, ForkingUnixDatagramServer, ForkingUnixStreamServer,
    PoolTcpServer, PoolUdpServer, PoolUnixDatagramServer, PoolUnixStreamServer, TcpServer,
    ThreadingTcpServer, ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer,
    UdpServer, UnixDatagramServer, UnixStreamServer,
};
pub use builder::Builder;
pub use connections::{DrainReport, LimitPolicy, Stats};
pub use error::Error;
pub use handler::{log_request_error, DatagramHandler, Handler, RequestError, StreamHandler};
pub use ipnet::{IpNet, IpNetParseError};
pub use refusal::Refusals;
pub use request::{Conn, DatagramRequest, DatagramSocket, Peer, StreamRequest};
pub use server::{Server, DEFAULT_CLOSE_TIMEOUT};
pub use shutdown::{ShutdownHandle, Signal};
#[cfg(feature = "green")]
pub use strategy::Green;
pub use strategy::{Forking, Job, Pool, PreFork, Strategy, Synchronous, Threading};
pub use timeouts::{
    DEFAULT_MESSAGE_TIMEOUT, DEFAULT_MIN_DATA_RATE, DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
pub use transport::Transport;
