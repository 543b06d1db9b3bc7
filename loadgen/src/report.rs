//! What a run tells: [`Report`] (serialisable, one JSON object) and the live
//! [`Progress`] snapshots.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::mode::Mode;

/// The result of one run. Serialises (serde) to a flat JSON object whose first keys are
/// `mode, conns, size, secs, requests, req_per_s, p50_us, p99_us, p999_us`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// How load was generated.
    pub mode: Mode,
    /// Connections (TCP) or sockets (UDP) asked for.
    pub conns: usize,
    /// Bytes per request.
    pub size: usize,
    /// Length of the measured window in seconds (the configured duration).
    pub secs: f64,
    /// Requests completed (correctly echoed) inside the measured window.
    pub requests: u64,
    /// `requests / secs`.
    pub req_per_s: f64,
    /// Median latency of the window's requests, in microseconds (0 if none).
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: f64,
    /// Highest latency, microseconds.
    pub max_us: f64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// `mismatches + io_errors + connect_errors`, over the whole run (warmup included).
    pub errors: u64,
    /// Echoes whose bytes differed from what was sent (the connection was then closed
    /// and reopened; for UDP the next datagram was sent).
    pub mismatches: u64,
    /// Unexpected EOFs, resets and other send/receive failures.
    pub io_errors: u64,
    /// Connection attempts that failed.
    pub connect_errors: u64,
    /// UDP datagrams not echoed within `udp_timeout` (whole run; not part of `errors`).
    pub lost: u64,
    /// UDP echoes that arrived after their timeout and were ignored.
    pub late: u64,
    /// Connections or sockets that completed at least one request in the window; fewer
    /// than `conns` means the server left some of them unserved.
    pub active_conns: u64,
    /// The generator's own CPU time (user + system of its threads) divided by wall time,
    /// in cores. Close to `threads` means the generator, not the server, was the limit.
    pub lg_cpu: f64,
    /// Event-loop threads used.
    pub threads: usize,
    /// The server address.
    pub addr: SocketAddr,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers, strings and an address cannot fail to serialise.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Which part of the run is going on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before the measured window: connections open, nothing is recorded.
    Warmup,
    /// Inside the measured window.
    Measure,
    /// The window is over; threads are stopping.
    Done,
}

/// A live snapshot handed to the callback of [`crate::run_with_progress`], about twice a
/// second, so a caller can tell that the run is alive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Where in the run we are.
    pub phase: Phase,
    /// Correct echoes so far, warmup included.
    pub served: u64,
    /// Errors so far (mismatches + I/O + connect).
    pub errors: u64,
    /// Connections that are currently up (TCP) or sockets open (UDP).
    pub connected: u64,
}
