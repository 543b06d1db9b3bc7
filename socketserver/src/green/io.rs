//! The hooks of a request's socket under `Green`: reads and writes of a
//! connection, the server loop's wait and a datagram reply's wait for room,
//! each suspending the coroutine in its worker's reactor instead of
//! blocking the thread.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::coroutine::{Resume, Suspend};
use super::{current, reactor};
use crate::Conn;

/// Waits in the reactor until `fd` is readable (or writable), or `deadline`
/// passes: `Ok(false)` on timeout; an error (`ConnectionAborted`) when the
/// coroutine is a companion whose request ended.
fn wait(fd: BorrowedFd<'_>, write: bool, deadline: Option<Instant>) -> io::Result<bool> {
    let why = Suspend::Io {
        fd: fd.as_raw_fd(),
        write,
        also: None,
        deadline,
    };
    match current::suspend(why) {
        Some(Resume::TimedOut) => Ok(false),
        Some(Resume::Cancelled) if current::doomed() => Err(companion_overflowed()),
        Some(Resume::Cancelled) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the request of this green companion ended",
        )),
        _ => Ok(true),
    }
}

fn companion_overflowed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "a companion of this green request overflowed its stack: its connection is closed",
    )
}

/// When this request lost its connection (a companion of it overflowed
/// its stack), shuts the connection down (nothing more reaches the
/// client, who sees it closed) and fails.
fn check_doomed(conn: &Conn) -> io::Result<()> {
    if !current::doomed() {
        return Ok(());
    }
    let _ = match conn {
        Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
    };
    Err(companion_overflowed())
}

/// The server loop's wait, when `Green` runs it as a coroutine: until
/// `socket` or `wake` is readable, or `timeout` passes, in the worker's
/// reactor (other coroutines run meanwhile). As `poll(2)`, it reports the
/// descriptors ready now, so it first looks without waiting.
pub(crate) fn poll_read(
    socket: Option<BorrowedFd<'_>>,
    wake: std::os::fd::RawFd,
    timeout: Option<Duration>,
) -> io::Result<crate::sys::Ready> {
    let now = crate::sys::poll_read(socket, wake, Some(Duration::ZERO))?;
    if now.socket || now.wake || timeout == Some(Duration::ZERO) {
        // No wait, yet the other coroutines of this worker (the requests
        // this loop has just placed here among them) run first, as after a
        // wait: a loop that finds work every time (a flood, a zero service
        // interval) must not keep its worker to itself. Only this loop
        // takes from its sockets, so what was ready still is (and were it
        // not, the loop would find nothing and look again).
        let _ = current::suspend(Suspend::Sleep(Instant::now()));
        return Ok(now);
    }
    // Nothing ready now: from here on an edge wakes this coroutine (an
    // event epoll reported earlier is stale).
    let socket_fd = socket.map(|s| s.as_raw_fd());
    reactor::blocked(wake, false);
    if let Some(fd) = socket_fd {
        reactor::blocked(fd, false);
    }
    let why = Suspend::Io {
        fd: wake,
        write: false,
        also: socket_fd,
        deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
    };
    match current::suspend(why) {
        Some(Resume::TimedOut) => Ok(crate::sys::Ready::default()),
        _ => crate::sys::poll_read(socket, wake, Some(Duration::ZERO)),
    }
}

/// What a socket timeout looks like from the kernel: `EAGAIN`, as a
/// blocking socket with `SO_RCVTIMEO`/`SO_SNDTIMEO` reports it.
fn timed_out() -> io::Error {
    io::Error::from_raw_os_error(libc::EAGAIN)
}

fn deadline(timeout: io::Result<Option<Duration>>) -> Option<Instant> {
    timeout
        .ok()
        .flatten()
        .and_then(|t| Instant::now().checked_add(t))
}

/// A read of `conn` from a green coroutine: `recv(MSG_DONTWAIT)`, and on
/// `WouldBlock` the coroutine waits in the reactor, at most the socket's
/// read timeout (`SO_RCVTIMEO`, as set by the request), then fails as a
/// blocking socket would (`EAGAIN`). The socket itself stays blocking.
///
/// A read that returned less than asked drained the socket (a stream socket
/// hands over all it has): the next read waits for the reactor's event
/// first instead of trying a `recv` bound to fail.
pub(crate) fn read(conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
    check_doomed(conn)?;
    let fd = conn.as_raw_fd();
    let mut until = None;
    loop {
        if !reactor::known_blocked(fd, false) {
            match crate::sys::recv_nowait(fd, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => reactor::blocked(fd, false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) if n > 0 && n < buf.len() => {
                    reactor::blocked(fd, false);
                    return Ok(n);
                }
                r => return r,
            }
        }
        let until = *until.get_or_insert_with(|| deadline(read_timeout(conn)));
        if !wait(conn.as_fd(), false, until)? {
            return Err(timed_out());
        }
    }
}

/// A write to `conn` from a green coroutine, as [`read`] (`SO_SNDTIMEO`; a
/// short write means the socket's buffer is full).
pub(crate) fn write(conn: &Conn, buf: &[u8]) -> io::Result<usize> {
    check_doomed(conn)?;
    let fd = conn.as_raw_fd();
    let mut until = None;
    loop {
        if !reactor::known_blocked(fd, true) {
            match crate::sys::send_nowait(fd, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => reactor::blocked(fd, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) if n < buf.len() => {
                    reactor::blocked(fd, true);
                    return Ok(n);
                }
                r => return r,
            }
        }
        let until = *until.get_or_insert_with(|| deadline(write_timeout(conn)));
        if !wait(conn.as_fd(), true, until)? {
            return Err(timed_out());
        }
    }
}

/// A connection's read (`write`: write) timeout was just set to `t`: the
/// value green reads and writes cached is updated, or, when this is not the
/// coroutine serving that connection, every cached timeout is read again
/// (one `getsockopt` each).
pub(crate) fn timeout_set(fd: std::os::fd::RawFd, write: bool, t: Option<Duration>) {
    reactor::timeout_set(fd, write, t);
}

/// Waits until `fd` is writable, at most `timeout`: in the reactor from a
/// green coroutine, else with `poll(2)`. `false` on timeout.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    if !current::active() {
        return crate::sys::wait_writable(fd, timeout);
    }
    let until = Instant::now().checked_add(timeout);
    wait(fd, true, until)
}

/// The connection's read timeout, cached per connection (see
/// [`timeout_set`]).
fn read_timeout(conn: &Conn) -> io::Result<Option<Duration>> {
    reactor::timeout(conn.as_raw_fd(), false, || match conn {
        Conn::Tcp(s) => s.read_timeout(),
        Conn::Unix(s) => s.read_timeout(),
    })
}

fn write_timeout(conn: &Conn) -> io::Result<Option<Duration>> {
    reactor::timeout(conn.as_raw_fd(), true, || match conn {
        Conn::Tcp(s) => s.write_timeout(),
        Conn::Unix(s) => s.write_timeout(),
    })
}
