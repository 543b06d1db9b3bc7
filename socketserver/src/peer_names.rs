//! The names in a TLS peer's certificate: the subject's common name and
//! the subject alternative names (DNS names, IP addresses), parsed with
//! `x509-parser` from the leaf of [`TlsInfo::peer_certificates`], so that
//! a `verify_tls` pins clients by name in one line:
//!
//! ```
//! use socketserver::tls::TlsInfo;
//! use socketserver::{Address, StreamHandler, StreamRequest};
//!
//! struct OnlyBilling;
//!
//! impl StreamHandler for OnlyBilling {
//!     fn handle(&self, req: &mut StreamRequest) -> std::io::Result<()> {
//!         req.echo().map(drop)
//!     }
//!     fn verify_tls(&self, _peer: &Address, tls: &TlsInfo) -> bool {
//!         tls.peer_has_name("billing.internal")
//!     }
//! }
//! ```
//!
//! The chain was verified by rustls before (the mutual TLS configuration's
//! CA); these methods only read what the verified certificate says.

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::TlsInfo;

/// The names of a certificate (see [`TlsInfo::peer_names`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerNames {
    /// The subject's common name (CN), if it has one (the first, if
    /// several).
    pub common_name: Option<String>,
    /// The DNS names of its subject alternative names.
    pub dns_names: Vec<String>,
    /// The IP addresses of its subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

impl PeerNames {
    /// Parses the names of a DER certificate; `None` if it is not one.
    pub fn from_der(der: &[u8]) -> Option<PeerNames> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut names = PeerNames {
            common_name,
            ..PeerNames::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                            _ => None,
                        };
                        names.ip_addresses.extend(ip);
                    }
                    _ => {}
                }
            }
        }
        Some(names)
    }

    /// Whether `name` is the common name or one of the DNS names (ASCII
    /// case-insensitive, no wildcard matching), or, if it is an IP address,
    /// one of the IP addresses.
    pub fn has_name(&self, name: &str) -> bool {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        self.common_name
            .iter()
            .chain(&self.dns_names)
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

impl TlsInfo {
    /// The names in the peer's certificate (the first of
    /// [`peer_certificates`](Self::peer_certificates)); `None` when it sent
    /// none (or it cannot be parsed).
    pub fn peer_names(&self) -> Option<PeerNames> {
        PeerNames::from_der(self.peer_certificates.first()?.as_ref())
    }

    /// The subject common name of the peer's certificate.
    pub fn peer_common_name(&self) -> Option<String> {
        self.peer_names()?.common_name
    }

    /// Whether the peer's certificate carries `name` (see
    /// [`PeerNames::has_name`]); `false` without a certificate.
    pub fn peer_has_name(&self, name: &str) -> bool {
        self.peer_names().is_some_and(|n| n.has_name(name))
    }
}
