mod limits;
#[allow(unsafe_code)] // the status table lives in shared memory (mmap)
mod table;

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Job, ServerLoop, Strategy, Synchronous};
use crate::sys::{self, ChildExit, Fork};
use crate::ShutdownHandle;
use limits::SharedAdmission;
use table::{SharedSlots, Slot};

/// A set of long-lived child processes that each accept on the shared
/// listening socket and serve. Perl: `Net::Server::PreFork`; Apache's
/// `prefork` MPM.
///
/// The parent binds, forks [`min_servers`](Self::min_servers) children (5)
/// and from then on only supervises: it accepts nothing. Each child runs the
/// server's own loop on the inherited socket and serves each request with
/// the inner strategy (default [`Synchronous`]: one connection at a time, as
/// in Perl; [`inner`](Self::inner) can put a `Threading` in each child).
/// Compared with [`Forking`](crate::Forking) there is no `fork` per
/// connection, and compared with [`Threading`](crate::Threading) a crash in
/// a handler (a segfault in a C library, an abort) costs one process, which
/// is replaced.
///
/// * Children report idle/busy in a table in shared memory (atomics, no
///   system call per request). The parent keeps at least
///   [`min_spare_servers`](Self::min_spare_servers) (2) idle children, never
///   more than [`max_servers`](Self::max_servers) (50) children in all
///   (those leaving included), and retires idle children above
///   [`max_spare_servers`](Self::max_spare_servers) (10), at most once a
///   second, never going below `min_servers`. A child that goes busy and
///   sees too few idle ones wakes the parent through a socket pair, so the
///   pool grows within a fork's time.
/// * A child leaves after [`max_requests`](Self::max_requests) (1000)
///   requests, at a point where it serves none (a leak in a handler cannot
///   grow forever), and a retired child leaves when idle. Leaving, a child
///   stops accepting, then lets the connections it accepted end on their
///   own (up to the close timeout) before its graceful close: neither cuts
///   a connection nor drops a request it accepted.
/// * A child that dies is reaped within 100 ms and replaced as needed; one
///   killed by a signal is logged at warn level with the signal's name.
/// * Forks are rate limited: at most
///   [`max_forks_per_second`](Self::max_forks_per_second) (50, in bursts of
///   up to `max(min_servers, 10)`), and when 5 children crash within a
///   second the rate halves (down to 1 per second), recovering by doubling
///   after each second without a crash. A handler that crashes on every
///   request does not fork-bomb the machine.
/// * SIGTERM (a graceful close) closes the listening socket to new clients
///   (refused from then on), then sends each child one SIGTERM: a child
///   stops accepting, its connections close at their next message boundary, it
///   exits 0; the parent returns from `serve_forever` when every child is
///   reaped. Children left at the close timeout get SIGKILL. A child ignores
///   SIGINT (^C reaches the whole process group; the parent drains them) and
///   gets SIGTERM if the parent dies (`PR_SET_PDEATHSIG`), so a killed
///   parent leaves no child serving. SIGTERM is blocked across `fork`, so a
///   child forked as the drain begins gets it all the same.
/// * An upgrade ([`reload`](crate::reload), SIGUSR2): once the successor
///   serves, the parent tells each child to leave quietly (`SIGRTMIN+1`):
///   it stops accepting and serves its connections, idle ones included,
///   until their clients leave; the upgrade's drain waits for the children
///   and sends SIGTERM at its deadline (or at once on SIGTERM/SIGINT).
///   Children ignore SIGUSR2.
///
/// # Limits are the whole server's
///
/// [`max_connections`](crate::Builder::max_connections) and
/// [`max_per_ip`](crate::Builder::max_per_ip) count the connections of
/// every child: each child admits a connection through tables in shared
/// memory (one lock, an atomic holding its holder's pid; no system call).
/// The per-IP table holds [`PER_IP_ADDRESSES`](Self::PER_IP_ADDRESSES)
/// (4096) client addresses at once; when that many distinct addresses have
/// connections open, a connection from yet another one is admitted without
/// a per-IP count (`max_connections` still applies) and a warning is
/// logged. Each count is kept per child as well, so that the parent takes
/// back the counts of a child that dies holding connections (a crash, a
/// SIGKILL) when it reaps it. Under `limit_policy(Wait)` a child stops
/// accepting while all the children together hold `max_connections`, and
/// looks again every 10 ms (a connection that two children take at the
/// moment the last place is taken may still be refused: the check and the
/// count are apart).
///
/// # State is per child
///
/// As with `Forking`, the handler's shared state is each child's own copy.
/// The server's counters ([`Server::stats`](crate::Server::stats),
/// [`Server::counters`](crate::Server::counters), the metrics) live in
/// shared memory: the parent's count what every child accepted, refused,
/// completed and failed. Fork from a process with no other threads (see
/// `Forking`).
///
/// # Caveats
///
/// Idle children all wait in `poll` on the same socket: a new connection
/// wakes them all and one wins the `accept` (the others go back to sleep).
/// With the default inner strategy a child holds one connection for its
/// whole life, so long-lived connections need as many children as there
/// are connections (`max_servers`); connections beyond that wait in the
/// listen backlog.
///
/// ```no_run
/// use socketserver::{PreFork, Server, StreamRequest};
///
/// let server = Server::builder()
///     .strategy(PreFork::new().min_servers(4).max_servers(32).max_requests(500))
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// server.shutdown_handle().shutdown_on_signals(&[socketserver::Signal::Term])?;
/// server.serve_forever()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PreFork<S: Strategy = Synchronous> {
    inner: S,
    min_servers: usize,
    max_servers: usize,
    min_spare: usize,
    max_spare: usize,
    max_requests: u64,
    fork_rate: u32,
    /// The status table, made when `serve_forever` first runs.
    table: OnceLock<Arc<SharedSlots>>,
    /// The server-wide connection limits' tables, made with the table.
    admission: OnceLock<Arc<SharedAdmission>>,
    /// Children wake the parent here: (parent's end, children's end).
    notify: OnceLock<(UnixStream, UnixStream)>,
    /// In a child: its slot (`usize::MAX` in the parent).
    my_slot: AtomicUsize,
    /// In a child: its server's shutdown handle.
    my_shutdown: OnceLock<ShutdownHandle>,
    /// The parent's children.
    children: Mutex<Vec<Kid>>,
    /// Requests served by children already reaped.
    served_gone: AtomicU64,
    /// A graceful close began: a child forked from now on gets SIGTERM.
    draining: AtomicBool,
    /// The server handed its socket over: the children leave quietly.
    handed_over: AtomicBool,
    warned: AtomicBool,
}

