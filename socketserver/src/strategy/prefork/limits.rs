//! `max_connections` and `max_per_ip` for a whole `PreFork` server: each
//! child admits a connection through tables in shared memory, so the
//! limits count the connections of every child, not each child's own.
//!
//! * The server's count and a per-child count (the child's [`Slot`]).
//! * A per-IP table of [`PER_IP_ENTRIES`] addresses (open addressing over
//!   twice as many slots, so that probes stay short; linear probing,
//!   backward-shift deletion), with a per-child count of
//!   each address next to it, so that the parent can take back the counts
//!   of a child that died holding connections ([`SharedAdmission::reclaim`]).
//! * One lock over all of it: an atomic holding the pid of the process in
//!   the critical section (a few dozen loads and stores, no system call).
//!   A child that dies inside it (killed by a signal) is found out by the
//!   parent when it reaps that child, and the lock freed.
//!
//! When the per-IP table is full (that many distinct addresses have
//! connections open at once), a connection from yet another address is
//! admitted without a per-IP count (`max_connections` still applies) and a
//! warning is logged at most once a second: a full table never refuses a
//! client that the limit would not.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::table::{AdmissionHeader, IpEntry, Shared, SharedSlots};
use crate::connections::AdmissionCounter;
use crate::refusal::Refusal;

/// Client addresses the shared per-IP table holds at once.
pub const PER_IP_ENTRIES: usize = 4096;
/// Slots of the table: at most half of them used.
const TABLE_SLOTS: usize = 2 * PER_IP_ENTRIES;

/// The admission tables of one `PreFork` server.
#[derive(Debug)]
pub(crate) struct SharedAdmission {
    header: Shared<AdmissionHeader>,
    entries: Shared<IpEntry>,
    /// Per-child counts of each entry: `counts[entry * children + slot]`.
    counts: Shared<AtomicU32>,
    children: usize,
    slots: Arc<SharedSlots>,
    /// In a child: its slot and pid (this process's copy).
    my_slot: AtomicUsize,
    my_pid: AtomicI32,
}

/// Holds the admission lock; releases it on drop.
struct Locked<'a> {
    lock: &'a AtomicI32,
    pid: i32,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self
            .lock
            .compare_exchange(self.pid, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// An address as the table stores it.
fn key(ip: IpAddr) -> (u32, [u32; 4]) {
    let (family, bytes) = match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, b)
        }
        // An IPv4-mapped IPv6 address is the IPv4 client it maps.
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => return key(IpAddr::V4(v4)),
            None => (6, a.octets()),
        },
    };
    let word = |i: usize| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    (family, [word(0), word(1), word(2), word(3)])
}

fn home(k: &(u32, [u32; 4])) -> usize {
    // FNV-1a over the words: cheap, and spreads neighbouring addresses.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in std::iter::once(k.0).chain(k.1) {
        h ^= u64::from(w);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % TABLE_SLOTS as u64).expect("below the table size")
}

impl SharedAdmission {
    /// Tables for a server of at most `children` children whose slots are
    /// `slots`.
    pub(crate) fn new(slots: Arc<SharedSlots>) -> std::io::Result<SharedAdmission> {
        let children = slots.slots().len();
        Ok(SharedAdmission {
            header: Shared::new(1)?,
            entries: Shared::new(TABLE_SLOTS)?,
            counts: Shared::new(TABLE_SLOTS * children)?,
            children,
            slots,
            my_slot: AtomicUsize::new(usize::MAX),
            my_pid: AtomicI32::new(0),
        })
    }

    /// In a child just forked into `slot`: admissions from here on count
    /// for it.
    pub(crate) fn enter_child(&self, slot: usize, pid: i32) {
        self.my_slot.store(slot, Ordering::Relaxed);
        self.my_pid.store(pid, Ordering::Relaxed);
    }

    fn header(&self) -> &AdmissionHeader {
        &self.header.items()[0]
    }

