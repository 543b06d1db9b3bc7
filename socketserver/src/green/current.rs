//! The coroutine running on this thread under the `Green` strategy: its
//! token in the worker's table (for the reactor's bookkeeping), and a way
//! to suspend it (for blocking calls).
//!
//! Only a pointer to its `Yielder` can be kept in a thread-local (the
//! yielder lives on the coroutine's own stack, borrowed by its body), hence
//! this one `unsafe` dereference.

use std::cell::Cell;

use mio::Token;

use super::coroutine::{Resume, Suspend, Yielder};

/// No coroutine (the owner of an unregistered descriptor, the current
/// coroutine while the scheduler runs).
pub(crate) const NOBODY: Token = Token(usize::MAX - 1);

thread_local! {
    static CURRENT: Cell<*const Yielder> = const { Cell::new(std::ptr::null()) };
    /// The coroutine running now on this thread (`NOBODY` in the scheduler).
    static RUNNING: Cell<Token> = const { Cell::new(NOBODY) };
    /// Whether it is a request that lost its connection (a companion of
    /// it overflowed its stack).
    static DOOMED: Cell<bool> = const { Cell::new(false) };
}

/// The token of the coroutine running on this thread (`NOBODY` outside one).
pub(crate) fn running() -> Token {
    RUNNING.with(Cell::get)
}

/// The worker is about to resume (`NOBODY`: has resumed) coroutine
/// `token`; `doomed`: a request that lost its connection.
pub(crate) fn set_running(token: Token, doomed: bool) {
    RUNNING.with(|r| r.set(token));
    DOOMED.with(|d| d.set(doomed));
}

/// Whether the coroutine running now is a request that lost its
/// connection because a companion of it overflowed its stack: its reads
/// and writes shut the connection down and fail.
pub(crate) fn doomed() -> bool {
    DOOMED.with(Cell::get)
}

/// Marks `yielder` as the coroutine running on this thread, until the
/// returned guard drops. Called by the coroutine's body, first thing, with
/// the yielder corosensei hands it; the guard lives until the body ends.
pub(crate) fn enter(yielder: &Yielder) -> Entered {
    CURRENT.with(|c| c.set(std::ptr::from_ref(yielder)));
    Entered
}

/// Clears the mark when the coroutine's body ends (also in a panic).
pub(crate) struct Entered;

impl Drop for Entered {
    fn drop(&mut self) {
        forget();
    }
}

/// Clears the mark: the body ended, or was abandoned on its stack (a stack
/// overflow: its `Entered` guard never drops).
pub(crate) fn forget() {
    CURRENT.with(|c| c.set(std::ptr::null()));
}

/// Whether code runs in a green coroutine on this thread.
pub(crate) fn active() -> bool {
    CURRENT.with(|c| !c.get().is_null())
}

/// Suspends the coroutine running on this thread with `why`; `None`
/// outside a coroutine (nothing to suspend).
pub(crate) fn suspend(why: Suspend) -> Option<Resume> {
    let ptr = CURRENT.with(Cell::get);
    if ptr.is_null() {
        return None;
    }
    // While suspended, this thread runs the scheduler and other
    // coroutines, which must not see this one as current.
    CURRENT.with(|c| c.set(std::ptr::null()));
    // SAFETY: `ptr` is non-null only between `enter` and the drop of its
    // guard (or `forget`, when the worker abandons a coroutine after a
    // stack overflow), i.e. while the body of the coroutine that owns the
    // yielder runs, on this thread (coroutines never move between threads:
    // the `Coroutine` is not `Send`). It is cleared before every
    // suspension (just above) and set again only when that same coroutine
    // is resumed (just below, on its own stack), so whenever it is read
    // here it points at the yielder of the coroutine executing this very
    // code, which outlives the call.
    let resumed = unsafe { (*ptr).suspend(why) };
    CURRENT.with(|c| c.set(ptr));
    Some(resumed)
}
