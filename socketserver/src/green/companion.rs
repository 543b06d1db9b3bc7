//! Companion coroutines: work a request starts beside itself on its own
//! worker ([`spawn`]), joined or left to run, and ended with the request.
//!
//! Outside a green coroutine a companion is a thread.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use mio::Token;
use parking_lot::Mutex;

use super::coroutine::{Resume, Suspend};
use super::current::{self, NOBODY};

/// A companion to start: its parent and its body.
pub(crate) type Start = (Token, Box<dyn FnOnce() + Send>);

thread_local! {
    /// Companions spawned by the coroutine that runs now, for the worker
    /// to start when it suspends.
    static SPAWNED: RefCell<Vec<Start>> = const { RefCell::new(Vec::new()) };
    /// Coroutines of this worker parked in [`JoinHandle::join`] whose
    /// companion just ended: the worker wakes them.
    static WOKEN: RefCell<Vec<Token>> = const { RefCell::new(Vec::new()) };
}

/// The companions spawned since the last call (the worker's).
pub(crate) fn take_spawned() -> Vec<Start> {
    SPAWNED.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// The parked coroutines to wake since the last call (the worker's).
pub(crate) fn take_woken() -> Vec<Token> {
    WOKEN.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

/// Whether anything waits for the worker (cheap: checked after each
/// resume).
pub(crate) fn pending() -> bool {
    SPAWNED.with(|s| !s.borrow().is_empty()) || WOKEN.with(|w| !w.borrow().is_empty())
}

/// What a companion hands its [`JoinHandle`].
struct Slot<T> {
    result: Option<std::thread::Result<T>>,
    /// A coroutine of the companion's worker parked until it ends.
    waiter: Option<Token>,
}

/// The companion's end of its slot: when it drops (the companion ended, or
/// was dropped unrun for want of a stack) a parked joiner is woken.
struct Fill<T>(Arc<Mutex<Slot<T>>>);

impl<T> Drop for Fill<T> {
    fn drop(&mut self) {
        if let Some(waiter) = self.0.lock().waiter.take() {
            WOKEN.with(|w| w.borrow_mut().push(waiter));
        }
    }
}

/// Starts `f` beside the calling request: under `Green`, as a coroutine on
/// the same worker (it runs when the caller next waits, and shares no
/// stack with it); elsewhere on a thread of its own.
///
/// A green companion is **ended with the request that spawned it**: once
/// that request's handler returned, each wait of the companion (a read or
/// write of a socket, a [`sleep`](super::sleep), a join) fails at once
/// (`ConnectionAborted` for I/O), so a companion looping on I/O ends. Join
/// it ([`JoinHandle::join`]) to wait for its result; dropping the handle
/// leaves it running (detached) until it returns or its request ends.
/// Like any coroutine it must not block its worker (see
/// [`blocking`](super::blocking)).
///
/// A companion runs on a stack of its own, as large as a request's: one
/// that overflows it costs **its request's connection**, as the request's
/// own overflow would, and nothing else. It is abandoned where it stands
/// (what it held is leaked); its request is cancelled: a
/// [`join`](JoinHandle::join) returns an error, every wait fails
/// (`ConnectionAborted`) and the next read or write of the connection
/// shuts it down and fails, so the handler returns; it counts in
/// [`Stats::stack_overflows`](crate::Stats::stack_overflows).
///
/// ```
/// let h = socketserver::green::spawn(|| 6 * 7);
/// assert_eq!(h.join().unwrap(), 42);
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let parent = current::running();
    if parent == NOBODY || !current::active() {
        return JoinHandle(Inner::Thread(Some(std::thread::spawn(f))));
    }
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waiter: None,
    }));
    let fill = Fill(Arc::clone(&slot));
    let body = Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f));
        fill.0.lock().result = Some(result);
        drop(fill); // wakes the joiner
    });
    SPAWNED.with(|s| s.borrow_mut().push((parent, body)));
    JoinHandle(Inner::Green(slot))
}

/// The handle of a companion started by [`spawn`].
#[must_use = "dropping the handle detaches the companion"]
pub struct JoinHandle<T>(Inner<T>);

enum Inner<T> {
    Thread(Option<std::thread::JoinHandle<T>>),
    Green(Arc<Mutex<Slot<T>>>),
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// Whether the companion has ended.
    pub fn is_finished(&self) -> bool {
        match &self.0 {
            Inner::Thread(t) => t.as_ref().is_none_or(std::thread::JoinHandle::is_finished),
            Inner::Green(slot) => slot.lock().result.is_some(),
        }
    }

    /// Waits for the companion to end and returns its result (`Err` with
    /// its panic if it panicked, as `std::thread::JoinHandle::join`). From
    /// a coroutine of the companion's worker only this coroutine waits;
    /// from anywhere else the thread polls every millisecond.
    ///
    /// # Errors
    ///
    /// The companion's panic.
    pub fn join(mut self) -> std::thread::Result<T> {
        match &mut self.0 {
            Inner::Thread(t) => match t.take() {
                Some(t) => t.join(),
                None => Err(Box::new("joined twice")),
            },
            Inner::Green(slot) => loop {
                let me = current::running();
                {
                    let mut s = slot.lock();
                    if let Some(result) = s.result.take() {
                        return result;
                    }
                    if Arc::strong_count(slot) == 1 {
                        return Err(Box::new("the companion could not start (no stack)"));
                    }
                    if me != NOBODY && current::active() {
                        s.waiter = Some(me);
                    }
                }
                if me != NOBODY && current::active() {
                    if let Some(Resume::Cancelled) = current::suspend(Suspend::Park) {
                        // The joiner's own request ended: it waits no more.
                        let mut s = slot.lock();
                        s.waiter = None;
                        return s.result.take().unwrap_or_else(|| {
                            Err(Box::new(if current::doomed() {
                                "the companion overflowed its stack (or another of this \
                                     request's did): the request lost its connection"
                            } else {
                                "the joining request ended"
                            }))
                        });
                    }
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
        }
    }
}
