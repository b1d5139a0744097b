//! Always-on heap counters: live bytes and blocks, total allocations, and peak.
//!
//! Each thread counts in its own thread-local [`ThreadCounters`] with plain loads and
//! stores: no `lock`-prefixed instruction, no shared cache line, and no index to look up,
//! so counting costs a few instructions. A call updates two words, the thread's net
//! bytes and its count of allocations or of frees, and compares the net bytes with one
//! bound: past it, the call takes the slow path. The bound does double duty. It is where
//! the thread's next flush is due (see below), and while the thread's copy of the
//! allocator's mode is not zero (sites are recorded, C hooks are installed, or the thread
//! is not registered) it is set so that every call crosses it. So a call that only counts
//! tests nothing else: no mode byte, no second branch.
//!
//! A call counts before the inner allocator runs, so that the fast path ends in a tail
//! call; the slow path takes the change back if the call fails ([`finish`]).
//!
//! Readers sum the threads' counters: a thread links its block into a registry on its
//! first call and, when it exits, unlinks it and folds its counts into shared counters.
//! The call that registers a thread counts in its own counters, linked with them; calls
//! it makes while registering or after it has left (registering its exit hook may
//! allocate, and so may other threads' exit hooks) are counted in the shared counters
//! with atomic read-modify-writes.
//!
//! The peak needs a global view, which per-thread counters do not give for free: each
//! thread folds its net change into a global live counter every [`FLUSH_BYTES`], and the
//! peak is the maximum of that counter. It is therefore exact for a single thread up to
//! `FLUSH_BYTES` and, with `t` threads, off by at most `t × FLUSH_BYTES`.

use std::sync::atomic::{
    AtomicI64, AtomicPtr, AtomicU8, AtomicU64,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
    fence,
};

use super::raw::SpinLock;

/// Net bytes a thread may change before it folds them into the global peak counter.
pub(crate) const FLUSH_BYTES: i64 = 16 << 10;

/// A bit of a thread's mode copy: its counters are not registered yet, so its next call
/// registers them. Like the mode's own bits, it sends calls down the slow path.
const UNREGISTERED: u8 = 0x80;
/// A bit of a thread's mode copy: the thread counts in [`SHARED`] (it is registering, or
/// it has left the registry on its way out).
const COUNTS_SHARED: u8 = 0x40;

/// One thread's counters, in its thread-local storage. The owning thread is their only
/// writer, apart from the mode copy and the bounds, which [`copy_mode_to_threads`] writes
/// too. One cache line holds them all. `repr(C)`: on x86-64 Linux the fast path reaches
/// the fields at fixed offsets, and the thread-local's initial image is written out
/// field by field (`counters/asm_slot.rs`).
#[repr(C, align(64))]
struct ThreadCounters {
    /// Bytes allocated less bytes freed by this thread: negative when it freed blocks
    /// that other threads allocated.
    net_bytes: AtomicI64,
    allocations: AtomicU64,
    frees: AtomicU64,
    /// An allocation that brings `net_bytes` this high takes the slow path: `flushed`
    /// plus [`FLUSH_BYTES`], or `i64::MIN` (every allocation) while `mode` is not zero.
    /// Two bounds, so each call compares once, against the one it can cross.
    slow_at_or_above: AtomicI64,
    /// A free that brings `net_bytes` below this takes the slow path: `flushed` less
    /// [`FLUSH_BYTES`], or `i64::MAX` while `mode` is not zero.
    slow_below: AtomicI64,
    /// `net_bytes` when last folded into [`LIVE_FLUSHED`].
    flushed: AtomicI64,
    /// The next registered thread's counters: the registry's list, under its lock.
    next: AtomicPtr<ThreadCounters>,
    /// The allocator's mode bits, plus [`UNREGISTERED`] or [`COUNTS_SHARED`]: zero when
    /// a call only needs to count, in these counters.
    mode: AtomicU8,
}

