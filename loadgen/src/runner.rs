//! Orchestration: checks, a first probe, the event-loop threads, the deadline, the merge.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::payload::Pattern;
use crate::report::{Phase, Progress, Report};
use crate::rlimit::ensure_fds;
use crate::stats::{Stats, Timeline};
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

/// State shared by the event-loop threads of one run.
pub(crate) struct Shared {
    /// The run's instants.
    pub tl: Timeline,
    /// Total connections of the run.
    pub conns: usize,
    /// Ramp limit (0 = none).
    ramp: usize,
    /// Ramp slots in use.
    ramp_used: AtomicUsize,
    /// Connections that have had their first echo.
    ready: AtomicUsize,
    /// Parked connections may start (set once, by whichever thread sees it first).
    released: AtomicBool,
    /// Set when the run is abandoned early (a thread could not be started).
    stop: AtomicBool,
    /// Live counters for progress reports.
    pub live: Live,
}

/// Counters the threads publish in batches, read by the progress callback.
#[derive(Default)]
pub(crate) struct Live {
    /// Correct echoes, warmup included.
    pub served: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Connections up (TCP) or sockets open (UDP).
    pub connected: AtomicU64,
}

impl Shared {
    fn new(tl: Timeline, cfg: &Config) -> Shared {
        Shared {
            tl,
            conns: cfg.conns,
            ramp: cfg.ramp,
            ramp_used: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            released: AtomicBool::new(cfg.mode != Mode::PingPong || tl.release_at <= tl.start),
            stop: AtomicBool::new(false),
            live: Live::default(),
        }
    }

    /// Takes a ramp slot if one is free (always succeeds without a ramp limit).
    pub fn try_take_slot(&self) -> bool {
        self.ramp == 0
            || self
                .ramp_used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    (u < self.ramp).then_some(u + 1)
                })
                .is_ok()
    }

    /// Gives a ramp slot back.
    pub fn give_slot(&self) {
        if self.ramp != 0 {
            self.ramp_used.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Notes that one more connection had its first echo.
    pub fn mark_ready(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether parked connections may start now; latches once true.
    pub fn check_released(&self, now: Instant) -> bool {
        if self.released.load(Ordering::Acquire) {
            return true;
        }
        if now >= self.tl.release_at || self.ready.load(Ordering::Acquire) >= self.conns {
            self.released.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Whether the threads should stop now.
    pub fn should_stop(&self, now: Instant) -> bool {
        now >= self.tl.end || self.stop.load(Ordering::Relaxed)
    }
}

/// What a thread publishes to [`Live`]: it remembers what it already added.
#[derive(Default)]
pub(crate) struct Publisher {
    served: u64,
    errors: u64,
    connected: u64,
}

impl Publisher {
    /// Adds the change since the last call to the shared counters.
    pub fn publish(&mut self, live: &Live, s: &Stats, connected: u64) {
        let errors = s.errors();
        if s.served_ever != self.served {
            live.served
                .fetch_add(s.served_ever - self.served, Ordering::Relaxed);
            self.served = s.served_ever;
        }
        if errors != self.errors {
            live.errors
                .fetch_add(errors - self.errors, Ordering::Relaxed);
            self.errors = errors;
        }
        if connected != self.connected {
            // Wrapping arithmetic keeps the shared sum right when this thread's count falls.
            live.connected
                .fetch_add(connected.wrapping_sub(self.connected), Ordering::Relaxed);
            self.connected = connected;
        }
    }
}

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
            shared.stop.store(true, Ordering::Relaxed);
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
            shared.stop.store(true, Ordering::Relaxed);
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
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                shared.stop.store(true, Ordering::Relaxed);
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
    let report = Report::build(cfg, threads, &total, wall);
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

/// The local address a UDP socket talking to `target` binds: loopback of the same
/// family (the unspecified IPv6 address for an IPv4-mapped target).
pub(crate) fn udp_bind_addr(target: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}
