//! `PreFork`'s shared memory: arrays of atomics in anonymous shared
//! memory, read and written by the parent and every child without a system
//! call. The status table (one [`Slot`] per child) and the admission
//! tables of `limits.rs` live here.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

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

/// A type whose all-zero bytes are a valid value, and which is used only
/// through shared references to atomics: it may live in [`Shared`]
/// memory.
///
/// # Safety
///
/// All-zero bytes must be a valid value of the type, and every field must
/// be an atomic (or an array or struct of them), so that other processes
/// writing it concurrently is no data race.
pub(crate) unsafe trait ZeroAtomics {}

// SAFETY: every field is an atomic integer; zero is a valid value of each.
unsafe impl ZeroAtomics for Slot {}
// SAFETY: an atomic integer, valid at zero.
unsafe impl ZeroAtomics for AtomicU32 {}

/// An array of `T` in anonymous shared memory (`mmap(MAP_SHARED |
/// MAP_ANONYMOUS)`): children forked after it was made see the parent's
/// array and the parent sees theirs, with no system call per update.
#[derive(Debug)]
pub(crate) struct Shared<T: ZeroAtomics> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

/// `PreFork`'s status table.
pub(crate) type SharedSlots = Shared<Slot>;

// SAFETY: the array holds only atomics (`ZeroAtomics`), which may be used
// from any thread; the pointer is owned by the value and unmapped once, on
// drop.
unsafe impl<T: ZeroAtomics> Send for Shared<T> {}
// SAFETY: as above: shared references give access to atomics only.
unsafe impl<T: ZeroAtomics> Sync for Shared<T> {}

impl<T: ZeroAtomics> Shared<T> {
    /// An array of `len` zeroed values (at least 1).
    pub(crate) fn new(len: usize) -> io::Result<Shared<T>> {
        let len = len.max(1);
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| io::Error::other("shared table too large"))?;
        // SAFETY: a fresh anonymous mapping: no address hint, no file
        // descriptor; the kernel picks a page-aligned address or fails.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mapping {bytes} bytes of shared memory: {e}"),
            ));
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<T>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Shared { ptr, len })
    }

    /// The values.
    pub(crate) fn items(&self) -> &[T] {
        // SAFETY: the mapping is `len * size_of::<T>()` bytes, page
        // aligned (so aligned for `T`), zero-filled by the kernel (all
        // zeros is a valid `T`: `ZeroAtomics`), readable and writable,
        // and lives until `self` drops, which the borrow outlives. Other
        // processes write it only through atomics, as this one does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Shared<Slot> {
    /// The slots.
    pub(crate) fn slots(&self) -> &[Slot] {
        self.items()
    }
}

impl<T: ZeroAtomics> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no borrow of
        // the values outlives `self`. Children keep their own mapping.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<T>(),
            );
        }
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
