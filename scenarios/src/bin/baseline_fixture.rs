//! Scenarios whose figures change between runs on request, for the `baseline` test: a
//! bounded cache filled in warm-up that can hold ten times more (a bigger footprint, no
//! leak), and an expected leak that can move to a new allocation site.
//!   BASELINE_FIXTURE_CACHE_SCALE  multiplies the cache's entries (default 1)
//!   BASELINE_FIXTURE_NEW_SITE=1   leaks through `remember_elsewhere`

use std::collections::VecDeque;
use std::hint::black_box;

use leakgate::{Gate, Resource, Scenario};

leakgate::global_allocator!();

/// Entries the cache holds at scale 1.
const ENTRIES: usize = 256;

fn scale() -> usize {
    std::env::var("BASELINE_FIXTURE_CACHE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Replaces the oldest of a full cache's entries: bounded, whatever its capacity.
fn touch(cache: &mut VecDeque<Vec<u8>>, capacity: usize, i: usize) {
    if cache.len() == capacity {
        cache.pop_front();
    }
    cache.push_back(black_box(vec![i as u8; 512]));
}

#[inline(never)]
fn remember(registry: &mut Vec<Vec<u8>>, i: usize) {
    registry.push(black_box(vec![i as u8; 48]));
}

/// Not the same body as `remember`: identical functions are merged into one in release
/// builds, and would then read as the same site.
#[inline(never)]
fn remember_elsewhere(registry: &mut Vec<Vec<u8>>, i: usize) {
    registry.push(black_box(vec![!(i as u8); 48]));
}

fn main() -> std::process::ExitCode {
    let capacity = ENTRIES * scale();
    let elsewhere = std::env::var("BASELINE_FIXTURE_NEW_SITE").is_ok_and(|v| v == "1");
    Gate::new()
        .scenario(
            Scenario::new("cache/filled_in_warmup")
                // Warm-up fills the cache, so measured iterations only replace entries.
                .warmup(capacity + 8)
                .iterations(60)
                .setup(move |_| VecDeque::with_capacity(capacity))
                .iterate(move |cache, i| touch(cache, capacity, i)),
        )
        .scenario(
            Scenario::new("registry/expected_leak")
                .iterations(60)
                .setup(|_| Vec::with_capacity(4096))
                .iterate(move |registry, i| {
                    if elsewhere {
                        remember_elsewhere(registry, i)
                    } else {
                        remember(registry, i)
                    }
                })
                .expect_leak(Resource::Heap),
        )
        .run()
}
