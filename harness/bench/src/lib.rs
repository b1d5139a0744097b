//! The workload of leakgate's overhead benchmark, shared by one binary per allocator
//! under test (each must be its process's `#[global_allocator]`).
//!
//! A workload binary builds and drops, on each of `--threads` threads, `--repeats` times,
//! either (`--workload map`, the default) a `BTreeMap<String, Vec<u8>>` of [`ENTRIES`]
//! entries, or (`--workload varied`) [`VARIED_BLOCKS`] live buffers of 8 to 72 bytes, and
//! prints one line:
//! `best_ns=<fastest repeat, all threads> <what the binary adds about its fullest point>`.
//! The fastest repeat is the least disturbed by the rest of a noisy machine.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// Entries in each map.
pub const ENTRIES: usize = 100_000;
/// Buffers live at once in the `varied` workload.
pub const VARIED_BLOCKS: usize = 200_000;

/// What a workload binary allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A `BTreeMap<String, Vec<u8>>` of [`ENTRIES`] entries: two blocks an entry.
    Map,
    /// [`VARIED_BLOCKS`] buffers of 8 to 72 bytes, all live at once.
    Varied,
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
}

impl Workload {
    /// Builds this workload's structure.
    pub fn build(self, seed: usize) -> Built {
        match self {
            Workload::Map => Built::Map(build(seed)),
            Workload::Varied => Built::Varied(build_varied(seed)),
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
