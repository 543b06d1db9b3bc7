//! The server's count of its jobs alive: made for a request and handed to
//! the strategy, not yet run to the end nor dropped. A graceful close waits
//! on it, whichever strategy runs the jobs (a thread, a pool worker, a
//! coroutine, the loop itself), so that no strategy counts on its own.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A count that can be waited on until it drops to 0.
#[derive(Debug, Default)]
pub(crate) struct JobCount {
    count: Mutex<usize>,
    zero: Condvar,
}

impl JobCount {
    pub(crate) fn get(&self) -> usize {
        *self.count.lock()
    }

    pub(crate) fn increment(&self) {
        *self.count.lock() += 1;
    }

    pub(crate) fn decrement(&self) {
        let mut c = self.count.lock();
        *c = c.saturating_sub(1);
        if *c == 0 {
            self.zero.notify_all();
        }
    }

    /// Waits until the count is 0, at most `timeout`; returns whether it is.
    /// From a green coroutine (a handler closing a server) it polls with
    /// [`green::sleep`](crate::green::sleep), so that the coroutine's worker
    /// goes on serving its other connections meanwhile.
    pub(crate) fn wait_zero_for(&self, timeout: Duration) -> bool {
        let end = crate::timeouts::deadline_after(timeout);
        if crate::green::is_green() {
            while self.get() > 0 {
                if end.is_some_and(|e| Instant::now() >= e) {
                    return false;
                }
                crate::green::sleep(Duration::from_millis(1));
            }
            return true;
        }
        let mut c = self.count.lock();
        while *c > 0 {
            match end {
                Some(end) => {
                    if self.zero.wait_until(&mut c, end).timed_out() {
                        return *c == 0;
                    }
                }
                None => self.zero.wait(&mut c),
            }
        }
        true
    }
}
