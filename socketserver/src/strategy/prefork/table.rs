//! `PreFork`'s status table: one [`Slot`] per child in anonymous shared
//! memory, read and written by the parent and every child without a system
//! call.

use std::io;
use std::sync::atomic::AtomicI32;

/// One child's entry in `PreFork`'s status table, shared by the parent and
/// every child (all-zero: a free slot).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The child's pid (0: free). Written by the parent only.
    pub(crate) pid: AtomicI32,
    /// Requests the child is serving now (0: idle). Written by the child.
    pub(crate) active: std::sync::atomic::AtomicU32,
    /// Set by the parent: leave when idle. Read by the child.
    pub(crate) retire: std::sync::atomic::AtomicU32,
    /// Requests the child has started in all. Written by the child.
    pub(crate) served: std::sync::atomic::AtomicU64,
}

/// A table of [`Slot`]s in anonymous shared memory (`mmap(MAP_SHARED |
/// MAP_ANONYMOUS)`): children forked after it was made see the parent's
/// table and the parent sees theirs, with no system call per update.
#[derive(Debug)]
pub(crate) struct SharedSlots {
    ptr: std::ptr::NonNull<Slot>,
    len: usize,
}

// SAFETY: the table holds only atomics, which may be used from any thread;
// the pointer is owned by the value and unmapped once, on drop.
unsafe impl Send for SharedSlots {}
// SAFETY: as above: shared references give access to atomics only.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// A table of `len` free slots (at least 1).
    pub(crate) fn new(len: usize) -> io::Result<SharedSlots> {
        let len = len.max(1);
        let bytes = len
            .checked_mul(std::mem::size_of::<Slot>())
            .ok_or_else(|| io::Error::other("status table too large"))?;
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
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<Slot>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedSlots { ptr, len })
    }

    /// The slots.
    pub(crate) fn slots(&self) -> &[Slot] {
        // SAFETY: the mapping is `len * size_of::<Slot>()` bytes, page
        // aligned (so aligned for `Slot`), zero-filled by the kernel (all
        // zeros is a valid `Slot`: atomics of 0), readable and writable,
        // and lives until `self` drops, which the borrow outlives. Other
        // processes write it only through atomics, as this one does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no borrow of
        // the slots outlives `self`. Children keep their own mapping.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<Slot>(),
            );
        }
    }
}
