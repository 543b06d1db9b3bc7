//! A worker's reactor: its epoll (mio), and what it knows of each
//! descriptor registered there (the coroutine it wakes, readiness
//! remembered between events, the socket's timeouts as last read).

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::current::{self, NOBODY};

/// The token of the reactor's waker (another thread sent the worker mail).
const WAKER: Token = Token(usize::MAX);

/// Bumped whenever a connection's read or write timeout is set (see
/// [`timeouts_changed`]): the timeouts cached per descriptor are only good
/// for the epoch they were read in.
static TIMEOUT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// What a worker knows of a descriptor registered in its epoll: the
/// coroutine it wakes, whether it may be readable or writable (edge
/// triggered: set by an event, cleared when a read or write finds the
/// socket drained or full), whether its read or write side was reported
/// closed or failed (final: never cleared, as end-of-file or the error
/// stays to be read), and the socket's timeouts as last read.
#[derive(Debug, Clone, Copy)]
struct FdState {
    owner: Token,
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    /// `(epoch, SO_RCVTIMEO)`, `(epoch, SO_SNDTIMEO)`.
    read_timeout: Option<(u64, Option<Duration>)>,
    write_timeout: Option<(u64, Option<Duration>)>,
}

const UNOWNED: FdState = FdState {
    owner: NOBODY,
    readable: false,
    writable: false,
    read_closed: false,
    write_closed: false,
    read_timeout: None,
    write_timeout: None,
};

thread_local! {
    /// This worker's descriptors, indexed by number (descriptor numbers are
    /// small and dense). Shared by the scheduler and its coroutines, which
    /// run on this thread one at a time; never borrowed across a switch.
    static FDS: RefCell<Vec<FdState>> = const { RefCell::new(Vec::new()) };
}

fn with_fd<R>(fd: RawFd, f: impl FnOnce(&mut FdState) -> R) -> Option<R> {
    let index = usize::try_from(fd).ok()?;
    FDS.with(|fds| fds.borrow_mut().get_mut(index).map(f))
}

/// The state of `fd` if the running coroutine owns its registration.
fn with_own_fd<R>(fd: RawFd, f: impl FnOnce(&mut FdState) -> R) -> Option<R> {
    let me = current::running();
    if me == NOBODY {
        return None;
    }
    with_fd(fd, |s| (s.owner == me).then(|| f(s))).flatten()
}

/// Whether this thread's table of descriptors can be used: `false` when a
/// coroutine was abandoned (a stack overflow) while it held it borrowed.
pub(crate) fn consistent() -> bool {
    FDS.with(|fds| fds.try_borrow_mut().is_ok())
}

/// Whether the running coroutine knows that `fd` has nothing to read (or no
/// room to write) since its last read (write): then it waits for the
/// reactor's event without trying the call first.
pub(crate) fn known_blocked(fd: RawFd, write: bool) -> bool {
    with_own_fd(fd, |s| {
        if write {
            !s.writable && !s.write_closed
        } else {
            !s.readable && !s.read_closed
        }
    })
    .unwrap_or(false)
}

/// The running coroutine found `fd` drained (a read returned less than
/// asked, or `WouldBlock`) or full (a short write): wait for the next edge.
pub(crate) fn blocked(fd: RawFd, write: bool) {
    with_own_fd(fd, |s| {
        if write {
            s.writable = false;
        } else {
            s.readable = false;
        }
    });
}

/// A connection's timeout was set: cached timeouts must be read again.
fn timeouts_changed() {
    TIMEOUT_EPOCH.fetch_add(1, Ordering::Release);
}

/// `fd`'s read (`write`: write) timeout was just set to `t`. On the
/// coroutine that owns `fd`'s registration, its cached value is updated in
/// place; from anywhere else every cached timeout is read again
/// ([`timeouts_changed`]), since another coroutine may hold this one.
pub(crate) fn timeout_set(fd: RawFd, write: bool, t: Option<Duration>) {
    let epoch = TIMEOUT_EPOCH.load(Ordering::Acquire);
    let updated = with_own_fd(fd, |s| {
        let slot = if write {
            &mut s.write_timeout
        } else {
            &mut s.read_timeout
        };
        *slot = Some((epoch, t));
    });
    if updated.is_none() {
        timeouts_changed();
    }
}

/// The read (or write) timeout of `fd`, from the cache of the running
/// coroutine's registration when it is current, else from `read`
/// (a `getsockopt`), then cached.
pub(crate) fn timeout(
    fd: RawFd,
    write: bool,
    read: impl FnOnce() -> io::Result<Option<Duration>>,
) -> io::Result<Option<Duration>> {
    let epoch = TIMEOUT_EPOCH.load(Ordering::Acquire);
    let cached = with_own_fd(fd, |s| {
        if write {
            s.write_timeout
        } else {
            s.read_timeout
        }
    })
    .flatten()
    .filter(|(e, _)| *e == epoch);
    if let Some((_, t)) = cached {
        return Ok(t);
    }
    let t = read()?;
    with_own_fd(fd, |s| {
        let slot = if write {
            &mut s.write_timeout
        } else {
            &mut s.read_timeout
        };
        *slot = Some((epoch, t));
    });
    Ok(t)
}

