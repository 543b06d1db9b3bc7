//! Why a connection was not served: [`Refusal`] (one refusal, with what
//! it says in the log) and [`Refusals`] (the counts by reason, in
//! [`Stats::refused_by`](crate::Stats::refused_by)). Shared by the
//! admission stage, the PROXY header and TLS stages, and the registry that
//! counts them.

use std::net::IpAddr;

use crate::counters::{HandshakeStage, RefusedReason, Snapshot};

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
    pub(crate) fn is_busy(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
