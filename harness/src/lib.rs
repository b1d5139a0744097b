//! leakgate catches resource leaks in storage engines before they ship: memory a
//! checkpoint loop keeps referenced, a restore that never gives memory back. Sanitizers
//! miss these because the memory is still reachable (a cache, a registry, a backlog);
//! leakgate instead measures the heap around repeated iterations of a maintenance path
//! and fails when it does not come back, naming the allocation sites that kept it.
//!
//! # Setup
//!
//! ```toml
//! [dev-dependencies]
//! leakgate = { path = "…/harness" }
//!
//! [[test]]
//! name = "leaks"
//! harness = false
//! ```
//!
//! ```no_run
//! // tests/leaks.rs
//! leakgate::global_allocator!();
//!
//! fn main() -> std::process::ExitCode {
//!     leakgate::Gate::new()
//!         .scenario(
//!             leakgate::Scenario::new("demo/leaky")
//!                 .warmup(5)
//!                 .iterations(200)
//!                 .setup(|ctx: &leakgate::Ctx| (ctx.dir().to_path_buf(), Vec::<u64>::new()))
//!                 .iterate(|state: &mut (std::path::PathBuf, Vec<u64>), i: usize| {
//!                     state.1.push(i as u64)
//!                 }),
//!         )
//!         .run()
//! }
//! ```
//!
//! # Running
//!
//! Every scenario runs in its own child process (the test binary, re-run with `--exact
//! NAME`), under `cargo test` and under `cargo nextest run` alike, so verdicts,
//! containment, timeouts and probes do not depend on the runner; by default two run per
//! core at once (they spend much of their time asleep, settling). libtest's arguments
//! work: name filters, `--exact`, `--skip`, `--list`, `--test-threads`.
//!
//! Each scenario: setup → warm-up iterations → settle → baseline → measured iterations
//! (a sample after each, allocation sites recorded; stopped early when the evidence is
//! conclusive, extended when it is ambiguous) → settle, with bounded retries for
//! deferred frees → end sample → teardown → after-teardown sample.
//!
//! # Reading the output
//!
//! A failed scenario prints how much the heap grew, per iteration and in how many
//! iterations, then the top allocation sites with their frames, starting at the first
//! frame of your code. Every run writes `report.json` under `target/leakgate/<run-id>/`
//! (`target/leakgate/latest` points at the newest) or under `LEAKGATE_REPORT_DIR`; the
//! schema is in the `leakgate-reports` crate. A scenario that panics, aborts, overflows
//! its stack, dies of a signal or exceeds `LEAKGATE_TIMEOUT` is reported as crashed, by
//! name, cause and phase, and the others still run.
//!
//! # What counts as a leak
//!
//! See [the verdict module's rules](#what-counts-as-a-leak-1) below: the heap must stay
//! above baseline after settling *and* have kept growing over the measured iterations.
//! Bounded caches, lazy statics, buffers that grow then stay, and memory freed a little
//! later by background threads pass.
//!
//! ## What counts as a leak
//!
//! After settling, live heap bytes exceed the baseline by more than the tolerance
//! (`.tolerance(Resource::Heap, ..)`, default 0) and the per-iteration series rose to the
//! end: a positive Theil–Sen slope, new highs above the series' noise in at least two
//! iterations, a rising floor, and no plateau (flat at the end for as long as it rose);
//! or one allocation site's survivors accumulate over the whole run, even while churn
//! elsewhere hides the growth in the total. Descriptors, threads and paths leak when
//! more exist after settling than at the baseline. A scenario declared with
//! `.expect_leak(Resource::Heap)` passes only when that leak is found. The README has
//! the rule in full, with its statistics.
//!
//! # Configuration
//!
//! Environment variables (for CI): `LEAKGATE_REPORT_DIR`, `LEAKGATE_TIMEOUT` (default
//! `300s`), `LEAKGATE_SETTLE_TIMEOUT` (`1s`), `LEAKGATE_KEEP_DIRS`
//! (`never`|`on-failure`|`always`), `LEAKGATE_SITES` (`exact`|`off`),
//! `LEAKGATE_ITERATIONS_SCALE`, `LEAKGATE_MEMORY_LIMIT`, `LEAKGATE_ADAPTIVE` (`on`|`off`);
//! baselines: `LEAKGATE_SAVE_BASELINE`, `LEAKGATE_BASELINE` (a name),
//! `LEAKGATE_BASELINE_DIR`, `LEAKGATE_BASELINE_NOISE`, `LEAKGATE_SAVE_BASELINE_IN_CI`;
//! `LEAKGATE_SUPPRESSIONS` (a file of suppression rules, see `Scenario::suppress`).
//! A malformed value stops the run with an error naming the variable and the accepted
//! values; a misspelled name gets a warning naming the closest real one.
//!
//! # Known limitations
//!
//! - Allocation sites are captured by walking frame pointers when the binary has them
//!   (build with `RUSTFLAGS="-C force-frame-pointers=yes"`), which is fast; otherwise by
//!   DWARF unwinding, which is correct but costs microseconds per allocation.
//! - The heap peak is exact per thread to 16 KiB and, across `t` threads, may be off by
//!   up to `t × 16 KiB`.
//! - Besides the Rust heap, each sample counts the C heap (jemalloc's live bytes less the
//!   Rust heap), open descriptors, threads, and the paths and bytes under the scratch
//!   directory and every `watch_dir`; leftovers are named. C heap blocks get sites too,
//!   through jemalloc's allocation hooks while the measured iterations run (see
//!   `LEAKGATE_C_SITES`); their stacks are DWARF-unwound, microseconds per C allocation.
#![deny(missing_docs)]
#![deny(unsafe_code)]

