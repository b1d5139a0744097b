//! Allocation sites: which call stack allocated each live block, in which iteration.
//!
//! While recording (the measured iterations), every allocation captures its stack,
//! interns it to a compact site id, and enters `address → (size, site, iteration)` in a
//! live-block table; every free removes its entry. What is left after the run are the
//! survivors, grouped by site. Only the sites that end up in a report are symbolized.
//!
//! Blocks of up to [`shadow::MAX_SIZE`] bytes at 16-byte-aligned addresses are tagged in
//! the [`shadow`]: a map indexed by address, where blocks allocated together have their
//! tags together and no lock is taken. A tag is 4 bytes: the block's size and a context
//! id, which names the (site, iteration) pair; each thread caches the contexts of the
//! current iteration beside the sites. Other blocks go in the live-block table, split
//! into shards by address, each an open-addressing table under its own spin lock, so two
//! threads rarely meet: 16 bytes per live block at a load factor between 0.25 and 0.5,
//! so 32 to 64 bytes of bookkeeping per tracked block and short probe sequences. The site
//! interner sits behind a per-thread cache of recently seen stack hashes, so a hot site
//! costs no lock, except once per iteration for its context. All of it lives in
//! `mmap`ed memory (see `raw`), invisible to the heap counters.

use std::cell::UnsafeCell;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use super::peak;
use super::raw::{MmapBuf, SpinLock, Zeroable, map_sparse, release_pages};
use super::shadow::{self, Shadow, Tag};
#[cfg(test)]
use super::stack::StackHash;
use super::stack::{self, DEPTH};
use super::{RECORDING, ReentrancyGuard, TABLE_IN_USE, UNWINDING, set_mode};

/// Which heap a site allocated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heap {
    /// Rust's global allocator ([`super::TrackingAlloc`]).
    Rust,
    /// C's `malloc` family, seen through jemalloc's hooks ([`super::c_heap`]).
    C,
}

/// The recording's stamp: the iteration new blocks are tagged with in the low half, and
/// in the high half a generation that [`clear`] moves on, as it forgets every context.
/// Threads cache contexts for one stamp.
static STAMP: AtomicU64 = AtomicU64::new(0);

/// The iteration of a [`STAMP`].
#[inline(always)]
fn iteration_of(stamp: u64) -> u32 {
    stamp as u32
}

/// Sets the iteration in [`STAMP`]. Not atomic with [`clear`]'s step of the generation:
/// the runner calls [`start`], [`set_iteration`] and [`clear`] from one thread.
fn stamp_iteration(iteration: u32) {
    let generation = STAMP.load(Relaxed) >> 32;
    STAMP.store(generation << 32 | u64::from(iteration), Relaxed);
}

/// A site id that names no site (the interner ran out of memory).
const NO_SITE: u32 = u32::MAX;

/// Whether new blocks are being tagged.
#[inline(always)]
pub(crate) fn recording() -> bool {
    super::mode() & RECORDING != 0
}

/// Whether tagged blocks may be live, so frees must look for their entries (C's, from
/// jemalloc's hooks).
#[cfg(feature = "jemalloc")]
#[inline(always)]
pub(crate) fn table_in_use() -> bool {
    super::mode() & TABLE_IN_USE != 0
}

/// Starts recording sites; blocks allocated from now on are tagged with `iteration`.
pub fn start(iteration: u32) -> stack::Method {
    let method = stack::detect();
    SHADOW.prepare();
    prepare_contexts();
    // Nothing records now: tags a racing allocation left behind at the last `clear`
    // must not pass for this recording's survivors.
    SHADOW.clear();
    SHADOW_DECLINED.store(false, Relaxed);
    stamp_iteration(iteration);
    // Frees look for entries everywhere before any thread makes one: a block tagged on
    // one thread and freed on another must not leave its tag behind. Each thread gets
    // its copy of the mode in turn, so one step would not ensure it.
    set_mode(TABLE_IN_USE, true);
    if method == stack::Method::Dwarf {
        set_mode(UNWINDING, true);
    }
    set_mode(RECORDING, true);
    method
}

/// Tags blocks allocated from now on with `iteration`.
pub(crate) fn set_iteration(iteration: u32) {
    stamp_iteration(iteration);
}

/// Stops tagging new blocks; blocks already tagged stay in the table until freed.
pub fn stop() {
    set_mode(RECORDING | UNWINDING, false);
    peak::disarm();
}

/// Forgets every tagged block.
pub fn clear() {
    set_mode(RECORDING | UNWINDING, false);
    for (index, shard) in LIVE.iter().enumerate() {
        let mut shard = shard.0.lock();
        shard.clear();
        publish(index, &shard.slots);
    }
    SHADOW.clear();
    SHADOW_DECLINED.store(false, Relaxed);
    C_BLOCKS.store(0, Relaxed);
    // No tag names a context now. Threads see the new generation and forget theirs.
    clear_contexts();
    STAMP.fetch_add(1 << 32, Relaxed);
    set_mode(TABLE_IN_USE, false);
}

/// Records a new block. Called by the allocator when [`recording`] is on, with
/// `entry_frame`, the frame pointer of its slow path's entry, still running, where the
/// stack is captured from (see [`stack::capture`]): whatever calls lie between, one call
/// site then has one stack.
#[inline(never)]
pub(crate) fn on_alloc(address: *mut u8, size: usize, entry_frame: usize) {
    let Some(_guard) = ReentrancyGuard::enter() else {
        return;
    };
    prefetch(address, size);
    let stamp = STAMP.load(Relaxed);
    let (site, context) =
        stack::capture(entry_frame, |frames, hash| rust_site(frames, hash, stamp));
    enter(
        address as usize,
        size,
        site,
        iteration_of(stamp),
        Some(context),
    );
}

