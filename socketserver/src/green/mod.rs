//! Green threads: what the [`Green`](crate::Green) strategy runs requests
//! on, and the calls a handler uses to wait without stalling its thread.
//!
//! Under `Green` every request is a stackful coroutine (its own small stack,
//! with a guard page) on one of a few worker threads, each with an epoll
//! reactor. A handler's reads and writes of its connection look blocking,
//! as under `Threading`; when the socket has nothing to give (or no room),
//! the coroutine is suspended and its worker runs other coroutines until
//! the reactor reports the socket ready, or the connection's read or write
//! timeout passes. See the guide in `docs/green.md`.
//!
//! Anything else that blocks (a sleep, a lock held for long, a file or DNS
//! lookup, waiting for a child process, a database client) blocks the whole
//! worker thread, and every connection on it. Wrap such calls in
//! [`blocking`], and sleep with [`sleep`]. Both work outside `Green` too
//! (they just call the closure, or sleep). A coroutine that runs more than
//! 100 ms without suspending is logged (a warning naming the peer).
//!
//! ```
//! use socketserver::{green, Green, Server, StreamRequest};
//! use std::io::Write;
//! use std::time::Duration;
//!
//! let server = Server::builder().strategy(Green::new()).tcp(
//!     "127.0.0.1:0",
//!     |req: &mut StreamRequest| {
//!         green::sleep(Duration::from_millis(10)); // other connections run meanwhile
//!         let motd = green::blocking(|| std::fs::read_to_string("/etc/motd").unwrap_or_default());
//!         req.write_all(motd.as_bytes())
//!     },
//! )?;
//! # Ok::<(), std::io::Error>(())
//! ```

#[allow(unsafe_code)] // a pointer to the running coroutine's yielder, kept in a thread-local
mod current;
mod pool;
pub(crate) mod runtime;
#[allow(unsafe_code)] // coroutine stacks carved out of mmap'd slabs
mod stacks;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::Conn;
use current as green_current;
use runtime::{Resume, Suspend};

pub use pool::MAX_HELPERS;

/// Whether the calling code runs as a green coroutine (a request under the
/// [`Green`](crate::Green) strategy).
pub fn is_green() -> bool {
    green_current::active()
}

/// Runs `f` on a helper thread while this coroutine waits, so that the other
/// connections on this thread go on; returns what `f` returns (a panic in
/// `f` is resumed here). Outside a green coroutine it just calls `f`.
///
/// For anything that blocks and is not this connection's socket: a file
/// read, a DNS lookup, a lock held for long, a child process, a client of
/// another server. The helper threads are shared by all workers, started on
/// demand (at most [`MAX_HELPERS`] at once, further calls queue) and gone
/// after 10 s idle. A call costs two thread hand-offs (tens of
/// microseconds): not worth it for what never blocks.
///
/// ```
/// let n = socketserver::green::blocking(|| 6 * 7);
/// assert_eq!(n, 42);
/// ```
pub fn blocking<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if !green_current::active() {
        return f();
    }
    let slot: Arc<Mutex<Option<std::thread::Result<R>>>> = Arc::default();
    let filled = Arc::clone(&slot);
    let call = Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f));
        *filled.lock() = Some(result);
    });
    let _ = green_current::suspend(Suspend::Blocking(call));
    let result = slot.lock().take();
    match result {
        Some(Ok(value)) => value,
        Some(Err(panic)) => resume_unwind(panic),
        None => panic!("a blocking call's coroutine was woken before the call ended"),
    }
}

/// Sleeps for `duration`: under `Green` only this coroutine waits (a timer
/// in its worker's reactor); elsewhere it is `std::thread::sleep`. A zero
/// duration lets the other coroutines of this thread run first, as
/// gevent's `sleep(0)` does (see [`yield_now`]).
pub fn sleep(duration: Duration) {
    if !green_current::active() {
        return std::thread::sleep(duration);
    }
    if duration.is_zero() {
        return yield_now();
    }
    let Some(until) = Instant::now().checked_add(duration) else {
        // Longer than the clock can represent: forever, in long naps.
        loop {
            sleep(Duration::from_secs(3600));
        }
    };
    while Instant::now() < until {
        if green_current::suspend(Suspend::Sleep(until)).is_none() {
            return;
        }
    }
}

