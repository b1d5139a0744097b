//! Tags of small live blocks, kept at a place computed from each block's address (a
//! shadow of the heap) instead of in the live-block hash table.
//!
//! Small blocks are most of a heap's blocks, and the ones allocated and freed in tight
//! loops. In a hash table larger than the cache, each of them costs a cache miss when it
//! is allocated and another when it is freed, because its slot is random. Here the tag of
//! the block at address `a` is the 4-byte word at offset `a / 16` of a sparse map. Blocks
//! that the allocator hands out one after another from one slab have their tags side by
//! side, so a loop touches one cache line per sixteen blocks of 16 bytes. No lock is needed
//! either: a tag is only ever written by the thread that owns its block.
//!
//! Only blocks at 16-byte-aligned addresses live here, so that no two share a granule
//! (an 8-byte block at an odd multiple of 8 goes to the table). The choice depends on
//! the address and size alone, so a block is looked for where it was put.
//!
//! Layout: a directory with one slot per 64 MiB of address space points at leaves. A
//! leaf holds the tags of its 64 MiB (one [`Tag`] per 16-byte granule, mapped without
//! reserving memory, paid for only where written), then a bitmap of its 64 KiB chunks of
//! tags that were ever written, so counting and clearing read only those.
//!
//! Cost: up to a quarter byte of tags per byte of heap holding tracked blocks, which is why
//! only blocks up to [`MAX_SIZE`] live here. The hash table costs 32 to 64 bytes per
//! block, whatever its size, so it keeps the larger ones.

use std::ptr::null_mut;
use std::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use super::raw::{SpinLock, map_sparse, release_pages};

/// The largest block, in bytes, whose tag lives in the shadow.
pub(crate) const MAX_SIZE: usize = 128;

/// Tags cover 16-byte granules; only blocks starting a granule are tagged here.
const GRANULE_SHIFT: u32 = 4;

/// Whether the tag of a `size`-byte block at `address` belongs in the shadow.
#[inline(always)]
pub(crate) fn suits(address: usize, size: usize) -> bool {
    size <= MAX_SIZE && address.trailing_zeros() >= GRANULE_SHIFT
}
/// Address space covered by one leaf: 64 MiB.
const LEAF_SHIFT: u32 = 26;
/// User-space addresses: 47 bits on x86-64, 48 on AArch64 (which maps near 2⁴⁸). A
/// block above is kept in the hash table.
const ADDRESS_BITS: u32 = 48;
const DIRECTORY_SLOTS: usize = 1 << (ADDRESS_BITS - LEAF_SHIFT);
const TAGS_PER_LEAF: usize = 1 << (LEAF_SHIFT - GRANULE_SHIFT);
/// Tags per chunk of the written-chunks bitmap: 64 KiB of tags, page-aligned.
const TAGS_PER_CHUNK: usize = (64 << 10) / size_of::<Tag>();
const CHUNKS_PER_LEAF: usize = TAGS_PER_LEAF / TAGS_PER_CHUNK;
const BITMAP_WORDS: usize = CHUNKS_PER_LEAF / 64;
/// Bytes of a leaf's tags, which its bitmap follows.
const TAG_BYTES: usize = TAGS_PER_LEAF * size_of::<Tag>();
const LEAF_BYTES: usize = TAG_BYTES + BITMAP_WORDS * size_of::<u64>();
/// Leaves a shadow can have: 256 GiB of address space holding small tracked blocks.
const MAX_LEAVES: usize = 4096;

/// A block's tag: what the shadow keeps of it, never 0 (which marks no block).
pub(crate) type Tag = u32;

/// A leaf: `TAGS_PER_LEAF` tags, then `BITMAP_WORDS` words of written-chunk bits.
#[derive(Clone, Copy)]
struct Leaf(*mut u8);

