//! The counters behind a server's metrics that [`Stats`](crate::Stats)
//! does not hold: refusals by reason, requests by outcome, handshake
//! failures by stage, bytes in and out, and a histogram of request
//! durations. Each is a relaxed atomic increment where the event happens;
//! [`Server::counters`](crate::Server::counters) takes a [`Snapshot`] of
//! them all. They live in shared memory, with the totals of
//! [`Stats`](crate::Stats), so that what the children of `Forking` and
//! `PreFork` count is seen by the parent.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::time::Duration;

/// Why a connection (or datagram) was refused before its handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusedReason {
    /// `max_connections` was reached.
    Limit,
    /// `max_per_ip` was reached for the client's address.
    PerIp,
    /// An allow or deny list refused the address.
    Denied,
    /// The server was closing (a graceful close had begun).
    Draining,
    /// Closed to make room in the pre-handler budget
    /// ([`Builder::max_pre_handler`](crate::Builder::max_pre_handler)):
    /// the oldest connection still in its PROXY header, TLS handshake or
    /// a handshake of the handler's own.
    PreHandlerBudget,
    /// `verify_request` or `verify_tls` said no.
    Verify,
}

impl RefusedReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RefusedReason; 6] = [
        RefusedReason::Limit,
        RefusedReason::PerIp,
        RefusedReason::Denied,
        RefusedReason::Draining,
        RefusedReason::PreHandlerBudget,
        RefusedReason::Verify,
    ];

    /// The label value (`limit`, `per_ip`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::Limit => "limit",
            RefusedReason::PerIp => "per_ip",
            RefusedReason::Denied => "denied",
            RefusedReason::Draining => "draining",
            RefusedReason::PreHandlerBudget => "pre_handler_budget",
            RefusedReason::Verify => "verify",
        }
    }
}

/// The stage of a connection's set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeStage {
    /// The PROXY protocol header (missing, malformed, late, untrusted).
    Proxy,
    /// The TLS handshake.
    Tls,
    /// An application's authentication (e.g. `auth`'s HMAC handshake),
    /// reported by the handler ([`StreamRequest::count_handshake_failure`]).
    ///
    /// [`StreamRequest::count_handshake_failure`]: crate::StreamRequest::count_handshake_failure
    Auth,
}

impl HandshakeStage {
    /// Every stage, in a fixed order.
    pub const ALL: [HandshakeStage; 3] = [
        HandshakeStage::Proxy,
        HandshakeStage::Tls,
        HandshakeStage::Auth,
    ];

    /// The label value (`proxy`, `tls`, `auth`).
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeStage::Proxy => "proxy",
            HandshakeStage::Tls => "tls",
            HandshakeStage::Auth => "auth",
        }
    }
}

/// The upper bounds of the request-duration histogram's buckets, in
/// seconds (a last bucket, `+Inf`, takes the rest).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// The bucket bounds in nanoseconds, for the hot path.
const BUCKET_NANOS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        // Exact for these values: each is a whole number of nanoseconds.
        out[i] = (DURATION_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// The counters of one server, in this process and the children it forks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests taken off the socket.
    pub(crate) accepted: AtomicU64,
    /// Refusals in all (`refused` has them by reason).
    pub(crate) refused_total: AtomicU64,
    /// Handlers that finished without error.
    pub(crate) completed: AtomicU64,
    /// Handlers that failed or panicked, or were abandoned.
    pub(crate) failed: AtomicU64,
    /// Datagrams dropped for being larger than `max_datagram_size`.
    pub(crate) oversized: AtomicU64,
    /// Connections whose peer vanished.
    pub(crate) peer_gone: AtomicU64,
    /// Requests abandoned after a stack overflow (`Green`).
    pub(crate) stack_overflows: AtomicU64,
    refused: [AtomicU64; RefusedReason::ALL.len()],
    handshake_failed: [AtomicU64; HandshakeStage::ALL.len()],
    finished: AtomicU64,
    errored: AtomicU64,
    panicked: AtomicU64,
    cut: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Per bucket (not cumulative), the last one for `+Inf`.
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_nanos: AtomicU64,
}

// SAFETY: every field is an atomic integer or an array of them; zero is a
// valid value of each.
unsafe impl crate::sys::ZeroAtomics for Counters {}

