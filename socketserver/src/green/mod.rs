//! Green threads: what the [`Green`](crate::Green) strategy runs requests
//! on, and the calls a handler uses to wait without stalling its thread.
//!
//! Under `Green` every request is a stackful coroutine (its own stack, 2 MiB
//! of address space as a thread's, with a guard below: an overflow costs
//! that connection only) on one of a few worker threads, each with an epoll
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
//! 100 ms without suspending is logged (a warning naming the peer), and so
//! is a worker that such coroutines hold half of the time or more, even 1 ms
//! at a time (see `Stats::green_blocked_ms`). [`spawn`] starts work beside
//! a request on its worker.
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

#[allow(unsafe_code)] // closes an abandoned request's socket
mod abandon;
mod ceiling;
mod companion;
mod coroutine;
#[allow(unsafe_code)] // a pointer to the running coroutine's yielder, kept in a thread-local
mod current;
mod detector;
pub(crate) mod inbox;
mod io;
#[allow(unsafe_code)] // the fault handler that ends an overflowing coroutine alone
mod overflow;
mod pool;
mod reactor;
#[allow(unsafe_code)] // coroutine stacks carved out of mmap'd slabs
mod stacks;
mod throttle;
mod timers;
pub(crate) mod worker;

pub(crate) use pool::set_max as set_blocking_threads;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use coroutine::Suspend;
use current as green_current;

pub(crate) use abandon::{on_abandon, Abandon, Lost};
pub(crate) use ceiling::report as report_stack_ceiling;
pub use companion::{spawn, JoinHandle};
pub(crate) use io::{poll_read, read, timeout_set, wait_writable, write};

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
/// another server. The helper threads are shared by all workers of the
/// process, started on demand (at most [`MAX_HELPERS`] at once, or what
/// [`Green::blocking_threads`](crate::Green::blocking_threads) set) and
/// gone after 10 s idle. Past the cap a call waits in a queue (first in,
/// first out, unbounded) until a helper is free: with 64 helpers and calls
/// of 10 ms each, at most 6,400 calls a second go through, and the 65th
/// call made at once waits about 10 ms more. A call costs two thread hand-offs (tens of
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
        match green_current::suspend(Suspend::Sleep(until)) {
            None | Some(coroutine::Resume::Cancelled) => return,
            Some(_) => {}
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
