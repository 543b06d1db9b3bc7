//! [`IpNet`]: an IP network (`10.0.0.0/8`, `fd00::/8`, one address), for
//! the PROXY protocol's trusted proxies and the allow and deny lists.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length, e.g. `10.0.0.0/8`,
/// `fd00::/8`, or one address (`127.0.0.1` is `127.0.0.1/32`).
///
/// An IPv4 network also contains the IPv4-mapped IPv6 form of its addresses
/// (`::ffff:10.1.2.3`), which is how a dual-stack socket sees IPv4 peers.
///
/// ```
/// use socketserver::IpNet;
///
/// let net: IpNet = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.20.30.40".parse().unwrap()));
/// assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// assert!("127.0.0.1".parse::<IpNet>().unwrap().contains("127.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<IpNet>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` leading bits (at most 32 for
    /// IPv4, 128 for IPv6). Host bits of `addr` are ignored.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, IpNetParseError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(IpNetParseError(format!("{addr}/{prefix}")));
        }
        Ok(IpNet { addr, prefix })
    }

    /// One address (a /32 or /128 network).
    pub fn host(addr: IpAddr) -> IpNet {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    /// The network's address, as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (canonical(self.addr), canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let prefix = if self.addr.is_ipv4() {
                    self.prefix
                } else {
                    // A mapped IPv6 network: its last 32 bits are the IPv4.
                    self.prefix.saturating_sub(96)
                };
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            _ => {
                let (IpAddr::V6(net), IpAddr::V6(ip)) = (self.addr, ip) else {
                    return false;
                };
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl From<IpAddr> for IpNet {
    fn from(addr: IpAddr) -> Self {
        IpNet::host(addr)
    }
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    /// `ADDR` or `ADDR/PREFIX`, IPv4 or IPv6.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetParseError(s.to_owned());
        match s.split_once('/') {
            None => s.parse().map(IpNet::host).map_err(|_| bad()),
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                IpNet::new(addr, prefix).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Error returned when an [`IpNet`] does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNetParseError(String);

impl fmt::Display for IpNetParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid network {:?}: expected ADDR or ADDR/PREFIX (at most 32 for IPv4, 128 for IPv6)",
            self.0
        )
    }
}

impl std::error::Error for IpNetParseError {}
