//! Capturing the return addresses of the current call stack from inside the allocator.
//!
//! Two ways, chosen once per process by [`detect`]:
//! - **frame pointers**: follow the chain of saved frame pointers, tens of nanoseconds.
//!   Correct only when the code was built with `-C force-frame-pointers=yes` (the Rust
//!   standard library ships with frame pointers). A function built without them does not
//!   appear in the chain: its caller is skipped, or the walk follows a stale value and
//!   ends at the stack-bounds check. Whole crates built that way fail [`detect`]'s check.
//! - **DWARF**: `backtrace::trace_unsynchronized`, correct everywhere, microseconds.
//!
//! [`detect`] walks the same stack both ways and keeps frame pointers only if they agree.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Frames kept per allocation site.
pub(crate) const DEPTH: usize = 32;

const UNDECIDED: u8 = 0;
const FRAME_POINTERS: u8 = 1;
const DWARF: u8 = 2;
static METHOD: AtomicU8 = AtomicU8::new(UNDECIDED);

/// How allocation sites are captured in this process.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    FramePointers,
    Dwarf,
}

/// Decides, once, how this process captures stacks; later calls return the decision.
pub(crate) fn detect() -> Method {
    if METHOD.load(Relaxed) == UNDECIDED {
        let method = if frame_pointers_agree_with_dwarf() {
            FRAME_POINTERS
        } else {
            DWARF
        };
        METHOD.store(method, Relaxed);
    }
    match METHOD.load(Relaxed) {
        FRAME_POINTERS => Method::FramePointers,
        _ => Method::Dwarf,
    }
}

#[inline(never)]
fn frame_pointers_agree_with_dwarf() -> bool {
    let mut by_fp = Walk::new();
    by_fp.walk(frame_pointer());
    let mut by_dwarf = Frames::new();
    unwind_dwarf(&mut by_dwarf);
    let (by_fp, by_dwarf) = (by_fp.frames(), by_dwarf.as_slice());
    if by_fp.len() < 4 {
        return false;
    }
    // DWARF starts inside the unwinder; line the two up at the first frame-pointer frame.
    by_dwarf
        .iter()
        .position(|&ip| ip == by_fp[0])
        .is_some_and(|at| by_dwarf[at..].starts_with(&by_fp[..4]))
}

/// Up to [`DEPTH`] return addresses, innermost first. The buffer is left uninitialised
/// past `len`: it is filled on every allocation while recording, and zeroing it first
/// would cost more than a short walk does.
pub(crate) struct Frames {
    len: usize,
    buf: MaybeUninit<[usize; DEPTH]>,
}

impl Frames {
    /// An empty buffer.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self {
            len: 0,
            buf: MaybeUninit::uninit(),
        }
    }

    /// Appends `frame`; returns `false`, storing nothing, when full.
    #[inline(always)]
    fn push(&mut self, frame: usize) -> bool {
        if self.len == DEPTH {
            return false;
        }
        // SAFETY: `len < DEPTH`, so the slot is inside the buffer; writing through a raw
        // pointer initialises it without reading it.
        unsafe {
            self.buf
                .as_mut_ptr()
                .cast::<usize>()
                .add(self.len)
                .write(frame)
        };
        self.len += 1;
        true
    }

    /// The frames captured.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[usize] {
        // SAFETY: `push` initialised the first `len` slots, and only it raises `len`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast(), self.len) }
    }
}

/// Captures the current stack and passes its frames and [`StackHash`] to `use_stack`.
/// By frame pointers, the walk starts at the frame record at `start`: a
/// [`frame_pointer`] read in a function that is still running, so that its record is
/// still there (an address outside the thread's stack gives an empty walk, as any frame
/// pointer the walk meets). DWARF unwinding starts here, whatever `start`. The caller must hold
/// the [`ReentrancyGuard`](super::ReentrancyGuard): a frame-pointer capture works in this
/// thread's [`Walk`].
#[inline(always)]
pub(crate) fn capture<R>(start: usize, use_stack: impl FnOnce(&[usize], u64) -> R) -> R {
    if METHOD.load(Relaxed) == FRAME_POINTERS {
        let fp = start;
        LAST_WALK.with(|walk| {
            // SAFETY: only this thread reaches its `LAST_WALK`, and only here, where the
            // reentrancy guard keeps a second capture from starting inside this one.
            let walk = unsafe { &mut *walk.get() };
            if !walk.replays(fp) {
                walk.walk(fp);
            }
            use_stack(walk.frames(), walk.hash)
        })
    } else {
        let mut frames = Frames::new();
        unwind_dwarf(&mut frames);
        use_stack(frames.as_slice(), StackHash::of(frames.as_slice()))
    }
}

