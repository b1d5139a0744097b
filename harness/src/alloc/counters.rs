//! Always-on heap counters: live bytes and blocks, total allocations, and peak.
//!
//! Each thread owns a cache-line-sized shard and updates it with plain loads and stores
//! (no `lock`-prefixed instruction, no shared cache line), so counting costs a few
//! nanoseconds and does not serialise threads. Readers sum the shards. A thread returns
//! its shard when it exits; its counts stay in the shard for the next owner. Threads
//! beyond the shard count share one overflow shard updated with atomic read-modify-writes.
//!
//! The peak needs a global view, which per-thread shards do not give for free: each
//! thread folds its net change into a global live counter every [`FLUSH_BYTES`], and the
//! peak is the maximum of that counter. It is therefore exact for a single thread up to
//! `FLUSH_BYTES` and, with `t` threads, off by at most `t × FLUSH_BYTES`.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// Net bytes a thread may change before it folds them into the global peak counter.
pub(crate) const FLUSH_BYTES: i64 = 16 << 10;

const OWNED_SHARDS: usize = 64;
const OVERFLOW: usize = OWNED_SHARDS;

#[repr(align(128))]
struct Shard {
    owned: AtomicBool,
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
    allocations: AtomicU64,
    frees: AtomicU64,
    unflushed: AtomicI64,
}

impl Shard {
    const fn new() -> Self {
        Self {
            owned: AtomicBool::new(false),
            allocated_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            unflushed: AtomicI64::new(0),
        }
    }
}

static SHARDS: [Shard; OWNED_SHARDS + 1] = [const { Shard::new() }; OWNED_SHARDS + 1];
static LIVE_FLUSHED: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

const UNASSIGNED: usize = usize::MAX;

thread_local! {
    // No destructor, so access is a plain TLS load that works even while the thread's
    // other thread-locals are being destroyed.
    static SHARD_INDEX: Cell<usize> = const { Cell::new(UNASSIGNED) };
    static SHARD_RETURN: ShardReturn = const { ShardReturn };
}

/// Hands the thread's shard back when the thread exits.
struct ShardReturn;