#[derive(Debug)]
struct Kid {
    pid: libc::pid_t,
    slot: usize,
    term_sent: bool,
}

/// How long the parent sleeps between looks at its children.
const TICK: Duration = Duration::from_millis(100);
/// How often an idle child looks whether it was retired.
const RETIRE_CHECK: Duration = Duration::from_secs(1);
/// Crashes within a second that halve the fork rate.
const CRASH_BURST: u32 = 5;

impl Default for PreFork {
    fn default() -> PreFork {
        PreFork::new()
    }
}

impl PreFork {
    /// Client addresses the server-wide `max_per_ip` table holds at once
    /// (see "Limits are the whole server's" above).
    pub const PER_IP_ADDRESSES: usize = limits::PER_IP_ENTRIES;

    /// 5 to 50 children, 2 to 10 of them idle, 1000 requests each, one
    /// request at a time in each ([`Synchronous`]).
    pub fn new() -> PreFork {
        PreFork::with_inner(Synchronous)
    }
}

impl<S: Strategy> PreFork<S> {
    fn with_inner(inner: S) -> PreFork<S> {
        PreFork {
            inner,
            min_servers: 5,
            max_servers: 50,
            min_spare: 2,
            max_spare: 10,
            max_requests: 1000,
            fork_rate: 50,
            table: OnceLock::new(),
            admission: OnceLock::new(),
            notify: OnceLock::new(),
            my_slot: AtomicUsize::new(usize::MAX),
            my_shutdown: OnceLock::new(),
            children: Mutex::new(Vec::new()),
            served_gone: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        }
    }

