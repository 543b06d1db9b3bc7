//! Orchestration: checks, a first probe, the event-loop threads, the deadline, the merge.

use std::io;
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Error;
use crate::mode::Mode;
use crate::payload::Pattern;
use crate::report::{Phase, Progress, Report};
use crate::rlimit::ensure_fds;
use crate::shared::Shared;
use crate::stats::{Stats, Timeline};
use crate::udp::udp_bind_addr;
use crate::{tcp, udp};

/// How long the threads may take to stop after the window ends before the run is
/// declared broken (they normally stop within milliseconds).
const GRACE: Duration = Duration::from_secs(2);

/// Longest wait for the first probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the UDP probe's echo (or its ICMP "port unreachable").
const UDP_PROBE_WAIT: Duration = Duration::from_millis(300);

/// How often the progress callback is called.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs the load described by `cfg` and returns its report. Equivalent to
/// [`run_with_progress`] with a callback that does nothing.
///
/// Blocks for about `warmup + duration` (plus up to a few seconds for a first probe);
/// never longer than that plus a two-second grace, whatever the server does.
pub fn run(cfg: &Config) -> Result<Report, Error> {
    run_with_progress(cfg, |_| {})
}

/// Runs the load described by `cfg`, calling `progress` from the calling thread about
/// twice a second while the load runs (and once when it is over).
///
/// Before any load: refuses a non-loopback address ([`Error::NotLoopback`]) and bad
/// numbers, raises the file-descriptor soft limit if needed ([`Error::FdLimit`]), and
/// probes the server once ([`Error::Unreachable`] if nothing answers). A run in which
/// not one request was served returns [`Error::NothingServed`] with the report.
pub fn run_with_progress<F: FnMut(&Progress)>(
    cfg: &Config,
    mut progress: F,
) -> Result<Report, Error> {
    cfg.validate()?;
    let threads = cfg.effective_threads();
    // One socket per connection (UDP: per socket), one epoll fd per thread, a few spare.
    ensure_fds(cfg.conns + 2 * threads + 8)?;
    probe(cfg)?;

    let pattern = Arc::new(Pattern::new(cfg.size));
    let start = Instant::now();
    let tl = Timeline::new(start, cfg.warmup, cfg.duration);
    let shared = Arc::new(Shared::new(tl, cfg));
    let (tx, rx) = mpsc::channel::<Result<Stats, Error>>();
    for k in 0..threads {
        let ids: Vec<usize> = (k..cfg.conns).step_by(threads).collect();
        let (cfg2, pat, sh, tx) = (cfg.clone(), pattern.clone(), shared.clone(), tx.clone());
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{k}"))
            .spawn(move || {
                let res = match cfg2.mode {
                    Mode::Udp => udp::drive(&cfg2, ids, &pat, &sh),
                    Mode::PingPong | Mode::Connect => tcp::drive(&cfg2, ids, &pat, &sh),
                };
                // The receiver only goes away if the run was abandoned.
                let _ = tx.send(res);
            });
        if let Err(e) = spawned {
            shared.abandon();
            return Err(Error::io("starting a load thread", e));
        }
    }
    drop(tx);

    let deadline = tl.end + GRACE;
    let mut total = Stats::new();
    let mut got = 0;
    let mut next_progress = start + PROGRESS_EVERY;
    let mut last: Option<Progress> = None;
    while got < threads {
        let now = Instant::now();
        if now >= next_progress {
            let p = snapshot(&shared, now);
            progress(&p);
            last = Some(p);
            next_progress = now + PROGRESS_EVERY;
        }
        if now >= deadline {
            shared.abandon();
            return Err(Error::Worker(format!(
                "{} of {threads} threads did not stop within {GRACE:?} of the end",
                threads - got
            )));
        }
        match rx.recv_timeout(next_progress.min(deadline) - now) {
            Ok(Ok(s)) => {
                total.merge(&s);
                got += 1;
            }
            Ok(Err(e)) => {
                shared.abandon();
                return Err(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                shared.abandon();
                return Err(Error::Worker("a load thread panicked".into()));
            }
        }
    }
    let wall = start.elapsed();
    // A final snapshot, unless the last one already said the same.
    let fin = snapshot(&shared, Instant::now());
    let key = |p: &Progress| (p.phase, p.served, p.errors, p.connected);
    if last.as_ref().map(key) != Some(key(&fin)) {
        progress(&fin);
    }
    let report = report(cfg, threads, &total, wall);
    if total.served_ever == 0 {
        return Err(Error::NothingServed(Box::new(report)));
    }
    Ok(report)
}

fn snapshot(sh: &Shared, now: Instant) -> Progress {
    let phase = if now < sh.tl.warm_end {
        Phase::Warmup
    } else if now < sh.tl.end {
        Phase::Measure
    } else {
        Phase::Done
    };
    Progress {
        elapsed: now.saturating_duration_since(sh.tl.start),
        phase,
        served: sh.live.served.load(Ordering::Relaxed),
        errors: sh.live.errors.load(Ordering::Relaxed),
        connected: sh.live.connected.load(Ordering::Relaxed),
    }
}

/// One quick look before the load: is anything there at all?
///
/// TCP: one connection, closed at once. UDP: one datagram; only an ICMP "port
/// unreachable" (connection refused) fails, silence is allowed (lossy servers exist).
fn probe(cfg: &Config) -> Result<(), Error> {
    let unreachable = |source| Error::Unreachable {
        addr: cfg.addr,
        source,
    };
    match cfg.mode {
        Mode::PingPong | Mode::Connect => {
            let limit = PROBE_TIMEOUT.min(cfg.warmup + cfg.duration);
            TcpStream::connect_timeout(&cfg.addr, limit).map_err(unreachable)?;
            Ok(())
        }
        Mode::Udp => {
            let sock = UdpSocket::bind(udp_bind_addr(cfg.addr))
                .map_err(|e| Error::io("binding a UDP socket", e))?;
            sock.connect(cfg.addr).map_err(unreachable)?;
            sock.set_read_timeout(Some(UDP_PROBE_WAIT.min(cfg.udp_timeout)))
                .map_err(|e| Error::io("setting a UDP timeout", e))?;
            match sock.send(b"loadgen probe") {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(unreachable(e));
                }
                Err(e) => return Err(Error::io("sending the UDP probe", e)),
            }
            let mut buf = [0u8; 64];
            match sock.recv(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(unreachable(e)),
                _ => Ok(()),
            }
        }
    }
}

/// The report of a run of `cfg` on `threads` threads: `s` merged, `wall`
/// its wall-clock time.
fn report(cfg: &Config, threads: usize, s: &Stats, wall: Duration) -> Report {
    let secs = cfg.duration.as_secs_f64();
    let wall = wall.as_secs_f64();
    Report {
        mode: cfg.mode,
        conns: cfg.conns,
        size: cfg.size,
        secs,
        requests: s.requests,
        req_per_s: round1(s.requests as f64 / secs),
        p50_us: s.quantile_us(0.5),
        p99_us: s.quantile_us(0.99),
        p999_us: s.quantile_us(0.999),
        max_us: s.max_us(),
        mean_us: s.mean_us(),
        errors: s.errors(),
        mismatches: s.mismatches,
        io_errors: s.io_errors,
        connect_errors: s.connect_errors,
        lost: s.lost,
        late: s.late,
        active_conns: s.active,
        lg_cpu: if wall > 0.0 {
            (s.cpu.as_secs_f64() / wall * 100.0).round() / 100.0
        } else {
            0.0
        },
        threads,
        addr: cfg.addr,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
