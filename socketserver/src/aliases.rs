//! Python's names, in one place, for readers coming from `socketserver`.
//!
//! | Python | here |
//! |---|---|
//! | `BaseServer` | [`BaseServer`] = [`Server`] |
//! | `TCPServer`, `UDPServer` | [`TcpServer`], [`UdpServer`] |
//! | `UnixStreamServer`, `UnixDatagramServer` | [`UnixStreamServer`], [`UnixDatagramServer`] |
//! | `ThreadingTCPServer`, `ThreadingUDPServer` | [`ThreadingTcpServer`], [`ThreadingUdpServer`] |
//! | `ThreadingUnixStreamServer`, `ThreadingUnixDatagramServer` | [`ThreadingUnixStreamServer`], [`ThreadingUnixDatagramServer`] |
//! | `ForkingTCPServer`, `ForkingUDPServer` | [`ForkingTcpServer`], [`ForkingUdpServer`] |
//! | `ForkingUnixStreamServer`, `ForkingUnixDatagramServer` | [`ForkingUnixStreamServer`], [`ForkingUnixDatagramServer`] |
//! | `ThreadingMixIn`, `ForkingMixIn` | [`ThreadingMixIn`] = [`Threading`], [`ForkingMixIn`] = [`Forking`] |
//! | `BaseRequestHandler` | [`BaseRequestHandler`] = [`StreamHandler`] |
//! | `StreamRequestHandler` | [`StreamRequestHandler`] = [`StreamHandler`] |
//! | `DatagramRequestHandler` | [`DatagramRequestHandler`] = [`DatagramHandler`] |
//!
//! A thread pool has no Python counterpart; [`PoolTcpServer`] and friends
//! complete the table.
//!
//! The server type aliases (`TcpServer`, `ThreadingTcpServer`, ...) are
//! everyday names and are re-exported at the crate root; the purely Python
//! ones (`BaseServer`, `BaseRequestHandler`, `StreamRequestHandler`,
//! `ThreadingMixIn`, ...) live only here, so that they never show up in
//! compiler messages about your code.
//!
//! ```
//! use socketserver::aliases::{BaseServer, StreamRequestHandler};
//! use socketserver::StreamRequest;
//! use std::io;
//!
//! struct Echo;
//! impl StreamRequestHandler for Echo {
//!     fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
//!         req.echo().map(drop)
//!     }
//! }
//! let server: socketserver::TcpServer<Echo> = BaseServer::builder().tcp("127.0.0.1:0", Echo)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::strategy::{Forking, Pool, Synchronous, Threading};
use crate::transport::{Tcp, Udp, Unix, Unixgram};
use crate::Server;

#[doc(no_inline)]
pub use crate::handler::{
    DatagramHandler, DatagramHandler as DatagramRequestHandler, StreamHandler,
    StreamHandler as BaseRequestHandler, StreamHandler as StreamRequestHandler,
};
#[doc(no_inline)]
pub use crate::strategy::{Forking as ForkingMixIn, Threading as ThreadingMixIn};
#[doc(no_inline)]
pub use crate::Server as BaseServer;

/// Python's `TCPServer`: one request at a time.
pub type TcpServer<H> = Server<Tcp, Synchronous, H>;
/// Python's `UDPServer`: one datagram at a time.
pub type UdpServer<H> = Server<Udp, Synchronous, H>;
/// Python's `UnixStreamServer`.
pub type UnixStreamServer<H> = Server<Unix, Synchronous, H>;
/// Python's `UnixDatagramServer`.
pub type UnixDatagramServer<H> = Server<Unixgram, Synchronous, H>;

/// Python's `ThreadingTCPServer`: a thread per connection.
pub type ThreadingTcpServer<H> = Server<Tcp, Threading, H>;
/// Python's `ThreadingUDPServer`: a thread per datagram.
pub type ThreadingUdpServer<H> = Server<Udp, Threading, H>;
/// Python's `ThreadingUnixStreamServer`.
pub type ThreadingUnixStreamServer<H> = Server<Unix, Threading, H>;
/// Python's `ThreadingUnixDatagramServer`.
pub type ThreadingUnixDatagramServer<H> = Server<Unixgram, Threading, H>;

/// Python's `ForkingTCPServer`: a child process per connection.
pub type ForkingTcpServer<H> = Server<Tcp, Forking, H>;
/// Python's `ForkingUDPServer`: a child process per datagram.
pub type ForkingUdpServer<H> = Server<Udp, Forking, H>;
/// Python's `ForkingUnixStreamServer`.
pub type ForkingUnixStreamServer<H> = Server<Unix, Forking, H>;
/// Python's `ForkingUnixDatagramServer`.
pub type ForkingUnixDatagramServer<H> = Server<Unixgram, Forking, H>;

/// A TCP server on a thread pool (no Python counterpart).
pub type PoolTcpServer<H> = Server<Tcp, Pool, H>;
/// A UDP server on a thread pool.
pub type PoolUdpServer<H> = Server<Udp, Pool, H>;
/// A Unix stream server on a thread pool.
pub type PoolUnixStreamServer<H> = Server<Unix, Pool, H>;
/// A Unix datagram server on a thread pool.
pub type PoolUnixDatagramServer<H> = Server<Unixgram, Pool, H>;