    /// The strategy each child serves its requests with (default
    /// [`Synchronous`]; `Threading` works too: a child is busy while any of
    /// its requests runs, and a recycled child lets its other connections
    /// end on their own, up to the close timeout, before closing what is
    /// left at its next message boundary).
    pub fn inner<S2: Strategy>(self, inner: S2) -> PreFork<S2> {
        let mut p = PreFork::with_inner(inner);
        p.min_servers = self.min_servers;
        p.max_servers = self.max_servers;
        p.min_spare = self.min_spare;
        p.max_spare = self.max_spare;
        p.max_requests = self.max_requests;
        p.fork_rate = self.fork_rate;
        p
    }

    /// Children started at once, and the fewest kept (default 5).
    #[must_use]
    pub fn min_servers(mut self, n: usize) -> Self {
        self.min_servers = n;
        self
    }

    /// Most children alive at once, those leaving included (default 50, at
    /// least 1).
    #[must_use]
    pub fn max_servers(mut self, n: usize) -> Self {
        self.max_servers = n.max(1);
        self
    }

    /// Idle children kept ready (default 2).
    #[must_use]
    pub fn min_spare_servers(mut self, n: usize) -> Self {
        self.min_spare = n;
        self
    }

    /// Idle children above this many are retired (default 10).
    #[must_use]
    pub fn max_spare_servers(mut self, n: usize) -> Self {
        self.max_spare = n;
        self
    }

    /// Requests a child serves before it is replaced (default 1000; 0: no
    /// limit).
    #[must_use]
    pub fn max_requests(mut self, n: u64) -> Self {
        self.max_requests = n;
        self
    }

    /// Most forks per second (default 50, at least 1).
    #[must_use]
    pub fn max_forks_per_second(mut self, n: u32) -> Self {
        self.fork_rate = n.max(1);
        self
    }

    /// Connections open in all children now, as the server-wide
    /// `max_connections` counts them (0 before `serve_forever`).
    pub fn connections(&self) -> usize {
        self.admission
            .get()
            .map_or(0, |a| usize::try_from(a.total()).unwrap_or(usize::MAX))
    }

    /// Pids of the children alive now (in the parent).
    pub fn children(&self) -> Vec<libc::pid_t> {
        self.children.lock().iter().map(|k| k.pid).collect()
    }

    /// Requests the children have taken so far, those gone included.
    pub fn served(&self) -> u64 {
        let live: u64 = self.table.get().map_or(0, |t| {
            t.slots()
                .iter()
                .filter(|s| s.pid.load(Ordering::Relaxed) != 0)
                .map(|s| s.served.load(Ordering::Relaxed))
                .sum()
        });
        self.served_gone.load(Ordering::Relaxed) + live
    }

    /// The settings made consistent: min <= max, spares within them.
    fn limits(&self) -> (usize, usize, usize, usize) {
        let max = self.max_servers.max(1);
        let min = self.min_servers.min(max);
        let min_spare = self.min_spare.min(max);
        let max_spare = self.max_spare.max(min_spare);
        (min, max, min_spare, max_spare)
    }

    /// This child's slot and the table, if this is a child.
    fn my_slot(&self) -> Option<(&Slot, &Arc<SharedSlots>)> {
        let i = self.my_slot.load(Ordering::Relaxed);
        let table = self.table.get()?;
        (i != usize::MAX).then(|| (&table.slots()[i], table))
    }