/// Like [`capture`], but always by DWARF unwinding: for C and C++ callers, which are
/// seldom built with frame pointers.
#[cfg(feature = "jemalloc")]
pub(crate) fn capture_dwarf(frames: &mut Frames) -> u64 {
    unwind_dwarf(frames);
    StackHash::of(frames.as_slice())
}

/// A hash of a stack, never 0 (it marks empty slots). Two stacks with the same 64-bit
/// hash are treated as one site: at 10⁵ sites the chance of that is about 10⁻⁹.
///
/// Each frame is multiplied by a constant of its own position and the products summed,
/// so the frame-pointer walk folds each frame in as it reads it: the multiplication
/// overlaps the walk's next load, where a chained hash would wait for each in turn. A
/// final mix spreads the sum's bits over the low bits that the caches index by.
#[derive(Clone, Copy)]
pub(crate) struct StackHash(u64);

impl StackHash {
    const fn new() -> Self {
        Self(0)
    }

    #[inline(always)]
    fn add(&mut self, position: usize, frame: usize) {
        self.0 = self
            .0
            .wrapping_add((frame as u64).wrapping_mul(POSITION_CONSTANTS[position]));
    }

    fn finish(self, len: usize) -> u64 {
        let sum = self.0.wrapping_add(len as u64);
        let mixed = (sum ^ (sum >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed ^ (mixed >> 29)).max(1)
    }

    /// The hash of `frames` (at most [`DEPTH`]).
    pub(crate) fn of(frames: &[usize]) -> u64 {
        let mut hash = Self::new();
        for (position, &frame) in frames.iter().enumerate() {
            hash.add(position, frame);
        }
        hash.finish(frames.len())
    }
}

/// Odd constants, one per frame position (SplitMix64 outputs with the low bit set): a
/// multiplication by one loses no bit, and the same frames in another order hash apart.
const POSITION_CONSTANTS: [u64; DEPTH] = {
    let mut constants = [0u64; DEPTH];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut i = 0;
    while i < DEPTH {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        constants[i] = (z ^ (z >> 31)) | 1;
        i += 1;
    }
    constants
};

fn unwind_dwarf(frames: &mut Frames) {
    // SAFETY: `trace_unsynchronized` requires that no other thread unwinds through the
    // backtrace crate at the same time without synchronisation; libgcc's unwinder that it
    // calls is itself thread-safe, and the closure only writes into our own buffer.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            frames.push(frame.ip() as usize) && frames.len < DEPTH
        });
    }
}

thread_local! {
    static STACK_BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    static LAST_WALK: UnsafeCell<Walk> = const { UnsafeCell::new(Walk::new()) };
}

/// The current thread's stack as `[low, high)`, cached per thread.
fn stack_bounds() -> (usize, usize) {
    let cached = STACK_BOUNDS.with(Cell::get);
    if cached.1 != 0 {
        return cached;
    }
    let bounds = query_stack_bounds().unwrap_or((0, 0));
    STACK_BOUNDS.with(|c| c.set(bounds));
    bounds
}

/// Caches the current thread's stack bounds, for [`cached_stack_bounds`].
pub(crate) fn cache_stack_bounds() {
    stack_bounds();
}

/// The current thread's stack bounds if cached, or `(0, 0)`: never asks the system, so
/// a signal handler may call it.
pub(crate) fn cached_stack_bounds() -> (usize, usize) {
    STACK_BOUNDS.with(Cell::get)
}

