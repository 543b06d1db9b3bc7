//! File-descriptor budget: raise the soft `RLIMIT_NOFILE` towards the hard limit when a
//! run needs more descriptors than the soft limit allows.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::error::Error;

/// Descriptors kept in reserve beyond what a run counts (stdio, logs, probes, ...).
const MARGIN: u64 = 64;

/// The soft and hard `RLIMIT_NOFILE` after [`ensure_fds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimits {
    /// Soft limit now in force.
    pub soft: u64,
    /// Hard limit (the ceiling an unprivileged process can raise the soft limit to).
    pub hard: u64,
    /// Descriptors open in this process when it was checked.
    pub open: u64,
}

/// Makes sure this process can open `extra` more descriptors (plus a small margin) on
/// top of those already open, raising the soft limit (never beyond the hard limit) if
/// needed. Fails with [`Error::FdLimit`] when the hard limit is too low.
///
/// Child processes started afterwards inherit the raised limit.
pub fn ensure_fds(extra: usize) -> Result<FdLimits, Error> {
    let open = open_fds();
    let needed = open
        .saturating_add(u64::try_from(extra).unwrap_or(u64::MAX))
        .saturating_add(MARGIN);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| Error::io("getrlimit(RLIMIT_NOFILE)", e.into()))?;
    if needed <= soft {
        return Ok(FdLimits { soft, hard, open });
    }
    if needed > hard {
        return Err(Error::FdLimit { needed, hard });
    }
    // Round up to a multiple of 1024 (within the hard limit) so that small increases in
    // later runs do not need another call.
    let target = needed.div_ceil(1024).saturating_mul(1024).min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard)
        .map_err(|e| Error::io("setrlimit(RLIMIT_NOFILE)", e.into()))?;
    Ok(FdLimits {
        soft: target,
        hard,
        open,
    })
}

/// Descriptors open in this process (entries of /proc/self/fd; 16 if it cannot be read).
fn open_fds() -> u64 {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d.count() as u64,
        Err(_) => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_needs_are_met_and_impossible_ones_refused() {
        let l = ensure_fds(10).unwrap();
        assert!(l.soft >= l.open + 10 && l.soft <= l.hard);
        if l.hard < u64::MAX / 4 {
            let err = ensure_fds(usize::try_from(l.hard).unwrap_or(usize::MAX)).unwrap_err();
            assert!(matches!(err, Error::FdLimit { .. }), "{err}");
            assert!(err.to_string().contains("RLIMIT_NOFILE"));
        }
    }
}
