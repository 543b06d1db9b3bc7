//! Logging of the demos: the logger's setup, and the levels of what
//! clients can cause (never an error of the server, throttled so that no
//! client can flood the log).

use std::io;
use std::time::{Duration, Instant};

use socketserver::{log_request_error, Address, RequestError};

/// Sets up the logger on stderr: `RUST_LOG` if set, else `default` (e.g.
/// `info` for servers, `warn` for clients).
pub fn init(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
}

/// Logs a failed authentication handshake at the level it deserves: a wrong
/// key at warn (someone tried), everything else a client can cause (a
/// timeout, a close, a cut to make room for newer clients) at info, so no
/// client can flood the error log.
pub fn log_auth_failure(what: &str, peer: &Address, e: &io::Error) {
    if e.kind() == io::ErrorKind::PermissionDenied {
        log::warn!("{what}: {peer}: {e}");
    } else {
        log::info!("{what}: {peer}: not authenticated: {e}");
    }
}

/// Logs a failed request the way a server facing the network should:
/// what a client can cause is never an error of the server. The peer's
/// going away is at debug, a timeout at info, bad input (`InvalidData`,
/// `InvalidInput`: a malformed or oversized frame, bad JSON, invalid
/// UTF-8, an oversized datagram) at warn, throttled to one line a second
/// for the whole process with the count of lines not shown, so that no
/// client can flood the log. Anything else (a panic, a local I/O error) is
/// the server's and logged at error, as the library's default does.
pub fn log_client_error(what: &str, peer: &Address, error: &RequestError) {
    let RequestError::Io(e) = error else {
        return log_request_error(peer, error);
    };
    if error.is_disconnect() {
        log::debug!("{what}: {peer}: {e}");
    } else if error.is_timeout() {
        log::info!("{what}: {peer}: timed out: {e}");
    } else if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    ) {
        if let Some(not_shown) = CLIENT_ERRORS.allow(Instant::now()) {
            let more = match not_shown {
                0 => String::new(),
                n => format!(" ({n} more like it in the last second not shown)"),
            };
            log::warn!("{what}: {peer}: bad input from the client: {e}{more}");
        }
    } else {
        log_request_error(peer, error);
    }
}

/// One log line a second at most, counting the ones not shown.
struct Throttle {
    state: parking_lot::Mutex<(Option<Instant>, u64)>,
}

static CLIENT_ERRORS: Throttle = Throttle {
    state: parking_lot::const_mutex((None, 0)),
};

impl Throttle {
    /// `Some(lines not shown since the last one)` if a line may be logged
    /// now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let (last, not_shown) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < Duration::from_secs(1) => {
                *not_shown += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(not_shown))
            }
        }
    }
}