/// Removes a freed block's entry, if it has one. Called while the mode has
/// [`TABLE_IN_USE`].
#[inline(never)]
pub(crate) fn on_dealloc(address: *mut u8, size: usize) {
    if !forget_small(address, size) {
        withdraw(address as usize, size);
    }
}

/// Clears the tag of a freed block that can only be in the shadow, and returns `true`;
/// returns `false`, doing nothing, for any other block. A small block's tag is read only
/// to take its bytes off its site's count at the peak, or when it may be in the table
/// instead. Otherwise the tag is cleared without being read: a store does not wait for
/// the cache line as a load does.
#[inline(always)]
pub(crate) fn forget_small(address: *mut u8, size: usize) -> bool {
    let address = address as usize;
    let only_in_shadow =
        shadow::suits(address, size) && !peak::armed() && !SHADOW_DECLINED.load(Relaxed);
    if only_in_shadow {
        SHADOW.forget(address);
    }
    only_in_shadow
}

/// Small blocks' tags, by address.
static SHADOW: Shadow = Shadow::new();
/// Whether a block that suits the shadow went to the table because the shadow could not
/// take it: only then must such a block missing from the shadow be looked for there.
static SHADOW_DECLINED: AtomicBool = AtomicBool::new(false);

/// Enters a block in the shadow, under `context` (`None`: to be looked up; 0: none to
/// be had), or, when it is large or the shadow declines, in the table.
#[inline(always)]
fn enter(address: usize, size: usize, site: u32, iteration: u32, context: Option<u32>) {
    if shadow::suits(address, size) {
        let context = context.unwrap_or_else(|| context_id(site, iteration));
        if context != 0 && SHADOW.insert(address, shadow_tag(context, size)) {
            peak::add(site, size as u64);
            return;
        }
        SHADOW_DECLINED.store(true, Relaxed);
    }
    enter_in_table(LiveBlock::new(address, size, site, iteration));
}

#[inline(never)]
fn enter_in_table(block: LiveBlock) {
    shard_of(block.address).lock().insert(block);
    // The stored size and site, so the subtraction at free matches (large sizes are
    // rounded, sites beyond the packed field are none).
    peak::add(block.site(), block.size());
}

/// Takes the entry of a `size`-byte block out of wherever [`enter`] put it.
fn withdraw(address: usize, size: usize) -> Option<LiveBlock> {
    let removed = if shadow::suits(address, size) {
        match SHADOW.remove(address) {
            Some(tag) => Some(untag(address, tag)),
            None if SHADOW_DECLINED.load(Relaxed) => shard_of(address).lock().remove(address),
            None => None,
        }
    } else {
        shard_of(address).lock().remove(address)
    };
    if let Some(block) = removed {
        peak::sub(block.site(), block.size());
    }
    removed
}

/// The entry of a block about to be reallocated, taken out of the table.
#[derive(Clone, Copy)]
pub(crate) struct Taken(Option<LiveBlock>);

/// Takes the entry of `address`, a block of `size` bytes, out before `realloc` may free
/// the block.
#[inline(never)]
pub(crate) fn take(address: *mut u8, size: usize) -> Taken {
    Taken(withdraw(address as usize, size))
}

/// Puts an entry back after a failed `realloc` left the block where it was.
pub(crate) fn restore(taken: Taken) {
    if let Some(block) = taken.0 {
        enter(
            block.address,
            block.size() as usize,
            block.site(),
            block.iteration(),
            None,
        );
    }
}

/// Enters the reallocated block. While recording, it is attributed to the reallocation
/// (where it grew), its stack captured from `entry_frame` (see [`on_alloc`]); afterwards it
/// keeps its original tag.
#[inline(never)]
pub(crate) fn on_realloc(taken: Taken, new: *mut u8, new_size: usize, entry_frame: usize) {
    if recording() {
        on_alloc(new, new_size, entry_frame);
    } else if let Some(block) = taken.0 {
        enter(
            new as usize,
            new_size,
            block.site(),
            block.iteration(),
            None,
        );
    }
}

/// The site of a captured Rust stack and its context in the iteration of `stamp`: from
/// this thread's cache when it saw the stack lately in that iteration.
#[inline(always)]
fn rust_site(frames: &[usize], hash: u64, stamp: u64) -> (u32, u32) {
    SITE_CACHE.with(|cache| {
        // SAFETY: the cache is thread-local and only touched under the allocator's
        // reentrancy guard, so no other reference to it exists meanwhile.
        let cache = unsafe { &mut *cache.get() };
        if cache.stamp != stamp {
            cache.forget_contexts(stamp);
        }
        let slot = cache.slot(hash);
        if slot.hash == hash && slot.context != 0 {
            (slot.site, slot.context)
        } else {
            with_context(slot, frames, hash, iteration_of(stamp))
        }
    })
}

/// The site of a Rust stack and its context in `iteration`, both cached in `slot` when
/// the slot can hold the site.
#[cold]
#[inline(never)]
fn with_context(slot: &mut CachedSite, frames: &[usize], hash: u64, iteration: u32) -> (u32, u32) {
    let site = cached_site(slot, frames, hash, Heap::Rust);
    let context = context_id(site, iteration);
    if slot.hash == hash {
        slot.context = context;
    }
    (site, context)
}

/// The site of a captured C stack: from this thread's cache when it saw the stack lately.
#[cfg(feature = "jemalloc")]
fn c_site(frames: &[usize], hash: u64) -> u32 {
    SITE_CACHE.with(|cache| {
        // SAFETY: as in `rust_site`.
        let slot = unsafe { &mut *cache.get() }.slot(hash);
        cached_site(slot, frames, hash, Heap::C)
    })
}

