//! What a request leaves to its worker in case it is abandoned where it
//! stands (a stack overflow: nothing on its stack is dropped): its
//! connection's descriptor, to close, and a closure that releases what the
//! server counted for it (its place in the registry). The same closure
//! counts the overflow of one of its companions (`green::spawn`), which
//! costs the request its connection too, but ends it by cancellation (see
//! `Worker::end`): the request itself lives on to return.

use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use mio::Token;

use super::current::{self, NOBODY};

/// What was lost, for a request's release closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The request itself, abandoned on its stack: release its place
    /// and count the overflow (called once, last).
    Request,
    /// One of its companions: count the overflow only (the request
    /// ends by itself, cancelled).
    Companion,
}

/// What to release for one request.
type Release = Box<dyn FnMut(Lost)>;

/// One registration: the coroutine, its id, the socket to close, the rest.
type Entry = (Token, u64, Option<RawFd>, Release);

thread_local! {
    /// The releases registered by the coroutines of this worker, by token
    /// and id; a handful at most per coroutine, so a plain list.
    static REGISTERED: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

/// Until the guard drops (the request ended normally), the socket `fd` (if
/// the request has one of its own) and `release` are this coroutine's to
/// give back should it be abandoned. Does nothing outside a green coroutine.
pub(crate) fn on_abandon(fd: Option<RawFd>, release: impl FnMut(Lost) + 'static) -> Abandon {
    let token = current::running();
    if token == NOBODY || !current::active() {
        return Abandon(None);
    }
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    REGISTERED.with(|r| r.borrow_mut().push((token, id, fd, Box::new(release))));
    Abandon(Some(id))
}

/// Withdraws a registration of [`on_abandon`] when dropped.
#[must_use]
pub(crate) struct Abandon(Option<u64>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            REGISTERED.with(|r| r.borrow_mut().retain(|(_, i, _, _)| *i != id));
        }
    }
}

/// Whether the registrations can be read: `false` when a coroutine was
/// abandoned while it held them borrowed.
pub(crate) fn consistent() -> bool {
    REGISTERED.with(|r| r.try_borrow_mut().is_ok())
}

/// Counts the overflow of a companion of request `token` with what that
/// request registered (nothing is released: the request goes on).
pub(crate) fn companion_lost(token: Token) {
    // Taken out while they run (a closure may log, or allocate), then put
    // back.
    let mut mine: Vec<Entry> = REGISTERED.with(|r| {
        let mut r = r.borrow_mut();
        let (mine, rest): (Vec<_>, Vec<_>) = r.drain(..).partition(|(t, ..)| *t == token);
        *r = rest;
        mine
    });
    for (_, _, _, release) in &mut mine {
        release(Lost::Companion);
    }
    REGISTERED.with(|r| r.borrow_mut().extend(mine));
}

/// Releases what the abandoned coroutine `token` registered: each closure
/// runs, then its socket is closed.
pub(crate) fn release(token: Token) {
    let mine: Vec<(Option<RawFd>, Release)> = REGISTERED.with(|r| {
        let mut r = r.borrow_mut();
        let (mine, rest): (Vec<_>, Vec<_>) = r.drain(..).partition(|(t, ..)| *t == token);
        *r = rest;
        mine.into_iter().map(|(_, _, fd, f)| (fd, f)).collect()
    });
    for (fd, mut release) in mine {
        release(Lost::Request);
        let Some(fd) = fd else { continue };
        // SAFETY: `fd` is the request's socket, owned by its `Conn` on the
        // abandoned coroutine's stack, which will never run again: that
        // owner is leaked, never dropped, so nothing else closes `fd` or
        // uses it from now on. Closing it here is the owner's close, done
        // once (the registration was just taken out of the list).
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
