//! The workload of leakgate's overhead benchmark, shared by one binary per allocator
//! under test (each must be its process's `#[global_allocator]`).
//!
//! A workload binary builds and drops a `BTreeMap<String, Vec<u8>>` of [`ENTRIES`]
//! entries on each of `--threads` threads, `--repeats` times, and prints one line:
//! `best_ns=<fastest repeat, all threads> <what the binary adds about its fullest point>`.
//! The fastest repeat is the least disturbed by the rest of a noisy machine.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// Entries in each map.
pub const ENTRIES: usize = 100_000;

/// Builds a map of `ENTRIES` keyed strings.
pub fn build(seed: usize) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for i in 0..ENTRIES {
        let key = format!("key-{:08}", (i * 7919 + seed) % ENTRIES);
        map.insert(key, vec![i as u8; 32]);
    }
    black_box(map)
}

/// Builds a map, then drops it; returns its length.
pub fn build_and_drop(seed: usize) -> usize {
    build(seed).len()
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
    let times: Vec<u128> = (0..repeats)
        .map(|repeat| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    scope.spawn(move || build_and_drop(repeat * 31 + t));
                }
            });
            start.elapsed().as_nanos()
        })
        .collect();
    let held: Vec<BTreeMap<String, Vec<u8>>> = (0..threads).map(build).collect();
    let extra = on_full();
    drop(held);
    println!("best_ns={} {extra}", times.iter().min().unwrap_or(&0));
}