    fn warn_if_threaded(&self, threads: usize) {
        if threads > 1 && !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "prefork: forking a process with {threads} threads: only the forking thread \
                 exists in a child, and a lock another thread holds stays locked there forever; \
                 children of this server do not log (see the Forking docs)"
            );
        }
    }

    /// Reaps children that ended (waiting for all of them with `block`);
    /// returns how many crashed (killed by a signal or a non-zero status).
    /// `draining`: a SIGKILL is ours, not a crash.
    fn reap(&self, block: bool, draining: bool) -> u32 {
        let Some(table) = self.table.get() else {
            return 0;
        };
        let mut crashed = 0;
        self.children.lock().retain(|kid| {
            let exit = match sys::waitpid(kid.pid, block) {
                Ok(None) => return true,
                Ok(Some(exit)) => Some(exit),
                // ECHILD: reaped elsewhere (SIGCHLD ignored).
                Err(_) => None,
            };
            if let Some(admission) = self.admission.get() {
                admission.reclaim(kid.slot, kid.pid);
            }
            let slot = &table.slots()[kid.slot];
            let served = slot.served.load(Ordering::Relaxed);
            self.served_gone.fetch_add(served, Ordering::Relaxed);
            slot.active.store(0, Ordering::Relaxed);
            slot.retire.store(0, Ordering::Relaxed);
            slot.served.store(0, Ordering::Relaxed);
            slot.pid.store(0, Ordering::Release);
            let pid = kid.pid;
            match exit {
                Some(ChildExit::Code(0)) | None => {
                    log::debug!("prefork: child {pid} left after {served} requests");
                }
                Some(ChildExit::Code(c)) => {
                    crashed += 1;
                    log::warn!(
                        "prefork: child {pid} exited with status {c} after {served} requests"
                    );
                }
                Some(ChildExit::Signal(s)) if draining && s == libc::SIGKILL => {}
                Some(ChildExit::Signal(s)) => {
                    crashed += 1;
                    log::warn!(
                        "prefork: child {pid} was killed by signal {s} ({}) after {served} \
                         requests",
                        signal_name(s)
                    );
                }
            }
            false
        });
        crashed
    }

    /// (children alive, idle ones, those not leaving).
    fn census(&self, table: &SharedSlots) -> (usize, usize, usize) {
        let kids = self.children.lock();
        let mut idle = 0;
        let mut staying = 0;
        for kid in kids.iter() {
            let slot = &table.slots()[kid.slot];
            if kid.term_sent || slot.retire.load(Ordering::Relaxed) != 0 {
                continue;
            }
            staying += 1;
            if slot.active.load(Ordering::Relaxed) == 0 {
                idle += 1;
            }
        }
        (kids.len(), idle, staying)
    }

    /// Asks up to `n` idle children to leave (each notices within
    /// [`RETIRE_CHECK`], or when its request ends if it just took one).
    fn retire(&self, table: &SharedSlots, n: usize) {
        let kids = self.children.lock();
        let mut left = n;
        for kid in kids.iter() {
            if left == 0 {
                break;
            }
            let slot = &table.slots()[kid.slot];
            if !kid.term_sent
                && slot.active.load(Ordering::Relaxed) == 0
                && slot.retire.swap(1, Ordering::AcqRel) == 0
            {
                left -= 1;
                log::debug!("prefork: retiring idle child {}", kid.pid);
            }
        }
    }

    /// Forks one child into a free slot.
    fn spawn(&self, server: &dyn ServerLoop, table: &SharedSlots) -> io::Result<()> {
        let Some(slot) = table
            .slots()
            .iter()
            .position(|s| s.pid.load(Ordering::Acquire) == 0)
        else {
            return Err(io::Error::other("no free slot in the status table"));
        };
        let s = &table.slots()[slot];
        s.active.store(0, Ordering::Relaxed);
        s.retire.store(0, Ordering::Relaxed);
        s.served.store(0, Ordering::Relaxed);
        let threads = sys::thread_count().unwrap_or(1);
        self.warn_if_threaded(threads);
        let parent = sys::getpid();
        // SIGTERM waits, in the child, until its own handler is in place:
        // a drain that begins as it is forked reaches it all the same.
        let term_blocked = sys::block_term();
        match sys::fork()? {
            Fork::Child => {
                // Nothing here may take a lock another thread of the parent
                // could have held at fork time.
                sys::set_second_term_exits(false);
                if sys::install_child_stop().is_err()
                    || sys::install_child_leave(crate::shutdown::POKE).is_err()
                    || !sys::die_with_parent(libc::SIGTERM, parent)
                {
                    sys::exit_immediately(1);
                }
                drop(term_blocked);
                sys::ignore_sigint();
                // The upgrade signal sent to the whole process group is the
                // parent's business (it hands the socket over, then tells
                // its children to leave quietly).
                sys::ignore_signal(libc::SIGUSR2);
                if threads > 1 {
                    log::set_max_level(log::LevelFilter::Off);
                }
                if let Some((parent_end, _)) = self.notify.get() {
                    sys::close_in_child(parent_end.as_raw_fd());
                }
                let _ = self.my_shutdown.set(server.shutdown_handle());
                self.my_slot.store(slot, Ordering::Relaxed);
                if let Some(admission) = self.admission.get() {
                    admission.enter_child(slot, sys::getpid());
                    crate::connections::admit_through(Arc::clone(admission) as _);
                }
                let close_timeout = server.close_timeout();
                // Recycled or retired: up to the close timeout for the
                // connections to end on their own; after a hand-over, until
                // the parent's SIGTERM (at the upgrade's drain timeout).
                let linger = || (!sys::child_leave_requested()).then_some(close_timeout);
                let code = match server.serve_in_child(&linger) {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("prefork: child serving {}: {e}", server.url());
                        1
                    }
                };
                sys::exit_immediately(code)
            }
            Fork::Parent(pid) => {
                drop(term_blocked);
                s.pid.store(pid, Ordering::Release);
                let mut kids = self.children.lock();
                // Under the lock `signal_all` signals the children with:
                // either it saw this one, or the flag is set by now.
                let term_sent = self.draining.load(Ordering::SeqCst);
                if term_sent {
                    sys::kill(pid, libc::SIGTERM);
                }
                kids.push(Kid {
                    pid,
                    slot,
                    term_sent,
                });
                Ok(())
            }
        }
    }

    /// SIGTERM to every child not yet told (once each: a child that gets
    /// SIGTERM from elsewhere too, e.g. sent to the process group, still
    /// drains).
    fn signal_all(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for kid in self.children.lock().iter_mut() {
            if !kid.term_sent {
                kid.term_sent = true;
                sys::kill(kid.pid, libc::SIGTERM);
            }
        }
    }

    /// The graceful end: SIGTERM, wait up to `timeout`, SIGKILL the rest,
    /// reap them all.
    fn drain_children(&self, timeout: Duration) {
        self.signal_all();
        let end = crate::timeouts::deadline_after(timeout);
        loop {
            self.reap(false, true);
            if self.children.lock().is_empty() {
                return;
            }
            if end.is_some_and(|end| Instant::now() >= end) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = self.children.lock().len();
        log::warn!("prefork: {left} children still busy after {timeout:?}; killing them");
        for kid in self.children.lock().iter() {
            sys::kill(kid.pid, libc::SIGKILL);
        }
        self.reap(true, true);
    }

    /// After a hand-over: every child stops accepting and leaves once its
    /// connections have ended on their own (or at SIGTERM, which the
    /// upgrade's drain sends at its deadline).
    fn leave_all(&self, table: &SharedSlots) {
        for kid in self.children.lock().iter() {
            table.slots()[kid.slot].retire.store(1, Ordering::Relaxed);
            sys::kill(kid.pid, sys::child_leave_signal());
        }
    }

    /// In a child that just went busy: wakes the parent if too few
    /// children are idle now.
    fn nudge_parent(&self, table: &SharedSlots) {
        let idle = table
            .slots()
            .iter()
            .filter(|s| {
                s.pid.load(Ordering::Relaxed) != 0
                    && s.active.load(Ordering::Relaxed) == 0
                    && s.retire.load(Ordering::Relaxed) == 0
            })
            .count();
        if idle < self.limits().2 {
            if let Some((_, children_end)) = self.notify.get() {
                let _ = sys::send_nowait(children_end.as_raw_fd(), b"!");
            }
        }
    }

    /// In a child, between requests: leave if told to (the server handed
    /// over), or if retired or worn out and serving nothing.
    fn leave_if_done(&self, slot: &Slot) {
        let retired = slot.retire.load(Ordering::Relaxed) != 0;
        let worn =
            self.max_requests > 0 && slot.served.load(Ordering::Relaxed) >= self.max_requests;
        if sys::child_leave_requested()
            || ((retired || worn) && slot.active.load(Ordering::Relaxed) == 0)
        {
            if let Some(handle) = self.my_shutdown.get() {
                handle.shutdown_flag_only();
            }
        }
    }
}

