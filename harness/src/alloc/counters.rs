//! Always-on heap counters: live bytes and blocks, total allocations, and peak.
//!
//! Each thread owns a cache-line-sized shard and updates it with plain loads and stores
//! (no `lock`-prefixed instruction, no shared cache line), so counting costs a few
//! nanoseconds and does not serialise threads. A call updates two words: the shard's net
//! bytes and its count of allocations or of frees; each word more measurably slows a
//! heap-heavy loop. Readers sum the shards. A thread returns
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
    /// Bytes allocated less bytes freed by the shard's threads: negative when they freed
    /// blocks that other threads allocated.
    net_bytes: AtomicI64,
    allocations: AtomicU64,
    frees: AtomicU64,
    /// `net_bytes` when last folded into [`LIVE_FLUSHED`].
    flushed_bytes: AtomicI64,
}

impl Shard {
    const fn new() -> Self {
        Self {
            owned: AtomicBool::new(false),
            net_bytes: AtomicI64::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            flushed_bytes: AtomicI64::new(0),
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

/// One allocator call's change to the counters.
#[derive(Clone, Copy)]
enum Change {
    Alloc(usize),
    Free(usize),
    Realloc { old: usize, new: usize },
}

/// Applies `change` to this thread's shard. One comparison serves the common case: an
/// owned shard's index is below `OWNED_SHARDS`; unassigned and overflow are not.
#[inline(always)]
fn count(change: Change) {
    let index = SHARD_INDEX.with(Cell::get);
    if index < OWNED_SHARDS {
        apply(&SHARDS[index], true, change);
    } else {
        let index = unowned_shard(index);
        apply(&SHARDS[index], index != OVERFLOW, change);
    }
}

/// The shard of a thread that owns none: a new one, or the overflow shard.
#[cold]
#[inline(never)]
fn unowned_shard(index: usize) -> usize {
    if index == UNASSIGNED {
        claim_shard()
    } else {
        index
    }
}

#[inline(always)]
fn apply(shard: &Shard, owned: bool, change: Change) {
    let net_bytes = match change {
        Change::Alloc(size) => {
            bump(&shard.allocations, 1, owned);
            add(&shard.net_bytes, size as i64, owned)
        }
        Change::Free(size) => {
            bump(&shard.frees, 1, owned);
            add(&shard.net_bytes, -(size as i64), owned)
        }
        Change::Realloc { old, new } => {
            // One allocation and one free: live blocks unchanged.
            bump(&shard.allocations, 1, owned);
            bump(&shard.frees, 1, owned);
            add(&shard.net_bytes, new as i64 - old as i64, owned)
        }
    };
    let unflushed = net_bytes.wrapping_sub(shard.flushed_bytes.load(Relaxed));
    if !(-FLUSH_BYTES..FLUSH_BYTES).contains(&unflushed) {
        flush(shard);
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

/// Adds `delta` to `counter` as [`bump`] does, and returns the new value.
#[inline(always)]
fn add(counter: &AtomicI64, delta: i64, owned: bool) -> i64 {
    if owned {
        let value = counter.load(Relaxed).wrapping_add(delta);
        counter.store(value, Release);
        value
    } else {
        counter.fetch_add(delta, Relaxed).wrapping_add(delta)
    }
}

/// Folds the shard's net change since the last flush into the global live counter.
/// `swap` makes two threads sharing the overflow shard fold amounts that add up to the
/// shard's change, whichever reads first.
#[cold]
fn flush(shard: &Shard) {
    let net_bytes = shard.net_bytes.load(Relaxed);
    let amount = net_bytes.wrapping_sub(shard.flushed_bytes.swap(net_bytes, Relaxed));
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
    count(Change::Alloc(size));
}

/// Counts a deallocation of `size` bytes.
#[inline(always)]
pub(crate) fn on_dealloc(size: usize) {
    count(Change::Free(size));
}

/// Counts a reallocation from `old` to `new` bytes: one allocation, live blocks unchanged.
#[inline(always)]
pub(crate) fn on_realloc(old: usize, new: usize) {
    count(Change::Realloc { old, new });
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
    // difference wrap below zero. Net bytes may be caught between two threads' shards,
    // either way, and read as zero when that makes them negative.
    let frees = SHARDS.iter().fold(0u64, |sum, shard| {
        sum.wrapping_add(shard.frees.load(Acquire))
    });
    let (mut net_bytes, mut allocations) = (0i64, 0u64);
    for shard in &SHARDS {
        net_bytes = net_bytes.wrapping_add(shard.net_bytes.load(Acquire));
        allocations = allocations.wrapping_add(shard.allocations.load(Acquire));
    }
    let live_bytes = net_bytes.max(0) as u64;
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
