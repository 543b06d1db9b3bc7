//! Coroutine stacks for the green workers, carved out of shared mappings
//! ("slabs") of [`PER_SLAB`] stacks each, every
//! stack with its own guard page below it.
//!
//! The guards are guard regions (`madvise(MADV_GUARD_INSTALL)`, Linux
//! 6.13) where the kernel has them: a slab stays one mapping, so that
//! `vm.max_map_count` (65,530 by default) does not cap the connections.
//! Elsewhere they are `PROT_NONE` pages (`mprotect`), which split the slab
//! into two mappings per stack in use: about 32,000 connections at most
//! under the default `vm.max_map_count`, which a server logs at start-up
//! beside its `max_connections` (`ceiling`).
//!
//! One mapping per stack (corosensei's `DefaultStack`) costs an `mmap`, an
//! `mprotect` and a `munmap` per stack; tearing down 10,000 connections
//! then spends a third of its time unmapping (each `munmap` also flushes
//! the other cores' TLBs). Here a slab is mapped once, a slot made usable
//! the first time it is handed out, and a slab unmapped when none of its
//! stacks is in use and enough others are spare: tens of syscalls for
//! 10,000 stacks.

use std::collections::BTreeSet;
use std::io;
use std::num::NonZeroUsize;
use std::sync::OnceLock;

use corosensei::stack::{Stack, StackPointer};

/// Stacks per slab (the width of the slot bit masks).
pub(crate) const PER_SLAB: usize = 64;

/// Pages of the guard below each stack. The stack below is the next
/// slot's: a frame that skips a one-page guard (code without stack
/// probes, such as C called through FFI, with a large local array) would
/// land in it, so the guard is four pages. Address space only, never
/// memory.
const GUARD_PAGES: usize = 4;

/// Pages at the top of a stack that keep their memory when the stack is
/// trimmed (what a plain request touches: the handler's frames, its
/// buffers on the stack). Pages below them, touched by a deep request,
/// are given back by [`Slabs::sweep`] (one `madvise` per stack given back
/// since the last sweep), so that one deep request does not hold its
/// memory for as long as the stack is cached.
const KEPT_PAGES: usize = 8;

/// `madvise` advice that installs guard regions (Linux 6.13; not in every
/// libc yet).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Whether this kernel installs guard regions with `madvise`: tried once,
/// on a page of its own.
pub(crate) fn guard_regions() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let page = page_size();
        // SAFETY: a fresh anonymous private page at an address of the
        // kernel's choosing, unmapped before the block ends: nothing else
        // can use it.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if addr == libc::MAP_FAILED {
                return false;
            }
            let supported = libc::madvise(addr, page, MADV_GUARD_INSTALL) == 0;
            libc::munmap(addr, page);
            supported
        }
    })
}

/// Logs, once per process, how the guards are made. Where they cost
/// mappings, each server started under `Green` logs the connection
/// ceiling beside its `max_connections` (see `ceiling`).
pub(crate) fn report_guards() {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        if guard_regions() {
            log::debug!("green stacks: guard regions by madvise: one mapping per 64 stacks");
        } else {
            log::debug!(
                "green stacks: no guard regions (MADV_GUARD_INSTALL, Linux 6.13): PROT_NONE \
                 guard pages, 2 mappings per stack in use"
            );
        }
    });
}

/// A coroutine stack: one slot of a slab, with a guard below it.
/// Plain data; it must go back to the [`Slabs`] it came from.
#[derive(Debug)]
pub(crate) struct SlabStack {
    base: StackPointer,
    limit: StackPointer,
    /// Bytes of its guard, at `limit`.
    guard: usize,
    slab: usize,
    slot: usize,
}

// SAFETY: `limit..base` is one slot: its guard (a guard region or
// `PROT_NONE` pages at `limit`: the stack grows down into them) and above
// it the readable and writable stack (made so by `Slabs::take` before it
// hands the stack out), at least `MIN_STACK_SIZE` bytes. Corosensei wants the guard
// counted in `limit`. Both are page aligned, so 16-byte aligned.
// The range stays mapped as long as the stack is in use: a slab is only
// unmapped once every slot of it was given back, or when the `Slabs`
// drops, which its owner (the green worker) orders after every
// coroutine (see `Worker`'s fields).
unsafe impl Stack for SlabStack {
    fn base(&self) -> StackPointer {
        self.base
    }

