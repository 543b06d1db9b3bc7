//! The part of a worker other threads see: its inbox of messages (new
//! requests, a server loop, the end of a blocking call), the waker that
//! interrupts its reactor, its load, and the flags that stop it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mio::{Token, Waker};
use parking_lot::Mutex;

use crate::Address;

/// What another thread hands a worker.
pub(crate) enum Msg {
    /// A request from `peer` to run as a new coroutine (`run` returns
    /// whether it succeeded).
    Request {
        peer: Address,
        run: Box<dyn FnOnce() -> bool + Send>,
    },
    /// A server loop to run as a coroutine (not a request: not counted as
    /// one), for the server at `url`.
    Loop {
        run: Box<dyn FnOnce() + Send>,
        url: String,
    },
    /// The blocking call of this coroutine finished.
    Wake(Token),
}

/// Messages not taken yet.
#[derive(Default)]
struct Mail {
    msgs: Vec<Msg>,
    /// The worker is gone (it exited, or died): a message sent now is
    /// dropped at once (see [`Inbox::discard`]), as nothing would take it.
    closed: bool,
}

thread_local! {
    /// The address of this thread's worker's [`Inbox`] (0: not a worker).
    static CURRENT_WORKER: Cell<usize> = const { Cell::new(0) };
}

/// A worker's inbox and flags, shared with the threads that send to it.
pub(crate) struct Inbox {
    mail: Mutex<Mail>,
    waker: Waker,
    /// Called when a request ends, or is dropped unrun (the strategy's
    /// count of running requests).
    /// Coroutines on this worker (queued jobs included).
    pub(crate) load: AtomicUsize,
    stop: AtomicBool,
    /// The server is closing: its requests end soon, and so does the worker.
    closing: AtomicBool,
}

impl Inbox {
    pub(crate) fn new(waker: Waker) -> Inbox {
        Inbox {
            mail: Mutex::new(Mail::default()),
            waker,
            load: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    pub(crate) fn send(&self, msg: Msg) {
        let first = {
            let mut mail = self.mail.lock();
            if mail.closed {
                drop(mail);
                return self.discard(msg);
            }
            mail.msgs.push(msg);
            mail.msgs.len() == 1
        };
        // One wake-up per batch: the worker empties the whole inbox. The
        // worker itself (its server loop placing a request here) looks at
        // its inbox before it sleeps again.
        if first && !self.is_current() {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake a green worker: {e}");
            }
        }
    }

    /// The messages sent since the last call (the worker's).
    pub(crate) fn take(&self) -> Vec<Msg> {
        std::mem::take(&mut self.mail.lock().msgs)
    }

    /// Drops `msg`, which no worker will take, undoing what sending it
    /// counted: a request's connection closes; a server loop's
    /// `serve_forever` sees that the loop is gone.
    fn discard(&self, msg: Msg) {
        match msg {
            Msg::Request { peer, .. } => {
                log::warn!("green worker gone: closing the request for {peer}");
                self.load.fetch_sub(1, Ordering::SeqCst);
            }
            Msg::Loop { url, .. } => {
                log::error!("green worker gone: cannot run the server loop of {url}");
                self.load.fetch_sub(1, Ordering::SeqCst);
            }
            Msg::Wake(_) => {}
        }
    }

    /// The worker is gone: later messages are dropped at once, and those
    /// it did not take are dropped now.
    fn close(&self) {
        let left = {
            let mut mail = self.mail.lock();
            mail.closed = true;
            std::mem::take(&mut mail.msgs)
        };
        for msg in left {
            self.discard(msg);
        }
    }

    /// The server begins to close: the worker stops giving the pages of
    /// ended coroutines' stacks back one by one (it is about to free them all).
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether [`closing`](Self::closing) was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether this is the worker of the calling thread.
    pub(crate) fn is_current(&self) -> bool {
        CURRENT_WORKER.with(Cell::get) == std::ptr::from_ref(self) as usize
    }

    /// Asks the worker to exit once its last coroutine ended.
    pub(crate) fn stop(&self) {
        self.closing();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// A coroutine (or one that could not start) is gone.
    pub(crate) fn finished(&self) {
        self.load.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks the calling thread as the worker of `inbox` and closes the inbox
/// when dropped, whichever way the worker ends (its last coroutine after a
/// stop, or a panic): what is sent to it from then on is dropped.
pub(crate) struct Owned(Arc<Inbox>);

impl Owned {
    pub(crate) fn new(inbox: Arc<Inbox>) -> Owned {
        CURRENT_WORKER.with(|w| w.set(Arc::as_ptr(&inbox) as usize));
        Owned(inbox)
    }
}

impl Owned {
    /// A handle on the same inbox, for another thread.
    pub(crate) fn handle(&self) -> Arc<Inbox> {
        Arc::clone(&self.0)
    }
}

impl std::ops::Deref for Owned {
    type Target = Inbox;
    fn deref(&self) -> &Inbox {
        &self.0
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.close();
    }
}
