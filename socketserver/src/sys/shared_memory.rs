//! Anonymous shared memory (`mmap(MAP_SHARED | MAP_ANONYMOUS)`): arrays
//! of atomics that a process and the children it forks afterwards read and
//! write together, with no system call per update. `PreFork`'s tables and
//! every server's counters live in it, so that what forked children count
//! is seen by the parent.

use std::io;

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

// SAFETY: atomic integers, valid at zero.
unsafe impl ZeroAtomics for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroAtomics for std::sync::atomic::AtomicU64 {}

/// An array of `T` in anonymous shared memory (`mmap(MAP_SHARED |
/// MAP_ANONYMOUS)`): children forked after it was made see the parent's
/// array and the parent sees theirs, with no system call per update.
#[derive(Debug)]
pub(crate) struct Shared<T: ZeroAtomics> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

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

impl<T: ZeroAtomics> std::ops::Deref for Shared<T> {
    type Target = T;

    /// The first value (the only one of a `Shared::new(1)`).
    fn deref(&self) -> &T {
        &self.items()[0]
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
