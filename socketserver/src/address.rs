//! [`Address`]: where a server listens and where a request came from.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A socket address of any transport this crate serves: an IP address and
/// port (TCP, UDP) or a Unix socket path (Unix stream, Unix datagram).
///
/// Parses from the forms used on command lines: `HOST:PORT`, `[V6]:PORT`
/// and `unix:PATH`. Displays the same way.
///
/// ```
/// use socketserver::Address;
///
/// let a: Address = "127.0.0.1:0".parse().unwrap();
/// assert!(a.as_inet().is_some());
/// let u: Address = "unix:/tmp/echo.sock".parse().unwrap();
/// assert_eq!(u.to_string(), "unix:/tmp/echo.sock");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 socket address.
    Inet(SocketAddr),
    /// A Unix socket path; `None` for an unnamed socket (a client that did
    /// not bind a path, or one end of a socket pair).
    Unix(Option<PathBuf>),
}

impl Address {
    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            Address::Unix(_) => None,
        }
    }

    /// The Unix socket path, if this is a named Unix address.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(p) => p.as_deref(),
            Address::Inet(_) => None,
        }
    }

    /// Whether the address is a loopback address (127.0.0.0/8, `::1`, or an
    /// IPv4-mapped loopback). Unix sockets count as local.
    pub fn is_local(&self) -> bool {
        match self {
            Address::Inet(a) => match a.ip() {
                std::net::IpAddr::V4(v4) => v4.is_loopback(),
                std::net::IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            },
            Address::Unix(_) => true,
        }
    }

    /// Resolves `HOST:PORT` (names allowed, e.g. `localhost:0`) or `unix:PATH`.
    /// The first resolved IP address is used.
    pub fn resolve(s: &str) -> std::io::Result<Address> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Address::Unix(Some(PathBuf::from(path))));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Inet(a));
        }
        s.to_socket_addrs()?
            .next()
            .map(Address::Inet)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{s:?} resolved to no address"),
                )
            })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Address::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

/// Error returned when an [`Address`] does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressParseError(String);

impl fmt::Display for AddressParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address {:?}: expected HOST:PORT, [V6]:PORT or unix:PATH",
            self.0
        )
    }
}

impl std::error::Error for AddressParseError {}

impl FromStr for Address {
    type Err = AddressParseError;

    /// Parses `IP:PORT`, `[V6]:PORT` or `unix:PATH` (no name resolution; see
    /// [`Address::resolve`] for host names).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some("") => Err(AddressParseError(s.to_owned())),
            Some(path) => Ok(Address::Unix(Some(PathBuf::from(path)))),
            None => s
                .parse::<SocketAddr>()
                .map(Address::Inet)
                .map_err(|_| AddressParseError(s.to_owned())),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Inet(a)
    }
}

impl From<&std::os::unix::net::SocketAddr> for Address {
    fn from(a: &std::os::unix::net::SocketAddr) -> Self {
        Address::Unix(a.as_pathname().map(Path::to_path_buf))
    }
}
