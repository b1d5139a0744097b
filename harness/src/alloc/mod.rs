//! [`TrackingAlloc`]: the global allocator that counts every allocation and, during
//! measured iterations, remembers where each live block came from.
//!
//! Fast path (always on): count the call in this thread's counters, compare its net
//! bytes with one bound, and jump to the inner allocator: no lock, no allocation, no
//! backtrace, no call beyond the inner allocator's, and no stack frame (on x86-64 Linux,
//! where assembly reaches the counters; elsewhere std's thread-local getter may be a call
//! of its own where the allocator is inlined). Past the bound, a slow path, out of line,
//! does the rest: a flush of the counters, or, while this thread's mode copy is not zero
//! (which sets the bound so that every call crosses it), the site bookkeeping. While sites are recorded, most slow-path calls have nothing to
//! settle or finish (no flush due, no C hooks, counters registered), and take a lane that
//! keeps few registers: an allocation calls the inner allocator and the site bookkeeping
//! only (unless stacks are unwound by DWARF), and the free of a block that can only be in
//! the shadow (no peak armed) clears its tag and ends in a tail call to the inner free.
//!
//! ```text
//!              alloc                                dealloc
//!   count; bound crossed? no ─▶ inner.alloc   count; bound crossed? no ─▶ inner.dealloc
//!   yes: lane? inner.alloc ─▶ sites::on_alloc yes: lane? clear the tag ─▶ inner.dealloc
//!   else: inner.alloc (marked if C hooks),    else: table in use? ─▶ sites::on_dealloc
//!        recording? ─▶ sites::on_alloc             flush if due, inner.dealloc
//!        (stack → site id → shadow or
//!         live table), flush if due
//! ```

#[cfg(feature = "jemalloc")]
pub(crate) mod c_heap;
mod counters;
pub(crate) mod peak;
mod raw;
mod shadow;
pub(crate) mod sites;
pub(crate) mod stack;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{
    AtomicU8,
    Ordering::{Acquire, SeqCst},
};

use counters::Change;
pub(crate) use counters::reset_peak;
pub use counters::{HeapStats, heap_stats};

/// The allocator that `TrackingAlloc` wraps by default: jemalloc with the `jemalloc`
/// feature (the default), otherwise the system allocator.
#[cfg(feature = "jemalloc")]
pub type DefaultAlloc = tikv_jemallocator::Jemalloc;
/// The allocator that `TrackingAlloc` wraps by default: jemalloc with the `jemalloc`
/// feature (the default), otherwise the system allocator.
#[cfg(not(feature = "jemalloc"))]
pub type DefaultAlloc = std::alloc::System;

/// A global allocator that counts live bytes, blocks, allocations and the peak, and
/// records allocation sites while leakgate measures a scenario.
///
/// Install it with [`global_allocator!`](crate::global_allocator), or by hand:
///
/// ```
/// #[global_allocator]
/// static ALLOC: leakgate::TrackingAlloc<std::alloc::System> =
///     leakgate::TrackingAlloc::new(std::alloc::System);
/// ```
pub struct TrackingAlloc<A = DefaultAlloc> {
    inner: A,
}

