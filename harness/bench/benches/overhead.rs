//! Overhead of leakgate's tracking allocator against raw jemalloc, and dhat-rs for scale.
//!
//! `cargo bench -p leakgate-bench` runs each workload binary in its own process,
//! interleaving the allocators round by round so that drift on a noisy machine hits all
//! of them alike. Each process reports its fastest of 5 repeats; the figure is the median
//! of those over the rounds, printed with its ratio to raw jemalloc.

use std::process::Command;

const VARIANTS: [(&str, &str); 4] = [
    ("raw jemalloc", env!("CARGO_BIN_EXE_workload-jemalloc")),
    (
        "TrackingAlloc, counting",
        env!("CARGO_BIN_EXE_workload-counting"),
    ),
    ("TrackingAlloc, sites", env!("CARGO_BIN_EXE_workload-sites")),
    ("dhat-rs heap profiler", env!("CARGO_BIN_EXE_workload-dhat")),
];
const ROUNDS: usize = 7;

fn run(exe: &str, threads: usize) -> (u128, String) {
    let output = Command::new(exe)
        .args(["--threads", &threads.to_string(), "--repeats", "5"])
        .output()
        .unwrap_or_else(|e| panic!("{exe}: {e}"));
    assert!(
        output.status.success(),
        "{exe} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let median = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("best_ns="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{exe} printed {line:?}"));
    let extra = line
        .split_once(' ')
        .map_or(String::new(), |(_, rest)| rest.to_owned());
    (median, extra)
}

fn main() {
    println!(
        "workload: build and drop a BTreeMap<String, Vec<u8>> of {} entries per thread",
        leakgate_bench::ENTRIES
    );
    for threads in [1, 2] {
        let mut medians: Vec<Vec<u128>> = vec![Vec::new(); VARIANTS.len()];
        let mut extras = vec![String::new(); VARIANTS.len()];
        for _ in 0..ROUNDS {
            for (i, (_, exe)) in VARIANTS.iter().enumerate() {
                let (median, extra) = run(exe, threads);
                medians[i].push(median);
                extras[i] = extra;
            }
        }
        let median = |v: &mut Vec<u128>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let figures: Vec<u128> = medians.iter_mut().map(median).collect();
        println!("\n{threads} thread(s), median over {ROUNDS} rounds of the best of 5 repeats:");
        for (i, (name, _)) in VARIANTS.iter().enumerate() {
            println!(
                "  {name:<26} {:>9.2} ms  {:>6.2}× raw jemalloc  {}",
                figures[i] as f64 / 1e6,
                figures[i] as f64 / figures[0] as f64,
                extras[i]
            );
        }
    }
}