/// How a request's handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Setup, handle, finish and the final flush all succeeded.
    Finished,
    /// One of them returned an error.
    Errored,
    /// One of them panicked.
    Panicked,
}

impl Counters {
    pub(crate) fn refused(&self, reason: RefusedReason) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_failed(&self, stage: HandshakeStage) {
        self.handshake_failed[stage as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn cut(&self, n: usize) {
        self.cut.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// A request's handler ended after `took`.
    pub(crate) fn request(&self, outcome: Outcome, took: Duration) {
        let counter = match outcome {
            Outcome::Finished => &self.finished,
            Outcome::Errored => &self.errored,
            Outcome::Panicked => &self.panicked,
        };
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&b| nanos <= b)
            .unwrap_or(BUCKET_NANOS.len());
        self.duration_buckets[bucket].fetch_add(1, Relaxed);
        self.duration_nanos.fetch_add(nanos, Relaxed);
        // Last, released: a reader that sees the request counted (acquired,
        // in `read`) sees its duration too, so a scrape never has more
        // requests than durations.
        counter.fetch_add(1, Release);
    }

    pub(crate) fn read(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Relaxed);
        Snapshot {
            refused: RefusedReason::ALL.map(|r| (r, load(&self.refused[r as usize]))),
            handshake_failures: HandshakeStage::ALL
                .map(|s| (s, load(&self.handshake_failed[s as usize]))),
            finished: self.finished.load(Acquire),
            errored: self.errored.load(Acquire),
            panicked: self.panicked.load(Acquire),
            cut: load(&self.cut),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            duration_buckets: std::array::from_fn(|i| load(&self.duration_buckets[i])),
            duration_sum: Duration::from_nanos(load(&self.duration_nanos)),
        }
    }
}

/// The counters of a server at one moment (see
/// [`Server::counters`](crate::Server::counters)), with what its forked
/// children (`Forking`, `PreFork`) counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Refusals by reason.
    pub refused: [(RefusedReason, u64); RefusedReason::ALL.len()],
    /// Failed handshakes by stage.
    pub handshake_failures: [(HandshakeStage, u64); HandshakeStage::ALL.len()],
    /// Requests whose handler ran and finished without error.
    pub finished: u64,
    /// Requests whose handler returned (or whose flush hit) an error.
    pub errored: u64,
    /// Requests whose handler panicked.
    pub panicked: u64,
    /// Requests still running at a graceful close's deadline, or past
    /// `max_lifetime`, whose connections were cut.
    pub cut: u64,
    /// Bytes the handlers read (plaintext under TLS; datagram payloads).
    pub bytes_in: u64,
    /// Bytes the handlers sent.
    pub bytes_out: u64,
    /// Requests per duration bucket ([`DURATION_BUCKETS`], then `+Inf`),
    /// not cumulative.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// The total duration of the requests counted in the buckets.
    pub duration_sum: Duration,
}

impl<T: crate::Transport, S: crate::Strategy, H> crate::Server<T, S, H> {
    /// The counters behind the metrics that [`stats`](Self::stats) does not
    /// hold: refusals by reason, requests by outcome, handshake failures,
    /// bytes, request durations.
    pub fn counters(&self) -> Snapshot {
        self.registry().counters.read()
    }

    /// Open connections waiting for a new message now (idle at a message
    /// boundary).
    pub fn idle_connections(&self) -> usize {
        self.registry().idle_connections()
    }

    /// Whether a graceful close has begun.
    pub fn is_draining(&self) -> bool {
        self.registry().is_draining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let c = Counters::default();
        c.request(Outcome::Finished, Duration::from_micros(100));
        c.request(Outcome::Errored, Duration::from_millis(3));
        c.request(Outcome::Panicked, Duration::from_secs(3600));
        let s = c.read();
        assert_eq!(s.duration_buckets[0], 1, "100 us is <= 0.0001 s");
        assert_eq!(s.duration_buckets[5], 1, "3 ms is in (0.0025, 0.005]");
        assert_eq!(s.duration_buckets[16], 1, "an hour is +Inf");
        assert_eq!((s.finished, s.errored, s.panicked), (1, 1, 1));
        assert_eq!(
            s.duration_sum,
            Duration::from_micros(100) + Duration::from_millis(3) + Duration::from_secs(3600)
        );
    }
}
