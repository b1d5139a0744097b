//! The workload under `TrackingAlloc` with site recording on, as during measured
//! iterations: every block carries its site id and iteration.

leakgate::global_allocator!();

fn main() {
    let method = leakgate::__private::start_sites(0);
    leakgate_bench::run_from_args(|| {
        let (blocks, table, interner) = leakgate::__private::bookkeeping();
        format!(
            "method={method:?} tracked_blocks={blocks} table_bytes={table} interner_bytes={interner} bytes_per_block={:.1}",
            (table + interner) as f64 / blocks.max(1) as f64
        )
    });
    leakgate::__private::clear_sites();
}