// `unsafe` is allowed per module, only where it is needed: the allocator, the fault
// handler, jemalloc's statistics, and the system calls on child processes.
#[allow(unsafe_code)]
mod alloc;
mod attribution;
mod channel;
mod child;
mod config;
#[allow(unsafe_code)]
mod crash_stack;
#[allow(unsafe_code)]
pub mod fault;
mod gate;
#[allow(unsafe_code)]
mod isolate;
mod maps;
mod measure;
#[allow(unsafe_code)]
mod probe;
mod scenario;
mod session;
mod sink;
mod suppress;
mod symbolize;
#[allow(unsafe_code)]
mod tempdirs;
mod verdict;
mod watchdog;

pub use alloc::{DefaultAlloc, HeapStats, TrackingAlloc, heap_stats};
pub use config::ConfigError;
pub use gate::{Conclusion, Gate, SetupError};
pub use leakgate_reports::{CrashCause, Resource};
pub use scenario::{Ctx, DEFAULT_C_HEAP_TOLERANCE, Growth, IterationResult, Scenario};
pub use suppress::SuppressionError;

#[doc(hidden)]
pub mod __private {
    //! For leakgate's own benchmark: turning site recording on and off by hand.
    pub use crate::alloc::sites::{
        bookkeeping, clear as clear_sites, start as start_sites, stop as stop_sites,
    };

    /// Installs jemalloc's hooks, so C allocations get sites while sites are recorded.
    #[cfg(feature = "jemalloc")]
    pub fn install_c_hooks() -> Result<(), String> {
        crate::alloc::c_heap::install().map_err(|e| e.to_string())
    }
}

/// Installs [`TrackingAlloc`] over [`DefaultAlloc`] as the global allocator of the
/// crate it is invoked in (a test target with `harness = false`).
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static LEAKGATE_GLOBAL_ALLOCATOR: $crate::TrackingAlloc<$crate::DefaultAlloc> =
            $crate::TrackingAlloc::new(
                // Both default allocators are unit structs.
                $crate::__default_alloc!(),
            );
    };
}

#[cfg(feature = "jemalloc")]
#[doc(hidden)]
#[macro_export]
macro_rules! __default_alloc {
    () => {
        $crate::__jemalloc::Jemalloc
    };
}

#[cfg(not(feature = "jemalloc"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __default_alloc {
    () => {
        ::std::alloc::System
    };
}

#[cfg(feature = "jemalloc")]
#[doc(hidden)]
pub use tikv_jemallocator as __jemalloc;
