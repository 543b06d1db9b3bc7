//! Logging of the demos: the logger's setup (stderr, syslog or the
//! systemd journal: `--log`), and the levels of what clients can cause
//! (never an error of the server, throttled so that no client can flood
//! the log).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use socketserver::{log_request_error, Address, RequestError};

/// Where a server's log records go (`--log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// Lines on stderr (the default).
    #[default]
    Stderr,
    /// The local syslog daemon (`/dev/log`), RFC 3164 records from
    /// `demos[PID]`, facility daemon.
    Syslog,
    /// The systemd journal's native protocol
    /// (`/run/systemd/journal/socket`), with `SYSLOG_IDENTIFIER=demos`.
    Journald,
}

/// Names the syslog socket in place of `/dev/log` (for tests).
pub const SYSLOG_SOCKET_VAR: &str = "DEMOS_SYSLOG_SOCKET";
/// Names the journal socket in place of `/run/systemd/journal/socket`
/// (for tests).
pub const JOURNAL_SOCKET_VAR: &str = "DEMOS_JOURNAL_SOCKET";

/// The identifier of the records (`SYSLOG_IDENTIFIER`, the syslog tag).
pub const IDENTIFIER: &str = "demos";

/// Sets up the logger on stderr: `RUST_LOG` if set, else `default` (e.g.
/// `info` for servers, `warn` for clients).
pub fn init(default: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
}

/// Sets up the logger for `target`, filtered by `RUST_LOG` if set, else
/// `default`, as [`init`] does. A syslog or journal socket that cannot be
/// reached is an error naming it.
pub fn init_target(default: &str, target: LogTarget) -> io::Result<()> {
    let filter = || {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).build()
    };
    let sink: Box<dyn log::Log> = match target {
        LogTarget::Stderr => {
            init(default);
            return Ok(());
        }
        LogTarget::Syslog => {
            let path = socket_path(SYSLOG_SOCKET_VAR, "/dev/log");
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: IDENTIFIER.into(),
                pid: std::process::id(),
            };
            let logger = syslog::unix_custom(formatter, &path).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("syslog socket {}: {e}", path.display()),
                )
            })?;
            Box::new(syslog::BasicLogger::new(logger))
        }
        LogTarget::Journald => Box::new(Journal::connect(socket_path(
            JOURNAL_SOCKET_VAR,
            "/run/systemd/journal/socket",
        ))?),
    };
    let filter = filter();
    log::set_max_level(filter.filter());
    log::set_boxed_logger(Box::new(Filtered { filter, sink }))
        .map_err(|e| io::Error::other(format!("a logger is set already: {e}")))
}

fn socket_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// A sink behind `RUST_LOG`'s filter.
struct Filtered {
    filter: env_logger::Logger,
    sink: Box<dyn log::Log>,
}

impl log::Log for Filtered {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.filter.matches(record) {
            self.sink.log(record);
        }
    }

    fn flush(&self) {
        self.sink.flush();
    }
}

/// The systemd journal's native protocol, one datagram per record:
/// `MESSAGE`, `PRIORITY` (syslog severity), `SYSLOG_IDENTIFIER`,
/// `SYSLOG_PID` and `RUST_TARGET` fields. Written here rather than with
/// the `systemd-journal-logger` crate, whose socket path is fixed: the
/// tests point this one at a socket of their own.
struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    fn connect(path: PathBuf) -> io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        // An empty datagram, which journald ignores: is anyone there?
        socket.send_to(&[], &path).map_err(|e| {
            io::Error::new(e.kind(), format!("journal socket {}: {e}", path.display()))
        })?;
        Ok(Journal { socket, path })
    }
}

/// The syslog severity of a level (journald's `PRIORITY`).
pub fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Appends one field of the native protocol: `NAME=value\n`, or, for a
/// value holding a newline, `NAME\n`, its length (64-bit little endian),
/// the value and `\n`.
fn journal_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl log::Log for Journal {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut payload = Vec::with_capacity(256);
        journal_field(
            &mut payload,
            "MESSAGE",
            record.args().to_string().as_bytes(),
        );
        journal_field(
            &mut payload,
            "PRIORITY",
            severity(record.level()).to_string().as_bytes(),
        );
        journal_field(&mut payload, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
        journal_field(
            &mut payload,
            "SYSLOG_PID",
            std::process::id().to_string().as_bytes(),
        );
        journal_field(&mut payload, "RUST_TARGET", record.target().as_bytes());
        // Best effort, as any logger: a full or gone journal loses records.
        let _ = self.socket.send_to(&payload, &self.path);
    }

    fn flush(&self) {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_fields_are_plain_or_length_prefixed_with_a_newline() {
        let mut out = Vec::new();
        journal_field(&mut out, "MESSAGE", b"hello");
        assert_eq!(out, b"MESSAGE=hello\n");
        out.clear();
        journal_field(&mut out, "MESSAGE", b"a\nb");
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(out, want);
    }

    #[test]
    fn levels_map_to_syslog_severities() {
        assert_eq!(severity(log::Level::Error), 3);
        assert_eq!(severity(log::Level::Warn), 4);
        assert_eq!(severity(log::Level::Info), 6);
        assert_eq!(severity(log::Level::Trace), 7);
    }
}
