//! The live-connection registry: limits (`max_connections`, `max_per_ip`),
//! counters ([`Stats`]) and the means to cut every open connection at the
//! end of a graceful shutdown.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Shutdown};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::counters::{HandshakeStage, RefusedReason};
use crate::refusal::{Refusal, Refusals};
use crate::{Address, ShutdownHandle};

/// What the server does when `max_connections` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimitPolicy {
    /// Accept the connection and close it at once (the client sees EOF or a
    /// reset), counted in [`Stats::refused`] and logged at most once a
    /// second. New clients fail fast.
    #[default]
    Refuse,
    /// Stop accepting until a connection ends: new clients wait in the
    /// kernel's listen backlog (and may time out there).
    Wait,
}

/// Counters of a server, from [`Server::stats`](crate::Server::stats) or,
/// inside a handler, [`StreamRequest::stats`](crate::StreamRequest::stats).
/// Cheap: a few atomic loads and one short lock.
///
/// ```
/// use socketserver::{StreamRequest, ThreadingTcpServer};
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// let stats = server.stats();
/// assert_eq!((stats.accepted, stats.connections), (0, 0));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Stream connections open now (in this process).
    pub connections: usize,
    /// Requests running now (per the strategy: threads, pool workers,
    /// children).
    pub active: usize,
    /// Requests taken off the socket (connections accepted, datagrams
    /// received).
    pub accepted: u64,
    /// Connections (and datagrams) refused: by a limit, the allow and deny
    /// lists, `verify_request`, a bad PROXY header, the pre-handler budget
    /// or a graceful close under way; by reason in
    /// [`refused_by`](Self::refused_by).
    pub refused: u64,
    /// [`refused`](Self::refused), by reason.
    pub refused_by: Refusals,
    /// Requests whose handler finished without error (under `Forking` and
    /// `PreFork` too: the children count in memory shared with the
    /// parent).
    pub completed: u64,
    /// Requests whose handler failed or panicked.
    pub failed: u64,
    /// Datagrams dropped unread because they were larger than
    /// `max_datagram_size` (not counted in `accepted`).
    pub oversized: u64,
    /// Connections that ended because the peer vanished without a word:
    /// keepalive probes or sent data went unanswered (`ETIMEDOUT`,
    /// see [`Builder::keepalive`](crate::Builder::keepalive)) or the
    /// network said it is unreachable (`EHOSTUNREACH`). A client that is
    /// there but read nothing for the user timeout ends the same way, and
    /// counts here too.
    pub peer_gone: u64,
    /// Requests whose handler, or a companion of it (`green::spawn`),
    /// overflowed its stack under `Green` (each ended alone, its
    /// connection closed; a handler's also counted in `failed`, a
    /// companion's request in `failed` when its handler returns the
    /// error).
    pub stack_overflows: u64,
    /// Milliseconds `Green`'s workers were held by requests that ran 1 ms
    /// or more without yielding (a blocking call in a handler), summed over
    /// the workers; 0 under the other strategies.
    pub green_blocked_ms: u64,
}

/// Limits on stream connections.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_per_ip: Option<usize>,
    pub(crate) policy: LimitPolicy,
    /// Most connections not at their handler yet (PROXY header, TLS
    /// handshake, a handshake of the handler's own); the oldest is closed
    /// to make room.
    pub(crate) max_pre_handler: Option<usize>,
}

/// What the registry and the connection's request share about one open
/// connection.
#[derive(Debug)]
pub(crate) struct Watch {
    fd: RawFd,
    since: Instant,
    /// The handler waits for the first byte of a new message with nothing
    /// buffered: a drain may close the connection at once.
    idle: AtomicBool,
    /// Shut down by `max_lifetime` already (cut and logged once).
    expired: AtomicBool,
    /// Holds a place in the pre-handler budget.
    pre_handler: AtomicBool,
    /// The address counted against `max_per_ip` for it, if any (as the
    /// registration's, for [`Registration::on_abandon`]).
    ip: Mutex<Option<IpAddr>>,
}

impl Watch {
    /// Marks the connection idle (waiting for a new message) or busy.
    /// Returns, when marking it idle, whether a drain has begun: the caller
    /// must then not wait for a message.
    pub(crate) fn set_idle(&self, idle: bool, registry: &Registry) -> bool {
        self.idle.store(idle, Ordering::SeqCst);
        // SeqCst on both sides: either `begin_drain` sees this flag, or we
        // see its flag, never neither.
        idle && registry.draining.load(Ordering::SeqCst)
    }
}