/// The fork rate limit: a token bucket, its rate halved while children
/// crash in bursts.
struct ForkBudget {
    rate: u32,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    penalty: u32,
    crashes: u32,
    window: Instant,
    last_crash: Option<Instant>,
}

impl ForkBudget {
    fn new(rate: u32, burst: usize) -> ForkBudget {
        let now = Instant::now();
        let burst = f64::from(u32::try_from(burst.max(1)).unwrap_or(u32::MAX));
        ForkBudget {
            rate,
            burst,
            tokens: burst,
            refilled: now,
            penalty: 0,
            crashes: 0,
            window: now,
            last_crash: None,
        }
    }

    fn rate(&self) -> f64 {
        f64::from((self.rate >> self.penalty).max(1))
    }

    fn refill(&mut self) {
        let now = Instant::now();
        if self.penalty > 0
            && self
                .last_crash
                .is_some_and(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.penalty -= 1;
            self.last_crash = Some(now);
        }
        let add = now.duration_since(self.refilled).as_secs_f64() * self.rate();
        self.tokens = (self.tokens + add).min(self.burst);
        self.refilled = now;
    }

    fn take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time until the next token.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate()).max(0.001))
    }

    fn crashed(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        self.last_crash = Some(now);
        if now.duration_since(self.window) > Duration::from_secs(1) {
            self.window = now;
            self.crashes = 0;
        }
        self.crashes += n;
        if self.crashes >= CRASH_BURST && (self.rate >> self.penalty) > 1 {
            self.penalty += 1;
            self.crashes = 0;
            self.window = now;
            log::warn!(
                "prefork: children keep crashing; forking at most {} per second",
                self.rate()
            );
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "another signal",
    }
}

