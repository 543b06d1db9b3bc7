//! A throttle for log lines that can come once per connection (a flood of
//! clients must not flood the log): the first passes, then at most one per
//! period, saying how many were held back meanwhile.

use std::time::{Duration, Instant};

/// One throttled kind of log line, owned by one thread.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub(crate) const fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last: None,
            held: 0,
        }
    }

    /// Whether a line may be logged now: `Some(n)` with the number of lines
    /// held back since the last one, `None` to hold this one back.
    pub(crate) fn pass(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.period)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_then_one_per_period_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.pass(), Some(0));
        assert_eq!(t.pass(), None);
        assert_eq!(t.pass(), None);
        t.period = Duration::ZERO;
        assert_eq!(t.pass(), Some(2));
        assert_eq!(t.pass(), Some(0));
    }
}
