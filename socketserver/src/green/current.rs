//! The coroutine running on this thread under the `Green` strategy, as
//! far as blocking calls need it: a way to suspend it.
//!
//! Only a pointer to its `Yielder` can be kept in a thread-local (the
//! yielder lives on the coroutine's own stack, borrowed by its body), hence
//! this one `unsafe` dereference.

use std::cell::Cell;

use crate::green::runtime::{Resume, Suspend, Yielder};

thread_local! {
    static CURRENT: Cell<*const Yielder> = const { Cell::new(std::ptr::null()) };
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
        CURRENT.with(|c| c.set(std::ptr::null()));
    }
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
    // guard, i.e. while the body of the coroutine that owns the yielder
    // runs, on this thread (coroutines never move between threads: the
    // `Coroutine` is not `Send`). It is cleared before every suspension
    // (just above) and set again only when that same coroutine is
    // resumed (just below, on its own stack), so whenever it is read
    // here it points at the yielder of the coroutine executing this
    // very code, which outlives the call.
    let resumed = unsafe { (*ptr).suspend(why) };
    CURRENT.with(|c| c.set(ptr));
    Some(resumed)
}
