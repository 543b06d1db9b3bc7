//! `loadgen`: socketserver-rs's own loopback load generator for echo servers.
//!
//! A few event-loop threads (mio, i.e. epoll) drive many non-blocking connections in a
//! closed loop: every connection (or UDP socket) has exactly one request outstanding.
//! Every echoed byte is checked against what was sent, and each request sends different
//! bytes, so a server echoing stale or foreign data is caught.
//!
//! * [`Mode::PingPong`]: long-lived TCP connections, `size` bytes out, `size` bytes back.
//! * [`Mode::Connect`]: connect, send, read the echo, close, again.
//! * [`Mode::Udp`]: one datagram outstanding per socket; no echo within `udp_timeout`
//!   counts as `lost` and the next datagram goes.
//!
//! The TCP modes can speak TLS ([`Config::tls`], a rustls client with the ring
//! provider that never resumes a session): connect mode then measures full handshakes.
//!
//! Latencies go into an HDR histogram; only requests completed inside the measured
//! window `[warmup, warmup + duration)` count, while errors count over the whole run.
//! A run always ends at `warmup + duration` (plus a short grace) whatever the server
//! does, and only loopback targets (`127.0.0.0/8`, `::1`) are accepted.
//!
//! ```no_run
//! use std::time::Duration;
//! use loadgen::{Config, Mode};
//!
//! let mut cfg = Config::new("127.0.0.1:7000".parse().unwrap());
//! cfg.mode = Mode::PingPong;
//! cfg.conns = 50;
//! cfg.duration = Duration::from_secs(3);
//! let report = loadgen::run(&cfg).expect("load run");
//! println!("{}", report.to_json());
//! ```
//!
//! [`hold_idle`] holds N idle connections open (optionally echoing once on each) until
//! the returned guard is dropped, to measure a server's memory per idle connection.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod cpu;
mod error;
mod idle;
mod mode;
mod payload;
mod report;
mod rlimit;
mod runner;
mod shared;
mod stats;
mod tcp;
mod tls;
mod udp;

pub use config::{check_loopback, is_loopback, Config, MAX_RUN, MAX_TCP_SIZE, MAX_UDP_SIZE};
pub use error::Error;
pub use idle::{hold_idle, IdleConfig, IdleConns, IdleReport};
pub use mode::Mode;
pub use report::{Phase, Progress, Report};
pub use rlimit::{ensure_fds, FdLimits};
pub use runner::{run, run_with_progress};
pub use tls::TlsClient;
