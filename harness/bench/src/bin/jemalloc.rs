//! The workload under raw jemalloc: the baseline of every ratio.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    leakgate_bench::run_from_args(String::new);
}