/// Idle connections shut down per hold of the registry's lock when a
/// graceful close begins.
const DRAIN_CHUNK: usize = 256;

#[derive(Debug, Default)]
struct Live {
    next_id: u64,
    /// Open connections.
    fds: HashMap<u64, Arc<Watch>>,
    per_ip: HashMap<IpAddr, usize>,
    /// Set by `cut_all`: connections registered later are cut at once.
    cut: bool,
    /// Connections holding a place in the pre-handler budget, oldest first
    /// (and some that left it since: skipped when met).
    pre_handler: VecDeque<u64>,
    /// How many hold a place now.
    pre_handler_count: usize,
}

/// Counts connections beyond this process, consulted by [`Registry::admit`]
/// after its own limits when `max_connections` or `max_per_ip` is set: a
/// `PreFork` child admits through its parent's shared-memory table, so
/// that the limits hold for the whole server (`strategy/prefork/limits.rs`).
pub(crate) trait AdmissionCounter: Send + Sync + std::fmt::Debug {
    /// Counts one more connection (from `ip`, under `max_per_ip`), or
    /// refuses it. `Ok(true)`: `ip` was counted (release it with the
    /// connection).
    fn admit(
        &self,
        ip: Option<IpAddr>,
        max_connections: Option<usize>,
        max_per_ip: Option<usize>,
    ) -> Result<bool, Refusal>;
    /// Counts `ip` for a connection admitted without it (the PROXY
    /// protocol names the client later). `Ok(true)`: counted.
    fn admit_ip(&self, ip: IpAddr, max_per_ip: usize) -> Result<bool, Refusal>;
    /// A connection ends: `connection` if it was admitted through
    /// [`admit`](Self::admit), `ip` if that was counted.
    fn release(&self, ip: Option<IpAddr>, connection: bool);
    /// Connections open in all the processes that share the counter.
    fn total(&self) -> usize;
}

/// The counter of this process, set once in a `PreFork` child right after
/// the fork (the one server that process serves).
static SHARED_COUNTER: std::sync::OnceLock<Arc<dyn AdmissionCounter>> = std::sync::OnceLock::new();

/// From now on every registry of this process admits through `counter` too
/// (a `PreFork` child; it serves one server). Set once.
pub(crate) fn admit_through(counter: Arc<dyn AdmissionCounter>) {
    let _ = SHARED_COUNTER.set(counter);
}

/// The shared counter, when this process has one and `limits` need it.
fn shared_counter(limits: &Limits) -> Option<&'static Arc<dyn AdmissionCounter>> {
    if limits.max_connections.is_none() && limits.max_per_ip.is_none() {
        return None;
    }
    SHARED_COUNTER.get()
}

/// The registry shared by the server loop and every open stream request.
#[derive(Debug)]
pub(crate) struct Registry {
    live: Mutex<Live>,
    limits: Limits,
    /// The loop is parked because the server is full (policy `Wait`): the
    /// next connection to end wakes it.
    parked: AtomicBool,
    waker: ShutdownHandle,
    last_peer_gone_log: Mutex<Option<Instant>>,
    /// Requests running in this process now.
    running: AtomicUsize,
    /// Jobs made and not yet run to the end nor dropped (see `jobs.rs`).
    jobs: crate::jobs::JobCount,
    /// Connections closed by the drain while idle.
    idle_closed: AtomicUsize,
    refusal_log: crate::throttle::Throttle,
    /// A graceful close has begun: idle connections are closed, and those
    /// that become idle later close at once.
    draining: AtomicBool,
    /// The totals of `Stats` and the counters behind the metrics, in
    /// shared memory: the children a strategy forks count there too.
    pub(crate) counters: crate::sys::Shared<crate::counters::Counters>,
}

/// A registered connection; dropping it deregisters. Must be dropped before
/// the socket closes (it is the first field of `StreamRequest`).
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    ip: Option<IpAddr>,
    /// What the shared counter counted for it: the connection, its address.
    shared: (bool, Option<IpAddr>),
    watch: Arc<Watch>,
}