impl<A> TrackingAlloc<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments and
// returns its result unchanged; the bookkeeping never touches the blocks themselves and
// never allocates through this allocator (it uses its own mappings, or runs under the
// reentrancy guard).
unsafe impl<A: GlobalAlloc> GlobalAlloc for TrackingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.alloc_maybe_zeroed::<false>(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.alloc_maybe_zeroed::<true>(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counters::count(Change::Free(layout.size())) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { Self::dealloc_slow(ptr, layout.size(), layout.align(), self) };
        }
        // SAFETY: forwarded with the caller's guarantees. A tail call: nothing is left
        // to do after the free.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let change = Change::Realloc {
            old: layout.size(),
            new: new_size,
        };
        if counters::count(change) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe {
                Self::realloc_slow(ptr, layout.size(), layout.align(), new_size, self)
            };
        }
        // SAFETY: forwarded with the caller's guarantees. Counted before, so a tail call
        // (see `alloc_maybe_zeroed`).
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// The fast path, and the slow paths out of line: each call reaches the inner allocator
/// or a slow path by a tail call, so it saves no register, and a captured stack has no
/// frame more.
///
/// A call takes the slow path when `counters::count` says so: its thread's mode copy
/// is not zero (sites are recorded, C hooks are installed, or its counters are not
/// registered), or a flush is due.
///
/// The slow paths take the caller's arguments in the order `__rust_alloc`,
/// `__rust_dealloc` and `__rust_realloc` get them (pointer, size, alignment, new size),
/// the allocator last, so the fast path reaches either side without moving a register:
/// taking `&self` and a `Layout` first cost 2 to 4 moves a call.
impl<A: GlobalAlloc> TrackingAlloc<A> {
    /// `alloc` or `alloc_zeroed`. The fast path counts the block before the inner
    /// allocator runs, so that it ends in a tail call and keeps nothing across it. The
    /// slow path takes back a failed allocation, and every call of twice
    /// [`counters::FLUSH_BYTES`] or more takes the slow path, as it crosses the flush
    /// bound. A smaller failed allocation or reallocation on the fast path stays counted:
    /// jemalloc fails one only when the system is out of memory, and Rust then aborts
    /// unless the caller used `try_reserve`.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline(always)]
    unsafe fn alloc_maybe_zeroed<const ZEROED: bool>(&self, layout: Layout) -> *mut u8 {
        if counters::count(Change::Alloc(layout.size())) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { Self::alloc_slow::<ZEROED>(layout.size(), layout.align(), self) };
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner_alloc::<ZEROED>(layout) }
    }

    /// The inner allocator's `alloc`, or `alloc_zeroed` if `ZEROED`.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline(always)]
    unsafe fn inner_alloc<const ZEROED: bool>(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if ZEROED {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    /// Allocates, zeroed if `ZEROED`, and records the block's site while recording.
    ///
    /// # Safety
    /// `size` and `align` are a valid `Layout`'s (the caller's, taken apart); otherwise
    /// as [`GlobalAlloc::alloc`].
    #[inline(never)]
    unsafe fn alloc_slow<const ZEROED: bool>(size: usize, align: usize, this: &Self) -> *mut u8 {
        // SAFETY: a valid layout's size and alignment (see `# Safety`).
        let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
        // Stacks are captured from this frame's record, whichever path records the
        // block, so that one call site has one stack: the lane and the settled path
        // leave different frames below it. So this frame stays live until the block is
        // recorded: neither path is reached by a tail call.
        let entry_frame = stack::frame_pointer();
        // Recording's own lane, with nothing to settle or finish.
        if let Some(mode) = counters::quiet_mode()
            && mode & (RECORDING | C_HOOKS | UNWINDING) == RECORDING
        {
            // SAFETY: forwarded with the caller's guarantees.
            let ptr = unsafe { this.inner_alloc::<ZEROED>(layout) };
            if ptr.is_null() {
                failed_in_lane(mode, Change::Alloc(layout.size()));
            } else {
                sites::on_alloc(ptr, layout.size(), entry_frame);
            }
            return ptr;
        }
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { this.alloc_settled::<ZEROED>(layout, entry_frame) };
        // Used after the call, so the call is not a tail call (see above).
        std::hint::black_box(ptr)
    }

    /// [`alloc_slow`](Self::alloc_slow) outside its lane; `entry_frame` is its frame pointer.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline(never)]
    unsafe fn alloc_settled<const ZEROED: bool>(
        &self,
        layout: Layout,
        entry_frame: usize,
    ) -> *mut u8 {
        let change = Change::Alloc(layout.size());
        let mode = counters::settle(change);
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = rust_call(mode, || unsafe { self.inner_alloc::<ZEROED>(layout) });
        // Sites first: a flush may copy the per-site bytes at a new high, which must
        // already include this block.
        if !ptr.is_null() && mode & RECORDING != 0 {
            sites::on_alloc(ptr, layout.size(), entry_frame);
        }
        counters::finish(mode, change, ptr.is_null());
        ptr
    }

    /// # Safety
    /// `size` and `align` are a valid `Layout`'s (the caller's, taken apart); otherwise
    /// as [`GlobalAlloc::dealloc`].
    #[inline(never)]
    unsafe fn dealloc_slow(ptr: *mut u8, size: usize, align: usize, this: &Self) {
        // SAFETY: a valid layout's size and alignment (see `# Safety`).
        let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
        // The lane of a small block's free while the table is in use: clear its tag and
        // free it, with nothing to settle or finish, so no register to save.
        if let Some(mode) = counters::quiet_mode()
            && mode & (TABLE_IN_USE | C_HOOKS) == TABLE_IN_USE
            && sites::forget_small(ptr, layout.size())
        {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { this.inner.dealloc(ptr, layout) };
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { this.dealloc_settled(ptr, layout) }
    }

    /// [`dealloc_slow`](Self::dealloc_slow) outside its lane.
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`].
    #[inline(never)]
    unsafe fn dealloc_settled(&self, ptr: *mut u8, layout: Layout) {
        let change = Change::Free(layout.size());
        let mode = counters::settle(change);
        // The entry goes before the block: once freed, another thread may get the same
        // address and enter it.
        if mode & TABLE_IN_USE != 0 {
            sites::on_dealloc(ptr, layout.size());
        }
        counters::finish(mode, change, false);
        // SAFETY: forwarded with the caller's guarantees.
        rust_call(mode, || unsafe { self.inner.dealloc(ptr, layout) })
    }

    /// # Safety
    /// `size` and `align` are a valid `Layout`'s (the caller's, taken apart); otherwise
    /// as [`GlobalAlloc::realloc`].
    #[inline(never)]
    unsafe fn realloc_slow(
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
        this: &Self,
    ) -> *mut u8 {
        // SAFETY: a valid layout's size and alignment (see `# Safety`).
        let layout = unsafe { Layout::from_size_align_unchecked(size, align) };
        let change = Change::Realloc {
            old: layout.size(),
            new: new_size,
        };
        // As in `alloc_slow`: the stack is captured from this frame's record.
        let entry_frame = stack::frame_pointer();
        let mode = counters::settle(change);
        // As in `dealloc_settled`: the old entry goes before `realloc` may free the old
        // block.
        let moved = (mode & TABLE_IN_USE != 0).then(|| sites::take(ptr, layout.size()));
        // SAFETY: forwarded with the caller's guarantees.
        let new = rust_call(mode, || unsafe {
            this.inner.realloc(ptr, layout, new_size)
        });
        if let Some(taken) = moved {
            if new.is_null() {
                // The old block is still live and still tagged.
                sites::restore(taken);
            } else {
                sites::on_realloc(taken, new, new_size, entry_frame);
            }
        }
        counters::finish(mode, change, new.is_null());
        new
    }
}

/// Takes back the change of a call that failed in a slow-path lane. Out of line, so the
/// lane keeps few registers.
#[cold]
#[inline(never)]
fn failed_in_lane(mode: u8, change: Change) {
    counters::finish(mode, change, true);
}

/// What the allocator does beyond counting, as bits of one byte. Each thread keeps a
/// copy beside its counters ([`counters::thread_mode`]), and while the copy is not zero
/// its calls take the slow path.
static MODE: AtomicU8 = AtomicU8::new(0);
/// Sites are being recorded: new blocks are tagged ([`sites::start`] to [`sites::stop`]).
pub(crate) const RECORDING: u8 = 1;
/// Tagged blocks may be live: frees look for their entries ([`sites::start`] to
/// [`sites::clear`]).
pub(crate) const TABLE_IN_USE: u8 = 2;
/// jemalloc's hooks are installed ([`c_heap`]): Rust's own calls are marked.
pub(crate) const C_HOOKS: u8 = 4;
/// Sites are captured by DWARF unwinding, which sees every frame, the allocator's too:
/// allocations keep off the slow path's lane, so that every stack has the same
/// allocator frames ([`sites::start`] to [`sites::stop`]).
pub(crate) const UNWINDING: u8 = 8;

/// The current mode bits.
#[inline(always)]
pub(crate) fn mode() -> u8 {
    // Acquire: threads that read the mode here (new ones, leaving ones) see the copies
    // stored before it, as the others do (see `counters::copy_mode_to_threads`).
    MODE.load(Acquire)
}

/// Turns the `bits` of the mode on or off, in every thread's copy too.
pub(crate) fn set_mode(bits: u8, on: bool) {
    if on {
        MODE.fetch_or(bits, SeqCst);
    } else {
        MODE.fetch_and(!bits, SeqCst);
    }
    counters::copy_mode_to_threads();
}

/// Runs the inner allocator's `call`, marked as Rust's while jemalloc's hooks are
/// installed, so they leave the block to this allocator's bookkeeping.
#[inline(always)]
fn rust_call<T>(mode: u8, call: impl FnOnce() -> T) -> T {
    #[cfg(feature = "jemalloc")]
    if mode & C_HOOKS != 0 {
        return c_heap::rust_call(call);
    }
    #[cfg(not(feature = "jemalloc"))]
    let _ = mode;
    call()
}

thread_local! {
    static INSIDE_TRACKER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside leakgate's own bookkeeping (capturing a stack,
/// say). Reads a const-initialised thread-local: safe in a signal handler.
pub(crate) fn inside_tracker() -> bool {
    INSIDE_TRACKER.with(Cell::get)
}

/// Marks the current thread as busy inside leakgate's own bookkeeping, so allocations it
/// makes (symbolizing, collecting survivors, unwinding) are counted but never recorded as
/// sites, and recording never recurses into itself. Restores the previous state on drop,
/// also while unwinding.
pub(crate) struct ReentrancyGuard(());

impl ReentrancyGuard {
    /// Enters, or returns `None` if this thread is already inside.
    #[inline(always)]
    pub(crate) fn enter() -> Option<Self> {
        // `then`, not `then_some`: a guard built for nothing would clear the flag as it
        // is dropped, and the outer guard's protection with it.
        INSIDE_TRACKER
            .with(|inside| !inside.replace(true))
            .then(|| Self(()))
    }
}

impl Drop for ReentrancyGuard {
    #[inline(always)]
    fn drop(&mut self) {
        INSIDE_TRACKER.with(|inside| inside.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path counts before the inner allocator runs: a call that fails must be
    /// taken back. Run on a thread of its own, so that only this test's calls count in
    /// its counters.
    #[test]
    fn a_failed_allocation_or_reallocation_is_not_counted() {
        let _counters = counters::TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::thread::spawn(|| {
            let alloc = TrackingAlloc::new(std::alloc::System);
            let small = Layout::new::<u64>();
            // More than the system allocator can give, so it fails.
            let huge = Layout::from_size_align(isize::MAX as usize / 2, 8).expect("valid");
            // SAFETY: `small` has a non-zero size; every block is freed with its layout.
            unsafe {
                // The thread's first call registers its counters.
                alloc.dealloc(alloc.alloc(small), small);
                assert_eq!(counters::thread_mode(), 0, "the fast path is not in use");
                let block = alloc.alloc(small);
                let before = counters::this_thread_counts();
                assert!(alloc.alloc(huge).is_null());
                assert!(alloc.alloc_zeroed(huge).is_null());
                assert!(alloc.realloc(block, small, huge.size()).is_null());
                assert_eq!(counters::this_thread_counts(), before);
                alloc.dealloc(block, small);
            }
        })
        .join()
        .expect("the allocating thread panicked");
    }

    /// An inner allocator that has no memory to give.
    struct Exhausted;

    // SAFETY: it never returns a block, so there is none to misuse.
    unsafe impl GlobalAlloc for Exhausted {
        unsafe fn alloc(&self, _: Layout) -> *mut u8 {
            std::ptr::null_mut()
        }

        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {
            unreachable!("no block was given");
        }
    }

    /// While recording, a small allocation takes the slow path's lane, which skips
    /// settling and finishing: it must still take back a call that fails.
    #[test]
    fn a_failed_allocation_while_recording_is_not_counted() {
        let _counters = counters::TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::thread::spawn(|| {
            let alloc = TrackingAlloc::new(Exhausted);
            let small = Layout::new::<u64>();
            // SAFETY: `small` has a non-zero size; no block is returned to free.
            unsafe {
                // The thread's first call registers its counters.
                assert!(alloc.alloc(small).is_null());
                set_mode(RECORDING, true);
                let in_lane = counters::quiet_mode();
                let before = counters::this_thread_counts();
                let results = [alloc.alloc(small), alloc.alloc_zeroed(small)];
                let after = counters::this_thread_counts();
                set_mode(RECORDING, false);
                assert_eq!(in_lane, Some(RECORDING), "the calls take the lane");
                assert_eq!(results, [std::ptr::null_mut(); 2]);
                assert_eq!(after, before);
            }
        })
        .join()
        .expect("the allocating thread panicked");
    }

    #[test]
    fn a_nested_guard_leaves_the_outer_one_in_force() {
        let outer = ReentrancyGuard::enter();
        assert!(outer.is_some());
        assert!(ReentrancyGuard::enter().is_none());
        assert!(inside_tracker(), "the refused inner guard cleared the flag");
        drop(outer);
        assert!(!inside_tracker());
    }
}