impl Leaf {
    #[inline(always)]
    fn tag_at(self, index: usize) -> &'static AtomicU32 {
        debug_assert!(index < TAGS_PER_LEAF);
        // SAFETY: a leaf is a never-unmapped zeroed mapping of LEAF_BYTES bytes, aligned
        // to a page and accessed only through atomics (all zeroes is a valid atomic).
        unsafe { &*self.0.add(index * size_of::<Tag>()).cast() }
    }

    #[inline(always)]
    fn bitmap_word(self, chunk: usize) -> &'static AtomicU64 {
        debug_assert!(chunk < CHUNKS_PER_LEAF);
        // SAFETY: as in `tag_at`; the bitmap follows the tags, 8-byte aligned.
        unsafe { &*self.0.add(TAG_BYTES + chunk / 64 * size_of::<u64>()).cast() }
    }

    fn tag(self, address: usize) -> &'static AtomicU32 {
        self.tag_at(tag_index(address))
    }

    #[inline(always)]
    fn chunk_written(self, chunk: usize) -> bool {
        self.bitmap_word(chunk).load(Relaxed) & (1 << (chunk % 64)) != 0
    }

    #[inline(always)]
    fn mark_written(self, chunk: usize) {
        let word = self.bitmap_word(chunk);
        let bit = 1 << (chunk % 64);
        // Read first: the bit is almost always set already, and a plain load keeps the
        // line shared between threads.
        if word.load(Relaxed) & bit == 0 {
            word.fetch_or(bit, Relaxed);
        }
    }

    /// Calls `f(tag index, tag)` for each tag set in a written chunk.
    fn for_each_tag(self, mut f: impl FnMut(usize, Tag)) {
        for chunk in (0..CHUNKS_PER_LEAF).filter(|&c| self.chunk_written(c)) {
            let first = chunk * TAGS_PER_CHUNK;
            for index in first..first + TAGS_PER_CHUNK {
                let tag = self.tag_at(index).load(Relaxed);
                if tag != 0 {
                    f(index, tag);
                }
            }
        }
    }
}

#[inline(always)]
fn tag_index(address: usize) -> usize {
    (address & ((1 << LEAF_SHIFT) - 1)) >> GRANULE_SHIFT
}

/// The shadow: a directory of leaves and the list of leaves installed so far.
pub(crate) struct Shadow {
    /// `DIRECTORY_SLOTS` leaf pointers, mapped by [`Shadow::prepare`]; null until then.
    directory: AtomicPtr<AtomicPtr<u8>>,
    /// Installed leaves, in order, with the first address each covers.
    leaves: [AtomicPtr<u8>; MAX_LEAVES],
    bases: [AtomicUsize; MAX_LEAVES],
    /// Leaves published in `leaves` (written under the lock, read without it).
    installed: AtomicUsize,
    install: SpinLock<()>,
}

impl Shadow {
    pub(crate) const fn new() -> Self {
        Self {
            directory: AtomicPtr::new(null_mut()),
            leaves: [const { AtomicPtr::new(null_mut()) }; MAX_LEAVES],
            bases: [const { AtomicUsize::new(0) }; MAX_LEAVES],
            installed: AtomicUsize::new(0),
            install: SpinLock::new(()),
        }
    }

    /// Maps the directory (32 MiB of address space, a page of memory per 32 GiB of heap
    /// used). Called before recording starts, not from inside the allocator; until it
    /// succeeds, [`Shadow::insert`] declines every block.
    pub(crate) fn prepare(&self) {
        if !self.directory.load(Acquire).is_null() {
            return;
        }
        let _installing = self.install.lock();
        if self.directory.load(Acquire).is_null()
            && let Some(map) = map_sparse(DIRECTORY_SLOTS * size_of::<usize>())
        {
            self.directory.store(map.as_ptr().cast(), Release);
        }
    }

    #[inline(always)]
    fn directory_slot(&self, address: usize) -> Option<&AtomicPtr<u8>> {
        if address >> ADDRESS_BITS != 0 {
            return None;
        }
        let directory = self.directory.load(Acquire);
        // SAFETY: the directory is a never-unmapped zeroed mapping of DIRECTORY_SLOTS
        // pointers, accessed only through atomics; the index is below DIRECTORY_SLOTS.
        (!directory.is_null()).then(|| unsafe { &*directory.add(address >> LEAF_SHIFT) })
    }

