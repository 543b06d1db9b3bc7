//! What the event-loop threads of one run share: the run's instants, the
//! ramp, the release of parked connections, the early stop, and the live
//! counters the progress callback reads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::Config;
use crate::mode::Mode;
use crate::stats::{Stats, Timeline};

/// State shared by the event-loop threads of one run.
pub(crate) struct Shared {
    /// The run's instants.
    pub tl: Timeline,
    /// Total connections of the run.
    pub conns: usize,
    /// Ramp limit (0 = none).
    ramp: usize,
    /// Ramp slots in use.
    ramp_used: AtomicUsize,
    /// Connections that have had their first echo.
    ready: AtomicUsize,
    /// Parked connections may start (set once, by whichever thread sees it first).
    released: AtomicBool,
    /// Set when the run is abandoned early (a thread could not be started).
    stop: AtomicBool,
    /// Live counters for progress reports.
    pub live: Live,
}

/// Counters the threads publish in batches, read by the progress callback.
#[derive(Default)]
pub(crate) struct Live {
    /// Correct echoes, warmup included.
    pub served: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Connections up (TCP) or sockets open (UDP).
    pub connected: AtomicU64,
}

impl Shared {
    pub(crate) fn new(tl: Timeline, cfg: &Config) -> Shared {
        Shared {
            tl,
            conns: cfg.conns,
            ramp: cfg.ramp,
            ramp_used: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            released: AtomicBool::new(cfg.mode != Mode::PingPong || tl.release_at <= tl.start),
            stop: AtomicBool::new(false),
            live: Live::default(),
        }
    }

    /// Takes a ramp slot if one is free (always succeeds without a ramp limit).
    pub fn try_take_slot(&self) -> bool {
        self.ramp == 0
            || self
                .ramp_used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    (u < self.ramp).then_some(u + 1)
                })
                .is_ok()
    }

    /// Gives a ramp slot back.
    pub fn give_slot(&self) {
        if self.ramp != 0 {
            self.ramp_used.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Notes that one more connection had its first echo.
    pub fn mark_ready(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether parked connections may start now; latches once true.
    pub fn check_released(&self, now: Instant) -> bool {
        if self.released.load(Ordering::Acquire) {
            return true;
        }
        if now >= self.tl.release_at || self.ready.load(Ordering::Acquire) >= self.conns {
            self.released.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Abandons the run early: every thread stops at its next look.
    pub(crate) fn abandon(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the threads should stop now.
    pub fn should_stop(&self, now: Instant) -> bool {
        now >= self.tl.end || self.stop.load(Ordering::Relaxed)
    }
}

/// What a thread publishes to [`Live`]: it remembers what it already added.
#[derive(Default)]
pub(crate) struct Publisher {
    served: u64,
    errors: u64,
    connected: u64,
}

impl Publisher {
    /// Adds the change since the last call to the shared counters.
    pub fn publish(&mut self, live: &Live, s: &Stats, connected: u64) {
        let errors = s.errors();
        if s.served_ever != self.served {
            live.served
                .fetch_add(s.served_ever - self.served, Ordering::Relaxed);
            self.served = s.served_ever;
        }
        if errors != self.errors {
            live.errors
                .fetch_add(errors - self.errors, Ordering::Relaxed);
            self.errors = errors;
        }
        if connected != self.connected {
            // Wrapping arithmetic keeps the shared sum right when this thread's count falls.
            live.connected
                .fetch_add(connected.wrapping_sub(self.connected), Ordering::Relaxed);
            self.connected = connected;
        }
    }
}