#[cfg(target_os = "linux")]
fn query_stack_bounds() -> Option<(usize, usize)> {
    // SAFETY: `attr` is initialised by pthread_getattr_np before use and destroyed once;
    // glibc may call malloc here, which is C's allocator, not this one.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut base, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        ok.then(|| (base as usize, base as usize + size))
    }
}

#[cfg(not(target_os = "linux"))]
fn query_stack_bounds() -> Option<(usize, usize)> {
    None
}

/// The frame pointer of the function this is inlined into: the address of its frame
/// record (the caller's saved frame pointer, then the return address), when it was built
/// with frame pointers; 0 on other architectures.
#[inline(always)]
pub(crate) fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register, touches no memory.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register, touches no memory.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

/// A frame-pointer walk: the return addresses it collected and the frame records it
/// read. Each thread keeps its last one, so that the next capture can first check whether
/// the stack is still the same, as it is for an allocation in a loop.
///
/// A walk is a chain of dependent loads: each frame's address is read from the frame
/// before, so every frame waits for the last. [`Walk::replays`] reads the same records
/// from addresses it already knows (each record read names the next one's address), so
/// its loads run side by side, and it compares each record as one 16-byte value.
pub(crate) struct Walk {
    len: usize,
    /// Return addresses, innermost first; `len` of them are the walk's.
    returns: [usize; DEPTH],
    /// The address of the first record read: the frame pointer the walk started from.
    first: usize,
    /// The records read, in order: `read[i]` is (saved frame pointer, return address),
    /// and the saved frame pointer is where `read[i + 1]` was read from. Usually the
    /// `len` records of the frames; one more when the walk ended at a record with no
    /// return address.
    read: [Record; DEPTH],
    /// How many records the walk read.
    records: usize,
    hash: u64,
}

/// A frame record as it lies on the stack: the saved frame pointer, then the return
/// address. Aligned so that comparing one is a 16-byte load and compare.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Record([usize; 2]);

impl Record {
    const EMPTY: Self = Self([0; 2]);

    fn saved_frame_pointer(self) -> usize {
        self.0[0]
    }

    fn return_address(self) -> usize {
        self.0[1]
    }
}

/// What [`Walk::replays`] found different between the records it read and the walk's,
/// accumulated in one SSE register: one load, one xor and one or per record.
#[cfg(target_arch = "x86_64")]
struct Difference(std::arch::x86_64::__m128i);

#[cfg(target_arch = "x86_64")]
impl Difference {
    #[inline(always)]
    fn none() -> Self {
        // SAFETY: SSE2 is part of every x86-64 processor.
        Self(unsafe { std::arch::x86_64::_mm_setzero_si128() })
    }

    /// # Safety
    /// `address..address + 16` must be mapped, readable memory.
    #[inline(always)]
    unsafe fn add(&mut self, address: usize, expected: &Record) {
        use std::arch::x86_64::{
            __m128i, _mm_load_si128, _mm_loadu_si128, _mm_or_si128, _mm_xor_si128,
        };
        // SAFETY: the caller's for `address`, read unaligned (only the ABI keeps records
        // aligned); `expected` is a 16-byte-aligned `Record`. An intrinsic load, which
        // the compiler does not merge with other accesses (see `read_record`). SSE2 is
        // part of every x86-64 processor.
        unsafe {
            let now = _mm_loadu_si128(address as *const __m128i);
            let expected = _mm_load_si128((expected as *const Record).cast());
            self.0 = _mm_or_si128(self.0, _mm_xor_si128(now, expected));
        }
    }

    #[inline(always)]
    fn is_none(&self) -> bool {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_setzero_si128};
        // SAFETY: SSE2 is part of every x86-64 processor.
        unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(self.0, _mm_setzero_si128())) == 0xffff }
    }
}

/// What [`Walk::replays`] found different between the records it read and the walk's.
#[cfg(not(target_arch = "x86_64"))]
struct Difference(usize);

#[cfg(not(target_arch = "x86_64"))]
impl Difference {
    #[inline(always)]
    fn none() -> Self {
        Self(0)
    }