impl ThreadCounters {
    const fn new() -> Self {
        Self {
            mode: AtomicU8::new(UNREGISTERED),
            net_bytes: AtomicI64::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            slow_at_or_above: AtomicI64::new(i64::MIN),
            slow_below: AtomicI64::new(i64::MAX),
            flushed: AtomicI64::new(0),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Takes back `change`, applied by a call that then failed or that counts in
    /// [`SHARED`].
    fn revert(&self, change: Change) {
        let (allocations, frees, bytes) = change.counts();
        // Frees first, as `heap_stats` reads them: live blocks never read low.
        self.frees
            .store(self.frees.load(Relaxed).wrapping_sub(frees), Release);
        self.allocations.store(
            self.allocations.load(Relaxed).wrapping_sub(allocations),
            Release,
        );
        add(&self.net_bytes, bytes.wrapping_neg());
    }

    /// Folds the net change since the last flush into the global live counter, if it is
    /// [`FLUSH_BYTES`] or more either way; then, if `mode` (read by the slow path) is
    /// zero, sets the bounds around the flushed value.
    #[inline(always)]
    fn after_slow_call(&self, mode: u8) {
        if self.flush_due() {
            self.flush();
        }
        if mode == 0 {
            self.set_bounds();
        }
    }

    /// Whether the net change since the last flush is [`FLUSH_BYTES`] or more either way.
    #[inline(always)]
    fn flush_due(&self) -> bool {
        let unflushed = self
            .net_bytes
            .load(Relaxed)
            .wrapping_sub(self.flushed.load(Relaxed));
        !(-FLUSH_BYTES..FLUSH_BYTES).contains(&unflushed)
    }

    /// Folds the net change since the last flush into the global live counter.
    #[cold]
    #[inline(never)]
    fn flush(&self) {
        let net_bytes = self.net_bytes.load(Relaxed);
        let flushed = self.flushed.swap(net_bytes, Relaxed);
        fold_live(net_bytes.wrapping_sub(flushed));
    }

    /// Sets the bounds around the flushed value, so that calls count on the fast path
    /// until a flush is due; or for the slow path, if the mode is no longer zero. Only
    /// the owning thread calls it.
    #[cold]
    #[inline(never)]
    fn set_bounds(&self) {
        let flushed = self.flushed.load(Relaxed);
        self.slow_at_or_above
            .store(flushed.wrapping_add(FLUSH_BYTES), Relaxed);
        self.slow_below
            .store(flushed.wrapping_sub(FLUSH_BYTES), Relaxed);
        // Paired with the fence in `copy_mode_to_threads`, which stores the mode, then
        // the bounds: either these bounds came first and that thread's overwrite them,
        // or the load below sees its mode and this thread sets them for the slow path.
        fence(SeqCst);
        if self.mode.load(Relaxed) != 0 {
            self.send_calls_to_slow_path();
        }
    }

    /// Sets the bounds so that every call crosses them.
    fn send_calls_to_slow_path(&self) {
        self.slow_at_or_above.store(i64::MIN, Release);
        self.slow_below.store(i64::MAX, Release);
    }
}

/// Adds `delta` to a counter only its owning thread writes, and returns the new value: a
/// plain load and store suffice (Release orders the counters for readers; a plain `mov`
/// on x86).
#[inline(always)]
fn add(counter: &AtomicI64, delta: i64) -> i64 {
    let value = counter.load(Relaxed).wrapping_add(delta);
    counter.store(value, Release);
    value
}

/// The counts of threads that are not registered (see the module docs), and those that
/// registered threads left behind when they exited.
struct SharedCounters {
    net_bytes: AtomicI64,
    allocations: AtomicU64,
    frees: AtomicU64,
}

static SHARED: SharedCounters = SharedCounters {
    net_bytes: AtomicI64::new(0),
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
};
static LIVE_FLUSHED: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

/// The registered threads' counters, as a list through their `next` links.
struct Registry {
    head: *const ThreadCounters,
}

// SAFETY: the list's nodes are thread-locals of live threads, read through atomics only;
// a thread unlinks its node, under the registry's lock, before its thread-locals go.
unsafe impl Send for Registry {}

impl Registry {
    fn for_each(&self, mut visit: impl FnMut(&ThreadCounters)) {
        let mut node = self.head;
        // SAFETY: see `Send`: every linked node is alive while the lock is held.
        while let Some(counters) = unsafe { node.as_ref() } {
            visit(counters);
            node = counters.next.load(Relaxed);
        }
    }

    fn unlink(&mut self, leaving: &ThreadCounters) {
        let next = leaving.next.load(Relaxed);
        if std::ptr::eq(self.head, leaving) {
            self.head = next;
            return;
        }
        let mut node = self.head;
        // SAFETY: as in `for_each`.
        while let Some(counters) = unsafe { node.as_ref() } {
            if std::ptr::eq(counters.next.load(Relaxed), leaving) {
                counters.next.store(next, Relaxed);
                return;
            }
            node = counters.next.load(Relaxed);
        }
    }
}

static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry {
    head: std::ptr::null(),
});

thread_local! {
    static UNREGISTER: Unregister = const { Unregister };
}

// Where this thread's counters live, and the fast path that counts in them: a
// thread-local reached with x86-64 assembly where `build.rs` sets `leakgate_asm_tls`,
// `thread_local!` elsewhere (and with `--cfg leakgate_portable_tls`, which CI uses to
// test that path).
#[cfg_attr(leakgate_asm_tls, path = "counters/asm_slot.rs")]
#[cfg_attr(not(leakgate_asm_tls), path = "counters/std_slot.rs")]
mod slot;
use slot::this_thread;

/// Takes the thread's counters out of the registry when the thread exits.
struct Unregister;

impl Drop for Unregister {
    fn drop(&mut self) {
        this_thread(|counters| {
            let mut registry = REGISTRY.lock();
            registry.unlink(counters);
            counters.mode.store(COUNTS_SHARED, Relaxed);
            counters.send_calls_to_slow_path();
            // Under the lock, so a reader sees the counts either here or there, once.
            fold_into_shared(counters);
            drop(registry);
            // The residue must reach the global counter, or the peak drifts.
            counters.flush();
        });
    }
}

/// One allocator call's change to the counters.
#[derive(Clone, Copy)]
pub(crate) enum Change {
    Alloc(usize),
    Free(usize),
    Realloc { old: usize, new: usize },
}

impl Change {
    /// The allocations, frees and net bytes the change adds.
    fn counts(self) -> (u64, u64, i64) {
        match self {
            Change::Alloc(size) => (1, 0, size as i64),
            Change::Free(size) => (0, 1, -(size as i64)),
            Change::Realloc { old, new } => (1, 1, new as i64 - old as i64),
        }
    }
}

/// Counts `change` in this thread's counters, before the call reaches the inner
/// allocator. Returns whether the call must take the slow path, which passes the change
/// through [`settle`] and, after the inner allocator, [`finish`], unless [`quiet_mode`]
/// says that neither has anything to do.
#[inline(always)]
pub(crate) fn count(change: Change) -> bool {
    slot::count(change)
}

/// This thread's copy of the allocator's mode (with [`UNREGISTERED`] or
/// [`COUNTS_SHARED`]).
#[inline(always)]
pub(crate) fn thread_mode() -> u8 {
    // Acquire, paired with the copies' Release: see `copy_mode_to_threads`. A plain load
    // on x86.
    this_thread(|counters| counters.mode.load(Acquire))
}

/// The mode a slow-path call works in, from the thread's mode copy. On the thread's
/// first call this registers it; a thread that cannot count in its own counters gets the
/// allocator's mode marked with [`COUNTS_SHARED`], and `change`, which [`count`] applied
/// to its counters, moves to the shared ones.
#[inline(always)]
pub(crate) fn settle(change: Change) -> u8 {
    let copy = thread_mode();
    if copy & (UNREGISTERED | COUNTS_SHARED) == 0 {
        copy
    } else {
        settle_unregistered(copy, change)
    }
}

#[cold]
#[inline(never)]
fn settle_unregistered(copy: u8, change: Change) -> u8 {
    if copy & UNREGISTERED != 0 {
        // Registering links the counters, with `change` in them.
        register();
    }
    match thread_mode() {
        registered if registered & (UNREGISTERED | COUNTS_SHARED) == 0 => registered,
        _ => {
            this_thread(|counters| counters.revert(change));
            let (allocations, frees, bytes) = change.counts();
            count_shared(allocations, frees, bytes);
            super::mode() | COUNTS_SHARED
        }
    }
}

/// The mode of a slow-path call that [`settle`] would pass through unchanged and that
/// [`finish`] would leave as is, if it succeeds: the thread counts in its own counters,
/// no flush is due, and some mode bit is set (so its bounds stay set for the slow path).
/// `None` otherwise. Such a call may skip both, and keep few registers.
#[inline(always)]
pub(crate) fn quiet_mode() -> Option<u8> {
    this_thread(|counters| {
        let mode = counters.mode.load(Acquire);
        (mode != 0 && mode & (UNREGISTERED | COUNTS_SHARED) == 0 && !counters.flush_due())
            .then_some(mode)
    })
}

/// Ends a slow-path call working in `mode` (from [`settle`]): takes `change` back if the
/// call `failed`, flushes if a flush is due, and sets the bounds for the next calls.
#[inline(always)]
pub(crate) fn finish(mode: u8, change: Change, failed: bool) {
    if mode & COUNTS_SHARED != 0 {
        if failed {
            let (allocations, frees, bytes) = change.counts();
            count_shared(
                allocations.wrapping_neg(),
                frees.wrapping_neg(),
                bytes.wrapping_neg(),
            );
        }
        return;
    }
    this_thread(|counters| {
        if failed {
            counters.revert(change);
        }
        counters.after_slow_call(mode);
    });
}

/// Held by every test that moves the counters, so that none sees another's calls in its
/// differences.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This thread's net bytes, allocations and frees, for tests of the allocator's calls.
#[cfg(test)]
pub(crate) fn this_thread_counts() -> (i64, u64, u64) {
    this_thread(|counters| {
        (
            counters.net_bytes.load(Relaxed),
            counters.allocations.load(Relaxed),
            counters.frees.load(Relaxed),
        )
    })
}

/// Counts in the shared counters, and folds the bytes into the global live counter at
/// once: few calls come here.
#[cold]
#[inline(never)]
fn count_shared(allocations: u64, frees: u64, bytes: i64) {
    SHARED.allocations.fetch_add(allocations, Relaxed);
    SHARED.frees.fetch_add(frees, Relaxed);
    SHARED.net_bytes.fetch_add(bytes, Relaxed);
    fold_live(bytes);
}

fn register() {
    this_thread(|counters| {
        // Registering the exit hook may allocate: those calls count in the shared
        // counters. A thread already exiting can register none and stays there.
        counters.mode.store(COUNTS_SHARED, Relaxed);
        if UNREGISTER.try_with(|_| ()).is_err() {
            return;
        }
        let mut registry = REGISTRY.lock();
        counters.next.store(registry.head.cast_mut(), Relaxed);
        registry.head = counters;
        // Under the lock: a concurrent `copy_mode_to_threads` either sees this thread
        // or has already changed the mode this copies. The bounds still send calls to
        // the slow path, which sets them ([`finish`]).
        counters.mode.store(super::mode(), Release);
        drop(registry);
        FORK_HANDLER.call_once(|| {
            // SAFETY: registers a handler that the child of a `fork` runs with one thread.
            unsafe { libc::pthread_atfork(None, None, Some(forget_other_threads)) };
        });
    });
}

/// Registers [`forget_other_threads`] once per process.
static FORK_HANDLER: std::sync::Once = std::sync::Once::new();

/// Runs in the child of a `fork`, which has only the forking thread: the other threads'
/// counters stay in the registry, and one of them may have held its lock. Their counts
/// move to the shared counters (their blocks are in the child's heap too), and the
/// registry keeps only this thread's; otherwise a thread the child starts later, whose
/// thread-local storage may reuse a dead thread's stack, would link its counters twice.
extern "C" fn forget_other_threads() {
    // SAFETY: in the child of a fork only this thread runs.
    unsafe { REGISTRY.unlock_after_fork() };
    let mut registry = REGISTRY.lock();
    let this: *const ThreadCounters = this_thread(std::ptr::from_ref);
    let mut node = std::mem::replace(&mut registry.head, std::ptr::null());
    // SAFETY: the dead threads' thread-locals are still mapped in the child (the fork
    // copied them, and nothing has reused them yet).
    while let Some(counters) = unsafe { node.as_ref() } {
        node = counters.next.load(Relaxed);
        if std::ptr::eq(counters, this) {
            counters.next.store(std::ptr::null_mut(), Relaxed);
            registry.head = this;
            // The fork may have cut `copy_mode_to_threads` short between this thread's
            // mode and its bounds: copy both again.
            counters.mode.store(super::mode(), Release);
            counters.send_calls_to_slow_path();
        } else {
            fold_into_shared(counters);
            let unflushed = counters
                .net_bytes
                .load(Relaxed)
                .wrapping_sub(counters.flushed.load(Relaxed));
            LIVE_FLUSHED.fetch_add(unflushed, Relaxed);
        }
    }
}

/// Adds a thread's counts to the shared counters, as it leaves the registry.
fn fold_into_shared(counters: &ThreadCounters) {
    SHARED
        .net_bytes
        .fetch_add(counters.net_bytes.load(Relaxed), Relaxed);
    SHARED
        .allocations
        .fetch_add(counters.allocations.load(Relaxed), Relaxed);
    SHARED
        .frees
        .fetch_add(counters.frees.load(Relaxed), Relaxed);
}

/// Copies the allocator's mode into every registered thread's counters, one after
/// another, and sets their bounds for the slow path unless the mode is zero (a thread
/// sets its own bounds back on its next slow-path call). Release: a thread that sees
/// this copy sees every copy stored before it, so a mode turned on in two steps
/// (`sites::start`) reaches each thread in that order.
pub(crate) fn copy_mode_to_threads() {
    let registry = REGISTRY.lock();
    let mode = super::mode();
    registry.for_each(|counters| counters.mode.store(mode, Release));
    if mode != 0 {
        // Paired with the fence in `ThreadCounters::set_bounds`.
        fence(SeqCst);
        registry.for_each(ThreadCounters::send_calls_to_slow_path);
    }
}

/// Adds `amount` to the global live counter and raises the peak with it.
fn fold_live(amount: i64) {
    let live = LIVE_FLUSHED.fetch_add(amount, Relaxed).wrapping_add(amount);
    if amount > 0 {
        PEAK.fetch_max(live, Relaxed);
        // Not only when PEAK moves: samples raise PEAK to the exact live bytes too. The
        // flushed total lags the exact one and may even dip below zero.
        if let Ok(live) = u64::try_from(live) {
            super::peak::on_new_high(live);
        }
    }
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
    let registry = REGISTRY.lock();
    // Frees first, then allocations: a block allocated and freed while the counters are
    // being read then counts as live (a brief overestimate) instead of making the
    // difference wrap below zero. Net bytes may be caught between two threads' counters,
    // either way, and read as zero when that makes them negative.
    let mut frees = SHARED.frees.load(Acquire);
    registry.for_each(|counters| frees = frees.wrapping_add(counters.frees.load(Acquire)));
    let mut net_bytes = SHARED.net_bytes.load(Acquire);
    let mut allocations = SHARED.allocations.load(Acquire);
    registry.for_each(|counters| {
        net_bytes = net_bytes.wrapping_add(counters.net_bytes.load(Acquire));
        allocations = allocations.wrapping_add(counters.allocations.load(Acquire));
    });
    drop(registry);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Counts `change` as the allocator does, for a call that succeeds; returns whether
    /// it took the slow path.
    fn call(change: Change) -> bool {
        let slow = count(change);
        if slow {
            let mode = settle(change);
            finish(mode, change, false);
        }
        slow
    }

    /// Registers this thread's counters, leaving the counts as they were.
    fn register_this_thread() {
        call(Change::Alloc(1));
        call(Change::Free(1));
    }

    fn lock_counters() -> std::sync::MutexGuard<'static, ()> {
        TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A thread's counters start as `ThreadCounters::new()` sets them, in either slot:
    /// on x86-64 Linux the thread-local's image is written out in assembly.
    #[test]
    fn a_new_thread_starts_with_new_counters() {
        let fields = |counters: &ThreadCounters| {
            (
                counters.net_bytes.load(Relaxed),
                counters.allocations.load(Relaxed),
                counters.frees.load(Relaxed),
                counters.slow_at_or_above.load(Relaxed),
                counters.slow_below.load(Relaxed),
                counters.flushed.load(Relaxed),
                counters.next.load(Relaxed).is_null(),
                counters.mode.load(Relaxed),
            )
        };
        // The unit tests' global allocator is not `TrackingAlloc`: nothing has counted
        // in a new thread's counters.
        let started = std::thread::spawn(move || this_thread(|counters| fields(counters)))
            .join()
            .expect("the new thread panicked");
        assert_eq!(started, fields(&ThreadCounters::new()));
    }

    /// The counters as the allocator moves them, by direct calls: the unit tests' own
    /// global allocator is not `TrackingAlloc`, so only tests count here, one at a time.
    #[test]
    fn threads_register_count_and_leave_their_counts_behind() {
        let _counters = lock_counters();
        let before = heap_stats();
        let flushed_before = LIVE_FLUSHED.load(Relaxed);
        let big = 3 * FLUSH_BYTES as usize;
        let (while_running, flushed_while_running) = std::thread::spawn(move || {
            assert_ne!(
                thread_mode() & UNREGISTERED,
                0,
                "a new thread starts unregistered"
            );
            // More than a flush's worth: the global live counter sees it at once.
            call(Change::Alloc(big));
            assert_eq!(
                thread_mode() & (UNREGISTERED | COUNTS_SHARED),
                0,
                "the first call registers the thread"
            );
            // Less than a flush's worth: it stays with the thread until it exits.
            call(Change::Alloc(100));
            call(Change::Realloc { old: 100, new: 40 });
            (heap_stats(), LIVE_FLUSHED.load(Relaxed))
        })
        .join()
        .expect("the counting thread panicked");
        let after = heap_stats();

        assert_eq!(
            while_running.live_bytes - before.live_bytes,
            big as u64 + 40
        );
        assert_eq!(while_running.live_blocks - before.live_blocks, 2);
        assert_eq!(while_running.allocations - before.allocations, 3);
        assert_eq!(flushed_while_running - flushed_before, big as i64);
        // The thread has exited: its counts moved to the shared counters, unchanged, and
        // its unflushed 40 bytes reached the global live counter.
        assert_eq!(after.live_bytes, while_running.live_bytes);
        assert_eq!(after.live_blocks, while_running.live_blocks);
        assert_eq!(after.allocations, while_running.allocations);
        assert_eq!(LIVE_FLUSHED.load(Relaxed) - flushed_before, big as i64 + 40);

        // A thread that frees what another allocated has negative net bytes; the sum
        // is still right, and so is the count after it has gone.
        std::thread::spawn(move || {
            call(Change::Free(big));
            call(Change::Free(40));
        })
        .join()
        .expect("the freeing thread panicked");
        let freed = heap_stats();
        assert_eq!(freed.live_bytes, before.live_bytes);
        assert_eq!(freed.live_blocks, before.live_blocks);
        assert_eq!(LIVE_FLUSHED.load(Relaxed), flushed_before);
    }

    /// While the mode is not zero every call of a registered thread takes the slow path;
    /// once it is zero again, the thread's next call sets the bounds back.
    #[test]
    fn a_mode_sends_every_call_down_the_slow_path_until_it_is_zero_again() {
        let _counters = lock_counters();
        std::thread::spawn(|| {
            register_this_thread();
            assert!(!call(Change::Alloc(8)), "counting only: the fast path");
            super::super::set_mode(super::super::RECORDING, true);
            let calls = [
                Change::Free(8),
                Change::Alloc(8),
                Change::Realloc { old: 8, new: 16 },
                Change::Realloc { old: 16, new: 8 },
            ];
            let slow = calls.map(call);
            super::super::set_mode(super::super::RECORDING, false);
            assert_eq!(slow, [true; 4], "calls while recording");
            assert!(
                call(Change::Free(8)),
                "the first call after sets the bounds"
            );
            assert!(!call(Change::Alloc(8)), "the fast path again");
            call(Change::Free(8));
        })
        .join()
        .expect("the counting thread panicked");
    }

    /// With the mode zero, a call takes the slow path exactly when it crosses a bound:
    /// an allocation or a reallocation's growth that brings the net bytes to the upper
    /// bound (`>=`), a free or a reallocation's shrinking that brings them below the
    /// lower one (`<`). Both slots must agree, the assembly's jumps included.
    #[test]
    fn a_call_takes_the_slow_path_exactly_at_the_bounds() {
        let _counters = lock_counters();
        std::thread::spawn(|| {
            register_this_thread();
            // Distances from the net bytes up to the upper bound and down to the lower
            // one, read afresh: a slow call flushes and sets the bounds around its net.
            let room = || {
                this_thread(|counters| {
                    let net = counters.net_bytes.load(Relaxed);
                    let up = counters.slow_at_or_above.load(Relaxed) - net;
                    let down = net - counters.slow_below.load(Relaxed);
                    (up as usize, down as usize)
                })
            };
            let (up, down) = room();
            assert_eq!((up, down), (FLUSH_BYTES as usize, FLUSH_BYTES as usize));
            assert!(
                !call(Change::Alloc(up - 1)),
                "one byte short of the upper bound"
            );
            assert!(!call(Change::Free(up - 1)));
            assert!(call(Change::Alloc(up)), "at the upper bound");
            let (_, down) = room();
            assert!(!call(Change::Free(down)), "at the lower bound");
            assert!(!call(Change::Alloc(down)));
            assert!(call(Change::Free(down + 1)), "below the lower bound");
            let (up, _) = room();
            let grow = |by| Change::Realloc {
                old: 8,
                new: 8 + by,
            };
            assert!(!call(grow(up - 1)), "a reallocation one byte short");
            assert!(!call(Change::Realloc {
                old: 8 + up - 1,
                new: 8
            }));
            assert!(call(grow(up)), "a reallocation at the upper bound");
            let (_, down) = room();
            let shrink = |by| Change::Realloc {
                old: 8 + by,
                new: 8,
            };
            assert!(!call(shrink(down)), "a reallocation at the lower bound");
            assert!(!call(grow(down)));
            assert!(
                call(shrink(down + 1)),
                "a reallocation below the lower bound"
            );
            // Back to zero net bytes (the blocks are even): other tests read differences
            // of totals that are clamped at zero.
            let net = this_thread(|counters| counters.net_bytes.load(Relaxed));
            call(grow(net.unsigned_abs() as usize));
            assert_eq!(this_thread_counts().0, 0);
        })
        .join()
        .expect("the counting thread panicked");
    }

    /// A child forked while another thread held the registry's lock can still read the
    /// counters, and its registry holds only the thread that forked.
    #[test]
    fn a_forked_child_keeps_only_its_own_thread() {
        let _counters = lock_counters();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
        // Registered before this thread, and after it: the child must keep this one
        // whatever its place in the list.
        let registered = |hold_lock: bool| {
            let (ready_tx, release_rx) = (ready_tx.clone(), release_rx.clone());
            std::thread::spawn(move || {
                register_this_thread();
                let registry = hold_lock.then(|| REGISTRY.lock());
                ready_tx.send(()).expect("the test waits");
                // Until the parent has forked.
                let _ = release_rx.lock().map(|release| release.recv());
                drop(registry);
            })
        };
        let older = registered(false);
        ready_rx.recv().expect("the older thread registers");
        register_this_thread();
        let holder = registered(true);
        ready_rx.recv().expect("the holder locks");
        // SAFETY: the child only reads the counters and leaves with `_exit`, running no
        // destructor and no other thread's code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match REGISTRY.try_lock() {
                None => 2,
                Some(registry) => {
                    let this: *const ThreadCounters = this_thread(std::ptr::from_ref);
                    let mut others = 0;
                    let mut found_this = false;
                    registry.for_each(|counters| {
                        if std::ptr::eq(counters, this) {
                            found_this = true;
                        } else {
                            others += 1;
                        }
                    });
                    drop(registry);
                    heap_stats();
                    i32::from(!found_this || others != 0)
                }
            };
            // SAFETY: ends the child at once, as a forked child of a threaded process must.
            unsafe { libc::_exit(code) };
        }
        for _ in 0..2 {
            release_tx.send(()).expect("a registered thread waits");
        }
        holder.join().expect("the holder panicked");
        older.join().expect("the older thread panicked");
        assert!(pid > 0, "fork failed");
        let status = wait_briefly(pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child exited with {status:#x}: 2 if the registry stayed locked, 1 if it kept \
             other threads or lost this one"
        );
    }

    /// The child's wait status; kills it, and fails, if it has not exited within 30 s.
    fn wait_briefly(pid: libc::pid_t) -> libc::c_int {
        let start = std::time::Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: polls the child just forked; `status` is a valid out-parameter.
            match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
                0 if start.elapsed() < std::time::Duration::from_secs(30) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                0 => {
                    // SAFETY: kills and reaps the child this test forked.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    panic!("the forked child hung: the registry's lock was never released");
                }
                reaped => {
                    assert_eq!(reaped, pid, "waitpid failed");
                    return status;
                }
            }
        }
    }
}