/// What [`Reactor::watch`] found.
pub(crate) enum Watch {
    /// An event came since the last attempt: try again.
    Ready,
    /// Registered before: an event will wake the coroutine.
    Watching,
    /// Registered just now, for this coroutine: an event will wake it.
    Registered,
    /// Cannot be watched for this coroutine (not pollable, or another live
    /// coroutine of this worker is registered for it): retry on a timer.
    Poll,
}

/// An event of a registered descriptor, as the worker needs it.
pub(crate) struct Hit {
    /// The coroutine registered for the descriptor.
    pub(crate) owner: Token,
    pub(crate) fd: RawFd,
    /// Readable, or its read side closed or failed.
    pub(crate) read: bool,
    /// Writable, or its write side closed or failed.
    pub(crate) write: bool,
}

/// A worker's epoll and its waker.
pub(crate) struct Reactor {
    poll: Poll,
    events: Events,
}

impl Reactor {
    /// A new epoll, and the waker other threads use to interrupt its wait.
    pub(crate) fn new() -> io::Result<(Reactor, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let events = Events::with_capacity(1024);
        Ok((Reactor { poll, events }, waker))
    }

    /// Waits at most `timeout` for events; records each in the descriptor's
    /// state and hands it to `hit`.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        mut hit: impl FnMut(Hit),
    ) -> io::Result<()> {
        self.poll.poll(&mut self.events, timeout)?;
        for event in &self.events {
            if event.token() == WAKER {
                continue;
            }
            // Registrations are by descriptor number (see `watch`).
            let Ok(fd) = RawFd::try_from(event.token().0) else {
                continue;
            };
            let read_closed = event.is_read_closed() || event.is_error();
            let write_closed = event.is_write_closed() || event.is_error();
            let read = event.is_readable() || read_closed;
            let write = event.is_writable() || write_closed;
            let owner = with_fd(fd, |s| {
                s.readable |= read;
                s.writable |= write;
                s.read_closed |= read_closed;
                s.write_closed |= write_closed;
                s.owner
            });
            if let Some(owner) = owner {
                hit(Hit {
                    owner,
                    fd,
                    read,
                    write,
                });
            }
        }
        Ok(())
    }

    /// Makes sure `fd` is registered for coroutine `token`, and tells
    /// whether an event for it (writable if `write`, else readable) came
    /// since its last attempt. `live` tells whether another coroutine that
    /// owns a registration still runs on this worker.
    pub(crate) fn watch(
        &mut self,
        token: Token,
        fd: RawFd,
        write: bool,
        live: impl FnOnce(Token) -> bool,
    ) -> Watch {
        let Ok(index) = usize::try_from(fd) else {
            return Watch::Ready; // not a descriptor: let the call fail
        };
        let state = FDS.with(|fds| fds.borrow().get(index).copied());
        let owner = state.map(|s| s.owner);
        if owner.is_some_and(|o| o != token && o != NOBODY && live(o)) {
            // Another coroutine here waits on the same descriptor (a shared
            // datagram socket, a connection written to by another one):
            // epoll wakes one token per descriptor, so this one polls
            // instead of taking the registration away.
            return Watch::Poll;
        }
        if owner == Some(token) {
            let ready = state.is_some_and(|s| {
                if write {
                    s.writable || s.write_closed
                } else {
                    s.readable || s.read_closed
                }
            });
            // An event came while it ran: try again now.
            return if ready { Watch::Ready } else { Watch::Watching };
        }
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let mut source = SourceFd(&fd);
        let registered = match registry.register(&mut source, Token(index), interest) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                registry.reregister(&mut source, Token(index), interest)
            }
            r => r,
        };
        if let Err(e) = registered {
            // Not pollable (a file?).
            log::debug!("green: cannot watch fd {fd}: {e}; polling it");
            return Watch::Poll;
        }
        // A new registration reports the current readiness as an event.
        FDS.with(|fds| {
            let mut fds = fds.borrow_mut();
            if fds.len() <= index {
                fds.resize(index + 1, UNOWNED);
            }
            fds[index] = FdState {
                owner: token,
                ..UNOWNED
            };
        });
        Watch::Registered
    }

    /// Coroutine `token` ended: its descriptors are no longer its own. With
    /// `deregister` they also leave this epoll (descriptors that stay open:
    /// a server loop's listening and wake-up sockets); a request's are
    /// closed, or another coroutine registers them again (epoll keeps an
    /// open one registered: `reregister` then).
    pub(crate) fn forget(&self, token: Token, fds: &[RawFd], deregister: bool) {
        FDS.with(|table| {
            let mut table = table.borrow_mut();
            for fd in fds {
                if let Some(s) = usize::try_from(*fd).ok().and_then(|i| table.get_mut(i)) {
                    if s.owner == token {
                        *s = UNOWNED;
                        if deregister {
                            let _ = self.poll.registry().deregister(&mut SourceFd(fd));
                        }
                    }
                }
            }
        });
    }
}
