//! How a run generates load: ping-pong, connect, or UDP.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How each connection (or UDP socket) generates load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Long-lived TCP connections: send `size` bytes, read exactly `size` bytes back,
    /// repeat. Latency is the first write of a request to the last echoed byte.
    PingPong,
    /// Connect, send `size` bytes, read the echo, close, start over.
    /// Latency is the `connect()` call to the last echoed byte (close not included).
    Connect,
    /// Connected UDP sockets with one datagram outstanding each. Latency is the send to
    /// the matching reply; no reply within `udp_timeout` is counted as lost.
    Udp,
}

impl Mode {
    /// The mode's name as used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::PingPong => "pingpong",
            Mode::Connect => "connect",
            Mode::Udp => "udp",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    /// Parses `pingpong` (or `ping-pong`), `connect` or `udp`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "pingpong" | "ping-pong" => Ok(Mode::PingPong),
            "connect" => Ok(Mode::Connect),
            "udp" => Ok(Mode::Udp),
            _ => Err(format!(
                "unknown mode {s:?} (expected pingpong, connect or udp)"
            )),
        }
    }
}
