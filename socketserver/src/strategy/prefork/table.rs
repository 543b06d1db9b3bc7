//! `PreFork`'s shared memory: arrays of atomics in anonymous shared
//! memory ([`Shared`]), read and written by the parent and every child
//! without a system call. The status table (one [`Slot`] per child) and the admission
//! tables of `limits.rs` live here.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

pub(crate) use crate::sys::{Shared, ZeroAtomics};

/// One child's entry in `PreFork`'s status table, shared by the parent and
/// every child (all-zero: a free slot).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The child's pid (0: free). Written by the parent only.
    pub(crate) pid: AtomicI32,
    /// Requests the child is serving now (0: idle). Written by the child.
    pub(crate) active: AtomicU32,
    /// Set by the parent: leave when idle. Read by the child.
    pub(crate) retire: AtomicU32,
    /// Connections the child holds that count against the server's
    /// `max_connections` (under the admission lock; see `limits.rs`).
    pub(crate) conns: AtomicU32,
    /// Requests the child has started in all. Written by the child.
    pub(crate) served: AtomicU64,
}

/// `PreFork`'s status table.
// SAFETY: every field is an atomic integer; zero is a valid value of each.
unsafe impl ZeroAtomics for Slot {}

/// `PreFork`'s status table.
pub(crate) type SharedSlots = Shared<Slot>;

impl Shared<Slot> {
    /// The slots.
    pub(crate) fn slots(&self) -> &[Slot] {
        self.items()
    }
}

/// The admission lock and the server's connection count, shared by a
/// `PreFork` parent and its children (see `limits.rs`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct AdmissionHeader {
    /// The pid of the process holding the admission lock (0: free).
    pub(crate) lock: AtomicI32,
    /// Connections open in all children.
    pub(crate) total: AtomicU32,
    /// Addresses in the per-IP table.
    pub(crate) used: AtomicU32,
    /// Per-IP admissions not counted because the table was full.
    pub(crate) overflowed: AtomicU64,
}

// SAFETY: every field is an atomic integer; zero is a valid value of each.
unsafe impl ZeroAtomics for AdmissionHeader {}

/// One client address in the shared per-IP table (all-zero: empty). Read
/// and written under the admission lock only.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct IpEntry {
    /// 0: empty, 4: an IPv4 address, 6: an IPv6 address.
    pub(crate) family: AtomicU32,
    /// The address's 16 bytes (IPv4: the first 4), as four words.
    pub(crate) addr: [AtomicU32; 4],
    /// Connections open from this address in all children.
    pub(crate) total: AtomicU32,
}

// SAFETY: every field is an atomic integer (or an array of them); zero is
// a valid value of each.
unsafe impl ZeroAtomics for IpEntry {}
