//! The live-connection registry: limits (`max_connections`, `max_per_ip`),
//! counters ([`Stats`]) and the means to cut every open connection at the
//! end of a graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Address, ShutdownHandle};

/// What the server does when `max_connections` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// Counters of a server, from [`Server::stats`](crate::Server::stats). Cheap:
/// a few atomic loads and one short lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Stream connections open now (in this process).
    pub connections: usize,
    /// Requests running now (per the strategy: threads, pool workers,
    /// children).
    pub active: usize,
    /// Requests taken off the socket (connections accepted, datagrams
    /// received).
    pub accepted: u64,
    /// Requests refused by a limit or by `verify_request`.
    pub refused: u64,
    /// Requests whose handler finished without error (counted in this
    /// process: not under `Forking`).
    pub completed: u64,
    /// Requests whose handler failed or panicked (not under `Forking`).
    pub failed: u64,
}

/// Limits on stream connections.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_per_ip: Option<usize>,
    pub(crate) policy: LimitPolicy,
}

#[derive(Debug, Default)]
struct Live {
    next_id: u64,
    /// Open connections: their socket and when they were accepted.
    fds: HashMap<u64, (RawFd, Instant)>,
    per_ip: HashMap<IpAddr, usize>,
    /// Set by `cut_all`: connections registered later are cut at once.
    cut: bool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooManyConnections(usize),
    TooManyFromIp(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooManyConnections(n) => write!(f, "max_connections ({n}) reached"),
            Refusal::TooManyFromIp(n) => write!(f, "max_per_ip ({n}) reached"),
        }
    }
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
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    last_refusal_log: Mutex<Option<Instant>>,
}

/// A registered connection; dropping it deregisters. Must be dropped before
/// the socket closes (it is the first field of `StreamRequest`).
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    ip: Option<IpAddr>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.deregister(self.id, self.ip);
    }
}

impl Registry {
    pub(crate) fn new(limits: Limits, waker: ShutdownHandle) -> Registry {
        Registry {
            live: Mutex::default(),
            limits,
            parked: AtomicBool::new(false),
            waker,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_refusal_log: Mutex::new(None),
        }
    }

    /// The connection lifetime limit, if any.
    pub(crate) fn max_lifetime(&self) -> Option<Duration> {
        self.limits.max_lifetime
    }

    /// Number of open connections.
    pub(crate) fn connections(&self) -> usize {
        self.live.lock().fds.len()
    }

    /// With policy `Wait`, whether the loop must stop accepting for now. The
    /// next deregistration wakes it.
    pub(crate) fn must_wait(&self) -> bool {
        if self.limits.policy != LimitPolicy::Wait {
            return false;
        }
        let Some(max) = self.limits.max_connections else {
            return false;
        };
        let live = self.live.lock();
        let full = live.fds.len() >= max;
        // Set under the lock, so a deregistration cannot slip between the
        // check and the flag.
        self.parked.store(full, Ordering::SeqCst);
        full
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
            *live.per_ip.entry(ip).or_insert(0) += 1;
        }
        let id = live.next_id;
        live.next_id += 1;
        live.fds.insert(id, (fd, Instant::now()));
        if live.cut {
            crate::sys::shutdown_socket(fd, Shutdown::Both);
        }
        Ok(Registration {
            registry: Arc::clone(self),
            id,
            ip: ip.filter(|_| self.limits.max_per_ip.is_some()),
        })
    }

    fn deregister(&self, id: u64, ip: Option<IpAddr>) {
        let mut live = self.live.lock();
        live.fds.remove(&id);
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

    /// Counts a refusal and logs it, at most once a second.
    pub(crate) fn refused(&self, peer: &Address, why: &dyn std::fmt::Display) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_refusal_log.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            log::warn!("refused {peer}: {why} ({total} refused so far)");
        }
    }

    /// Shuts down both directions of every open connection (blocked reads
    /// return end-of-file, blocked writes fail), and of any registered
    /// later. Returns how many were open.
    pub(crate) fn cut_all(&self) -> usize {
        let mut live = self.live.lock();
        live.cut = true;
        // The lock is held: no registration can drop, so every fd is open.
        for &(fd, _) in live.fds.values() {
            crate::sys::shutdown_socket(fd, Shutdown::Both);
        }
        live.fds.len()
    }

    /// Shuts down connections open for longer than `lifetime`; returns how
    /// many. A cut connection stays registered until its request ends.
    pub(crate) fn cut_older_than(&self, lifetime: Duration) -> usize {
        let live = self.live.lock();
        let mut cut = 0;
        // The lock is held: no registration can drop, so every fd is open.
        for &(fd, since) in live.fds.values() {
            if since.elapsed() >= lifetime {
                crate::sys::shutdown_socket(fd, Shutdown::Both);
                cut += 1;
            }
        }
        cut
    }
}

/// What [`Server::close_gracefully`](crate::Server::close_gracefully) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests that were running when the drain began.
    pub running: usize,
    /// Of those, how many finished on their own before the deadline.
    pub finished: usize,
    /// How many were still running at the deadline and were cut (their
    /// sockets shut down; children sent SIGTERM).
    pub cut: usize,
    /// How many were still running a grace period after being cut; the
    /// server stopped waiting for them.
    pub abandoned: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}
