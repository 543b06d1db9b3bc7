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
//!             .build(Tcp::from_std(l)?, |r: &mut StreamRequest| r.echo().map(drop))?;
//!         server.serve_forever()?;
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! See `docs/deploy.md` for the unit files.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};

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
/// The sockets are adopted once per process: a later call returns an empty
/// list. The variables stay in the environment (changing the environment
/// of a running process is not thread-safe); a child process started
/// later inherits them with `LISTEN_PID` naming this process, not itself,
/// and does not adopt anything (the descriptors are close-on-exec from
/// here on anyway).
pub fn listeners() -> io::Result<Vec<Listener>> {
    static ADOPTED: AtomicBool = AtomicBool::new(false);
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if !names_this_process(&pid) || ADOPTED.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let n: i32 = fds.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={fds:?} is not a number"),
        )
    })?;
    let end = fd_range_end(n).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={n} is out of range: expected 0 to {MAX_LISTEN_FDS} descriptors"),
        )
    })?;
    (LISTEN_FDS_START..end)
        .map(|fd| {
            // The descriptor is ours by the activation protocol (LISTEN_PID
            // names this process, and `ADOPTED` keeps a later call from
            // adopting it again); `adopt_fd` checks it is open.
            let owned = crate::sys::adopt_fd(fd)
                .map_err(|e| crate::Error::wrap("adopt", format!("fd {fd}"), e))?;
            adopt(owned)
        })
        .collect()
}

/// The variable naming the pid of a process an upgrade started
/// (`reload::READY_PID_VAR`; as `LISTEN_PID` for `LISTEN_FDS`).
pub(crate) const UPGRADE_PID_VAR: &str = "SOCKETSERVER_READY_PID";

/// Whether an upgrade (`reload`) started this process: the variable names
/// it (a process that inherited it from one started so does not count).
pub(crate) fn started_by_upgrade() -> bool {
    std::env::var(UPGRADE_PID_VAR).is_ok_and(|pid| names_this_process(&pid))
}

/// Whether `pid` (a `LISTEN_PID`-style value) is this process's pid.
fn names_this_process(pid: &str) -> bool {
    pid.trim().parse::<u32>().ok() == Some(std::process::id())
}

/// The most descriptors [`listeners`] accepts from `LISTEN_FDS`: far more
/// than any unit passes, small enough that `LISTEN_FDS_START + n` cannot
/// overflow.
pub const MAX_LISTEN_FDS: i32 = 65_536;

/// One past the last fd of `n` inherited descriptors, if `n` is sane.
fn fd_range_end(n: i32) -> Option<i32> {
    if (0..=MAX_LISTEN_FDS).contains(&n) {
        LISTEN_FDS_START.checked_add(n)
    } else {
        None
    }
}

/// Adopts one inherited socket, typed by its domain and type. The socket
/// must be an `OwnedFd` already: turning a raw number into one is the
/// caller's `unsafe` promise that nothing else owns it (`listeners` does
/// that for activation fds).
///
/// ```
/// use socketserver::activation::{adopt, Listener};
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let adopted = adopt(std::os::fd::OwnedFd::from(listener))?;
/// assert!(matches!(adopted, Listener::Tcp(_)));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn adopt(fd: OwnedFd) -> io::Result<Listener> {
    let raw = fd.as_raw_fd();
    let socket = Socket::from(fd);
    let kind = (
        socket
            .domain()
            .map_err(|e| crate::Error::wrap("adopt", format!("fd {raw}"), e))?,
        socket
            .r#type()
            .map_err(|e| crate::Error::wrap("adopt", format!("fd {raw}"), e))?,
    );
    Ok(match kind {
        (Domain::IPV4 | Domain::IPV6, Type::STREAM) => Listener::Tcp(socket.into()),
        (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => Listener::Udp(socket.into()),
        (Domain::UNIX, Type::STREAM) => Listener::Unix(socket.into()),
        (Domain::UNIX, Type::DGRAM) => Listener::Unixgram(socket.into()),
        (domain, ty) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("fd {raw} is a socket of domain {domain:?} and type {ty:?}, which this crate does not serve"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_out_of_range_is_refused_not_overflowed() {
        assert_eq!(fd_range_end(0), Some(3));
        assert_eq!(fd_range_end(2), Some(5));
        assert_eq!(fd_range_end(-1), None);
        assert_eq!(fd_range_end(i32::MAX), None);
        assert_eq!(fd_range_end(MAX_LISTEN_FDS + 1), None);
    }
}