    fn limit(&self) -> StackPointer {
        self.limit
    }
}

struct Slab {
    addr: usize,
    /// Slots not handed out (bit i: slot i).
    free: u64,
    /// Slots made usable once already (their guard installed, their
    /// stack made readable and writable).
    usable: u64,
    /// Free slots given back since the last sweep, not trimmed yet.
    dirty: u64,
}

/// A worker's stacks. Slots go out lowest slab first, so that the
/// stacks in use pack into few slabs and the spare ones can go back to
/// the system whole.
pub(crate) struct Slabs {
    /// Usable bytes of a stack (whole pages).
    pub(crate) size: usize,
    /// Bytes of the guard below each stack (whole pages).
    guard: usize,
    slabs: Vec<Option<Slab>>,
    /// Slabs with a free slot.
    open: BTreeSet<usize>,
    /// Free slots in all slabs.
    spare: usize,
    /// Spare stacks to keep mapped (with their touched pages).
    keep: usize,
    /// Bytes at the top of a stack that keep their pages when it comes back.
    kept: usize,
    /// Guards are guard regions in a readable and writable slab (else
    /// `PROT_NONE` pages, the stacks made usable by `mprotect`).
    guard_regions: bool,
    /// Slots to trim at the next sweep (the `dirty` bits of all slabs).
    dirty: usize,
}

impl std::fmt::Debug for Slabs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slabs")
            .field("size", &self.size)
            .field("slabs", &self.slabs.iter().flatten().count())
            .field("spare", &self.spare)
            .finish_non_exhaustive()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

impl SlabStack {
    /// Its guard: `[lo, hi)`.
    pub(crate) fn guard(&self) -> (usize, usize) {
        (self.limit.get(), self.limit.get() + self.guard)
    }
}

impl Slabs {
    /// Stacks of at least `size` usable bytes; about `keep` spare ones
    /// stay mapped for reuse.
    pub(crate) fn new(size: usize, keep: usize) -> Slabs {
        Slabs::with_guards(size, keep, guard_regions())
    }

    /// As [`new`](Self::new), with guard regions (`madvise`) or
    /// `PROT_NONE` guards (`mprotect`) as `guard_regions` says.
    fn with_guards(size: usize, keep: usize, guard_regions: bool) -> Slabs {
        let page = page_size();
        Slabs {
            // Too large to round up: no slab can be mapped (`slab_len`).
            size: size
                .max(corosensei::stack::MIN_STACK_SIZE)
                .checked_next_multiple_of(page)
                .unwrap_or(usize::MAX),
            guard: page * GUARD_PAGES,
            kept: page * KEPT_PAGES,
            guard_regions,
            slabs: Vec::new(),
            open: BTreeSet::new(),
            spare: 0,
            keep,
            dirty: 0,
        }
    }

    fn slot_len(&self) -> usize {
        self.size + self.guard
    }

    /// The bytes of a slab; `None` if the stack size is too large for
    /// one (a slab is never mapped then: every `take` fails).
    fn slab_len(&self) -> Option<usize> {
        self.size
            .checked_add(self.guard)?
            .checked_mul(PER_SLAB)
            .filter(|len| isize::try_from(*len).is_ok())
    }

