//! The deadlines of a connection: one read, one write, one message (the
//! slowloris defence), with their defaults.

use std::time::{Duration, Instant};

/// Default read timeout of a connection (one read's longest wait, which is
/// how long an idle client may stay): 10 minutes.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Default write timeout of a connection (one write's longest wait): 60 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time from a message's first byte to its end: 20 s (Apache's
/// `mod_reqtimeout` starts header reads at 20 s).
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default minimum data rate of a message: each 500 bytes received extend
/// its deadline by a second (as `mod_reqtimeout`'s `MinRate=500`).
pub const DEFAULT_MIN_DATA_RATE: u32 = 500;

/// The deadlines of every accepted connection, from the
/// [`Builder`](crate::Builder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// Longest wait of one read (`SO_RCVTIMEO`).
    pub(crate) read: Option<Duration>,
    /// Longest time from a message's first byte to its end.
    pub(crate) message: Option<Duration>,
    /// Bytes per second that extend the message deadline by one second.
    pub(crate) min_rate: Option<u32>,
    /// Longest wait of one write (`SO_SNDTIMEO`, set by the server).
    pub(crate) write: Option<Duration>,
}

impl Default for Timeouts {
    /// The server's defaults.
    fn default() -> Self {
        Timeouts {
            read: Some(DEFAULT_READ_TIMEOUT),
            message: Some(DEFAULT_MESSAGE_TIMEOUT),
            min_rate: Some(DEFAULT_MIN_DATA_RATE),
            write: Some(DEFAULT_WRITE_TIMEOUT),
        }
    }
}

impl Timeouts {
    /// No deadline at all (a request not attached to a server).
    pub(crate) fn none() -> Timeouts {
        Timeouts {
            read: None,
            message: None,
            min_rate: None,
            write: None,
        }
    }

    /// When a message that started at `started` and has brought `received`
    /// bytes so far must be complete, if ever.
    pub(crate) fn message_deadline(&self, started: Instant, received: u64) -> Option<Instant> {
        let base = self.message?;
        let extension = match self.min_rate {
            Some(rate) if rate > 0 => Duration::from_secs_f64(received as f64 / f64::from(rate)),
            _ => Duration::ZERO,
        };
        started.checked_add(base.saturating_add(extension))
    }
}

/// `now + timeout`, or `None` when that is too far to represent (wait
/// forever): a huge duration never panics.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