/// The site of a stack: `slot`'s if it holds the stack's, else interned and put in
/// `slot`, with no context yet.
fn cached_site(slot: &mut CachedSite, frames: &[usize], hash: u64, heap: Heap) -> u32 {
    if slot.hash == hash {
        return slot.site;
    }
    let site = INTERNER.lock().intern(hash, frames, heap);
    if site != NO_SITE {
        *slot = CachedSite {
            hash,
            site,
            context: 0,
        };
    }
    site
}

// ---------------------------------------------------------------------------------------
// C heap blocks, entered from jemalloc's hooks ([`super::c_heap`]). They always go in the
// live-block table (a C free names no size, so the shadow's size test cannot route it)
// and never count toward the Rust heap's peak. Their stacks are unwound by DWARF: C and
// C++ code is seldom built with frame pointers.

/// Records a C block of `size` bytes at `address`, allocated now.
#[cfg(feature = "jemalloc")]
pub(crate) fn on_c_alloc(address: usize, size: usize) {
    let Some(_guard) = ReentrancyGuard::enter() else {
        return;
    };
    let mut frames = stack::Frames::new();
    let hash = stack::capture_dwarf(&mut frames);
    let site = c_site(frames.as_slice(), hash);
    if site == NO_SITE {
        return; // Out of memory for bookkeeping: the block goes untracked.
    }
    let block = LiveBlock::new(address, size, site, iteration_of(STAMP.load(Relaxed)));
    shard_of(address).lock().insert(block);
    C_BLOCKS.fetch_add(1, Relaxed);
}

