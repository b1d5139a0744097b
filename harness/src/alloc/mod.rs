//! [`TrackingAlloc`]: the global allocator that counts every allocation and, during
//! measured iterations, remembers where each live block came from.
//!
//! Hot path (always on): forward to the inner allocator, then update this thread's
//! counter shard: no lock, no allocation, no backtrace. One relaxed load of a read-mostly
//! mode byte decides whether site bookkeeping is needed at all.
//!
//! ```text
//!              alloc                          dealloc
//!   inner.alloc ─▶ counters::on_alloc    counters::on_dealloc
//!   recording? ─▶ sites::on_alloc        table in use? ─▶ sites::on_dealloc (remove)
//!                  (stack → site id →    inner.dealloc
//!                   shadow or live table)
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
    Ordering::{Relaxed, SeqCst},
};

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
        let mode = mode();
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = rust_call(mode, || unsafe { self.inner.alloc(layout) });
        allocated(mode, ptr, layout.size())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let mode = mode();
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = rust_call(mode, || unsafe { self.inner.alloc_zeroed(layout) });
        allocated(mode, ptr, layout.size())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mode = mode();
        counters::on_dealloc(layout.size());
        // The entry goes before the block: once freed, another thread may get the same
        // address and enter it.
        if mode & TABLE_IN_USE != 0 {
            sites::on_dealloc(ptr, layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        rust_call(mode, || unsafe { self.inner.dealloc(ptr, layout) })
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mode = mode();
        // As in `dealloc`: the old entry goes before `realloc` may free the old block.
        let moved = (mode & TABLE_IN_USE != 0).then(|| sites::take(ptr, layout.size()));
        // SAFETY: forwarded with the caller's guarantees.
        let new = rust_call(mode, || unsafe {
            self.inner.realloc(ptr, layout, new_size)
        });
        if new.is_null() {
            // The old block is still live and still tagged.
            if let Some(entry) = moved {
                sites::restore(entry);
            }
        } else {
            if let Some(entry) = moved {
                sites::on_realloc(entry, new, new_size);
            }
            counters::on_realloc(layout.size(), new_size);
        }
        new
    }
}

/// What the allocator does beyond counting, as bits of one byte, so that each call
/// tests them all with one load.
static MODE: AtomicU8 = AtomicU8::new(0);
/// Sites are being recorded: new blocks are tagged ([`sites::start`] to [`sites::stop`]).
pub(crate) const RECORDING: u8 = 1;
/// Tagged blocks may be live: frees look for their entries ([`sites::start`] to
/// [`sites::clear`]).
pub(crate) const TABLE_IN_USE: u8 = 2;
/// jemalloc's hooks are installed ([`c_heap`]): Rust's own calls are marked.
pub(crate) const C_HOOKS: u8 = 4;

/// The current mode bits.
#[inline(always)]
pub(crate) fn mode() -> u8 {
    MODE.load(Relaxed)
}

/// Turns the `bits` of the mode on or off.
pub(crate) fn set_mode(bits: u8, on: bool) {
    if on {
        MODE.fetch_or(bits, SeqCst);
    } else {
        MODE.fetch_and(!bits, SeqCst);
    }
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

/// Bookkeeping after a successful allocation of `size` bytes at `ptr`.
#[inline(always)]
fn allocated(mode: u8, ptr: *mut u8, size: usize) -> *mut u8 {
    if !ptr.is_null() {
        // Sites first: counting may copy the per-site bytes at a new high, which must
        // already include this block.
        if mode & RECORDING != 0 {
            sites::on_alloc(ptr, size);
        }
        counters::on_alloc(size);
    }
    ptr
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