impl Drop for ShardReturn {
    fn drop(&mut self) {
        let index = SHARD_INDEX.with(|i| i.replace(OVERFLOW));
        if index < OWNED_SHARDS {
            // The residue must reach the global counter, or the peak drifts.
            flush(&SHARDS[index]);
            SHARDS[index]
                .owned
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

#[cold]
fn claim_shard() -> usize {
    let claimed = (0..OWNED_SHARDS).find(|&i| {
        SHARDS[i]
            .owned
            .compare_exchange(false, true, std::sync::atomic::Ordering::Acquire, Relaxed)
            .is_ok()
    });
    // Registering the return may allocate; those allocations count in the overflow shard.
    SHARD_INDEX.with(|c| c.set(OVERFLOW));
    let index = match claimed {
        // Registering the return needs the thread's destructor list; if that is no longer
        // possible (the thread is exiting) give the shard back and share the overflow one.
        Some(i) if SHARD_RETURN.try_with(|_| ()).is_ok() => i,
        Some(i) => {
            SHARDS[i]
                .owned
                .store(false, std::sync::atomic::Ordering::Release);
            OVERFLOW
        }
        None => OVERFLOW,
    };
    SHARD_INDEX.with(|c| c.set(index));
    index
}

#[inline(always)]
fn shard_index() -> usize {
    let index = SHARD_INDEX.with(Cell::get);
    if index == UNASSIGNED {
        claim_shard()
    } else {
        index
    }
}

#[inline(always)]
fn bump(counter: &AtomicU64, by: u64, owned: bool) {
    if owned {
        // The owning thread is the only writer: a plain load and store suffice (Release
        // orders the shard's counters for readers; a plain `mov` on x86).
        counter.store(counter.load(Relaxed).wrapping_add(by), Release);
    } else {
        counter.fetch_add(by, Relaxed);
    }
}

#[inline(always)]
fn note_change(shard: &Shard, delta: i64, owned: bool) {
    let unflushed = if owned {
        let v = shard.unflushed.load(Relaxed) + delta;
        shard.unflushed.store(v, Relaxed);
        v
    } else {
        shard.unflushed.fetch_add(delta, Relaxed) + delta
    };
    if !(-FLUSH_BYTES..FLUSH_BYTES).contains(&unflushed) {
        flush(shard);
    }
}

/// Folds the shard's net change into the global live counter. `swap` makes two threads
/// sharing the overflow shard flush disjoint amounts.
#[cold]
fn flush(shard: &Shard) {
    let amount = shard.unflushed.swap(0, Relaxed);
    let live = LIVE_FLUSHED.fetch_add(amount, Relaxed) + amount;
    if amount > 0 {
        PEAK.fetch_max(live, Relaxed);
        // Not only when PEAK moves: samples raise PEAK to the exact live bytes too. The
        // flushed total lags the exact one and may even dip below zero.
        if let Ok(live) = u64::try_from(live) {
            super::peak::on_new_high(live);
        }
    }
}

/// Counts an allocation of `size` bytes.
#[inline(always)]
pub(crate) fn on_alloc(size: usize) {
    let index = shard_index();
    let shard = &SHARDS[index];
    let owned = index != OVERFLOW;
    bump(&shard.allocated_bytes, size as u64, owned);
    bump(&shard.allocations, 1, owned);
    note_change(shard, size as i64, owned);
}

/// Counts a deallocation of `size` bytes.
#[inline(always)]
pub(crate) fn on_dealloc(size: usize) {
    let index = shard_index();
    let shard = &SHARDS[index];
    let owned = index != OVERFLOW;
    bump(&shard.freed_bytes, size as u64, owned);
    bump(&shard.frees, 1, owned);
    note_change(shard, -(size as i64), owned);
}

/// Counts a reallocation from `old` to `new` bytes: one allocation, live blocks unchanged.
#[inline(always)]
pub(crate) fn on_realloc(old: usize, new: usize) {
    let index = shard_index();
    let shard = &SHARDS[index];
    let owned = index != OVERFLOW;
    bump(&shard.allocated_bytes, new as u64, owned);
    bump(&shard.freed_bytes, old as u64, owned);
    bump(&shard.allocations, 1, owned);
    bump(&shard.frees, 1, owned);
    note_change(shard, new as i64 - old as i64, owned);
}

/// A snapshot of the Rust heap counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes currently allocated through the tracking allocator.
    pub live_bytes: u64,
    /// Blocks currently allocated through the tracking allocator.
    pub live_blocks: u64,
    /// Allocations made since the process started (a reallocation counts once).
    pub allocations: u64,
    /// Highest live bytes since the scenario's baseline (see the module docs for its
    /// precision across threads).
    pub peak_bytes: u64,
}

/// Reads the counters of every thread.
pub fn heap_stats() -> HeapStats {
    // Frees first, then allocations: a block allocated and freed while the shards are
    // being read then counts as live (a brief overestimate) instead of making the
    // difference wrap below zero.
    let (mut freed, mut frees) = (0u64, 0u64);
    for shard in &SHARDS {
        freed = freed.wrapping_add(shard.freed_bytes.load(Acquire));
        frees = frees.wrapping_add(shard.frees.load(Acquire));
    }
    let (mut allocated, mut allocations) = (0u64, 0u64);
    for shard in &SHARDS {
        allocated = allocated.wrapping_add(shard.allocated_bytes.load(Acquire));
        allocations = allocations.wrapping_add(shard.allocations.load(Acquire));
    }
    let live_bytes = allocated.saturating_sub(freed);
    let peak = PEAK
        .fetch_max(live_bytes as i64, Relaxed)
        .max(live_bytes as i64);
    HeapStats {
        live_bytes,
        live_blocks: allocations.saturating_sub(frees),
        allocations,
        peak_bytes: peak.max(0) as u64,
    }
}

/// Starts a new peak window at the current live bytes.
pub(crate) fn reset_peak() {
    PEAK.store(heap_stats().live_bytes as i64, Relaxed);
}
