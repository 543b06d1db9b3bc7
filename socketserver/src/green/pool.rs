//! The helper threads of [`blocking`](super::blocking): started on demand,
//! up to a cap ([`MAX_HELPERS`] unless `Green::blocking_threads` set
//! another), each gone after [`HELPER_IDLE`] without work. A call goes to
//! an idle helper, else to a new one; past the cap it waits in a queue
//! (first in, first out, unbounded) until a helper is free. The helpers
//! are shared by every `Green` server of the process.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

/// Most helper threads at once by default; further calls queue.
pub const MAX_HELPERS: usize = 64;

/// The cap in force (see [`set_max`]).
static MAX: AtomicUsize = AtomicUsize::new(MAX_HELPERS);

/// Sets the most helper threads at once for the whole process (at least 1).
pub(crate) fn set_max(n: usize) {
    MAX.store(n.max(1), Ordering::Relaxed);
}
/// How long an idle helper thread waits for work before it exits.
const HELPER_IDLE: Duration = Duration::from_secs(10);

type Call = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Helpers waiting for a call, each on its own channel; an id each.
    idle: Vec<(u64, Sender<Call>)>,
    next_id: u64,
    total: usize,
    /// Calls waiting for a helper (only at the cap).
    queued: VecDeque<Call>,
}

static STATE: Mutex<State> = Mutex::new(State {
    idle: Vec::new(),
    next_id: 0,
    total: 0,
    queued: VecDeque::new(),
});

/// Runs `call` on a helper thread.
pub(crate) fn submit(mut call: Call) {
    loop {
        let mut state = STATE.lock();
        if let Some((_, sender)) = state.idle.pop() {
            drop(state);
            match sender.send(call) {
                Ok(()) => return,
                // That helper is gone (cannot be while listed): next one.
                Err(e) => {
                    call = e.into_inner();
                    continue;
                }
            }
        }
        state.queued.push_back(call);
        if state.total >= MAX.load(Ordering::Relaxed) {
            return;
        }
        state.total += 1;
        let id = state.next_id;
        state.next_id += 1;
        drop(state);
        let spawned = std::thread::Builder::new()
            .name("green blocking".into())
            .spawn(move || helper(id));
        if let Err(e) = spawned {
            // At the OS's thread limit: run a queued call here (a worker
            // thread, stalled meanwhile) rather than leave its coroutine
            // waiting for a helper that may never come.
            log::error!("cannot start a helper thread for a blocking call: {e}; running it inline");
            let call = {
                let mut state = STATE.lock();
                state.total -= 1;
                state.queued.pop_back()
            };
            if let Some(call) = call {
                call();
            }
        }
        return;
    }
}

fn helper(id: u64) {
    loop {
        let (sender, receiver): (Sender<Call>, Receiver<Call>) = crossbeam_channel::bounded(1);
        {
            let mut state = STATE.lock();
            if let Some(call) = state.queued.pop_front() {
                drop(state);
                call();
                continue;
            }
            state.idle.push((id, sender));
        }
        let call = match receiver.recv_timeout(HELPER_IDLE) {
            Ok(call) => call,
            Err(RecvTimeoutError::Timeout) => {
                let mut state = STATE.lock();
                if let Some(i) = state.idle.iter().position(|(k, _)| *k == id) {
                    state.idle.remove(i);
                    state.total -= 1;
                    return;
                }
                drop(state);
                // Taken off the list just now: its call is on the way.
                match receiver.recv() {
                    Ok(call) => call,
                    Err(_) => {
                        STATE.lock().total -= 1;
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                STATE.lock().total -= 1;
                return;
            }
        };
        call();
    }
}