    /// # Safety
    /// `address..address + 16` must be mapped, readable memory.
    #[inline(always)]
    unsafe fn add(&mut self, address: usize, expected: &Record) {
        // SAFETY: the caller's; the walk checked the address to be 8-byte aligned.
        // Volatile, as in `read_record`.
        let now = unsafe { (address as *const [usize; 2]).read_volatile() };
        self.0 |= (now[0] ^ expected.0[0]) | (now[1] ^ expected.0[1]);
    }

    #[inline(always)]
    fn is_none(&self) -> bool {
        self.0 == 0
    }
}

impl Walk {
    const fn new() -> Self {
        Self {
            len: 0,
            returns: [0; DEPTH],
            first: 0,
            read: [Record::EMPTY; DEPTH],
            records: 0,
            hash: 0,
        }
    }

    /// The frames walked.
    pub(crate) fn frames(&self) -> &[usize] {
        &self.returns[..self.len]
    }

    /// Whether a walk from `fp` now would read the same records as this one did, and so
    /// return the same frames. The stack bounds are the thread's, as they were.
    #[inline(always)]
    fn replays(&self, fp: usize) -> bool {
        if self.records == 0 || fp != self.first {
            return false;
        }
        let mut address = fp;
        let mut difference = Difference::none();
        // No early exit: the loop's loads do not wait for its comparisons.
        for record in &self.read[..self.records] {
            // SAFETY: the walk read this record, checked to lie inside this thread's
            // stack, which stays mapped as long as the thread lives.
            unsafe { difference.add(address, record) };
            address = record.saved_frame_pointer();
        }
        difference.is_none()
    }

    /// Follows saved frame pointers from `fp`, hashing as it goes. Every frame pointer
    /// is checked to be aligned, inside this thread's stack and above the previous one
    /// before it is read, so a broken chain (code without frame pointers) ends the walk
    /// instead of reading wild memory.
    #[inline(always)]
    fn walk(&mut self, mut fp: usize) {
        const RECORD: usize = 2 * size_of::<usize>();
        const ALIGN_BITS: u32 = size_of::<usize>().trailing_zeros();
        let (low, high) = stack_bounds();
        let low = low.next_multiple_of(size_of::<usize>());
        let mut hash = StackHash::new();
        self.first = fp;
        // The counts stay in registers: through `self`, each store of a frame might
        // alias them, and the walk would wait on memory for every frame.
        let mut len = 0;
        let mut records = 0;
        // Unknown bounds are (0, 0): no walk.
        if let Some(span) = high.saturating_sub(low).checked_sub(RECORD) {
            // One comparison per frame checks both bounds and the alignment: `fp - low`
            // wraps when `fp < low`, and rotating it moves a misaligned remainder into
            // the top bits.
            let limit = span >> ALIGN_BITS;
            while len < DEPTH && fp.wrapping_sub(low).rotate_right(ALIGN_BITS) <= limit {
                // SAFETY: `fp..fp + 16` lies inside this thread's mapped stack (checked
                // above).
                let record = unsafe { read_record(fp) };
                self.read[records] = record;
                records += 1;
                let (next, ret) = (record.saved_frame_pointer(), record.return_address());
                if ret == 0 {
                    break;
                }
                self.returns[len] = ret;
                hash.add(len, ret);
                len += 1;
                if next <= fp {
                    break;
                }
                fp = next;
            }
        }
        self.len = len;
        self.records = records;
        self.hash = hash.finish(len);
    }
}