    /// A stack: a free slot of the lowest slab that has one, or of a
    /// new slab.
    pub(crate) fn take(&mut self) -> io::Result<SlabStack> {
        let index = match self.open.first() {
            Some(&i) => i,
            None => self.map_slab()?,
        };
        let (slot_len, size, guard) = (self.slot_len(), self.size, self.guard);
        let slab = self.slabs[index]
            .as_mut()
            .ok_or_else(|| io::Error::other("green stacks: an open slab is not mapped"))?;
        let slot = slab.free.trailing_zeros() as usize;
        let start = slab.addr + slot * slot_len;
        if slab.usable & (1 << slot) == 0 {
            // SAFETY: `start .. start + guard + size` (the slot: its guard,
            // then its stack) lies inside this slab's mapping (slot <
            // PER_SLAB, each slot_len long), which no stack uses yet: the
            // slot is free and was never made usable, so nothing can alias
            // it.
            let r = unsafe {
                if self.guard_regions {
                    libc::madvise(start as *mut libc::c_void, guard, MADV_GUARD_INSTALL)
                } else {
                    libc::mprotect(
                        (start + guard) as *mut libc::c_void,
                        size,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                }
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            slab.usable |= 1 << slot;
        }
        slab.free &= !(1 << slot);
        if slab.dirty & (1 << slot) != 0 {
            // Its touched pages go with it, to be trimmed when it comes
            // back.
            slab.dirty &= !(1 << slot);
            self.dirty -= 1;
        }
        if slab.free == 0 {
            self.open.remove(&index);
        }
        self.spare -= 1;
        let pointer = |a: usize| {
            NonZeroUsize::new(a).ok_or_else(|| io::Error::other("green stacks: null stack"))
        };
        Ok(SlabStack {
            base: pointer(start + guard + size)?,
            limit: pointer(start)?,
            guard,
            slab: index,
            slot,
        })
    }

    /// Maps a new slab: readable and writable with guard regions (each
    /// installed when its slot is first used), else all `PROT_NONE` until
    /// a slot is first used.
    fn map_slab(&mut self) -> io::Result<usize> {
        let len = self.slab_len().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("green stacks: a stack of {} bytes is too large", self.size),
            )
        })?;
        // SAFETY: a fresh anonymous private mapping at an address of the
        // kernel's choosing: it cannot overlap anything of ours.
        let protection = if self.guard_regions {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                protection,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slab = Slab {
            addr: addr as usize,
            free: u64::MAX,
            usable: 0,
            dirty: 0,
        };
        let index = match self.slabs.iter().position(Option::is_none) {
            Some(i) => {
                self.slabs[i] = Some(slab);
                i
            }
            None => {
                self.slabs.push(Some(slab));
                self.slabs.len() - 1
            }
        };
        self.open.insert(index);
        self.spare += PER_SLAB;
        Ok(index)
    }

    /// Takes `stack` back. Its slab is unmapped when none of its stacks
    /// is in use any more and more than `keep` others are spare. With
    /// `trim`, a stack spare beyond those `keep` gives all its touched
    /// pages back at once (one `madvise`); any other is marked for the
    /// next [`sweep`](Self::sweep), which gives back its pages below its
    /// top [`KEPT_PAGES`] (those only a deep request touched): an
    /// `madvise` per request would cost as much as the request's own
    /// system calls (it walks the 2 MiB range and takes the mm's lock, deep
    /// or not). A worker that is closing skips both, as its slabs are all
    /// about to go.
    pub(crate) fn give(&mut self, stack: SlabStack, trim: bool) {
        let (slot_len, size, guard, keep) = (self.slot_len(), self.size, self.guard, self.keep);
        let Some(slab) = self.slabs.get_mut(stack.slab).and_then(Option::as_mut) else {
            return;
        };
        slab.free |= 1 << stack.slot;
        self.spare += 1;
        self.open.insert(stack.slab);
        if slab.free == u64::MAX && self.spare >= keep + PER_SLAB {
            let addr = slab.addr;
            self.dirty -= slab.dirty.count_ones() as usize;
            self.slabs[stack.slab] = None;
            self.open.remove(&stack.slab);
            self.spare -= PER_SLAB;
            unmap(addr, slot_len * PER_SLAB);
        } else if trim && self.spare > keep {
            let start = slab.addr + stack.slot * slot_len + guard;
            if slab.dirty & (1 << stack.slot) != 0 {
                slab.dirty &= !(1 << stack.slot);
                self.dirty -= 1;
            }
            // SAFETY: `start..start + size` is the slot's usable range,
            // inside the slab's mapping, given back just now: no coroutine
            // runs on it. Its pages read as zeros afterwards, which a fresh
            // stack needs no better.
            unsafe {
                libc::madvise(start as *mut libc::c_void, size, libc::MADV_DONTNEED);
            }
        } else if trim && slab.dirty & (1 << stack.slot) == 0 {
            slab.dirty |= 1 << stack.slot;
            self.dirty += 1;
        }
    }

    /// Whether stacks given back wait for a [`sweep`](Self::sweep).
    pub(crate) fn dirty(&self) -> bool {
        self.dirty > 0
    }