    /// Tags the block at `address`, which [`suits`] the shadow (`tag` must not be 0).
    /// Returns `false`, storing nothing, when the shadow cannot hold it: not prepared, an
    /// address out of range, or no memory for a new leaf.
    #[inline]
    pub(crate) fn insert(&self, address: usize, tag: Tag) -> bool {
        debug_assert_ne!(tag, 0);
        debug_assert!(address.trailing_zeros() >= GRANULE_SHIFT);
        let Some(slot) = self.directory_slot(address) else {
            return false;
        };
        let mut leaf = slot.load(Acquire);
        if leaf.is_null() {
            match self.install_leaf(slot, address) {
                Some(installed) => leaf = installed,
                None => return false,
            }
        }
        let leaf = Leaf(leaf);
        let index = tag_index(address);
        leaf.mark_written(index / TAGS_PER_CHUNK);
        leaf.tag_at(index).store(tag, Relaxed);
        true
    }

    /// Removes and returns the tag of the block at `address`, if it has one.
    #[inline]
    pub(crate) fn remove(&self, address: usize) -> Option<Tag> {
        let leaf = self.directory_slot(address)?.load(Acquire);
        if leaf.is_null() {
            return None;
        }
        let slot = Leaf(leaf).tag(address);
        // The owner of the block is the only writer of its tag: no read-modify-write.
        let tag = slot.load(Relaxed);
        (tag != 0).then(|| {
            slot.store(0, Relaxed);
            tag
        })
    }

    /// Clears the tag of the block at `address`, if it may have one, without reading it.
    #[inline(always)]
    pub(crate) fn forget(&self, address: usize) {
        let Some(slot) = self.directory_slot(address) else {
            return;
        };
        let leaf = slot.load(Acquire);
        if leaf.is_null() {
            return;
        }
        let leaf = Leaf(leaf);
        let index = tag_index(address);
        // A chunk never written holds no tag; writing it would only cost a page.
        if leaf.chunk_written(index / TAGS_PER_CHUNK) {
            leaf.tag_at(index).store(0, Relaxed);
        }
    }

    #[cold]
    fn install_leaf(&self, slot: &AtomicPtr<u8>, address: usize) -> Option<*mut u8> {
        // Once per 64 MiB of address space: a lock keeps the list and directory in step.
        let _installing = self.install.lock();
        let existing = slot.load(Acquire);
        if !existing.is_null() {
            return Some(existing);
        }
        let count = self.installed.load(Relaxed);
        if count == MAX_LEAVES {
            return None;
        }
        let leaf = map_sparse(LEAF_BYTES)?.as_ptr();
        self.leaves[count].store(leaf, Relaxed);
        self.bases[count].store(address & !((1 << LEAF_SHIFT) - 1), Relaxed);
        self.installed.store(count + 1, Release);
        slot.store(leaf, Release);
        Some(leaf)
    }

