//! Sites at the peak: live bytes per allocation site while recording, and a copy of them
//! taken whenever the heap reaches a new high (in steps of a sixteenth), so a peak-budget
//! finding can name the sites that made the peak. The copy is at most a step below the
//! true peak.
//!
//! Both arrays live in `mmap`ed memory and are touched with atomics only, from inside the
//! allocator; sites beyond [`MAX_SITES`] are not counted.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::raw::{MmapBuf, SpinLock};

/// Sites whose live bytes are counted.
pub(crate) const MAX_SITES: usize = 1 << 16;
/// The smallest step between two copies.
const MIN_STEP: u64 = 64 << 10;

static ARMED: AtomicBool = AtomicBool::new(false);
static SITE_BYTES: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());
static NEXT_COPY_AT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Live bytes at `arm`: steps between copies are a sixteenth of the growth above it.
static ARMED_AT: AtomicU64 = AtomicU64::new(0);
/// Sites interned so far: how much of the array a copy needs.
pub(crate) static SITES_IN_USE: AtomicUsize = AtomicUsize::new(0);

struct Copy {
    bytes: MmapBuf<u64>,
    live: u64,
}

static COPY: SpinLock<Copy> = SpinLock::new(Copy {
    bytes: MmapBuf::empty(),
    live: 0,
});

fn site_bytes(site: u32) -> Option<&'static AtomicU64> {
    // Counting costs a shared atomic per allocation: only with a peak budget to judge.
    if !ARMED.load(Relaxed) {
        return None;
    }
    let base = SITE_BYTES.load(Relaxed);
    if base.is_null() || site as usize >= MAX_SITES {
        return None;
    }
    // SAFETY: `base` points at MAX_SITES `u64`s that are never unmapped and, once
    // published, are only ever accessed through atomics.
    Some(unsafe { AtomicU64::from_ptr(base.add(site as usize)) })
}

/// Starts counting from zero at `live` bytes (the baseline), for a scenario with a peak
/// budget. Not called from inside the allocator: it may map memory.
pub(crate) fn arm(live: u64) {
    if SITE_BYTES.load(Relaxed).is_null() {
        let Some(mut bytes) = MmapBuf::<u64>::zeroed(MAX_SITES) else {
            return;
        };
        SITE_BYTES.store(bytes.as_mut_slice().as_mut_ptr(), Relaxed);
        // Lives as long as the process: later recordings reuse it.
        std::mem::forget(bytes);
    }
    let base = SITE_BYTES.load(Relaxed);
    for site in 0..MAX_SITES {
        // SAFETY: as in `site_bytes`; the array holds MAX_SITES counters.
        unsafe { AtomicU64::from_ptr(base.add(site)) }.store(0, Relaxed);
    }
    let mut copy = COPY.lock();
    if copy.bytes.capacity() == 0 {
        copy.bytes = MmapBuf::zeroed(MAX_SITES).unwrap_or(MmapBuf::empty());
    }
    copy.bytes.as_mut_slice().fill(0);
    copy.live = live;
    ARMED_AT.store(live, Relaxed);
    NEXT_COPY_AT.store(live.saturating_add(MIN_STEP), Relaxed);
    ARMED.store(true, Relaxed);
}

/// Stops copying (the counts stay until the next `arm`).
pub(crate) fn disarm() {
    ARMED.store(false, Relaxed);
}

/// Whether live bytes are being counted per site (a peak budget is being judged).
#[inline(always)]
pub(crate) fn armed() -> bool {
    ARMED.load(Relaxed)
}

#[inline]
pub(crate) fn add(site: u32, bytes: u64) {
    if let Some(counter) = site_bytes(site) {
        counter.fetch_add(bytes, Relaxed);
    }
}

#[inline]
pub(crate) fn sub(site: u32, bytes: u64) {
    if let Some(counter) = site_bytes(site) {
        counter.fetch_sub(bytes, Relaxed);
    }
}

/// Called by the counters when live bytes reach a new high: copies the per-site counts
/// if the heap has grown a step since the last copy.
#[cold]
pub(crate) fn on_new_high(live: u64) {
    if !ARMED.load(Relaxed) || live < NEXT_COPY_AT.load(Relaxed) {
        return;
    }
    // Never waits: this runs inside the allocator, possibly on a thread that already
    // holds the copy (its own allocation while reading it).
    let Some(mut copy) = COPY.try_lock() else {
        return;
    };
    if live <= copy.live {
        return; // Another thread copied a higher point meanwhile.
    }
    take_copy(&mut copy, live);
}

/// Copies the counts now, whatever the heap's level: the memory-limit watchdog stops the
/// scenario at its highest point.
pub(crate) fn copy_now(live: u64) {
    if ARMED.load(Relaxed) {
        take_copy(&mut COPY.lock(), live);
    }
}

fn take_copy(copy: &mut Copy, live: u64) {
    let in_use = SITES_IN_USE.load(Relaxed).min(MAX_SITES);
    let target = copy.bytes.as_mut_slice();
    for (site, slot) in target.iter_mut().enumerate().take(in_use) {
        *slot = site_bytes(site as u32).map_or(0, |c| c.load(Relaxed));
    }
    copy.live = live;
    let growth = live.saturating_sub(ARMED_AT.load(Relaxed));
    NEXT_COPY_AT.store(live.saturating_add((growth / 16).max(MIN_STEP)), Relaxed);
}

/// The largest sites of the last copy, with their live bytes there, and the live bytes
/// the copy was taken at.
pub(crate) fn top(count: usize) -> (Vec<(u32, u64)>, u64) {
    // Allocated before the lock and filled within its capacity: an allocation while
    // holding the copy could reach `on_new_high` on this thread.
    let mut bytes: Vec<u64> = Vec::with_capacity(MAX_SITES);
    let live = {
        let copy = COPY.lock();
        let in_use = SITES_IN_USE.load(Relaxed).min(copy.bytes.capacity());
        bytes.extend_from_slice(&copy.bytes.as_slice()[..in_use]);
        copy.live
    };
    let mut sites: Vec<(u32, u64)> = bytes
        .iter()
        .enumerate()
        .filter(|(_, bytes)| **bytes > 0)
        .map(|(site, bytes)| (site as u32, *bytes))
        .collect();
    sites.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
    sites.truncate(count);
    (sites, live)
}