    /// Gives back the pages below the top [`KEPT_PAGES`] of every free
    /// stack given back since the last sweep (one `madvise` each); returns
    /// how many.
    pub(crate) fn sweep(&mut self) -> usize {
        let (slot_len, size, guard) = (self.slot_len(), self.size, self.guard);
        let len = size - self.kept.min(size);
        let mut swept = 0;
        for slab in self.slabs.iter_mut().flatten() {
            let mut dirty = slab.dirty & slab.free;
            slab.dirty = 0;
            while dirty != 0 {
                let slot = dirty.trailing_zeros() as usize;
                dirty &= dirty - 1;
                swept += 1;
                if len == 0 {
                    continue;
                }
                let start = slab.addr + slot * slot_len + guard;
                // SAFETY: `start..start + len` is the part of a free slot's
                // usable range below its top `kept` bytes, inside the
                // slab's mapping: the slot is free (its `free` bit is set),
                // so no coroutine runs on it. Its pages read as zeros
                // afterwards, which a fresh stack needs no better.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
                }
            }
        }
        self.dirty = 0;
        swept
    }
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: `addr, len` is exactly one slab mapping, none of whose
    // stacks is in use (every slot given back, or the owner gone).
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    debug_assert_eq!(r, 0, "munmap of a green stack slab failed");
}

