//! The workload under `TrackingAlloc` over jemalloc, counting only (outside measured
//! iterations: no site is recorded).

leakgate::global_allocator!();

fn main() {
    leakgate_bench::run_from_args(String::new);
}
