//! A worker's blocking detector: how much of its time went to coroutines
//! that held it without yielding, so that blocking calls in handlers show
//! up even when no single one is long.
//!
//! A resume that lasts [`HOLD`] or more without yielding held up every
//! other connection of the worker that long: its time counts as blocked,
//! less the time the thread waited for a CPU over the window (its
//! `run_delay` in `/proc/thread-self/schedstat`), so that a busy machine
//! preempting the worker mid-request is not taken for a blocking handler.
//! Over each [`WINDOW`], when blocked time is half the window or more, the
//! worker logs a warning (at most one per [`REPORT_EVERY`]) naming the
//! coroutine that held it longest in one go. The total is exposed as
//! [`Stats::green_blocked_ms`](crate::Stats::green_blocked_ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::coroutine::Who;
use super::throttle::Throttle;

/// A resume this long or longer counts as blocking its worker (a request
/// that only computes or copies for its answer takes microseconds).
pub(crate) const HOLD: Duration = Duration::from_millis(1);

/// The window over which a worker's blocked share is judged.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);

/// At most one report per worker per this period.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// One worker's detector.
pub(crate) struct Detector {
    since: Instant,
    /// The thread's time waiting for a CPU at `since`, if known.
    run_delay: Option<Duration>,
    blocked: Duration,
    resumes: u64,
    /// The longest hold of this window, and whose it was.
    longest: Option<(Duration, String)>,
    reports: Throttle,
    /// Blocked microseconds of every worker of the strategy.
    total_us: Arc<AtomicU64>,
}

impl Detector {
    pub(crate) fn new(total_us: Arc<AtomicU64>) -> Detector {
        Detector {
            since: Instant::now(),
            run_delay: run_delay(),
            blocked: Duration::ZERO,
            resumes: 0,
            longest: None,
            reports: Throttle::new(REPORT_EVERY),
            total_us,
        }
    }

    /// The coroutine serving `who` ran `ran` without yielding.
    pub(crate) fn ran(&mut self, ran: Duration, who: &Who) {
        if ran < HOLD {
            return;
        }
        self.blocked += ran;
        self.resumes += 1;
        if self.longest.as_ref().is_none_or(|(d, _)| ran > *d) {
            self.longest = Some((ran, who.to_string()));
        }
    }

    /// Judges the window when it is over, and starts the next.
    pub(crate) fn tick(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < WINDOW {
            return;
        }
        let delay = run_delay();
        if let (Some(then), Some(now)) = (self.run_delay, delay) {
            self.blocked = self.blocked.saturating_sub(now.saturating_sub(then));
        }
        self.run_delay = delay;
        let us = u64::try_from(self.blocked.as_micros()).unwrap_or(u64::MAX);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        if !self.blocked.is_zero() && self.blocked * 2 >= elapsed {
            if let Some(held) = self.reports.pass() {
                let thread = std::thread::current();
                let (longest, whose) = self
                    .longest
                    .take()
                    .unwrap_or((Duration::ZERO, String::from("?")));
                log::warn!(
                    "green worker {:?} was blocked {} ms of the last {} ms by coroutines that \
                     did not yield ({} holds of {} ms or more, less waits for a CPU); the longest: {whose}, {:.1} ms \
                     in one go. Wrap blocking calls (std::thread::sleep, files, locks, DNS, \
                     clients of other servers) in socketserver::green::blocking ({held} such \
                     reports held back)",
                    thread.name().unwrap_or("green"),
                    self.blocked.as_millis(),
                    elapsed.as_millis(),
                    self.resumes,
                    HOLD.as_millis(),
                    longest.as_secs_f64() * 1000.0,
                );
            }
        }
        self.since = now;
        self.blocked = Duration::ZERO;
        self.resumes = 0;
        self.longest = None;
    }
}

/// The calling thread's time spent waiting for a CPU so far (Linux
/// schedstat), if the kernel reports it.
fn run_delay() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
