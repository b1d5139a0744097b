//! The workload of leakgate's overhead benchmark, shared by one binary per allocator
//! under test (each must be its process's `#[global_allocator]`).
//!
//! A workload binary builds and drops, on each of `--threads` threads, `--repeats` times,
//! either (`--workload map`, the default) a `BTreeMap<String, Vec<u8>>` of [`ENTRIES`]
//! entries, (`--workload varied`) [`VARIED_BLOCKS`] live buffers of 8 to 72 bytes, or
//! (`--workload c`) [`C_BLOCKS`] blocks of 8 to 72 bytes from C's `malloc`, and prints
//! one line:
//! `best_ns=<fastest repeat, all threads> <what the binary adds about its fullest point>`.
//! The fastest repeat is the least disturbed by the rest of a noisy machine.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// Entries in each map.
pub const ENTRIES: usize = 100_000;
/// Buffers live at once in the `varied` workload.
pub const VARIED_BLOCKS: usize = 200_000;

/// Blocks live at once in the `c` workload: fewer, since with C sites each costs an
/// unwind of microseconds.
pub const C_BLOCKS: usize = 20_000;

/// A block from C's `malloc`, freed on drop.
pub struct CBlock(std::ptr::NonNull<u8>);

#[allow(unsafe_code)]
impl CBlock {
    /// Mallocs `size` bytes and fills them with `byte`.
    pub fn new(size: usize, byte: u8) -> Self {
        // SAFETY: a plain malloc; the result is checked before it is written.
        let ptr = unsafe { libc::malloc(size) }.cast::<u8>();
        let ptr = std::ptr::NonNull::new(ptr).expect("malloc failed");
        // SAFETY: `ptr` points to `size` writable bytes just allocated.
        unsafe { ptr.as_ptr().write_bytes(byte, size) };
        Self(ptr)
    }
}

#[allow(unsafe_code)]
impl Drop for CBlock {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc in `new`, freed once, here.
        unsafe { libc::free(self.0.as_ptr().cast()) }
    }
}

/// Builds [`C_BLOCKS`] blocks of 8 to 72 bytes through C's `malloc`.
pub fn build_c(seed: usize) -> Vec<CBlock> {
    black_box(
        (0..C_BLOCKS)
            .map(|i| CBlock::new(8 + (i * 37 + seed) % 65, i as u8))
            .collect(),
    )
}

/// What a workload binary allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A `BTreeMap<String, Vec<u8>>` of [`ENTRIES`] entries: two blocks an entry.
    Map,
    /// [`VARIED_BLOCKS`] buffers of 8 to 72 bytes, all live at once.
    Varied,
    /// [`C_BLOCKS`] blocks of 8 to 72 bytes from C's `malloc`, all live at once.
    C,
}

/// Builds [`VARIED_BLOCKS`] buffers of 8 to 72 bytes.
pub fn build_varied(seed: usize) -> Vec<Vec<u8>> {
    black_box(
        (0..VARIED_BLOCKS)
            .map(|i| vec![i as u8; 8 + (i * 37 + seed) % 65])
            .collect(),
    )
}

/// Builds a map of `ENTRIES` keyed strings.
pub fn build(seed: usize) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for i in 0..ENTRIES {
        let key = format!("key-{:08}", (i * 7919 + seed) % ENTRIES);
        map.insert(key, vec![i as u8; 32]);
    }
    black_box(map)
}

/// What a workload built, kept live.
pub enum Built {
    /// The `map` workload's map.
    Map(BTreeMap<String, Vec<u8>>),
    /// The `varied` workload's buffers.
    Varied(Vec<Vec<u8>>),
    /// The `c` workload's blocks.
    C(Vec<CBlock>),
}

impl Workload {
    /// Builds this workload's structure.
    pub fn build(self, seed: usize) -> Built {
        match self {
            Workload::Map => Built::Map(build(seed)),
            Workload::Varied => Built::Varied(build_varied(seed)),
            Workload::C => Built::C(build_c(seed)),
        }
    }
}

/// Builds the workload's structure, then drops it.
pub fn build_and_drop(workload: Workload, seed: usize) {
    drop(black_box(workload.build(seed)));
}

/// Parses `--threads N --repeats R`, runs the workload, and prints the fastest repeat
/// and what `on_full` says while one map per thread is live (the workload's fullest
/// point).
pub fn run_from_args(on_full: impl Fn() -> String + Sync) {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (threads, repeats) = (value("--threads", 1), value("--repeats", 5));
    let workload = match args
        .iter()
        .position(|a| a == "--workload")
        .and_then(|i| args.get(i + 1))
    {
        Some(name) if name == "varied" => Workload::Varied,
        Some(name) if name == "c" => Workload::C,
        _ => Workload::Map,
    };
    let times: Vec<u128> = (0..repeats)
        .map(|repeat| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    scope.spawn(move || build_and_drop(workload, repeat * 31 + t));
                }
            });
            start.elapsed().as_nanos()
        })
        .collect();
    let held: Vec<Built> = (0..threads).map(|t| workload.build(t)).collect();
    let extra = on_full();
    drop(held);
    println!("best_ns={} {extra}", times.iter().min().unwrap_or(&0));
}
