//! The admission stage: whether an accepted stream connection is served at
//! all, before anything is read from it.
//!
//! ```text
//! accept -> admission -> PROXY header -> TLS handshake -> handler
//!           ^^^^^^^^^
//! ```
//!
//! In order: a graceful close under way refuses it (`draining`); the
//! allow and deny lists (`denied`); `max_connections` (`limit`) and
//! `max_per_ip` (`per_ip`); then it takes a place in the pre-handler budget,
//! closing the oldest connection that has not reached its handler when the
//! budget is full (`pre_handler_budget`). Behind the PROXY protocol the
//! client is known only once its header is read: the lists and
//! `max_per_ip` then apply to it there ([`Admission::admit_client`]).
//!
//! A refusal is counted by reason ([`Refusals`]), logged at most once a
//! second, and, for the limits, answered with the builder's busy message.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::connections::{Registration, Registry};
use crate::counters::{HandshakeStage, RefusedReason, Snapshot};
use crate::request::Conn;
use crate::{Address, IpNet, StreamRequest};

/// Why a connection was not served, as counted in [`Refusals`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A graceful close has begun.
    Draining,
    /// The allow and deny lists refuse the client.
    Denied(IpAddr),
    /// `max_connections` open already.
    TooManyConnections(usize),
    /// `max_per_ip` open already from this client.
    TooManyFromIp(usize),
    /// `verify_request` or `verify_tls` said no.
    Verify(&'static str),
    /// The PROXY header was missing, bad, late, or from an untrusted peer.
    Protocol(String),
}

impl Refusal {
    /// Whether the builder's busy message is sent (the client may retry).
    fn is_busy(&self) -> bool {
        matches!(
            self,
            Refusal::TooManyConnections(_) | Refusal::TooManyFromIp(_)
        )
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Draining => write!(f, "the server is closing"),
            Refusal::Denied(ip) => write!(f, "{ip} is not allowed (allow/deny lists)"),
            Refusal::TooManyConnections(n) => write!(f, "max_connections ({n}) reached"),
            Refusal::TooManyFromIp(n) => write!(f, "max_per_ip ({n}) reached"),
            Refusal::Verify(which) => write!(f, "refused by {which}"),
            Refusal::Protocol(why) => f.write_str(why),
        }
    }
}

/// Refused connections by reason, in [`Stats::refused_by`]; they add up to
/// [`Stats::refused`].
///
/// [`Stats::refused_by`]: crate::Stats::refused_by
/// [`Stats::refused`]: crate::Stats::refused
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusals {
    /// `max_connections` reached.
    pub limit: u64,
    /// `max_per_ip` reached.
    pub per_ip: u64,
    /// Refused by the allow and deny lists.
    pub denied: u64,
    /// Accepted while a graceful close had begun.
    pub draining: u64,
    /// Closed before reaching the handler to make room in the pre-handler
    /// budget (the oldest connection still in its PROXY header or TLS
    /// handshake, or in a handshake of the handler's own).
    pub pre_handler_budget: u64,
    /// Refused by `verify_request` or `verify_tls`.
    pub verify: u64,
    /// A PROXY header missing, malformed, late or from an untrusted peer.
    pub protocol: u64,
}

impl Refusal {
    /// The reason it is counted under; `None` for a bad PROXY header, which
    /// counts as a failed handshake (stage `proxy`).
    pub(crate) fn reason(&self) -> Option<RefusedReason> {
        Some(match self {
            Refusal::Draining => RefusedReason::Draining,
            Refusal::Denied(_) => RefusedReason::Denied,
            Refusal::TooManyConnections(_) => RefusedReason::Limit,
            Refusal::TooManyFromIp(_) => RefusedReason::PerIp,
            Refusal::Verify(_) => RefusedReason::Verify,
            Refusal::Protocol(_) => return None,
        })
    }
}

impl From<&Snapshot> for Refusals {
    fn from(s: &Snapshot) -> Refusals {
        let refused = |r: RefusedReason| {
            s.refused
                .iter()
                .find(|(reason, _)| *reason == r)
                .map_or(0, |(_, n)| *n)
        };
        let proxy = s
            .handshake_failures
            .iter()
            .find(|(stage, _)| *stage == HandshakeStage::Proxy)
            .map_or(0, |(_, n)| *n);
        Refusals {
            limit: refused(RefusedReason::Limit),
            per_ip: refused(RefusedReason::PerIp),
            denied: refused(RefusedReason::Denied),
            draining: refused(RefusedReason::Draining),
            pre_handler_budget: refused(RefusedReason::PreHandlerBudget),
            verify: refused(RefusedReason::Verify),
            protocol: proxy,
        }
    }
}

