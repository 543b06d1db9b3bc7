//! [`Throttle`]: at most one log line a second for a repeated event (a
//! client error, a refusal), with the count of those left unlogged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One log line a second at most; the others are counted and the count
/// goes with the next line.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<Option<Instant>>,
    skipped: AtomicU64,
}

impl Throttle {
    /// The shortest time between two lines.
    const EVERY: Duration = Duration::from_secs(1);

    /// Whether to log now: `Some(n)` with the number of events left
    /// unlogged since the last line, or `None` (this one is counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(Instant::now());
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }

    /// `" (N more since the last report)"`, or nothing for 0.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn more(skipped: u64) -> String {
        if skipped == 0 {
            String::new()
        } else {
            format!(" ({skipped} more since the last report)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_rest_counted() {
        let t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow(), None);
        }
        *t.last.lock() = Instant::now().checked_sub(Duration::from_secs(2));
        assert_eq!(t.allow(), Some(1000));
        assert_eq!(Throttle::more(0), "");
        assert_eq!(Throttle::more(3), " (3 more since the last report)");
    }
}