/// Lets the other coroutines of this thread run, then carries on (a zero
/// sleep). Useful in a long computation; nothing outside `Green`.
pub fn yield_now() {
    if green_current::active() {
        let _ = green_current::suspend(Suspend::Sleep(Instant::now()));
    }
}

/// Waits in the reactor until `fd` is readable (or writable), or `deadline`
/// passes; `false` on timeout.
fn wait(fd: BorrowedFd<'_>, write: bool, deadline: Option<Instant>) -> bool {
    let why = Suspend::Io {
        fd: fd.as_raw_fd(),
        write,
        also: None,
        deadline,
    };
    !matches!(green_current::suspend(why), Some(Resume::TimedOut))
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
        yield_now();
        return Ok(now);
    }
    // Nothing ready now: from here on an edge wakes this coroutine (an
    // event epoll reported earlier is stale).
    let socket_fd = socket.map(|s| s.as_raw_fd());
    runtime::blocked(wake, false);
    if let Some(fd) = socket_fd {
        runtime::blocked(fd, false);
    }
    let why = Suspend::Io {
        fd: wake,
        write: false,
        also: socket_fd,
        deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
    };
    match green_current::suspend(why) {
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
    let fd = conn.as_raw_fd();
    let mut until = None;
    loop {
        if !runtime::known_blocked(fd, false) {
            match crate::sys::recv_nowait(fd, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => runtime::blocked(fd, false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) if n > 0 && n < buf.len() => {
                    runtime::blocked(fd, false);
                    return Ok(n);
                }
                r => return r,
            }
        }
        let until = *until.get_or_insert_with(|| deadline(read_timeout(conn)));
        if !wait(conn.as_fd(), false, until) {
            return Err(timed_out());
        }
    }
}

/// A write to `conn` from a green coroutine, as [`read`] (`SO_SNDTIMEO`; a
/// short write means the socket's buffer is full).
pub(crate) fn write(conn: &Conn, buf: &[u8]) -> io::Result<usize> {
    let fd = conn.as_raw_fd();
    let mut until = None;
    loop {
        if !runtime::known_blocked(fd, true) {
            match crate::sys::send_nowait(fd, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => runtime::blocked(fd, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) if n < buf.len() => {
                    runtime::blocked(fd, true);
                    return Ok(n);
                }
                r => return r,
            }
        }
        let until = *until.get_or_insert_with(|| deadline(write_timeout(conn)));
        if !wait(conn.as_fd(), true, until) {
            return Err(timed_out());
        }
    }
}

/// A connection's read (`write`: write) timeout was just set to `t`: the
/// value green reads and writes cached is updated, or, when this is not the
/// coroutine serving that connection, every cached timeout is read again
/// (one `getsockopt` each).
pub(crate) fn timeout_set(fd: std::os::fd::RawFd, write: bool, t: Option<Duration>) {
    runtime::timeout_set(fd, write, t);
}

/// Waits until `fd` is writable, at most `timeout`: in the reactor from a
/// green coroutine, else with `poll(2)`. `false` on timeout.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    if !green_current::active() {
        return crate::sys::wait_writable(fd, timeout);
    }
    let until = Instant::now().checked_add(timeout);
    Ok(wait(fd, true, until))
}

/// The connection's read timeout, cached per connection (see
/// [`timeouts_changed`]).
fn read_timeout(conn: &Conn) -> io::Result<Option<Duration>> {
    runtime::timeout(conn.as_raw_fd(), false, || match conn {
        Conn::Tcp(s) => s.read_timeout(),
        Conn::Unix(s) => s.read_timeout(),
    })
}

fn write_timeout(conn: &Conn) -> io::Result<Option<Duration>> {
    runtime::timeout(conn.as_raw_fd(), true, || match conn {
        Conn::Tcp(s) => s.write_timeout(),
        Conn::Unix(s) => s.write_timeout(),
    })
}
