//! This thread's counters in a `thread_local!`, where `build.rs` does not set
//! `leakgate_asm_tls`: every target but 64-bit x86-64 Linux, Miri, and builds with
//! `--cfg leakgate_portable_tls`.
//!
//! On x86-64 Linux its fast path is eight instructions, plus a call to std's getter where
//! a release build with several codegen units inlines the allocator into a unit that
//! does not hold the getter: see `asm_slot.rs`, which avoids both.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use super::{Change, ThreadCounters, add};

thread_local! {
    // No destructor, so access is a plain thread-local load, without a state check, that
    // works even while the thread's other thread-locals are being destroyed.
    static THIS_THREAD: ThreadCounters = const { ThreadCounters::new() };
}

/// Runs `f` on this thread's counters.
#[inline(always)]
pub(super) fn this_thread<R>(f: impl FnOnce(&ThreadCounters) -> R) -> R {
    THIS_THREAD.with(f)
}

/// Applies `change` to this thread's counters; returns whether the call must take the
/// slow path.
#[inline(always)]
pub(super) fn count(change: Change) -> bool {
    // Acquire on the bounds: a thread that finds them set for the slow path also sees
    // the mode copy stored before them.
    THIS_THREAD.with(|counters| match change {
        Change::Alloc(size) => {
            bump(&counters.allocations);
            add(&counters.net_bytes, size as i64) >= counters.slow_at_or_above.load(Acquire)
        }
        Change::Free(size) => {
            bump(&counters.frees);
            add(&counters.net_bytes, -(size as i64)) < counters.slow_below.load(Acquire)
        }
        Change::Realloc { old, new } => {
            // One allocation and one free: live blocks unchanged.
            bump(&counters.allocations);
            bump(&counters.frees);
            let net_bytes = add(&counters.net_bytes, new as i64 - old as i64);
            net_bytes >= counters.slow_at_or_above.load(Acquire)
                || net_bytes < counters.slow_below.load(Acquire)
        }
    })
}

/// Adds one to a counter only its owning thread writes: a plain load and store suffice
/// (Release orders the counters for readers; a plain `mov` on x86).
#[inline(always)]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed).wrapping_add(1), Release);
}