/// Live C blocks in the table, so waiting for Rust survivors ignores them.
static C_BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// Takes a C block's entry out of the table.
#[cfg(feature = "jemalloc")]
fn take_c(address: usize) -> Option<LiveBlock> {
    let taken = shard_of(address).lock().remove(address);
    if taken.is_some() {
        // Saturating: an entry racing `clear` may be counted after the reset.
        let _ = C_BLOCKS.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
    taken
}

/// Re-enters `old`'s entry, if it has one, for the block `realloc` moved it to.
#[cfg(feature = "jemalloc")]
pub(crate) fn on_c_move(old: usize, new: usize, size: usize) {
    if let Some(block) = take_c(old) {
        let moved = LiveBlock::new(new, size, block.site(), block.iteration());
        shard_of(new).lock().insert(moved);
        C_BLOCKS.fetch_add(1, Relaxed);
    }
}

/// Removes a freed C block's entry, if it has one.
#[cfg(feature = "jemalloc")]
pub(crate) fn on_c_free(address: usize) {
    take_c(address);
}

/// Resizes a C block that `realloc` grew or shrank in place: while recording, it is
/// attributed to the reallocation, as a Rust block is; afterwards it keeps its tag.
#[cfg(feature = "jemalloc")]
pub(crate) fn on_c_resize(address: usize, size: usize) {
    let old = take_c(address);
    if recording() {
        // Also a block from before the measured iterations: it grew here.
        on_c_alloc(address, size);
    } else if let Some(old) = old {
        let block = LiveBlock::new(address, size, old.site(), old.iteration());
        shard_of(address).lock().insert(block);
        C_BLOCKS.fetch_add(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// Site interner

const CACHE_SLOTS: usize = 256;

/// A stack's hash, its site, and the site's context in the cache's stamp (0: not yet).
#[derive(Clone, Copy)]
struct CachedSite {
    hash: u64,
    site: u32,
    context: u32,
}

/// A direct-mapped cache from stack hash to site id and context, private to one thread.
struct SiteCache {
    slots: [CachedSite; CACHE_SLOTS],
    /// The [`STAMP`] the contexts are for.
    stamp: u64,
}

impl SiteCache {
    /// The slot where the stack of `hash` is cached, if it is.
    #[inline(always)]
    fn slot(&mut self, hash: u64) -> &mut CachedSite {
        &mut self.slots[hash as usize % CACHE_SLOTS]
    }

    /// Starts caching contexts for `stamp`: once per iteration and thread.
    #[cold]
    fn forget_contexts(&mut self, stamp: u64) {
        for slot in &mut self.slots {
            slot.context = 0;
        }
        self.stamp = stamp;
    }
}

thread_local! {
    static SITE_CACHE: UnsafeCell<SiteCache> = const {
        UnsafeCell::new(SiteCache {
            slots: [CachedSite { hash: 0, site: 0, context: 0 }; CACHE_SLOTS],
            stamp: 0,
        })
    };
}

// ---------------------------------------------------------------------------------------
// Contexts: the (site, iteration) pairs that shadow tags name by id, so that a tag fits
// in 4 bytes. A thread looks a pair up once per site and iteration; the cache above keeps
// the id.

/// Bits of a shadow tag holding the block's size less one: sizes 1 to [`shadow::MAX_SIZE`].
const TAG_SIZE_BITS: u32 = shadow::MAX_SIZE.ilog2();
/// One more than the largest context id a tag holds beside the size. Ids start at 1, so
/// that a tag is never 0.
const MAX_CONTEXTS: usize = 1 << (Tag::BITS - TAG_SIZE_BITS);
const _: () = assert!(shadow::MAX_SIZE == 1 << TAG_SIZE_BITS);
// A block in the shadow is added to the peak's count under its site as given, and taken
// off under the site a `LiveBlock` keeps: the same for every site the peak counts.
const _: () = assert!(peak::MAX_SITES < (1 << SITE_BITS) - 1);

/// The tag of a block of `size` bytes (1 to [`shadow::MAX_SIZE`]) under `context` (not 0).
#[inline(always)]
fn shadow_tag(context: u32, size: usize) -> Tag {
    (context << TAG_SIZE_BITS) | (size - 1) as Tag
}

/// The context id and the block size in a tag.
fn tag_parts(tag: Tag) -> (u32, usize) {
    (
        tag >> TAG_SIZE_BITS,
        (tag & ((1 << TAG_SIZE_BITS) - 1)) as usize + 1,
    )
}

/// The entry of the block at `address` that `tag` describes.
fn untag(address: usize, tag: Tag) -> LiveBlock {
    let (context, size) = tag_parts(tag);
    let (site, iteration) = context_pair(context);
    LiveBlock::new(address, size, site, iteration)
}

/// [`Contexts::pairs`], for reading tags without the lock.
static CONTEXT_PAIRS: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
/// [`Contexts::next`], stored after each new pair: an id at or above it (a stale tag's,
/// racing [`clear`]) names no pair.
static CONTEXTS_NEXT: AtomicUsize = AtomicUsize::new(1);
/// No context can be given (ids or memory ran out) until [`clear`]: small blocks go to
/// the table without taking the lock first.
static CONTEXTS_EXHAUSTED: AtomicBool = AtomicBool::new(false);

/// Maps the contexts' pairs (256 MiB of address space, memory only as ids are used).
/// Called before recording starts, not from inside the allocator; until it succeeds,
/// no context is given, and small blocks go to the table.
fn prepare_contexts() {
    let mut contexts = CONTEXTS.lock();
    if contexts.pairs.is_null()
        && let Some(map) = map_sparse(MAX_CONTEXTS * size_of::<u64>())
    {
        contexts.pairs = map.as_ptr().cast();
        CONTEXT_PAIRS.store(contexts.pairs, Release);
    }
}

/// The (site, iteration) of context `id`, or (`NO_SITE`, 0) if no such id was given.
fn context_pair(id: u32) -> (u32, u32) {
    let pairs = CONTEXT_PAIRS.load(Acquire);
    if pairs.is_null() || id == 0 || id as usize >= CONTEXTS_NEXT.load(Acquire) {
        return (NO_SITE, 0);
    }
    // SAFETY: `id` is below MAX_CONTEXTS, the length of the mapping, which is never
    // unmapped and only accessed through atomics (`Contexts::clear` zeroes its pages,
    // which reads as 0).
    let pair = unsafe { &*pairs.add(id as usize) }.load(Relaxed);
    ((pair >> 32) as u32, pair as u32)
}

/// The context id of (`site`, `iteration`), or 0 when no more can be given.
fn context_id(site: u32, iteration: u32) -> u32 {
    if CONTEXTS_EXHAUSTED.load(Relaxed) {
        return 0;
    }
    let mut contexts = CONTEXTS.lock();
    let id = contexts.intern((u64::from(site) << 32) | u64::from(iteration));
    if id == 0 {
        CONTEXTS_EXHAUSTED.store(true, Relaxed);
    } else {
        CONTEXTS_NEXT.store(contexts.next, Release);
    }
    id
}

/// Forgets every context: no tag names one any more.
fn clear_contexts() {
    let mut contexts = CONTEXTS.lock();
    contexts.clear();
    CONTEXTS_NEXT.store(contexts.next, Release);
    CONTEXTS_EXHAUSTED.store(false, Relaxed);
}

/// The contexts given: their pairs by id, and an index from pair to id.
struct Contexts {
    /// `MAX_CONTEXTS` pairs, `site << 32 | iteration`, in a mapping made once and never
    /// moved, shared with the readers of tags; null until mapped.
    pairs: *mut AtomicU64,
    /// Open addressing: ids, 0 for an empty slot, placed by their pairs' hash.
    index: MmapBuf<u32>,
    /// The next id to give.
    next: usize,
}

// SAFETY: `pairs` is a mapping that every thread may read (through atomics); the lock
// around `Contexts` orders its writers. The index is owned.
unsafe impl Send for Contexts {}

static CONTEXTS: SpinLock<Contexts> = SpinLock::new(Contexts {
    pairs: std::ptr::null_mut(),
    index: MmapBuf::empty(),
    next: 1,
});

impl Contexts {
    /// The pair slot of `id`.
    fn pair_of(&self, id: u32) -> &'static AtomicU64 {
        assert!(!self.pairs.is_null() && (id as usize) < MAX_CONTEXTS);
        // SAFETY: `pairs` is a never-unmapped mapping of MAX_CONTEXTS atomics (checked
        // above), all zeroes when mapped.
        unsafe { &*self.pairs.add(id as usize) }
    }

    /// The id of `pair`, given now if it has none; 0 when no id or memory is left, or
    /// the pairs are not mapped.
    fn intern(&mut self, pair: u64) -> u32 {
        if self.pairs.is_null() {
            return 0;
        }
        if let Some(id) = self.find(pair) {
            return id;
        }
        if self.next == MAX_CONTEXTS
            || ((self.next + 1) * 2 > self.index.capacity() && !self.grow_index())
        {
            return 0;
        }
        let id = self.next as u32;
        self.pair_of(id).store(pair, Relaxed);
        self.next += 1;
        place(self.index.as_mut_slice(), id, pair);
        id
    }

    /// The id already given to `pair`.
    fn find(&self, pair: u64) -> Option<u32> {
        let slots = self.index.as_slice();
        if slots.is_empty() {
            return None;
        }
        let mask = slots.len() - 1;
        let mut at = pair_slot(pair, mask);
        loop {
            match slots[at] {
                0 => return None,
                id if self.pair_of(id).load(Relaxed) == pair => return Some(id),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Doubles the index; `false` when no memory is left for it.
    fn grow_index(&mut self) -> bool {
        let Some(mut bigger) = MmapBuf::<u32>::zeroed((self.index.capacity() * 2).max(1024)) else {
            return false;
        };
        for &id in self.index.as_slice().iter().filter(|&&id| id != 0) {
            place(bigger.as_mut_slice(), id, self.pair_of(id).load(Relaxed));
        }
        self.index = bigger;
        true
    }

    /// Forgets every id, and gives back the memory of their pairs.
    fn clear(&mut self) {
        if !self.pairs.is_null() {
            // The kernel rounds the length up to whole pages.
            release_pages(self.pairs.cast(), self.next * size_of::<u64>());
        }
        self.index = MmapBuf::empty();
        self.next = 1;
    }
}

/// The home slot of `pair` in an index of `mask + 1` slots.
fn pair_slot(pair: u64, mask: usize) -> usize {
    (pair.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
}

/// Puts `id`, whose pair is `pair`, in the first free slot from its home.
fn place(slots: &mut [u32], id: u32, pair: u64) {
    let mask = slots.len() - 1;
    let mut at = pair_slot(pair, mask);
    while slots[at] != 0 {
        at = (at + 1) & mask;
    }
    slots[at] = id;
}

#[derive(Clone, Copy)]
struct SiteRecord {
    len: usize,
    /// 1 for a C heap site ([`Heap::C`]), 0 for a Rust one.
    c_heap: usize,
    frames: [usize; DEPTH],
}

// SAFETY: integers only; all zeroes is an empty record.
unsafe impl Zeroable for SiteRecord {}

#[derive(Clone, Copy)]
struct IndexSlot {
    hash: u64,
    site: u32,
}

// SAFETY: integers only; hash 0 marks an empty slot.
unsafe impl Zeroable for IndexSlot {}

struct Interner {
    index: MmapBuf<IndexSlot>,
    records: MmapBuf<SiteRecord>,
    len: usize,
}

static INTERNER: SpinLock<Interner> = SpinLock::new(Interner {
    index: MmapBuf::empty(),
    records: MmapBuf::empty(),
    len: 0,
});

impl Interner {
    fn intern(&mut self, hash: u64, frames: &[usize], heap: Heap) -> u32 {
        if let Some(site) = self.find(hash) {
            return site;
        }
        if (self.len + 1) * 2 > self.index.capacity() && !self.grow_index() {
            return NO_SITE;
        }
        if self.len == self.records.capacity() && !self.grow_records() {
            return NO_SITE;
        }
        let site = self.len as u32;
        let record = &mut self.records.as_mut_slice()[self.len];
        record.len = frames.len();
        record.c_heap = usize::from(heap == Heap::C);
        record.frames[..frames.len()].copy_from_slice(frames);
        self.len += 1;
        peak::SITES_IN_USE.store(self.len, Relaxed);
        insert_index(self.index.as_mut_slice(), IndexSlot { hash, site });
        site
    }

    fn find(&self, hash: u64) -> Option<u32> {
        let slots = self.index.as_slice();
        if slots.is_empty() {
            return None;
        }
        let mask = slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            match slots[at].hash {
                0 => return None,
                h if h == hash => return Some(slots[at].site),
                _ => at = (at + 1) & mask,
            }
        }
    }

    fn grow_index(&mut self) -> bool {
        let Some(mut bigger) = MmapBuf::<IndexSlot>::zeroed((self.index.capacity() * 2).max(1024))
        else {
            return false;
        };
        for &slot in self.index.as_slice().iter().filter(|s| s.hash != 0) {
            insert_index(bigger.as_mut_slice(), slot);
        }
        self.index = bigger;
        true
    }

    fn grow_records(&mut self) -> bool {
        let Some(mut bigger) = MmapBuf::zeroed((self.records.capacity() * 2).max(256)) else {
            return false;
        };
        bigger.as_mut_slice()[..self.len].copy_from_slice(&self.records.as_slice()[..self.len]);
        self.records = bigger;
        true
    }
}

fn insert_index(slots: &mut [IndexSlot], slot: IndexSlot) {
    let mask = slots.len() - 1;
    let mut at = slot.hash as usize & mask;
    while slots[at].hash != 0 {
        at = (at + 1) & mask;
    }
    slots[at] = slot;
}

/// The return addresses of `site`, innermost first.
pub(crate) fn site_frames(site: u32) -> Vec<usize> {
    let frames = {
        let interner = INTERNER.lock();
        interner
            .records
            .as_slice()
            .get(site as usize)
            .filter(|_| (site as usize) < interner.len)
            .map(|r| (r.len, r.frames))
    };
    frames.map_or_else(Vec::new, |(len, frames)| frames[..len].to_vec())
}

// ---------------------------------------------------------------------------------------
// Live-block table

/// A live block's address and, packed into one word, its size, site and iteration.
#[derive(Clone, Copy)]
struct LiveBlock {
    address: usize,
    packed: u64,
}

const SITE_BITS: u32 = 22;
const ITERATION_BITS: u32 = 20;
const SIZE_BITS: u32 = 64 - SITE_BITS - ITERATION_BITS;
/// Sizes below this are stored exactly; larger ones in whole MiB above it.
const EXACT_SIZES: u64 = 1 << (SIZE_BITS - 1);

impl LiveBlock {
    /// Sites beyond 2²² and iterations beyond 2²⁰ saturate; sizes of 2 MiB and more are
    /// kept to the nearest MiB (at most a fifth off, at 2.5 MiB; under 0.1 % from 512 MiB).
    fn new(address: usize, size: usize, site: u32, iteration: u32) -> Self {
        let field = |value: u64, bits: u32| value.min((1 << bits) - 1);
        let size = size as u64;
        let size = if size < EXACT_SIZES {
            size
        } else {
            EXACT_SIZES + ((size - EXACT_SIZES + (1 << 19)) >> 20)
        };
        Self {
            address,
            packed: field(size, SIZE_BITS) << (SITE_BITS + ITERATION_BITS)
                | field(u64::from(site), SITE_BITS) << ITERATION_BITS
                | field(u64::from(iteration), ITERATION_BITS),
        }
    }

    fn size(self) -> u64 {
        let stored = self.packed >> (SITE_BITS + ITERATION_BITS);
        if stored < EXACT_SIZES {
            stored
        } else {
            EXACT_SIZES + ((stored - EXACT_SIZES) << 20)
        }
    }

    fn site(self) -> u32 {
        let site = (self.packed >> ITERATION_BITS) & ((1 << SITE_BITS) - 1);
        if site == (1 << SITE_BITS) - 1 {
            NO_SITE
        } else {
            site as u32
        }
    }

    fn iteration(self) -> u32 {
        (self.packed & ((1 << ITERATION_BITS) - 1)) as u32
    }
}

// SAFETY: integers only; address 0 marks an empty slot.
unsafe impl Zeroable for LiveBlock {}

const LIVE_SHARDS: usize = 64;
const SHARD_BITS: u32 = LIVE_SHARDS.trailing_zeros();

struct LiveShard {
    slots: MmapBuf<LiveBlock>,
    len: usize,
}

/// A shard's lock on a cache line of its own: threads working on different shards must
/// not contend for one line.
#[repr(align(128))]
struct Padded<T>(T);

static LIVE: [Padded<SpinLock<LiveShard>>; LIVE_SHARDS] = [const {
    Padded(SpinLock::new(LiveShard {
        slots: MmapBuf::empty(),
        len: 0,
    }))
}; LIVE_SHARDS];

fn address_hash(address: usize) -> u64 {
    ((address >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn shard_index(address: usize) -> usize {
    (address_hash(address) >> (64 - SHARD_BITS)) as usize
}

fn shard_of(address: usize) -> &'static SpinLock<LiveShard> {
    &LIVE[shard_index(address)].0
}

/// Where each shard's slots are, readable without the shard's lock, for prefetching
/// only: a stale value costs a useless prefetch, never a fault.
struct SlotsView {
    base: AtomicUsize,
    capacity: AtomicUsize,
}

static VIEWS: [SlotsView; LIVE_SHARDS] = [const {
    SlotsView {
        base: AtomicUsize::new(0),
        capacity: AtomicUsize::new(0),
    }
}; LIVE_SHARDS];

fn publish(shard: usize, slots: &MmapBuf<LiveBlock>) {
    VIEWS[shard]
        .base
        .store(slots.as_slice().as_ptr() as usize, Relaxed);
    VIEWS[shard].capacity.store(slots.capacity(), Relaxed);
}

/// Starts loading the table line that the entry of `address`, a block of `size` bytes,
/// lives in, so the cache miss overlaps the work done before the table is touched (the
/// stack walk, the counters). Tags in the shadow need none: they sit next to the tags of
/// the blocks allocated just before.
#[inline(always)]
fn prefetch(address: *mut u8, size: usize) {
    if shadow::suits(address as usize, size) {
        return;
    }
    let view = &VIEWS[shard_index(address as usize)];
    let capacity = view.capacity.load(Relaxed);
    if capacity == 0 {
        return;
    }
    let slot = home_slot(address as usize, capacity);
    let _line = view
        .base
        .load(Relaxed)
        .wrapping_add(slot * size_of::<LiveBlock>());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(_line as *const i8)
    };
}

/// Slot of `address` in a table of `capacity` (a power of two): the hash bits right
/// below those that chose the shard.
fn home_slot(address: usize, capacity: usize) -> usize {
    ((address_hash(address) << SHARD_BITS) >> 32) as usize & (capacity - 1)
}

impl LiveShard {
    fn insert(&mut self, block: LiveBlock) {
        if (self.len + 1) * 2 > self.slots.capacity() {
            if !self.grow() {
                return; // Out of memory for bookkeeping: the block goes untracked.
            }
            publish(shard_index(block.address), &self.slots);
        }
        let capacity = self.slots.capacity();
        let slots = self.slots.as_mut_slice();
        let mut at = home_slot(block.address, capacity);
        loop {
            if slots[at].address == 0 {
                self.len += 1;
                break;
            }
            if slots[at].address == block.address {
                break;
            }
            at = (at + 1) & (capacity - 1);
        }
        slots[at] = block;
    }

    /// Removes `address` with backward-shift deletion, so no tombstones accumulate.
    fn remove(&mut self, address: usize) -> Option<LiveBlock> {
        let capacity = self.slots.capacity();
        if self.len == 0 {
            return None;
        }
        let mask = capacity - 1;
        let slots = self.slots.as_mut_slice();
        let mut at = home_slot(address, capacity);
        loop {
            match slots[at].address {
                0 => return None,
                a if a == address => break,
                _ => at = (at + 1) & mask,
            }
        }
        let removed = slots[at];
        let mut hole = at;
        let mut next = (hole + 1) & mask;
        while slots[next].address != 0 {
            let home = home_slot(slots[next].address, capacity);
            // Move the entry back if the hole lies between its home slot and where it sits.
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                slots[hole] = slots[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        slots[hole] = LiveBlock {
            address: 0,
            packed: 0,
        };
        self.len -= 1;
        Some(removed)
    }

    fn grow(&mut self) -> bool {
        let Some(bigger) = MmapBuf::zeroed((self.slots.capacity() * 2).max(512)) else {
            return false;
        };
        let old = std::mem::replace(&mut self.slots, bigger);
        self.len = 0;
        for &block in old.as_slice().iter().filter(|b| b.address != 0) {
            self.insert(block);
        }
        true
    }

    fn clear(&mut self) {
        self.slots = MmapBuf::empty();
        self.len = 0;
    }
}

/// Live tagged blocks that came from one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteSurvivors {
    pub site: u32,
    pub bytes: u64,
    pub blocks: u64,
    pub iterations: u32,
    pub first_iteration: u32,
    pub last_iteration: u32,
    /// Distinct iterations per quarter of the `measured` iterations.
    pub per_quarter: [u32; 4],
    /// Bytes by the iteration that allocated them, in [`HISTOGRAM_BUCKETS`] buckets of
    /// equal width over the `measured` iterations (fewer when fewer ran).
    pub bytes_by_iteration: Vec<u64>,
}

/// Buckets of [`SiteSurvivors::bytes_by_iteration`] at most.
pub(crate) const HISTOGRAM_BUCKETS: u32 = 64;

/// All tagged blocks of `heap` still live, grouped by site (largest first), and the
/// number of distinct iterations they came from, of `measured` iterations.
pub(crate) fn survivors(measured: u32, heap: Heap) -> (Vec<SiteSurvivors>, u32) {
    let _guard = ReentrancyGuard::enter();
    // Copy out under each shard's lock into a buffer sized beforehand: allocating while
    // holding a shard lock could deadlock when that allocation lands in the same shard.
    let estimate: usize = LIVE.iter().map(|s| s.0.lock().len).sum();
    let mut blocks: Vec<(u32, u32, u64)> = Vec::with_capacity(estimate + 1024);
    for shard in &LIVE {
        let shard = shard.0.lock();
        let room = blocks.capacity() - blocks.len();
        let live = shard.slots.as_slice().iter().filter(|b| b.address != 0);
        blocks.extend(live.take(room).map(|b| (b.site(), b.iteration(), b.size())));
    }
    // Read after the copy, so every site a copied block names has its record.
    let c_sites: Vec<bool> = {
        let interner = INTERNER.lock();
        let records = &interner.records.as_slice()[..interner.len];
        records.iter().map(|r| r.c_heap == 1).collect()
    };
    // NO_SITE has no record: it is a Rust block's (C blocks without a site are not kept).
    let is_c = |site: u32| c_sites.get(site as usize).copied().unwrap_or(false);
    blocks.retain(|b| is_c(b.0) == (heap == Heap::C));
    // No lock is held here, so growing `blocks` is safe. The shadow holds Rust blocks only.
    if heap == Heap::Rust {
        SHADOW.for_each(|address, tag| {
            let block = untag(address, tag);
            blocks.push((block.site(), block.iteration(), block.size()));
        });
    }
    blocks.sort_unstable();
    let mut iterations: Vec<u32> = blocks.iter().map(|b| b.1).collect();
    iterations.sort_unstable();
    iterations.dedup();
    let mut sites: Vec<SiteSurvivors> = Vec::new();
    for group in blocks.chunk_by(|a, b| a.0 == b.0) {
        let mut distinct = group.iter().map(|b| b.1).collect::<Vec<_>>();
        distinct.dedup(); // Sorted by (site, iteration) already.
        let mut per_quarter = [0u32; 4];
        for &iteration in &distinct {
            let quarter = (u64::from(iteration) * 4 / u64::from(measured.max(1))).min(3);
            per_quarter[quarter as usize] += 1;
        }
        let width = measured.max(1).div_ceil(HISTOGRAM_BUCKETS);
        let mut bytes_by_iteration = vec![0u64; measured.max(1).div_ceil(width) as usize];
        for &(_, iteration, size) in group {
            let bucket = ((iteration / width) as usize).min(bytes_by_iteration.len() - 1);
            bytes_by_iteration[bucket] += size;
        }
        sites.push(SiteSurvivors {
            per_quarter,
            bytes_by_iteration,
            site: group[0].0,
            bytes: group.iter().map(|b| b.2).sum(),
            blocks: group.len() as u64,
            iterations: distinct.len() as u32,
            first_iteration: distinct[0],
            last_iteration: distinct[distinct.len() - 1],
        });
    }
    sites.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.site.cmp(&b.site)));
    (sites, iterations.len() as u32)
}

/// Bookkeeping memory: `(tagged blocks, bytes of the live-block table and the shadow,
/// bytes of the site interner and the contexts)`.
pub fn bookkeeping() -> (usize, usize, usize) {
    let (mut blocks, mut table) = (SHADOW.count(), SHADOW.footprint());
    for shard in &LIVE {
        let shard = shard.0.lock();
        blocks += shard.len;
        table += shard.slots.capacity() * size_of::<LiveBlock>();
    }
    let contexts = {
        let contexts = CONTEXTS.lock();
        contexts.index.capacity() * size_of::<u32>() + contexts.next * size_of::<u64>()
    };
    let interner = INTERNER.lock();
    let interned = interner.index.capacity() * size_of::<IndexSlot>()
        + interner.records.capacity() * size_of::<SiteRecord>();
    (blocks, table, interned + contexts)
}

/// Tagged Rust blocks still live.
pub(crate) fn live_tagged_blocks() -> usize {
    let tagged = SHADOW.count() + LIVE.iter().map(|s| s.0.lock().len).sum::<usize>();
    tagged.saturating_sub(C_BLOCKS.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(address: usize) -> LiveBlock {
        LiveBlock::new(address, address, 1, 2)
    }

    /// Most recorded allocations take the slow path's lane; one that is due to flush the
    /// counters takes the settled path, one call deeper. Both must capture the same stack
    /// for one call site, or its survivors are split between two sites.
    #[test]
    fn a_call_site_is_one_site_whichever_slow_path_records_it() {
        use std::alloc::{GlobalAlloc, Layout, System};
        const BLOCKS: usize = 2000;
        // A flush is due every FLUSH_BYTES of net change: the loop crosses a few.
        const SIZE: usize = 48;
        const _: () = assert!(BLOCKS * SIZE > 4 * super::super::counters::FLUSH_BYTES as usize);
        let _counters = super::super::counters::TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::thread::spawn(|| {
            let alloc = super::super::TrackingAlloc::new(System);
            let layout = Layout::from_size_align(SIZE, 16).expect("valid");
            let method = start(0);
            // SAFETY: a non-zero size; each block is freed once, with its layout.
            let blocks: Vec<*mut u8> = (0..BLOCKS)
                .map(|_| unsafe { alloc.alloc(layout) })
                .collect();
            stop();
            let (sites, _) = survivors(1, Heap::Rust);
            clear();
            for &block in &blocks {
                // SAFETY: as above.
                unsafe { alloc.dealloc(block, layout) };
            }
            let blocks_by_site: Vec<u64> = sites.iter().map(|site| site.blocks).collect();
            assert_eq!(blocks_by_site, [BLOCKS as u64]);
            // By DWARF, allocations keep off the lane: only frame pointers test it.
            #[cfg(target_arch = "x86_64")]
            assert_eq!(method, stack::Method::FramePointers);
        })
        .join()
        .expect("the recording thread panicked");
    }

    #[test]
    fn packed_fields_round_trip_and_saturate() {
        let b = LiveBlock::new(64, 1000, 7, 199);
        assert_eq!((b.size(), b.site(), b.iteration()), (1000, 7, 199));
        let big = LiveBlock::new(64, (5 << 30) + 123, NO_SITE, 5_000_000);
        assert_eq!(
            (big.size(), big.site(), big.iteration()),
            (5 << 30, NO_SITE, (1 << 20) - 1)
        );
    }

    #[test]
    fn a_shadow_tag_holds_the_size_and_the_context_and_is_never_zero() {
        let largest = MAX_CONTEXTS as u32 - 1;
        for (context, size) in [(1, 1), (1, shadow::MAX_SIZE), (largest, 17), (largest, 1)] {
            let tag = shadow_tag(context, size);
            assert_ne!(tag, 0);
            assert_eq!(tag_parts(tag), (context, size));
        }
    }

    fn contexts() -> Contexts {
        let pairs = map_sparse(MAX_CONTEXTS * size_of::<u64>()).expect("mapped");
        Contexts {
            pairs: pairs.as_ptr().cast(),
            index: MmapBuf::empty(),
            next: 1,
        }
    }

    #[test]
    fn contexts_give_one_id_per_pair_until_cleared() {
        let mut contexts = contexts();
        let pair = |i: u64| ((i % 50) << 32) | (i / 50);
        let ids: Vec<u32> = (0..5000).map(|i| contexts.intern(pair(i))).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5000);
        assert!(!distinct.contains(&0));
        let again: Vec<u32> = (0..5000).map(|i| contexts.intern(pair(i))).collect();
        assert_eq!(ids, again);
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(contexts.pair_of(id).load(Relaxed), pair(i as u64));
        }
        contexts.clear();
        assert_eq!(contexts.intern(pair(4999)), 1, "ids start over");
    }

    #[test]
    fn contexts_run_out_at_the_last_id_a_tag_can_hold() {
        let mut contexts = contexts();
        let first = contexts.intern(7);
        contexts.next = MAX_CONTEXTS - 1;
        assert_eq!(contexts.intern(8), MAX_CONTEXTS as u32 - 1);
        assert_eq!(contexts.intern(9), 0, "none left");
        assert_eq!(contexts.intern(7), first, "given ones are still found");
        let unmapped = Contexts {
            pairs: std::ptr::null_mut(),
            index: MmapBuf::empty(),
            next: 1,
        };
        assert_eq!({ unmapped }.intern(7), 0, "no pairs mapped: no context");
    }

    #[test]
    fn live_shard_inserts_removes_and_grows_without_losing_entries() {
        let mut shard = LiveShard {
            slots: MmapBuf::empty(),
            len: 0,
        };
        let addresses: Vec<usize> = (1..5000).map(|i| i * 48).collect();
        for &a in &addresses {
            shard.insert(block(a));
        }
        assert_eq!(shard.len, addresses.len());
        for &a in addresses.iter().step_by(2) {
            assert_eq!(shard.remove(a).map(|b| b.size()), Some(a as u64));
        }
        for (i, &a) in addresses.iter().enumerate() {
            assert_eq!(shard.remove(a).is_some(), i % 2 == 1, "address {a}");
        }
        assert_eq!(shard.len, 0);
        assert!(shard.remove(48).is_none());
    }

    #[test]
    fn interner_gives_one_id_per_distinct_stack() {
        let mut interner = Interner {
            index: MmapBuf::empty(),
            records: MmapBuf::empty(),
            len: 0,
        };
        let stacks: Vec<Vec<usize>> = (0..3000).map(|i| vec![i, i + 1, 7]).collect();
        let ids: Vec<u32> = stacks
            .iter()
            .map(|s| interner.intern(StackHash::of(s), s, Heap::Rust))
            .collect();
        let again: Vec<u32> = stacks
            .iter()
            .map(|s| interner.intern(StackHash::of(s), s, Heap::Rust))
            .collect();
        assert_eq!(ids, again);
        assert_eq!(interner.len, 3000);
        assert_eq!(&interner.records.as_slice()[5].frames[..3], &[5, 6, 7]);
    }
}