/// Marks the child busy while a request runs; ends the mark when the
/// request ends or is dropped unrun.
struct Busy {
    table: Arc<SharedSlots>,
    slot: usize,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.table.slots()[self.slot]
            .active
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S: Strategy> Strategy for PreFork<S> {
    fn execute(&self, job: Job, shutdown: &ShutdownHandle) -> io::Result<()> {
        let Some((slot, table)) = self.my_slot() else {
            // `handle_request` in the parent: serve here.
            return self.inner.execute(job, shutdown);
        };
        slot.active.fetch_add(1, Ordering::AcqRel);
        slot.served.fetch_add(1, Ordering::Relaxed);
        self.nudge_parent(table);
        let busy = Busy {
            table: Arc::clone(table),
            slot: self.my_slot.load(Ordering::Relaxed),
        };
        let fds = job.noted_server_fds();
        let peer = job.peer().clone();
        let handle = shutdown.clone();
        let max_requests = self.max_requests;
        let wrapped = Job::new(peer, move || {
            let ok = job.run();
            let table = Arc::clone(&busy.table);
            let slot = &table.slots()[busy.slot];
            drop(busy);
            // Leave once worn out or retired, with no request running
            // (checked after the mark ends).
            let worn = max_requests > 0 && slot.served.load(Ordering::Relaxed) >= max_requests;
            let retired = slot.retire.load(Ordering::Relaxed) != 0;
            if (worn || retired) && slot.active.load(Ordering::Acquire) == 0 {
                handle.shutdown_flag_only();
            }
            ok
        })
        .with_server_fds(fds);
        self.inner.execute(wrapped, shutdown)
    }

    fn service(&self) {
        self.inner.service();
        if let Some((slot, _)) = self.my_slot() {
            self.leave_if_done(slot);
        }
    }

    fn next_wakeup(&self) -> Option<Duration> {
        if self.my_slot().is_some() {
            Some(
                self.inner
                    .next_wakeup()
                    .map_or(RETIRE_CHECK, |d| d.min(RETIRE_CHECK)),
            )
        } else {
            self.inner.next_wakeup()
        }
    }

    fn close(&self) {
        if self.my_slot().is_some() {
            self.inner.close();
        } else {
            self.reap(false, true);
        }
    }

    fn runs_inline(&self) -> bool {
        self.inner.runs_inline()
    }

    fn begin_drain(&self) {
        if self.my_slot().is_some() {
            self.inner.begin_drain();
        } else {
            self.signal_all();
        }
    }

    fn active(&self) -> usize {
        if self.my_slot().is_some() {
            return self.inner.active();
        }
        if self.handed_over.load(Ordering::SeqCst) {
            // Each child left holds connections, idle ones included, or is
            // on its way out: the upgrade's drain waits for them all.
            self.reap(false, true);
            return self.children.lock().len();
        }
        let Some(table) = self.table.get() else {
            return 0;
        };
        self.children
            .lock()
            .iter()
            .filter(|k| table.slots()[k.slot].active.load(Ordering::Relaxed) > 0)
            .count()
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        if self.my_slot().is_some() {
            return self.inner.wait_idle(timeout);
        }
        let end = crate::timeouts::deadline_after(timeout);
        loop {
            self.reap(false, true);
            if self.children.lock().is_empty() {
                return true;
            }
            if end.is_some_and(|end| Instant::now() >= end) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn terminate(&self) {
        if self.my_slot().is_some() {
            self.inner.terminate();
        } else {
            for kid in self.children.lock().iter() {
                sys::kill(kid.pid, libc::SIGKILL);
            }
        }
    }

    fn name(&self) -> &'static str {
        "prefork"
    }

    fn run(&self, server: &dyn ServerLoop) -> io::Result<()> {
        if self.my_slot().is_some() {
            return server.serve();
        }
        let (min, max, min_spare, max_spare) = self.limits();
        if self.table.get().is_none() {
            let _ = self.table.set(Arc::new(SharedSlots::new(max)?));
        }
        if self.admission.get().is_none() {
            let slots = Arc::clone(self.table.get().expect("set above"));
            let _ = self.admission.set(Arc::new(SharedAdmission::new(slots)?));
        }
        if self.notify.get().is_none() {
            let (a, b) = UnixStream::pair()?;
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            let _ = self.notify.set((a, b));
        }
        let table = Arc::clone(self.table.get().expect("set above"));
        let (parent_end, _) = self.notify.get().expect("set above");
        let max = max.min(table.slots().len());
        let mut budget = ForkBudget::new(self.fork_rate, min.max(10));
        let mut last_retire = Instant::now();
        log::info!(
            "prefork: serving {} with {min} to {max} children ({min_spare} to {max_spare} idle)",
            server.url()
        );
        let result = loop {
            let crashed = self.reap(false, false);
            budget.crashed(crashed);
            let (alive, idle, staying) = self.census(&table);
            let want = min
                .saturating_sub(staying)
                .max(min_spare.saturating_sub(idle))
                .min(max.saturating_sub(alive));
            let mut forked = 0;
            while forked < want && budget.take() {
                if let Err(e) = self.spawn(server, &table) {
                    log::error!("prefork: cannot fork a child for {}: {e}", server.url());
                    break;
                }
                forked += 1;
            }
            if idle > max_spare && last_retire.elapsed() >= Duration::from_secs(1) {
                last_retire = Instant::now();
                self.retire(&table, (idle - max_spare).min(staying.saturating_sub(min)));
            }
            let timeout = if forked < want {
                budget.wait().min(TICK)
            } else {
                TICK
            };
            match server.wait(Some(parent_end.as_fd()), Some(timeout)) {
                Ok(true) => break Ok(()),
                Ok(false) => {
                    let mut buf = [0u8; 256];
                    while matches!((&*parent_end).read(&mut buf), Ok(n) if n > 0) {}
                }
                Err(e) => break Err(e),
            }
        };
        if server.upgrade_requested() && !server.handed_over() {
            // The caller starts a successor, then serves again (this loop
            // goes on with the same children) or hands over.
            return result;
        }
        if server.handed_over() {
            // An upgrade: the successor accepts now. The children finish
            // their connections on their own terms, as a Threading server's
            // would; the upgrade's drain waits for them (`active`) and sends
            // SIGTERM at its deadline (`begin_drain`).
            self.handed_over.store(true, Ordering::SeqCst);
            self.leave_all(&table);
            log::info!(
                "prefork: {} handed over; {} children finish their connections",
                server.url(),
                self.children.lock().len()
            );
            return result;
        }
        // New clients are refused while the children drain (no child
        // shuts the shared socket: a recycled one must not).
        server.stop_listening();
        self.drain_children(server.close_timeout());
        log::info!(
            "prefork: all children of {} gone, {} requests served",
            server.url(),
            self.served()
        );
        result
    }
}
