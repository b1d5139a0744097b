//! Overhead of leakgate's tracking allocator against raw jemalloc, and dhat-rs for scale.
//!
//! `cargo bench -p leakgate-bench` runs each workload binary in its own process,
//! interleaving the allocators round by round so that drift on a noisy machine hits all
//! of them alike, each round starting with the next allocator. Each process reports its
//! fastest repeat (5 of `map`; 25 of `varied`, whose repeats take a few milliseconds, so
//! one quiet one is rarer). Per allocator: the fastest over the rounds (the run least
//! disturbed by the rest of a shared machine) with its ratio to raw jemalloc's fastest;
//! the median over the rounds of the ratio to raw jemalloc in the same round, which a
//! lucky round of either side cannot move; and that ratio's first and third quartiles.
//! On a shared VM a burst of noise can outlast a process, so the quartiles show how
//! small a difference a run can resolve.
//!
//! One-thread runs are pinned to the machine's last CPU: a thread moved between cores
//! mid-repeat finds its blocks in the other core's cache, and on a small machine that
//! costs more than the differences measured. They are pinned before `exec`, as `taskset`
//! does, so jemalloc sizes itself for one CPU (one arena) from its first call, as it
//! would in a one-CPU container. Two-thread runs need every core they can get.
//!
//! "sites + C" also installs jemalloc's hooks, as a scenario does while C heap sites are
//! recorded: on the Rust workloads it shows what the hooks cost Rust's allocations; on
//! `c` (C's `malloc`, which only that variant gives sites) what a C site costs.

use std::os::unix::process::CommandExt;
use std::process::Command;

const VARIANTS: [(&str, &str); 5] = [
    ("raw jemalloc", env!("CARGO_BIN_EXE_workload-jemalloc")),
    (
        "TrackingAlloc, counting",
        env!("CARGO_BIN_EXE_workload-counting"),
    ),
    ("TrackingAlloc, sites", env!("CARGO_BIN_EXE_workload-sites")),
    (
        "TrackingAlloc, sites + C",
        env!("CARGO_BIN_EXE_workload-c-sites"),
    ),
    ("dhat-rs heap profiler", env!("CARGO_BIN_EXE_workload-dhat")),
];
const ROUNDS: usize = 9;

fn repeats(workload: &str, exe: &str) -> usize {
    // dhat-rs takes half a second a repeat: five are plenty for its scale.
    if workload == "varied" && !exe.contains("dhat") {
        25
    } else {
        5
    }
}

/// The CPU that one-thread runs are pinned to: the last one.
fn pinned_cpu() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get() - 1)
}

fn run(exe: &str, workload: &str, threads: usize) -> (u128, String) {
    let mut command = Command::new(exe);
    command
        .args(["--threads", &threads.to_string()])
        .args(["--repeats", &repeats(workload, exe).to_string()])
        .args(["--workload", workload]);
    if threads == 1 {
        let cpu = pinned_cpu();
        // SAFETY: runs in the forked child before `exec`, and only makes a system call,
        // which is async-signal-safe; the set is built on the stack.
        unsafe {
            command.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                match libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
        };
    }
    let output = command.output().unwrap_or_else(|e| panic!("{exe}: {e}"));
    assert!(
        output.status.success(),
        "{exe} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let fastest = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("best_ns="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{exe} printed {line:?}"));
    let extra = line
        .split_once(' ')
        .map_or(String::new(), |(_, rest)| rest.to_owned());
    (fastest, extra)
}

fn main() {
    let workloads = [
        (
            "map",
            format!(
                "build and drop a BTreeMap<String, Vec<u8>> of {} entries per thread",
                leakgate_bench::ENTRIES
            ),
        ),
        (
            "varied",
            format!(
                "build and drop {} live buffers of 8 to 72 bytes per thread",
                leakgate_bench::VARIED_BLOCKS
            ),
        ),
        (
            "c",
            format!(
                "malloc and free {} live C blocks of 8 to 72 bytes per thread",
                leakgate_bench::C_BLOCKS
            ),
        ),
    ];
    for (workload, description) in &workloads {
        println!("\nworkload `{workload}`: {description}");
        measure(workload);
    }
}

fn measure(workload: &str) {
    for threads in [1, 2] {
        let mut best: Vec<Vec<u128>> = vec![Vec::new(); VARIANTS.len()];
        let mut extras = vec![String::new(); VARIANTS.len()];
        for round in 0..ROUNDS {
            // Each round starts with the next allocator: the process after dhat-rs (which
            // leaves the machine's memory churned) is a different one every round.
            for k in 0..VARIANTS.len() {
                let i = (round + k) % VARIANTS.len();
                let (fastest, extra) = run(VARIANTS[i].1, workload, threads);
                best[i].push(fastest);
                extras[i] = extra;
            }
        }
        let figures: Vec<u128> = best
            .iter()
            .map(|v| v.iter().copied().min().unwrap_or(0))
            .collect();
        let pinned = if threads == 1 {
            format!(", pinned to CPU {}", pinned_cpu())
        } else {
            String::new()
        };
        println!(
            "\n{threads} thread(s){pinned}, fastest of {ROUNDS} rounds × {} repeats \
             (dhat-rs: 5), and the median of the rounds' ratios with their quartiles:",
            repeats(workload, "")
        );
        for (i, (name, _)) in VARIANTS.iter().enumerate() {
            let [first, median, third] = ratio_quartiles(&best[i], &best[0]);
            println!(
                "  {name:<26} {:>9.2} ms  {:>6.2}× raw jemalloc  median {median:>6.2}× \
                 ({first:.2}–{third:.2})  {}",
                figures[i] as f64 / 1e6,
                figures[i] as f64 / figures[0] as f64,
                extras[i]
            );
        }
    }
}

/// The quartiles (first, median, third) over the rounds of `times[round] / base[round]`:
/// the spread between the first and third says how far the machine's noise moves a
/// ratio, and so how small a difference the run can show.
fn ratio_quartiles(times: &[u128], base: &[u128]) -> [f64; 3] {
    let mut ratios: Vec<f64> = times
        .iter()
        .zip(base)
        .map(|(&time, &base)| time as f64 / base as f64)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let last = ratios.len() - 1;
    [last / 4, last / 2, last - last / 4].map(|i| ratios[i])
}
