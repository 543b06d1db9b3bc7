//! Listening sockets made by someone else: systemd socket activation
//! (`LISTEN_FDS`), or a socket handed over by a parent process for a
//! zero-downtime restart.
//!
//! systemd (or any supervisor speaking its protocol) opens the sockets,
//! passes them as fds 3, 4, ... and sets `LISTEN_PID` to our pid and
//! `LISTEN_FDS` to their number. [`listeners`] adopts them, typed by what
//! they are; each then goes to the transport's `from_std`:
//!
//! ```no_run
//! use socketserver::activation::{self, Listener};
//! use socketserver::transport::Tcp;
//! use socketserver::{Server, StreamRequest, Threading};
//!
//! for listener in activation::listeners()? {
//!     if let Listener::Tcp(l) = listener {
//!         let server = Server::builder()
//!             .strategy(Threading::new())
//!             .serve(Tcp::from_std(l)?, |r: &mut StreamRequest| r.echo().map(drop))?;
//!         server.serve_forever()?;
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! See `docs/deploy.md` for the unit files.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener};

use socket2::{Domain, Socket, Type};

/// The first fd passed by socket activation.
pub const LISTEN_FDS_START: i32 = 3;

/// An inherited socket, by kind.
#[derive(Debug)]
pub enum Listener {
    /// A listening TCP socket: serve with `Tcp::from_std`.
    Tcp(TcpListener),
    /// A bound UDP socket: `Udp::from_std`.
    Udp(UdpSocket),
    /// A listening Unix stream socket: `Unix::from_std`.
    Unix(UnixListener),
    /// A bound Unix datagram socket: `Unixgram::from_std`.
    Unixgram(UnixDatagram),
}

/// Adopts the sockets passed by socket activation, in fd order (an empty
/// list when there are none, or they are meant for another process).
///
/// Clears `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, so that child
/// processes do not adopt them again; call it early, before other threads
/// read the environment.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: i32 = fds.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={fds:?} is not a number"),
        )
    })?;
    (LISTEN_FDS_START..LISTEN_FDS_START + n.max(0))
        .map(adopt)
        .collect()
}

/// Adopts one inherited socket fd, typed by its domain and type.
pub fn adopt(fd: i32) -> io::Result<Listener> {
    let owned =
        crate::sys::adopt_fd(fd).map_err(|e| crate::Error::wrap("adopt", format!("fd {fd}"), e))?;
    let socket = Socket::from(owned);
    let kind = (socket.domain()?, socket.r#type()?);
    Ok(match kind {
        (Domain::IPV4 | Domain::IPV6, Type::STREAM) => Listener::Tcp(socket.into()),
        (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => Listener::Udp(socket.into()),
        (Domain::UNIX, Type::STREAM) => Listener::Unix(socket.into()),
        (Domain::UNIX, Type::DGRAM) => Listener::Unixgram(socket.into()),
        (domain, ty) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("fd {fd} is a socket of domain {domain:?} and type {ty:?}, which this crate does not serve"),
            ))
        }
    })
}
