//! The workload under `TrackingAlloc` with site recording on and jemalloc's hooks
//! installed, so C's `malloc` gets sites too: every C block costs a DWARF unwind, and
//! every Rust call into jemalloc takes its slow path past the hooks.

leakgate::global_allocator!();

fn main() {
    let method = leakgate::__private::start_sites(0);
    if let Err(error) = leakgate::__private::install_c_hooks() {
        eprintln!("workload-c-sites: {error}");
        std::process::exit(2);
    }
    leakgate_bench::run_from_args(|| {
        let (blocks, _, _) = leakgate::__private::bookkeeping();
        format!("method={method:?} tracked_blocks={blocks}")
    });
    leakgate::__private::clear_sites();
}