    fn installed_leaves(&self) -> impl Iterator<Item = (usize, Leaf)> + '_ {
        let count = self.installed.load(Acquire);
        (0..count).map(|i| {
            (
                self.bases[i].load(Relaxed),
                Leaf(self.leaves[i].load(Relaxed)),
            )
        })
    }

    /// Calls `f(address, tag)` for every tagged block.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, Tag)) {
        for (base, leaf) in self.installed_leaves() {
            leaf.for_each_tag(|index, tag| f(base + (index << GRANULE_SHIFT), tag));
        }
    }

    /// Tagged blocks.
    pub(crate) fn count(&self) -> usize {
        let mut count = 0;
        self.for_each(|_, _| count += 1);
        count
    }

    /// Bytes of tags written, at most: the written chunks.
    pub(crate) fn footprint(&self) -> usize {
        let chunks: usize = self
            .installed_leaves()
            .map(|(_, leaf)| {
                (0..CHUNKS_PER_LEAF)
                    .filter(|&c| leaf.chunk_written(c))
                    .count()
            })
            .sum();
        chunks * TAGS_PER_CHUNK * size_of::<Tag>()
    }

    /// Drops every tag and gives the memory back. For use when nothing is recording: a
    /// block tagged at the same time may lose its tag (it then goes untracked), or keep
    /// it in a chunk no longer marked written, which is why recording clears again
    /// before it starts.
    pub(crate) fn clear(&self) {
        for (_, leaf) in self.installed_leaves() {
            for chunk in 0..CHUNKS_PER_LEAF {
                let word = leaf.bitmap_word(chunk);
                let bit = 1 << (chunk % 64);
                if word.fetch_and(!bit, Relaxed) & bit != 0 {
                    let first = leaf.tag_at(chunk * TAGS_PER_CHUNK).as_ptr();
                    release_pages(first.cast(), TAGS_PER_CHUNK * size_of::<Tag>());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far from where allocators place their blocks, so tests never meet real ones.
    const BASE: usize = 0x1234_0000_0000;

    fn shadow() -> Box<Shadow> {
        let shadow = Box::new(Shadow::new());
        shadow.prepare();
        shadow
    }

    #[test]
    fn neighbouring_blocks_keep_their_own_tags() {
        let shadow = shadow();
        for i in 0..100 {
            assert!(shadow.insert(BASE + i * 16, i as Tag + 1));
        }
        assert_eq!(shadow.remove(BASE + 16), Some(2));
        assert_eq!(shadow.remove(BASE + 16), None, "removed once");
        assert_eq!(shadow.remove(BASE + 99 * 16), Some(100));
        assert_eq!(shadow.remove(BASE + 100 * 16), None, "never tagged");
        shadow.forget(BASE + 32);
        shadow.forget(BASE + (2 << LEAF_SHIFT)); // In no leaf: nothing to clear.
        assert_eq!(shadow.remove(BASE + 32), None, "forgotten");
        assert_eq!(shadow.count(), 97);
    }

    #[test]
    fn blocks_in_several_leaves_are_all_found() {
        let shadow = shadow();
        let addresses = [
            BASE,
            BASE + (1 << LEAF_SHIFT) + 16,
            BASE + (5 << LEAF_SHIFT) - 16,
        ];
        for (i, &address) in addresses.iter().enumerate() {
            assert!(shadow.insert(address, 10 + i as Tag));
        }
        let mut found = Vec::new();
        shadow.for_each(|address, tag| found.push((address, tag)));
        found.sort_unstable();
        assert_eq!(
            found,
            vec![(addresses[0], 10), (addresses[1], 11), (addresses[2], 12)]
        );
        assert_eq!(shadow.footprint(), 3 * TAGS_PER_CHUNK * size_of::<Tag>());
    }

    #[test]
    fn only_small_blocks_at_granule_starts_suit_the_shadow() {
        assert!(suits(BASE + 16, 8) && suits(BASE, MAX_SIZE));
        assert!(!suits(BASE + 8, 8), "an 8-byte block sharing a granule");
        assert!(!suits(BASE, MAX_SIZE + 1));
    }

    #[test]
    fn out_of_range_or_unprepared_blocks_are_declined() {
        let shadow = shadow();
        assert!(!shadow.insert(1 << ADDRESS_BITS, 1));
        assert_eq!(shadow.remove(1 << ADDRESS_BITS), None);
        let unprepared = Box::new(Shadow::new());
        assert!(!unprepared.insert(BASE, 1));
        assert_eq!(unprepared.remove(BASE), None);
    }

    #[test]
    fn clearing_forgets_every_tag_and_the_shadow_stays_usable() {
        let shadow = shadow();
        for i in 0..20_000 {
            shadow.insert(BASE + i * 16, 7);
        }
        assert_eq!(shadow.count(), 20_000);
        shadow.clear();
        assert_eq!((shadow.count(), shadow.footprint()), (0, 0));
        assert_eq!(shadow.remove(BASE), None);
        assert!(shadow.insert(BASE + 16, 9));
        assert_eq!(shadow.remove(BASE + 16), Some(9));
    }
}