impl Registration {
    /// Counts the connection against `max_per_ip` for `ip` (a client known
    /// after admission, from a PROXY header), or refuses it. A connection
    /// is counted once.
    pub(crate) fn count_ip(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(max) = self.registry.limits.max_per_ip else {
            return Ok(());
        };
        if self.ip.is_some() {
            return Ok(());
        }
        let mut live = self.registry.live.lock();
        let n = live.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= max {
            return Err(Refusal::TooManyFromIp(max));
        }
        if let Some(counter) = shared_counter(&self.registry.limits) {
            if counter.admit_ip(ip, max)? {
                self.shared.1 = Some(ip);
            }
        }
        live.per_ip.insert(ip, n + 1);
        self.ip = Some(ip);
        *self.watch.ip.lock() = Some(ip);
        Ok(())
    }

    /// Marks the connection idle or busy; see [`Watch::set_idle`].
    pub(crate) fn set_idle(&self, idle: bool) -> bool {
        self.watch.set_idle(idle, &self.registry)
    }

    /// Whether a graceful close has begun.
    pub(crate) fn draining(&self) -> bool {
        self.registry.draining()
    }

    /// Counts this connection as closed by the drain while idle.
    pub(crate) fn count_idle_closed(&self) {
        self.registry.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection reached its handler: it gives its place in the
    /// pre-handler budget back.
    pub(crate) fn established(&self) {
        if self.watch.pre_handler.load(Ordering::SeqCst) {
            let mut live = self.registry.live.lock();
            if self.watch.pre_handler.swap(false, Ordering::SeqCst) {
                live.pre_handler_count -= 1;
            }
        }
    }

    /// The handler runs a handshake of its own: the connection takes a
    /// place in the pre-handler budget again (the oldest holder is closed
    /// when it is full) until [`established`](Self::established).
    pub(crate) fn enter_pre_handler(&self) {
        let Some(max) = self.registry.limits.max_pre_handler else {
            return;
        };
        let mut live = self.registry.live.lock();
        if !self.watch.pre_handler.swap(true, Ordering::SeqCst) {
            live.pre_handler.push_back(self.id);
            live.pre_handler_count += 1;
            self.registry.evict_over(&mut live, max);
        }
    }

    /// What gives this connection's place back if its running request is
    /// abandoned where it stands (a stack overflow under `Green`: this
    /// registration is leaked, never dropped): its socket, and a closure
    /// that deregisters it, ends the request's count as running and counts
    /// it as failed and overflowed (or, for a companion's overflow, counts
    /// that only).
    pub(crate) fn on_abandon(
        &self,
    ) -> (
        RawFd,
        impl FnMut(crate::green::Lost) + Send + 'static + use<>,
    ) {
        let registry = Arc::clone(&self.registry);
        let watch = Arc::clone(&self.watch);
        let id = self.id;
        (self.watch.fd, move |lost| {
            if lost == crate::green::Lost::Request {
                registry.deregister(id, *watch.ip.lock());
            }
            registry.abandoned(lost);
        })
    }
}

/// Counts a job alive while it lives (see [`Registry::job_alive`]).
#[derive(Debug)]
pub(crate) struct JobAlive(Arc<Registry>);

impl Drop for JobAlive {
    fn drop(&mut self) {
        self.0.jobs.decrement();
    }
}

/// Counts a request as running while it lives.
#[derive(Debug)]
pub(crate) struct Running<'a>(&'a Registry);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.deregister(self.id, self.ip);
        if self.shared.0 || self.shared.1.is_some() {
            if let Some(counter) = SHARED_COUNTER.get() {
                counter.release(self.shared.1, self.shared.0);
            }
        }
    }
}

impl Registry {
    pub(crate) fn new(limits: Limits, waker: ShutdownHandle) -> std::io::Result<Registry> {
        Ok(Registry {
            live: Mutex::default(),
            limits,
            parked: AtomicBool::new(false),
            waker,
            last_peer_gone_log: Mutex::new(None),
            running: AtomicUsize::new(0),
            jobs: crate::jobs::JobCount::default(),
            idle_closed: AtomicUsize::new(0),
            refusal_log: crate::throttle::Throttle::default(),
            draining: AtomicBool::new(false),
            counters: crate::sys::Shared::new(1)?,
        })
    }

