//! The workload under dhat-rs's heap profiler, for scale.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let profile =
        std::env::temp_dir().join(format!("leakgate-bench-dhat-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder().file_name(&profile).build();
    leakgate_bench::run_from_args(String::new);
    drop(profiler);
    let _ = std::fs::remove_file(profile);
}
