//! [`Error`]: an `io::Error` payload that says which operation failed on which
//! address.

use std::fmt;
use std::io;

/// Context for a failed socket operation: what was done, on which address,
/// and the OS error underneath.
///
/// Functions of this crate return `io::Result`; when an operation on an
/// address fails, the `io::Error` keeps the original [`io::ErrorKind`] and
/// carries an `Error` inside, so that its message reads like
/// `bind tcp://127.0.0.1:80: Permission denied (os error 13)` and the details
/// stay reachable:
///
/// ```
/// use socketserver::{Error, TcpServer, StreamRequest};
///
/// let first = TcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop)).unwrap();
/// let taken = first.server_address().to_string();
/// let err = socketserver::Server::builder()
///     .reuse_address(false)
///     .tcp(taken.as_str(), |r: &mut StreamRequest| r.echo().map(drop))
///     .unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
/// let ctx = err.get_ref().and_then(|e| e.downcast_ref::<Error>()).unwrap();
/// assert_eq!(ctx.operation(), "bind");
/// assert!(err.to_string().starts_with("bind tcp://127.0.0.1:"));
/// ```
#[derive(Debug)]
pub struct Error {
    op: &'static str,
    target: String,
    source: io::Error,
}

impl Error {
    /// Wraps `source` with the operation and target, keeping its kind.
    pub fn wrap(op: &'static str, target: impl fmt::Display, source: io::Error) -> io::Error {
        let kind = source.kind();
        io::Error::new(
            kind,
            Error {
                op,
                target: target.to_string(),
                source,
            },
        )
    }

    /// The operation that failed, e.g. `"bind"`, `"listen"`, `"accept"`.
    pub fn operation(&self) -> &'static str {
        self.op
    }

    /// What it was done to, e.g. `tcp://127.0.0.1:8000`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The OS error underneath (with its raw errno when there is one).
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.target, self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `map_err` helper: `.map_err(at("bind", &target))`.
pub(crate) fn at<'a>(op: &'static str, target: &'a str) -> impl Fn(io::Error) -> io::Error + 'a {
    move |e| Error::wrap(op, target, e)
}

/// Whether `e`, from a read or write on a connection, says the peer is gone
/// without a word: keepalive probes or sent data went unanswered
/// (`ETIMEDOUT` from the kernel, not a timeout of the server's own), or the
/// network reported the host or net unreachable.
pub(crate) fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIMEDOUT | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestError;

    #[test]
    fn a_kernel_etimedout_is_a_vanished_peer_not_a_timeout_of_the_servers() {
        let gone = io::Error::from_raw_os_error(libc::ETIMEDOUT);
        assert!(is_peer_gone(&gone));
        let gone = RequestError::Io(gone);
        assert!(gone.is_disconnect() && !gone.is_timeout());
        let unreachable = RequestError::Io(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
        assert!(unreachable.is_disconnect());
        let ours = io::Error::new(io::ErrorKind::TimedOut, "read timed out after 1s");
        assert!(!is_peer_gone(&ours));
        let ours = RequestError::Io(ours);
        assert!(ours.is_timeout() && !ours.is_disconnect());
        assert!(!is_peer_gone(&io::Error::from_raw_os_error(libc::EAGAIN)));
    }
}