    /// Counts a request as running until the guard drops.
    pub(crate) fn start_request(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self)
    }

    /// A running request was abandoned where it stood (a stack overflow
    /// under `Green`): its `Running` guard is leaked, so its count ends
    /// here; it counts as failed and overflowed. A companion of it that
    /// overflowed counts as an overflow only (the request, cancelled,
    /// ends by itself and is counted then).
    pub(crate) fn abandoned(&self, lost: crate::green::Lost) {
        if lost == crate::green::Lost::Request {
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.jobs.decrement();
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .stack_overflows
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a job alive until the guard drops (the job ran to its end,
    /// or was dropped unrun).
    pub(crate) fn job_alive(self: &Arc<Self>) -> JobAlive {
        self.jobs.increment();
        JobAlive(Arc::clone(self))
    }

    /// Waits until no job of this server is alive, at most `timeout`;
    /// returns whether none is.
    pub(crate) fn wait_jobs(&self, timeout: Duration) -> bool {
        self.jobs.wait_zero_for(timeout)
    }

    /// Jobs alive now.
    pub(crate) fn jobs(&self) -> usize {
        self.jobs.get()
    }

    /// Requests running in this process now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Connections the drain closed while idle.
    pub(crate) fn idle_closed(&self) -> usize {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// The counters; `active` counts requests running in this process.
    pub(crate) fn stats(&self) -> Stats {
        use Ordering::Relaxed;
        let c = &*self.counters;
        Stats {
            connections: self.connections(),
            active: self.running(),
            accepted: c.accepted.load(Relaxed),
            refused: c.refused_total.load(Relaxed),
            refused_by: Refusals::from(&c.read()),
            completed: c.completed.load(Relaxed),
            failed: c.failed.load(Relaxed),
            oversized: c.oversized.load(Relaxed),
            peer_gone: c.peer_gone.load(Relaxed),
            stack_overflows: c.stack_overflows.load(Relaxed),
            green_blocked_ms: 0,
        }
    }

    /// Open connections waiting for a new message now.
    pub(crate) fn idle_connections(&self) -> usize {
        let live = self.live.lock();
        live.fds
            .values()
            .filter(|w| w.idle.load(Ordering::Relaxed))
            .count()
    }

    /// Whether a graceful close has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The connection lifetime limit, if any.
    pub(crate) fn max_lifetime(&self) -> Option<Duration> {
        self.limits.max_lifetime
    }

    /// How often a loop parked on a shared counter looks again.
    pub(crate) const SHARED_RECHECK: Duration = Duration::from_millis(10);

    /// How long the loop may sleep while parked by [`must_wait`](Self::must_wait)
    /// on a shared counter, which no deregistration elsewhere wakes.
    pub(crate) fn recheck(&self) -> Option<Duration> {
        (self.parked.load(Ordering::SeqCst) && shared_counter(&self.limits).is_some())
            .then_some(Self::SHARED_RECHECK)
    }

    /// Number of open connections.
    pub(crate) fn connections(&self) -> usize {
        self.live.lock().fds.len()
    }

    /// With policy `Wait`, whether the loop must stop accepting for now. The
    /// next deregistration wakes it; under a shared counter (`PreFork`,
    /// whose children share `max_connections`) the server is full when all
    /// the children together are, and a connection ending in another child
    /// wakes nobody here: the loop looks again every
    /// [`SHARED_RECHECK`](Self::SHARED_RECHECK) (see [`recheck`](Self::recheck)).
    pub(crate) fn must_wait(&self) -> bool {
        if self.limits.policy != LimitPolicy::Wait {
            return false;
        }
        let Some(max) = self.limits.max_connections else {
            return false;
        };
        if let Some(shared) = shared_counter(&self.limits) {
            let full = shared.total() >= max;
            self.parked.store(full, Ordering::SeqCst);
            return full;
        }
        let live = self.live.lock();
        let full = live.fds.len() >= max;
        // Set under the lock, so a deregistration cannot slip between the
        // check and the flag.
        self.parked.store(full, Ordering::SeqCst);
        full
    }

    /// Registers the connection on `fd` without counting it against
    /// `max_per_ip` yet: behind the PROXY protocol the client is known only
    /// once the header is read ([`Registration::count_ip`]).
    pub(crate) fn admit_without_ip(self: &Arc<Self>, fd: RawFd) -> Result<Registration, Refusal> {
        self.admit(fd, &Address::Unix(None))
    }

    /// Registers the connection on `fd` from `peer`, or refuses it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        fd: RawFd,
        peer: &Address,
    ) -> Result<Registration, Refusal> {
        let ip = peer.as_inet().map(|a| a.ip());
        let mut live = self.live.lock();
        if let Some(max) = self.limits.max_connections {
            if live.fds.len() >= max {
                return Err(Refusal::TooManyConnections(max));
            }
        }
        if let (Some(max), Some(ip)) = (self.limits.max_per_ip, ip) {
            // Checked before inserting, so refused addresses leave no entry.
            if live.per_ip.get(&ip).copied().unwrap_or(0) >= max {
                return Err(Refusal::TooManyFromIp(max));
            }
        }
        // The whole server's count (a `PreFork` child), once this
        // process's own allows the connection.
        let mut shared = (false, None);
        if let Some(counter) = shared_counter(&self.limits) {
            let per_ip = ip.and(self.limits.max_per_ip);
            shared = (
                true,
                counter
                    .admit(ip, self.limits.max_connections, per_ip)?
                    .then_some(ip)
                    .flatten(),
            );
        }
        if let (Some(_), Some(ip)) = (self.limits.max_per_ip, ip) {
            *live.per_ip.entry(ip).or_insert(0) += 1;
        }
        let id = live.next_id;
        live.next_id += 1;
        let budget = self.limits.max_pre_handler;
        let watch = Arc::new(Watch {
            fd,
            since: Instant::now(),
            idle: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            pre_handler: AtomicBool::new(budget.is_some()),
            ip: Mutex::new(ip.filter(|_| self.limits.max_per_ip.is_some())),
        });
        live.fds.insert(id, Arc::clone(&watch));
        if live.cut {
            crate::sys::shutdown_socket(fd, Shutdown::Both);
        }
        if let Some(max) = budget {
            live.pre_handler.push_back(id);
            live.pre_handler_count += 1;
            self.evict_over(&mut live, max);
        }
        Ok(Registration {
            registry: Arc::clone(self),
            id,
            ip: ip.filter(|_| self.limits.max_per_ip.is_some()),
            shared,
            watch,
        })
    }

    /// Closes the oldest connections holding a place in the pre-handler
    /// budget until at most `max` hold one. Called with the lock held, so
    /// every registered descriptor is open.
    fn evict_over(&self, live: &mut Live, max: usize) {
        let max = max.max(1);
        let mut evicted = 0;
        while live.pre_handler_count > max {
            let Some(id) = live.pre_handler.pop_front() else {
                break;
            };
            let Some(watch) = live.fds.get(&id) else {
                continue;
            };
            if watch.pre_handler.swap(false, Ordering::SeqCst) {
                // Its pending read (a PROXY header, a TLS handshake)
                // returns end-of-file at once; its request ends.
                crate::sys::shutdown_socket(watch.fd, Shutdown::Both);
                live.pre_handler_count -= 1;
                evicted += 1;
            }
        }
        // Entries of connections that reached their handler since are
        // skipped above; drop them when they pile up.
        if live.pre_handler.len() > 2 * max + 64 {
            let fds = &live.fds;
            let keep: VecDeque<u64> = live
                .pre_handler
                .iter()
                .copied()
                .filter(|id| {
                    fds.get(id)
                        .is_some_and(|w| w.pre_handler.load(Ordering::SeqCst))
                })
                .collect();
            live.pre_handler = keep;
        }
        if evicted > 0 {
            self.counters
                .refused_total
                .fetch_add(evicted as u64, Ordering::Relaxed);
            for _ in 0..evicted {
                self.counters.refused(RefusedReason::PreHandlerBudget);
            }
            self.log_refusal(&format!(
                "closed {evicted} connection(s) that had not reached the handler: \
                 max_pre_handler ({max}) reached, the oldest made room"
            ));
        }
    }

    fn deregister(&self, id: u64, ip: Option<IpAddr>) {
        let mut live = self.live.lock();
        if let Some(watch) = live.fds.remove(&id) {
            if watch.pre_handler.swap(false, Ordering::SeqCst) {
                live.pre_handler_count -= 1;
            }
        }
        if let Some(ip) = ip {
            if let Some(n) = live.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    live.per_ip.remove(&ip);
                }
            }
        }
        drop(live);
        if self.parked.swap(false, Ordering::SeqCst) {
            self.waker.poke();
        }
    }

    /// Counts a refusal by its reason and logs it, at most once a second
    /// (`verify_request` and `verify_tls` refusals at debug, each: they
    /// are the application's own decision).
    pub(crate) fn refused(&self, peer: &Address, why: &Refusal) {
        self.counters.refused_total.fetch_add(1, Ordering::Relaxed);
        match why.reason() {
            Some(reason) => self.counters.refused(reason),
            None => self.counters.handshake_failed(HandshakeStage::Proxy),
        }
        if let Refusal::Verify(_) = why {
            log::debug!("{peer} {why}");
            return;
        }
        self.log_refusal(&format!("refused {peer}: {why}"));
    }

    /// Logs a refusal at warn, at most once a second, with the total.
    fn log_refusal(&self, what: &str) {
        if self.refusal_log.allow().is_some() {
            let total = self.counters.refused_total.load(Ordering::Relaxed);
            log::warn!("{what} ({total} refused so far)");
        }
    }

    /// Whether a graceful close has begun.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Counts a connection whose peer vanished (`error` ended it) and logs
    /// it at info level, at most once a second.
    pub(crate) fn peer_gone(&self, peer: &Address, error: &std::io::Error) {
        let total = self.counters.peer_gone.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_peer_gone_log.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            log::info!("{peer} is gone: {error} ({total} vanished peers so far)");
        }
    }

    /// Begins a graceful close: every connection waiting for a new message
    /// is shut down for reading now (its handler reads end-of-file and
    /// finishes), and one that comes to wait for a message later reads
    /// end-of-file at once. Returns how many were closed now.
    pub(crate) fn begin_drain(&self) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        // The connections idle now, shut down a chunk at a time: each under
        // the lock (no registration can drop meanwhile, so its fd is still
        // open; one idle no more is left to see the flag at its next
        // boundary), but without holding up, for all 10,000 of a large
        // server, the requests that end meanwhile (their deregistration
        // takes the lock).
        let idle: Vec<u64> = {
            let live = self.live.lock();
            live.fds
                .iter()
                .filter(|(_, w)| w.idle.load(Ordering::SeqCst))
                .map(|(id, _)| *id)
                .collect()
        };
        let mut closed = 0;
        for chunk in idle.chunks(DRAIN_CHUNK) {
            let live = self.live.lock();
            for watch in chunk.iter().filter_map(|id| live.fds.get(id)) {
                if watch.idle.load(Ordering::SeqCst) {
                    crate::sys::shutdown_socket(watch.fd, Shutdown::Read);
                    closed += 1;
                }
            }
        }
        self.idle_closed.fetch_add(closed, Ordering::Relaxed);
        closed
    }

    /// Shuts down both directions of every open connection (blocked reads
    /// return end-of-file, blocked writes fail), and of any registered
    /// later. Returns how many were open.
    pub(crate) fn cut_all(&self) -> usize {
        let mut live = self.live.lock();
        live.cut = true;
        // The lock is held: no registration can drop, so every fd is open.
        for watch in live.fds.values() {
            crate::sys::shutdown_socket(watch.fd, Shutdown::Both);
        }
        live.fds.len()
    }

    /// Shuts down connections open for longer than `lifetime` that were
    /// not shut down already; returns how many it shut down now. A cut
    /// connection stays registered until its request ends, but is cut (and
    /// counted, and logged) once.
    pub(crate) fn cut_older_than(&self, lifetime: Duration) -> usize {
        let live = self.live.lock();
        let mut cut = 0;
        // The lock is held: no registration can drop, so every fd is open.
        for watch in live.fds.values() {
            if watch.since.elapsed() >= lifetime && !watch.expired.swap(true, Ordering::Relaxed) {
                crate::sys::shutdown_socket(watch.fd, Shutdown::Both);
                cut += 1;
            }
        }
        self.counters.cut(cut);
        cut
    }

    /// When the oldest connection not yet cut reaches `lifetime`, if any.
    pub(crate) fn next_expiry(&self, lifetime: Duration) -> Option<Instant> {
        let live = self.live.lock();
        live.fds
            .values()
            .filter(|w| !w.expired.load(Ordering::Relaxed))
            .map(|w| w.since + lifetime)
            .min()
    }
}

/// What [`Server::close_gracefully`](crate::Server::close_gracefully) did.
///
/// Counts are of requests (a stream request is one connection, a datagram
/// request one datagram). `running = finished + cut`, and the idle ones are
/// among the finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Requests running when the drain began.
    pub running: usize,
    /// Connections that were waiting for a new message when the drain began
    /// (or came to wait later) and were closed at once: their handlers read
    /// end-of-file and finished.
    pub idle_closed: usize,
    /// Requests that ended before the deadline (the idle ones included).
    pub finished: usize,
    /// Requests still running at the deadline: their connections were shut
    /// down in both directions (`Forking`: the children got SIGKILL).
    pub cut: usize,
    /// Of the cut requests, how many were still running a grace period
    /// later; the server stopped waiting for them.
    pub abandoned: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}
