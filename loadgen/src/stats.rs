//! Counting: the run's timeline, the latency histogram and the error counters that each
//! event-loop thread keeps on its own and that are merged at the end.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks exactly (60 s, in nanoseconds); longer ones are
/// clamped to it.
const HIST_MAX_NS: u64 = 60_000_000_000;

/// The instants that shape a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeline {
    /// When the run began.
    pub start: Instant,
    /// Ping-pong: connections that are up wait for the others until this instant at most
    /// (half the warmup), then all start.
    pub release_at: Instant,
    /// Start of the measured window.
    pub warm_end: Instant,
    /// End of the measured window and of the run.
    pub end: Instant,
}

impl Timeline {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Timeline {
        let warm_end = start + warmup;
        Timeline {
            start,
            release_at: start + warmup / 2,
            warm_end,
            end: warm_end + duration,
        }
    }

    /// Whether a request completed at `t` is counted.
    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.warm_end && t < self.end
    }
}

/// What one event-loop thread measured.
pub(crate) struct Stats {
    /// Latency of requests completed in the window, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Requests completed in the window.
    pub requests: u64,
    /// Connections or sockets that completed at least one request in the window.
    pub active: u64,
    /// Echoes whose bytes differ from what was sent (whole run).
    pub mismatches: u64,
    /// Resets, unexpected EOFs, send/receive failures (whole run).
    pub io_errors: u64,
    /// Failed connection attempts (whole run).
    pub connect_errors: u64,
    /// UDP datagrams with no echo within the timeout (whole run).
    pub lost: u64,
    /// UDP echoes that came after their timeout, ignored (whole run).
    pub late: u64,
    /// Requests served correctly at any time, warmup included.
    pub served_ever: u64,
    /// CPU time (user + system) the thread used.
    pub cpu: Duration,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            // 3 significant figures from 1 ns to 60 s: about 200 KiB per histogram.
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
                .expect("constant histogram bounds are valid"),
            requests: 0,
            active: 0,
            mismatches: 0,
            io_errors: 0,
            connect_errors: 0,
            lost: 0,
            late: 0,
            served_ever: 0,
            cpu: Duration::ZERO,
        }
    }

    /// Counts a correct echo completed at `done` for a request started at `t0`.
    /// `counted` is the connection's own "already counted as active" flag.
    pub fn served(&mut self, tl: &Timeline, t0: Instant, done: Instant, counted: &mut bool) {
        self.served_ever += 1;
        if tl.in_window(done) {
            let ns = u64::try_from(done.saturating_duration_since(t0).as_nanos())
                .unwrap_or(u64::MAX)
                .clamp(1, HIST_MAX_NS);
            self.hist.saturating_record(ns);
            self.requests += 1;
            if !*counted {
                *counted = true;
                self.active += 1;
            }
        }
    }

    /// All errors counted so far (mismatches + I/O + connect).
    pub fn errors(&self) -> u64 {
        self.mismatches + self.io_errors + self.connect_errors
    }

    /// Adds another thread's counts to these.
    pub fn merge(&mut self, o: &Stats) {
        // Same bounds on both sides, so adding cannot fail; saturate if it ever did.
        if self.hist.add(&o.hist).is_err() {
            for v in o.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.requests += o.requests;
        self.active += o.active;
        self.mismatches += o.mismatches;
        self.io_errors += o.io_errors;
        self.connect_errors += o.connect_errors;
        self.lost += o.lost;
        self.late += o.late;
        self.served_ever += o.served_ever;
        self.cpu += o.cpu;
    }

    /// Latency at quantile `q` (0..=1) in microseconds; 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            ns_to_us(self.hist.value_at_quantile(q) as f64)
        }
    }

    /// Highest latency in microseconds; 0 when nothing was recorded.
    pub fn max_us(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            ns_to_us(self.hist.max() as f64)
        }
    }

    /// Mean latency in microseconds; 0 when nothing was recorded.
    pub fn mean_us(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            ns_to_us(self.hist.mean())
        }
    }
}

/// Nanoseconds to microseconds, rounded to 0.1 us.
fn ns_to_us(ns: f64) -> f64 {
    (ns / 100.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_merge() {
        let start = Instant::now();
        let tl = Timeline::new(start, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(tl.release_at, start + Duration::from_millis(500));
        let mut a = Stats::new();
        let mut counted = false;
        // During warmup: served but not recorded.
        a.served(&tl, start, start + Duration::from_millis(10), &mut counted);
        assert_eq!((a.requests, a.served_ever, a.active), (0, 1, 0));
        let t0 = start + Duration::from_millis(1500);
        a.served(&tl, t0, t0 + Duration::from_micros(100), &mut counted);
        a.served(&tl, t0, t0 + Duration::from_micros(300), &mut counted);
        assert_eq!((a.requests, a.active), (2, 1));
        // At or after the end: not recorded.
        a.served(&tl, t0, tl.end, &mut counted);
        assert_eq!(a.requests, 2);

        let mut b = Stats::new();
        b.io_errors = 2;
        b.mismatches = 1;
        b.merge(&a);
        assert_eq!((b.requests, b.errors(), b.served_ever), (2, 3, 4));
        assert!((b.max_us() - 300.0).abs() < 1.0, "{}", b.max_us());
        assert!((b.mean_us() - 200.0).abs() < 1.0, "{}", b.mean_us());
        assert!(b.quantile_us(0.5) >= 99.0 && b.quantile_us(0.5) <= 101.0);
        assert_eq!(Stats::new().quantile_us(0.99), 0.0);
    }
}
