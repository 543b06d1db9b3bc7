//! What to run: [`Config`], [`Mode`], and the checks made before any socket is opened.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::Error;
use crate::mode::Mode;
use crate::tls::TlsClient;

/// Largest payload of one UDP datagram over IPv4 (65,535 - 8 UDP - 20 IP header bytes).
pub const MAX_UDP_SIZE: usize = 65_507;

/// Largest TCP request size accepted (16 MiB); bigger ones are refused as a likely mistake.
pub const MAX_TCP_SIZE: usize = 16 << 20;

/// Most connections accepted in one run (a sanity bound; the descriptor limit and the
/// ~28,000 ephemeral ports towards one server address usually bind much earlier).
pub const MAX_CONNS: usize = 1_000_000;

/// Longest run accepted (warmup + duration): one hour.
pub const MAX_RUN: Duration = Duration::from_secs(3600);

/// One load-generation run. Build it with [`Config::new`] and change the public fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// Server address; must be loopback (`127.0.0.0/8` or `::1`), anything else is refused.
    pub addr: SocketAddr,
    /// How load is generated.
    pub mode: Mode,
    /// Concurrent connections (TCP) or sockets (UDP), each with one request outstanding.
    pub conns: usize,
    /// Bytes per request (and per echo).
    pub size: usize,
    /// Length of the measured window, which starts after `warmup`.
    pub duration: Duration,
    /// Time before the measured window: connections open and warm up, nothing is recorded
    /// except errors.
    pub warmup: Duration,
    /// Event-loop threads driving the connections (capped at `conns`). Default 2.
    pub threads: usize,
    /// UDP only: a datagram whose echo has not arrived after this long is counted as lost
    /// and the socket sends the next one. Default 500 ms.
    pub udp_timeout: Duration,
    /// Ping-pong only: at most this many connections (over all threads) may be opening or
    /// waiting for their first echo at once, so that a tiny listen backlog is not flooded
    /// with SYNs. `0` means no limit. Default 4.
    pub ramp: usize,
    /// Ping-pong and connect only: speak TLS on every connection (the echo is of the
    /// decrypted bytes). In connect mode every connection is a full handshake (the
    /// client never resumes a session), and its latency runs from `connect()` through
    /// the handshake to the last echoed byte. Default `None`: plain TCP.
    pub tls: Option<TlsClient>,
}

impl Config {
    /// A ping-pong run against `addr` with the defaults: 1 connection, 64 bytes,
    /// 5 s measured after 1 s of warmup, 2 threads, 500 ms UDP timeout, ramp 4, no TLS.
    pub fn new(addr: SocketAddr) -> Config {
        Config {
            addr,
            mode: Mode::PingPong,
            conns: 1,
            size: 64,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            threads: 2,
            udp_timeout: Duration::from_millis(500),
            ramp: 4,
            tls: None,
        }
    }

    /// Threads actually used: `threads` capped at `conns`, at least one.
    pub fn effective_threads(&self) -> usize {
        self.threads.min(self.conns).max(1)
    }

    /// Checks the address (loopback only) and the numbers; [`crate::run`] calls this first.
    pub fn validate(&self) -> Result<(), Error> {
        check_loopback(self.addr)?;
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.conns == 0 || self.conns > MAX_CONNS {
            return bad(format!("conns must be between 1 and {MAX_CONNS}"));
        }
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        if self.size == 0 {
            return bad("size must be at least 1 byte".into());
        }
        match self.mode {
            Mode::Udp if self.size > MAX_UDP_SIZE => {
                return bad(format!(
                    "size {} is larger than a UDP datagram can carry ({MAX_UDP_SIZE})",
                    self.size
                ));
            }
            Mode::PingPong | Mode::Connect if self.size > MAX_TCP_SIZE => {
                return bad(format!(
                    "size {} is larger than the {MAX_TCP_SIZE}-byte limit",
                    self.size
                ));
            }
            _ => {}
        }
        if self.duration.is_zero() {
            return bad("duration must be longer than zero".into());
        }
        if self.warmup.saturating_add(self.duration) > MAX_RUN {
            return bad(format!(
                "warmup + duration must not exceed {} s",
                MAX_RUN.as_secs()
            ));
        }
        if self.mode == Mode::Udp && self.tls.is_some() {
            return bad("TLS is for the TCP modes (pingpong, connect), not udp".into());
        }
        if self.mode == Mode::Udp && self.udp_timeout.is_zero() {
            return bad("udp_timeout must be longer than zero".into());
        }
        Ok(())
    }
}

/// True for `127.0.0.0/8`, `::1` and IPv4-mapped `127.0.0.0/8` (`::ffff:127.x.y.z`).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Refuses every address that is not loopback: this generator never sends traffic off
/// the machine.
pub fn check_loopback(addr: SocketAddr) -> Result<(), Error> {
    if is_loopback(addr.ip()) {
        Ok(())
    } else {
        Err(Error::NotLoopback(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rules() {
        for ok in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.0.0.1",
            "8.8.8.8",
            "0.0.0.0",
            "192.168.1.1",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [Mode::PingPong, Mode::Connect, Mode::Udp] {
            assert_eq!(m.name().parse::<Mode>().unwrap(), m);
        }
        assert!("tcp".parse::<Mode>().is_err());
    }

    #[test]
    fn validation() {
        let mut c = Config::new("127.0.0.1:9".parse().unwrap());
        assert!(c.validate().is_ok());
        c.conns = 0;
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        c.conns = 3;
        c.mode = Mode::Udp;
        c.size = MAX_UDP_SIZE + 1;
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        c.size = 64;
        c.duration = Duration::ZERO;
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        c.duration = Duration::from_secs(1);
        c.addr = "10.0.0.1:7".parse().unwrap();
        assert!(matches!(c.validate(), Err(Error::NotLoopback(_))));
        assert_eq!(c.effective_threads(), 2);
        c.conns = 1;
        assert_eq!(c.effective_threads(), 1);
    }
}