/// Reads the frame record at `fp`: the saved frame pointer and the return address.
///
/// # Safety
/// `fp..fp + 16` must be mapped, readable memory.
#[inline(always)]
unsafe fn read_record(fp: usize) -> Record {
    let record = fp as *const usize;
    // SAFETY: the caller's. Volatile: these words belong to other frames, not to any
    // Rust object, so the compiler must neither merge nor drop the reads.
    unsafe { Record([record.read_volatile(), record.add(1).read_volatile()]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// Captures this thread's stack into `last` as `capture` does, checks the result
    /// against a fresh walk, and says whether it replayed `last`.
    #[inline(never)]
    fn capture_into(last: &mut Walk) -> bool {
        let fp = frame_pointer();
        let replayed = last.replays(fp);
        if !replayed {
            last.walk(fp);
        }
        let mut fresh = Walk::new();
        fresh.walk(fp);
        assert!(fresh.len > 2, "the walk found {} frames", fresh.len);
        assert_eq!(last.frames(), fresh.frames());
        assert_eq!(last.hash, fresh.hash);
        replayed
    }

    #[inline(never)]
    fn nested(depth: usize, last: &mut Walk) -> bool {
        // `black_box` keeps each level a real frame: no tail call, no inlining.
        if depth == 0 {
            black_box(capture_into(last))
        } else {
            black_box(nested(black_box(depth - 1), last))
        }
    }

    #[inline(never)]
    fn through_first(last: &mut Walk) -> bool {
        black_box(capture_into(black_box(last)))
    }

    #[inline(never)]
    fn through_second(last: &mut Walk) -> bool {
        // Not `through_first`'s body, or the two could be merged into one function.
        black_box(capture_into(black_box(last))) | black_box(false)
    }

    /// A chain of `records` frame records, in a local array (inside this thread's stack,
    /// as a walk requires), each pointing at the next; the last has no return address.
    /// Checks that a replay sees a change in every word the walk read and in none other.
    fn check_replays_of_a_chain<const WORDS: usize>(records: usize) -> Walk {
        cache_stack_bounds();
        let mut chain = [0usize; WORDS];
        let base = chain.as_mut_ptr();
        let address = |word: usize| base.wrapping_add(word) as usize;
        // Volatile, as the walk reads the array through addresses the compiler cannot
        // follow.
        let write = |word: usize, value: usize| {
            assert!(word < WORDS);
            // SAFETY: `word` indexes `chain` (checked above).
            unsafe { base.add(word).write_volatile(value) }
        };
        let read = |word: usize| {
            assert!(word < WORDS);
            // SAFETY: as in `write`.
            unsafe { base.add(word).read_volatile() }
        };
        for record in 0..records {
            let last = record + 1 == records;
            write(2 * record, if last { 0 } else { address(2 * record + 2) });
            write(2 * record + 1, if last { 0 } else { 0x1000 + record });
        }
        let mut walk = Walk::new();
        walk.walk(address(0));
        assert!(walk.replays(address(0)), "nothing changed");
        assert!(!walk.replays(address(2)), "another start");
        let read_words = 2 * walk.records;
        for word in 0..2 * records {
            let saved = read(word);
            write(word, saved ^ 0x10);
            assert_eq!(
                walk.replays(address(0)),
                word >= read_words,
                "word {word} changed; the walk read {read_words}"
            );
            write(word, saved);
        }
        walk
    }

    #[test]
    fn a_replay_sees_a_change_in_any_record_the_walk_read() {
        let walk = check_replays_of_a_chain::<6>(3);
        assert_eq!(walk.frames(), [0x1000, 0x1001]);
        assert_eq!(
            walk.records, 3,
            "the record with no return address was read too"
        );

        let walk = check_replays_of_a_chain::<{ 2 * (DEPTH + 4) }>(DEPTH + 4);
        assert_eq!(walk.frames().len(), DEPTH);
        assert_eq!(
            walk.records, DEPTH,
            "no record read past the deepest frame kept"
        );
    }

    #[test]
    fn a_walk_is_replayed_only_while_the_stack_is_the_same() {
        let mut last = Walk::new();
        // Each call from the same place in a loop: the return addresses into this test
        // are the same too.
        let replays: Vec<bool> = (0..3).map(|_| nested(3, &mut last)).collect();
        assert_eq!(replays, [false, true, true]);
        let replays: Vec<bool> = (0..2).map(|_| nested(4, &mut last)).collect();
        assert_eq!(replays, [false, true], "one frame deeper");

        let calls: [fn(&mut Walk) -> bool; 4] =
            [through_first, through_first, through_second, through_second];
        let mut starts = Vec::new();
        let replays: Vec<bool> = calls
            .iter()
            .map(|call| {
                let replayed = call(&mut last);
                starts.push(last.first);
                replayed
            })
            .collect();
        assert_eq!(replays, [false, true, false, true]);
        // The same depth and frame sizes put the captures at the same frame address:
        // the third call walked afresh because a return address it read differed.
        assert_eq!(starts[1], starts[2]);
    }
}
