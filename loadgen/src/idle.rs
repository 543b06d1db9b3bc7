//! Holding many idle connections open, e.g. to measure a server's memory per idle
//! connection: [`hold_idle`] opens them one after another and returns an [`IdleConns`]
//! guard that keeps them open until it is dropped.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::check_loopback;
use crate::error::Error;
use crate::payload::Pattern;
use crate::rlimit::ensure_fds;

/// Consecutive failed connects after which [`hold_idle`] stops trying.
const GIVE_UP_AFTER: usize = 20;

/// What [`hold_idle`] should open.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    /// Server address; loopback only.
    pub addr: SocketAddr,
    /// Connections to open.
    pub count: usize,
    /// If not 0, each new connection sends this many bytes and waits for their echo
    /// before the next one is opened, proving the server serves it. Default 0.
    pub echo_size: usize,
    /// Longest wait for one connect (and for one echo). Default 2 s.
    pub connect_timeout: Duration,
    /// Longest time for opening all of them; whatever is open by then is kept.
    /// Default 60 s.
    pub time_limit: Duration,
}

impl IdleConfig {
    /// `count` connections to `addr`, no echo, 2 s per connect, 60 s in all.
    pub fn new(addr: SocketAddr, count: usize) -> IdleConfig {
        IdleConfig {
            addr,
            count,
            echo_size: 0,
            connect_timeout: Duration::from_secs(2),
            time_limit: Duration::from_secs(60),
        }
    }
}

/// How opening the idle connections went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdleReport {
    /// The server address.
    pub addr: SocketAddr,
    /// Connections asked for.
    pub requested: usize,
    /// Connections open and held.
    pub connected: usize,
    /// Of those, connections whose echo came back correct (0 without `echo_size`).
    pub echoed: usize,
    /// Connects that failed or timed out.
    pub connect_errors: usize,
    /// Echoes that failed: a reset, EOF or wrong bytes close the connection (it is not
    /// held); a timeout keeps it open but not echoed.
    pub echo_errors: usize,
    /// Seconds spent opening them.
    pub secs: f64,
    /// Stopped early: the time limit was reached or too many connects failed in a row.
    pub stopped_early: bool,
}

/// Idle connections held open; dropping this closes them all.
#[derive(Debug)]
pub struct IdleConns {
    streams: Vec<TcpStream>,
    report: IdleReport,
}

impl IdleConns {
    /// How opening them went.
    pub fn report(&self) -> &IdleReport {
        &self.report
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Connections that still look open (the server has not closed or reset them).
    /// Does not block.
    pub fn alive(&self) -> usize {
        let mut buf = [0u8; 1];
        self.streams
            .iter()
            .filter(|s| {
                if s.set_nonblocking(true).is_err() {
                    return false;
                }
                let open = match s.peek(&mut buf) {
                    Ok(0) => false, // orderly close by the server
                    Ok(_) => true,  // unexpected data, but open
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                };
                let _ = s.set_nonblocking(false);
                open
            })
            .count()
    }

    /// Closes every connection now (the same as dropping the guard).
    pub fn close(self) {}
}

/// Opens `cfg.count` connections to `cfg.addr` one after another (each with an optional
/// echo) and holds them. Connects that fail are counted and skipped; gives up after 20 in
/// a row or at `cfg.time_limit`. Fails outright only for a non-loopback address, a
/// too-low descriptor limit, or when the very first connect fails
/// ([`Error::Unreachable`]).
pub fn hold_idle(cfg: &IdleConfig) -> Result<IdleConns, Error> {
    check_loopback(cfg.addr)?;
    if cfg.connect_timeout.is_zero() {
        return Err(Error::InvalidConfig(
            "connect_timeout must be longer than zero".into(),
        ));
    }
    ensure_fds(cfg.count + 8)?;
    let start = Instant::now();
    let limit = start + cfg.time_limit;
    let pattern = (cfg.echo_size > 0).then(|| Pattern::new(cfg.echo_size));
    let mut report = IdleReport {
        addr: cfg.addr,
        requested: cfg.count,
        connected: 0,
        echoed: 0,
        connect_errors: 0,
        echo_errors: 0,
        secs: 0.0,
        stopped_early: false,
    };
    let mut streams = Vec::with_capacity(cfg.count);
    let mut failed_in_row = 0;
    let mut buf = vec![0u8; cfg.echo_size];
    for i in 0..cfg.count {
        let now = Instant::now();
        if now >= limit || failed_in_row >= GIVE_UP_AFTER {
            report.stopped_early = true;
            break;
        }
        let wait = cfg.connect_timeout.min(limit - now);
        let stream = match TcpStream::connect_timeout(&cfg.addr, wait) {
            Ok(s) => s,
            Err(source) if i == 0 => {
                return Err(Error::Unreachable {
                    addr: cfg.addr,
                    source,
                });
            }
            Err(_) => {
                report.connect_errors += 1;
                failed_in_row += 1;
                continue;
            }
        };
        failed_in_row = 0;
        let _ = stream.set_nodelay(true);
        if let Some(p) = &pattern {
            match echo_once(&stream, p.request(i, 0), &mut buf, wait) {
                Ok(true) => report.echoed += 1,
                Ok(false) => {
                    // Timed out: keep it open, the server may just be slow to serve it.
                    report.echo_errors += 1;
                }
                Err(_) => {
                    report.echo_errors += 1;
                    continue; // reset, EOF or wrong bytes: do not hold it
                }
            }
        }
        streams.push(stream);
    }
    report.connected = streams.len();
    report.secs = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(IdleConns { streams, report })
}

/// Sends `msg` and reads its echo into `buf`. Ok(true): correct echo; Ok(false): timed
/// out; Err: the connection failed or the bytes were wrong.
fn echo_once(mut s: &TcpStream, msg: &[u8], buf: &mut [u8], wait: Duration) -> io::Result<bool> {
    s.set_write_timeout(Some(wait))?;
    s.set_read_timeout(Some(wait))?;
    let timed_out = |e: &io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    match s.write_all(msg) {
        Ok(()) => {}
        Err(e) if timed_out(&e) => return Ok(false),
        Err(e) => return Err(e),
    }
    match s.read_exact(buf) {
        Ok(()) if buf[..] == msg[..] => Ok(true),
        Ok(()) => Err(io::Error::new(ErrorKind::InvalidData, "echo differs")),
        Err(e) if timed_out(&e) => Ok(false),
        Err(e) => Err(e),
    }
}
