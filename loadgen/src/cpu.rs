//! CPU time of the calling thread (for `lg_cpu`).

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};

/// User + system CPU time consumed so far by the calling thread (zero if unavailable).
///
/// Per thread rather than per process, so that a host process (e.g. `bench`)
/// doing other work does not inflate the generator's figure.
pub(crate) fn thread_cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => timeval(u.user_time()) + timeval(u.system_time()),
        Err(_) => Duration::ZERO,
    }
}

fn timeval(t: nix::sys::time::TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_thread_uses_cpu() {
        let before = thread_cpu();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu() > before);
    }
}