/// The allow and deny lists: a client matching a `deny` network is
/// refused; when there are `allow` networks, a client must match one of
/// them. Unix socket peers have no IP address and are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AccessList {
    pub(crate) allow: Vec<IpNet>,
    pub(crate) deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `ip` may connect.
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|net| net.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(ip))
    }

    fn check(&self, peer: &Address) -> Result<(), Refusal> {
        match peer.as_inet() {
            Some(a) if !self.permits(a.ip()) => Err(Refusal::Denied(a.ip())),
            _ => Ok(()),
        }
    }
}

/// The admission stage of one server.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    pub(crate) access: AccessList,
    /// Sent to a client refused by a limit.
    pub(crate) busy_message: Option<Arc<[u8]>>,
}

impl Admission {
    /// Admits the connection `conn` from `peer` (registered, counted
    /// against the limits, holding a place in the pre-handler budget), or
    /// refuses it (counted, logged, answered). `proxied`: its PROXY header
    /// is still to be read, so the client is not known yet.
    pub(crate) fn admit(
        &self,
        registry: &Arc<Registry>,
        conn: &Conn,
        peer: &Address,
        proxied: bool,
    ) -> Option<Registration> {
        let admitted = if registry.draining() {
            Err(Refusal::Draining)
        } else if proxied {
            registry.admit_without_ip(conn.as_raw_fd())
        } else {
            self.access
                .check(peer)
                .and_then(|()| registry.admit(conn.as_raw_fd(), peer))
        };
        match admitted {
            Ok(registration) => Some(registration),
            Err(why) => {
                self.answer(conn, &why);
                registry.refused(peer, &why);
                None
            }
        }
    }

    /// Behind the PROXY protocol, once the header named the client: the
    /// lists and `max_per_ip` for it. Refused: counted, logged, answered.
    pub(crate) fn admit_client(&self, req: &mut StreamRequest, registry: &Registry) -> bool {
        let client = req.peer_addr().clone();
        let Some(ip) = client.as_inet().map(|a| a.ip()) else {
            return true;
        };
        let counted = self.access.check(&client).and_then(|()| {
            req.registration_mut()
                .map_or(Ok(()), |registration| registration.count_ip(ip))
        });
        match counted {
            Ok(()) => true,
            Err(why) => {
                // Its places (max_connections, max_per_ip) are free before
                // the client can read the answer and try again.
                req.leave_registry();
                self.answer(req.stream(), &why);
                registry.refused(&client, &why);
                false
            }
        }
    }

    /// The busy message, for a refusal by a limit. Sent without waiting:
    /// nothing waits for a refused client.
    fn answer(&self, conn: &Conn, why: &Refusal) {
        if let (true, Some(message)) = (why.is_busy(), &self.busy_message) {
            let _ = crate::sys::send_nowait(conn.as_raw_fd(), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> AccessList {
        AccessList {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn no_lists_permit_everyone() {
        assert!(list(&[], &[]).permits("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn deny_wins_over_allow() {
        let l = list(&["127.0.0.0/8"], &["127.0.0.3"]);
        assert!(l.permits("127.0.0.2".parse().unwrap()));
        assert!(!l.permits("127.0.0.3".parse().unwrap()));
        assert!(!l.permits("10.0.0.1".parse().unwrap()), "not in allow");
    }

    #[test]
    fn ipv4_rules_match_ipv4_mapped_ipv6_peers() {
        let l = list(&[], &["127.0.0.3"]);
        assert!(!l.permits("::ffff:127.0.0.3".parse().unwrap()));
        let v6 = list(&["::1"], &[]);
        assert!(v6.permits("::1".parse().unwrap()));
        assert!(!v6.permits("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn reasons_fill_their_own_counters() {
        let counters = crate::counters::Counters::default();
        for r in [
            Refusal::Draining,
            Refusal::Denied("127.0.0.1".parse().unwrap()),
            Refusal::TooManyConnections(1),
            Refusal::TooManyFromIp(1),
            Refusal::Verify("verify_request"),
            Refusal::Protocol("bad".into()),
        ] {
            match r.reason() {
                Some(reason) => counters.refused(reason),
                None => counters.handshake_failed(HandshakeStage::Proxy),
            }
        }
        counters.refused(RefusedReason::PreHandlerBudget);
        let r = Refusals::from(&counters.read());
        assert_eq!((r.limit, r.per_ip, r.denied, r.draining), (1, 1, 1, 1));
        assert_eq!((r.pre_handler_budget, r.verify, r.protocol), (1, 1, 1));
    }
}
