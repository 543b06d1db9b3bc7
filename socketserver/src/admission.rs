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

use crate::conn::Conn;
use crate::connections::{Registration, Registry};
use crate::refusal::Refusal;
use crate::{Address, IpNet, StreamRequest};

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
}