impl Drop for Slabs {
    fn drop(&mut self) {
        // Some whenever a slab was mapped.
        let Some(len) = self.slab_len() else {
            return;
        };
        for slab in self.slabs.drain(..).flatten() {
            unmap(slab.addr, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Slabs {
        fn mapped(&self) -> usize {
            self.slabs.iter().flatten().count()
        }
    }

    /// Whether the byte at `addr` of this process can be read (without
    /// faulting: `process_vm_readv` reports `EFAULT`).
    fn readable(addr: usize) -> bool {
        let mut byte = 0u8;
        let local = libc::iovec {
            iov_base: std::ptr::from_mut(&mut byte).cast(),
            iov_len: 1,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: 1,
        };
        // SAFETY: reads one byte of this process into `byte`; a bad address
        // is reported as an error, never a fault.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        n == 1
    }

    /// Writes the whole usable range of `stack` (above its guard) and
    /// reads it back.
    fn fill(stack: &SlabStack, byte: u8) {
        let guard = page_size() * GUARD_PAGES;
        let (lo, hi) = (stack.limit().get() + guard, stack.base().get());
        let range = lo as *mut u8;
        // SAFETY: `lo..hi` is the stack's usable range, readable and
        // writable while it is out, and no coroutine runs on it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(range, hi - lo) };
        bytes.fill(byte);
        assert!(bytes.iter().all(|b| *b == byte));
    }

    #[test]
    fn stacks_are_usable_distinct_and_come_from_shared_slabs() {
        let mut slabs = Slabs::new(16 * 1024, 0);
        let stacks: Vec<SlabStack> = (0..PER_SLAB * 2 + 3)
            .map(|_| slabs.take().expect("a stack"))
            .collect();
        assert_eq!(slabs.mapped(), 3);
        for (i, s) in stacks.iter().enumerate() {
            assert_eq!(s.base().get() - s.limit().get(), 16 * 1024 + slabs.guard);
            assert_eq!(s.limit().get() % page_size(), 0);
            fill(s, i as u8);
        }
        let mut bases: Vec<usize> = stacks.iter().map(|s| s.base().get()).collect();
        bases.sort_unstable();
        bases.dedup();
        assert_eq!(bases.len(), stacks.len(), "every stack is its own range");
        for s in stacks {
            slabs.give(s, true);
        }
        assert_eq!(slabs.mapped(), 0, "with nothing to keep, empty slabs go");
    }

    /// Corosensei's `Stack` contract: `limit` counts the guard page, so
    /// that the stack's bounds (`limit..base`) are the whole slot, and the
    /// slots of a slab follow each other without gaps or overlap.
    #[test]
    fn a_stack_limit_includes_its_guard_page() {
        // Both ways of making guards: guard regions where the kernel has
        // them, `PROT_NONE` pages everywhere.
        for regions in [guard_regions(), false] {
            guards_of_both_kinds(regions);
        }
    }

    fn guards_of_both_kinds(regions: bool) {
        let mut slabs = Slabs::with_guards(16 * 1024, 0, regions);
        let a = slabs.take().expect("a stack");
        let b = slabs.take().expect("a stack");
        let slot = 16 * 1024 + slabs.guard;
        assert_eq!(a.base().get() - a.limit().get(), slot);
        assert_eq!(
            b.limit().get(),
            a.base().get(),
            "b's guard page is just above a"
        );
        // The guard pages cannot be read, the stack can.
        assert!(!readable(a.limit().get()), "a's guard");
        assert!(
            !readable(a.limit().get() + slabs.guard - 1),
            "a's guard, top"
        );
        assert!(readable(a.limit().get() + slabs.guard), "a's stack");
        assert!(!readable(b.limit().get()), "b's guard");
        // With guard regions, the slab stays one mapping.
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let mapping_of = |addr: usize| {
            maps.lines().position(|l| {
                let range = l.split(' ').next().unwrap_or("");
                let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
                let lo = usize::from_str_radix(lo, 16).unwrap_or(0);
                let hi = usize::from_str_radix(hi, 16).unwrap_or(0);
                lo <= addr && addr < hi
            })
        };
        let (guard, stack) = (mapping_of(a.limit().get()), mapping_of(b.base().get() - 1));
        assert!(guard.is_some() && stack.is_some(), "both mapped");
        assert_eq!(guard == stack, regions, "one mapping iff guard regions");
        slabs.give(a, true);
        slabs.give(b, true);
    }

    /// A stack size too large for a slab makes `take` fail, not panic
    /// or wrap around.
    #[test]
    fn a_stack_too_large_is_an_error() {
        for size in [usize::MAX, usize::MAX / 2, usize::MAX / PER_SLAB] {
            let mut slabs = Slabs::new(size, 0);
            let err = slabs.take().expect_err("no such stack");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{size}: {err}");
        }
    }

    /// Pages of `lo..hi` resident in memory (`mincore`).
    fn resident(lo: usize, hi: usize) -> usize {
        let page = page_size();
        let mut vec = vec![0u8; (hi - lo).div_ceil(page)];
        // SAFETY: `lo..hi` is page aligned and mapped (a stack of a live
        // slab); `vec` has one byte per page of it.
        let r = unsafe { libc::mincore(lo as *mut libc::c_void, hi - lo, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|b| *b & 1 != 0).count()
    }

    /// A stack given back keeps its pages until the sweep, which gives
    /// back those below its top `KEPT_PAGES` (no `madvise` per request);
    /// one taken again before the sweep is not swept under its new owner.
    #[test]
    fn a_deep_stack_s_pages_go_back_at_the_sweep_and_its_top_stays() {
        let page = page_size();
        let mut slabs = Slabs::new(256 * 1024, 1000);
        let a = slabs.take().expect("a stack");
        let (lo, hi) = (a.limit().get() + slabs.guard, a.base().get());
        fill(&a, 1);
        assert_eq!(resident(lo, hi), (hi - lo) / page, "all touched");
        slabs.give(a, true);
        assert!(slabs.dirty());
        assert_eq!(resident(lo, hi), (hi - lo) / page, "kept until the sweep");
        assert_eq!(slabs.sweep(), 1);
        assert!(!slabs.dirty());
        assert_eq!(resident(lo, hi), KEPT_PAGES, "only the top pages stay");
        // Taken again before a sweep: not the sweep's any more.
        let b = slabs.take().expect("a stack");
        assert_eq!(b.base().get(), hi, "the same slot");
        fill(&b, 2);
        slabs.give(b, true);
        let c = slabs.take().expect("a stack");
        assert!(!slabs.dirty(), "a slot taken again is no longer to sweep");
        assert_eq!(slabs.sweep(), 0);
        assert_eq!(resident(lo, hi), (hi - lo) / page, "in use: untouched");
        slabs.give(c, false);
        assert!(!slabs.dirty(), "no trim asked (a closing worker)");
    }

    #[test]
    fn a_given_back_stack_is_reused_lowest_slab_first() {
        let mut slabs = Slabs::new(16 * 1024, 1000);
        let stacks: Vec<SlabStack> = (0..=PER_SLAB)
            .map(|_| slabs.take().expect("a stack"))
            .collect();
        let first = stacks[0].base();
        let mut rest = stacks.into_iter();
        slabs.give(rest.next().expect("one"), true);
        let again = slabs.take().expect("a stack");
        assert_eq!(again.base(), first, "the free slot of the first slab");
        fill(&again, 7);
        slabs.give(again, false);
        for s in rest {
            slabs.give(s, false);
        }
        assert_eq!(slabs.mapped(), 2, "spare stacks up to `keep` stay mapped");
    }
}
