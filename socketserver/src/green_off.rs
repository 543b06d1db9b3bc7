//! Without the `green` feature: the calls the rest of the crate makes into
//! `green`, each doing what it does outside a green coroutine (no code
//! ever runs in one), so that no caller needs a `cfg` of its own.

use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use crate::Conn;

/// Never: no coroutine exists without the feature.
pub(crate) fn is_green() -> bool {
    false
}

/// Nothing: no green stacks without the feature.
pub(crate) fn report_stack_ceiling(_max_connections: Option<usize>) {}

/// `std::thread::sleep`.
pub(crate) fn sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// The blocking read of the socket.
pub(crate) fn read(conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
    match conn {
        Conn::Tcp(s) => (&*s).read(buf),
        Conn::Unix(s) => (&*s).read(buf),
    }
}

/// The blocking write of the socket.
pub(crate) fn write(conn: &Conn, buf: &[u8]) -> io::Result<usize> {
    match conn {
        Conn::Tcp(s) => (&*s).write(buf),
        Conn::Unix(s) => (&*s).write(buf),
    }
}

/// Nothing caches a timeout without the feature.
pub(crate) fn timeout_set(_fd: RawFd, _write: bool, _t: Option<Duration>) {}

/// `poll(2)`.
pub(crate) fn poll_read(
    socket: Option<BorrowedFd<'_>>,
    wake: RawFd,
    timeout: Option<Duration>,
) -> io::Result<crate::sys::Ready> {
    crate::sys::poll_read(socket, wake, timeout)
}

/// `poll(2)` for room in the send buffer.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    crate::sys::wait_writable(fd, timeout)
}

/// What an abandoned request lost (never, without the feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The request itself.
    Request,
    /// One of its companions.
    #[allow(dead_code)]
    Companion,
}

/// Nothing is ever abandoned without the feature.
#[must_use]
pub(crate) struct Abandon;

/// Nothing to register without the feature.
pub(crate) fn on_abandon(_fd: Option<RawFd>, _release: impl FnMut(Lost) + 'static) -> Abandon {
    Abandon
}