    fn lock_as(&self, pid: i32) -> Locked<'_> {
        let lock = &self.header().lock;
        let mut spins = 0u32;
        while lock
            .compare_exchange_weak(0, pid, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if spins < 1024 {
                std::thread::yield_now();
            } else {
                // Held long: its holder is descheduled, or dead until the
                // parent reaps it (within 100 ms).
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Locked { lock, pid }
    }

    /// The entry of `k`: `Ok(index)` when present, `Err(Some(free))` where
    /// it would go, `Err(None)` when the table is full.
    fn find(&self, k: &(u32, [u32; 4])) -> Result<usize, Option<usize>> {
        let entries = self.entries.items();
        let start = home(k);
        for step in 0..TABLE_SLOTS {
            let i = (start + step) % TABLE_SLOTS;
            let e = &entries[i];
            let family = e.family.load(Ordering::Relaxed);
            if family == 0 {
                return Err(Some(i));
            }
            if family == k.0 && (0..4).all(|w| e.addr[w].load(Ordering::Relaxed) == k.1[w]) {
                return Ok(i);
            }
        }
        Err(None)
    }

    fn count(&self, entry: usize, slot: usize) -> &AtomicU32 {
        &self.counts.items()[entry * self.children + slot]
    }

    /// Empties entry `i` (its counts all 0), shifting back the entries of
    /// its cluster that belong before it, so that every lookup still finds
    /// them.
    fn delete(&self, mut hole: usize) {
        let entries = self.entries.items();
        let mut next = hole;
        loop {
            next = (next + 1) % TABLE_SLOTS;
            let entry = &entries[next];
            let family = entry.family.load(Ordering::Relaxed);
            if family == 0 {
                break;
            }
            let found = (
                family,
                std::array::from_fn(|w| entry.addr[w].load(Ordering::Relaxed)),
            );
            let want = home(&found);
            // Whether `want` lies cyclically in (hole, next]: then next stays.
            let stays = if hole <= next {
                hole < want && want <= next
            } else {
                hole < want || want <= next
            };
            if stays {
                continue;
            }
            let to = &entries[hole];
            for w in 0..4 {
                to.addr[w].store(entry.addr[w].load(Ordering::Relaxed), Ordering::Relaxed);
            }
            to.total
                .store(entry.total.load(Ordering::Relaxed), Ordering::Relaxed);
            to.family.store(family, Ordering::Relaxed);
            for s in 0..self.children {
                self.count(hole, s).store(
                    self.count(next, s).load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
            }
            hole = next;
        }
        let used = &self.header().used;
        used.store(
            used.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
        let entry = &entries[hole];
        entry.family.store(0, Ordering::Relaxed);
        entry.total.store(0, Ordering::Relaxed);
        for w in 0..4 {
            entry.addr[w].store(0, Ordering::Relaxed);
        }
        for s in 0..self.children {
            self.count(hole, s).store(0, Ordering::Relaxed);
        }
    }

    /// In the parent, once the child of `slot` (pid `pid`) is reaped:
    /// takes back the counts it held (a child killed with connections
    /// open), and the lock if it died holding it.
    pub(crate) fn reclaim(&self, slot: usize, pid: i32) {
        let header = self.header();
        // Dead: it cannot release the lock itself.
        let _ = header
            .lock
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        let _held = self.lock_as(crate::sys::getpid());
        let conns = self.slots.slots()[slot].conns.swap(0, Ordering::Relaxed);
        if conns > 0 {
            let total = header.total.load(Ordering::Relaxed);
            header
                .total
                .store(total.saturating_sub(conns), Ordering::Relaxed);
            log::debug!("prefork: took back {conns} connection counts of child {pid}");
        }
        let entries = self.entries.items();
        let mut i = 0;
        while i < TABLE_SLOTS {
            let c = self.count(i, slot);
            let n = c.load(Ordering::Relaxed);
            if entries[i].family.load(Ordering::Relaxed) != 0 && n > 0 {
                c.store(0, Ordering::Relaxed);
                let total = entries[i].total.load(Ordering::Relaxed).saturating_sub(n);
                entries[i].total.store(total, Ordering::Relaxed);
                if total == 0 {
                    self.delete(i);
                    // Another entry may have moved into `i`: look again.
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Under the lock: one more connection from `ip` for the child of
    /// `slot`, or a refusal at `max`. `Ok(false)`: not counted, the table
    /// being full.
    fn count_ip_locked(&self, ip: IpAddr, slot: usize, max: usize) -> Result<bool, Refusal> {
        let wanted = key(ip);
        match self.find(&wanted) {
            Ok(i) => {
                let entry = &self.entries.items()[i];
                let n = entry.total.load(Ordering::Relaxed);
                if n >= limit(max) {
                    return Err(Refusal::TooManyFromIp(max));
                }
                entry.total.store(n + 1, Ordering::Relaxed);
                let mine = self.count(i, slot);
                mine.store(mine.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                Ok(true)
            }
            Err(Some(_)) if max == 0 => Err(Refusal::TooManyFromIp(max)),
            Err(Some(i)) if self.header().used.load(Ordering::Relaxed) < limit(PER_IP_ENTRIES) => {
                let entry = &self.entries.items()[i];
                for w in 0..4 {
                    entry.addr[w].store(wanted.1[w], Ordering::Relaxed);
                }
                entry.total.store(1, Ordering::Relaxed);
                entry.family.store(wanted.0, Ordering::Relaxed);
                self.count(i, slot).store(1, Ordering::Relaxed);
                let used = &self.header().used;
                used.store(used.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                Ok(true)
            }
            Err(_) => {
                let n = self.header().overflowed.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    log::warn!(
                        "prefork: the shared per-IP table is full ({PER_IP_ENTRIES} addresses \
                         with connections open); {ip} admitted without a per-IP count ({} so \
                         far)",
                        n + 1
                    );
                }
                Ok(false)
            }
        }
    }

    /// Connections open in all children now.
    pub(crate) fn total(&self) -> u32 {
        self.header().total.load(Ordering::Relaxed)
    }

    fn mine(&self) -> Option<(usize, i32)> {
        let slot = self.my_slot.load(Ordering::Relaxed);
        (slot != usize::MAX).then(|| (slot, self.my_pid.load(Ordering::Relaxed)))
    }
}

fn limit(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl AdmissionCounter for SharedAdmission {
    fn admit(
        &self,
        ip: Option<IpAddr>,
        max_connections: Option<usize>,
        max_per_ip: Option<usize>,
    ) -> Result<bool, Refusal> {
        let Some((slot, pid)) = self.mine() else {
            return Ok(false);
        };
        let _held = self.lock_as(pid);
        let header = self.header();
        let total = header.total.load(Ordering::Relaxed);
        if let Some(max) = max_connections {
            if total >= limit(max) {
                return Err(Refusal::TooManyConnections(max));
            }
        }
        let counted_ip = match (max_per_ip, ip) {
            (Some(max), Some(ip)) => self.count_ip_locked(ip, slot, max)?,
            _ => false,
        };
        header.total.store(total + 1, Ordering::Relaxed);
        let conns = &self.slots.slots()[slot].conns;
        conns.store(conns.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Ok(counted_ip)
    }

    fn total(&self) -> usize {
        self.header().total.load(Ordering::Relaxed) as usize
    }

    fn admit_ip(&self, ip: IpAddr, max_per_ip: usize) -> Result<bool, Refusal> {
        let Some((slot, pid)) = self.mine() else {
            return Ok(false);
        };
        let _held = self.lock_as(pid);
        self.count_ip_locked(ip, slot, max_per_ip)
    }

    fn release(&self, ip: Option<IpAddr>, connection: bool) {
        let Some((slot, pid)) = self.mine() else {
            return;
        };
        let _held = self.lock_as(pid);
        if connection {
            let header = self.header();
            let total = header.total.load(Ordering::Relaxed);
            header
                .total
                .store(total.saturating_sub(1), Ordering::Relaxed);
            let conns = &self.slots.slots()[slot].conns;
            conns.store(
                conns.load(Ordering::Relaxed).saturating_sub(1),
                Ordering::Relaxed,
            );
        }
        if let Some(ip) = ip {
            if let Ok(i) = self.find(&key(ip)) {
                let c = self.count(i, slot);
                c.store(
                    c.load(Ordering::Relaxed).saturating_sub(1),
                    Ordering::Relaxed,
                );
                let e = &self.entries.items()[i];
                let total = e.total.load(Ordering::Relaxed).saturating_sub(1);
                e.total.store(total, Ordering::Relaxed);
                if total == 0 {
                    self.delete(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn tables(children: usize) -> SharedAdmission {
        let slots = Arc::new(SharedSlots::new(children).unwrap());
        SharedAdmission::new(slots).unwrap()
    }

    #[test]
    fn per_ip_counts_survive_deletions_in_the_middle_of_clusters() {
        let t = tables(2);
        t.enter_child(0, 100);
        for n in 0..3000 {
            assert_eq!(t.admit(Some(ip(n)), None, Some(1)), Ok(true));
        }
        assert_eq!(t.total(), 3000);
        // Every other address leaves: the table shifts entries back.
        for n in (0..3000).step_by(2) {
            t.release(Some(ip(n)), true);
        }
        for n in 0..3000 {
            let r = t.admit(Some(ip(n)), None, Some(1));
            if n % 2 == 0 {
                assert_eq!(r, Ok(true), "{n} left, so it is admitted again");
            } else {
                assert_eq!(r, Err(Refusal::TooManyFromIp(1)), "{n} is still counted");
            }
        }
        assert_eq!(t.total(), 3000);
    }

    #[test]
    fn a_full_table_admits_without_a_per_ip_count_and_max_connections_still_holds() {
        let t = tables(1);
        t.enter_child(0, 100);
        for n in 0..u32::try_from(PER_IP_ENTRIES).unwrap() {
            assert_eq!(t.admit(Some(ip(n)), None, Some(1)), Ok(true));
        }
        let extra = ip(1 << 20);
        assert_eq!(t.admit(Some(extra), None, Some(1)), Ok(false));
        assert_eq!(t.admit(Some(extra), None, Some(1)), Ok(false));
        let total = usize::try_from(t.total()).unwrap();
        assert_eq!(
            t.admit(Some(extra), Some(total), Some(1)),
            Err(Refusal::TooManyConnections(total))
        );
    }

    #[test]
    fn the_counts_of_a_dead_child_are_taken_back_and_the_others_kept() {
        let t = tables(2);
        t.enter_child(1, 200);
        for n in 0..50 {
            assert_eq!(t.admit(Some(ip(n % 5)), Some(100), Some(10)), Ok(true));
        }
        t.enter_child(0, 100);
        assert_eq!(t.admit(Some(ip(0)), Some(100), Some(11)), Ok(true));
        assert_eq!(
            t.admit(Some(ip(0)), Some(100), Some(11)),
            Err(Refusal::TooManyFromIp(11))
        );
        assert_eq!(t.total(), 51);
        // The child of slot 1 dies holding the lock and 50 connections.
        t.header().lock.store(200, Ordering::SeqCst);
        t.reclaim(1, 200);
        assert_eq!(t.total(), 1);
        assert_eq!(t.admit(Some(ip(0)), Some(100), Some(2)), Ok(true));
        assert_eq!(
            t.admit(Some(ip(0)), Some(100), Some(2)),
            Err(Refusal::TooManyFromIp(2))
        );
        for n in 1..5 {
            assert_eq!(t.admit(Some(ip(n)), Some(100), Some(1)), Ok(true));
        }
    }
}
