//! The one error type of the crate.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::report::Report;

/// Why a run (or an idle hold) could not produce a usable result.
#[derive(Debug)]
pub enum Error {
    /// The target is not a loopback address; nothing was sent.
    NotLoopback(SocketAddr),
    /// A number in the configuration is out of range.
    InvalidConfig(String),
    /// The process may not open enough file descriptors, even after raising its soft
    /// limit to the hard limit.
    FdLimit {
        /// Descriptors the run needs (already open + sockets + event loops + margin).
        needed: u64,
        /// The hard `RLIMIT_NOFILE` limit that could not be exceeded.
        hard: u64,
    },
    /// A first probe found nothing serving at the address (e.g. connection refused or
    /// timed out); no load was generated.
    Unreachable {
        /// The address probed.
        addr: SocketAddr,
        /// What the probe got.
        source: io::Error,
    },
    /// The run went to its end but not a single request was answered correctly. The
    /// report (all zeros except the error counters) says what went wrong.
    NothingServed(Box<Report>),
    /// A local resource could not be set up (epoll instance, socket, thread).
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// An event-loop thread failed (panicked or did not stop in time). This is a bug in
    /// the generator, never the server's fault.
    Worker(String),
}

impl Error {
    pub(crate) fn io(context: &'static str, source: io::Error) -> Error {
        Error::Io { context, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLoopback(a) => write!(
                f,
                "refusing {a}: not a loopback address (only 127.0.0.0/8 and ::1 are allowed)"
            ),
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::FdLimit { needed, hard } => write!(
                f,
                "need about {needed} file descriptors but the hard RLIMIT_NOFILE is {hard}; \
                 use fewer connections or raise the hard limit (ulimit -Hn)"
            ),
            Error::Unreachable { addr, source } => {
                write!(f, "nothing answering at {addr}: {source}")
            }
            Error::NothingServed(r) => write!(
                f,
                "no {} request to {} was served in {:.1} s (errors: {} mismatches, {} i/o, \
                 {} connect, {} lost)",
                r.mode, r.addr, r.secs, r.mismatches, r.io_errors, r.connect_errors, r.lost
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Worker(m) => write!(f, "load generator thread failed: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Unreachable { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
