//! Serde types of `report.json`, documented field by field.
//!
//! Every struct is `#[non_exhaustive]` so fields can be added without breaking readers;
//! build values with the constructors and update fields in place.

use serde::{Deserialize, Serialize};

/// Version of the report format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// One run of a test binary's scenarios (or of several, merged, under nextest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Always [`FORMAT_VERSION`] when written by this version.
    pub format_version: u32,
    /// Identifier of the run; also the name of its directory under `target/leakgate/`.
    pub run_id: String,
    /// Version of leakgate that wrote the report.
    pub tool_version: String,
    /// One entry per scenario that ran, in the order they were first recorded.
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    /// An empty report for `run_id`, written by this version of the tool.
    pub fn new(run_id: impl Into<String>) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            run_id: run_id.into(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            scenarios: Vec::new(),
        }
    }

    /// Adds `scenario`, replacing an earlier entry of the same name.
    pub fn upsert(&mut self, scenario: ScenarioReport) {
        match self.scenarios.iter_mut().find(|s| s.name == scenario.name) {
            Some(slot) => *slot = scenario,
            None => self.scenarios.push(scenario),
        }
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// No unexpected leak, and every leak declared with `expect_leak` was found.
    Pass,
    /// A leak was found, an expected leak was not, or an iteration returned an error.
    Fail,
    /// The scenario's process panicked, aborted, was killed by a signal or timed out.
    Crashed,
}

/// A kind of resource that can leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resource {
    /// Memory allocated through Rust's global allocator (`TrackingAlloc`).
    Heap,
    /// Memory allocated by C or C++ code through `malloc` (seen via jemalloc's statistics).
    CHeap,
    /// Open file descriptors.
    Fds,
    /// Live threads.
    Threads,
    /// Files and directories left under the scenario's or a watched directory.
    Files,
    /// Bytes on disk under the scenario's or a watched directory.
    Disk,
    /// The heap's high-water mark above baseline, against the scenario's peak budget.
    Peak,
}

impl Resource {
    /// The name used in reports and on the console (`"heap"`, `"c_heap"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Heap => "heap",
            Resource::CHeap => "c_heap",
            Resource::Fds => "fds",
            Resource::Threads => "threads",
            Resource::Files => "files",
            Resource::Disk => "disk",
            Resource::Peak => "peak",
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One scenario's configuration, verdict, evidence and measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScenarioReport {
    /// The scenario's name, as given to `Scenario::new`.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// One line saying why, for people (`"heap grew 3.1 KiB over 200 iterations"`).
    pub summary: String,
    /// Resources the scenario declared with `expect_leak`.
    pub expected_leaks: Vec<Resource>,
    /// Leaks found, expected or not.
    pub findings: Vec<Finding>,
    /// Set when the verdict is [`Verdict::Crashed`].
    pub crash: Option<Crash>,
    /// Set when an iteration returned an error.
    pub iteration_error: Option<IterationError>,
    /// Warm-up iterations run before the baseline.
    pub warmup: u32,
    /// Measured iterations requested.
    pub iterations: u32,
    /// Wall time of the scenario, process start to verdict, in milliseconds.
    pub duration_ms: u64,
    /// The samples the scenario recorded.
    pub series: Series,
    /// Remarks on how the measurement was made (fallbacks, disabled probes).
    pub notes: Vec<String>,
    /// The end of what the scenario's process printed, kept when it failed or crashed.
    pub output: Option<String>,
    /// How peak and retained memory grew with the input size, for scenarios run with
    /// `.scaling(..)`.
    pub scaling: Option<Scaling>,
}

/// Peak and retained memory at several input sizes, and the curve fitted to the peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Scaling {
    /// One point per size, smallest first.
    pub points: Vec<ScalePoint>,
    /// `e` in peak ≈ c · sizeᵉ (least squares on logarithms): 0 constant, 1 linear.
    pub peak_exponent: f64,
    /// `b` in peak ≈ a + b · size (least squares): bytes per unit of size.
    pub peak_bytes_per_unit: f64,
    /// `a` in peak ≈ a + b · size.
    pub peak_intercept: f64,
    /// How the fitted exponent reads: `constant`, `linear` or `superlinear`.
    pub growth: String,
    /// The growth the scenario declared with `expect_peak_growth`, if any.
    pub expected: Option<String>,
}

impl Scaling {
    /// A fit over `points`.
    pub fn new(
        points: Vec<ScalePoint>,
        peak_exponent: f64,
        peak_bytes_per_unit: f64,
        peak_intercept: f64,
        growth: impl Into<String>,
        expected: Option<&str>,
    ) -> Self {
        Self {
            points,
            peak_exponent,
            peak_bytes_per_unit,
            peak_intercept,
            growth: growth.into(),
            expected: expected.map(str::to_owned),
        }
    }
}

/// Memory at one input size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScalePoint {
    /// The size the scenario ran at.
    pub size: u64,
    /// Highest heap above baseline during the measured iterations.
    pub peak_bytes: u64,
    /// Heap above baseline after settling.
    pub retained_bytes: i64,
}

impl ScalePoint {
    /// A point at `size`.
    pub fn new(size: u64, peak_bytes: u64, retained_bytes: i64) -> Self {
        Self {
            size,
            peak_bytes,
            retained_bytes,
        }
    }
}

impl ScenarioReport {
    /// A report for `name` with the given verdict and summary and nothing else yet.
    pub fn new(name: impl Into<String>, verdict: Verdict, summary: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict,
            summary: summary.into(),
            expected_leaks: Vec::new(),
            findings: Vec::new(),
            crash: None,
            iteration_error: None,
            warmup: 0,
            iterations: 0,
            duration_ms: 0,
            series: Series::default(),
            notes: Vec::new(),
            output: None,
            scaling: None,
        }
    }
}

/// A leak of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// The resource that leaked.
    pub resource: Resource,
    /// Whether the scenario declared this leak with `expect_leak`.
    pub expected: bool,
    /// One line for people.
    pub message: String,
    /// Growth above baseline after settling (bytes for memory and disk, a count otherwise;
    /// for `peak`, the high-water mark above baseline).
    pub growth: i64,
    /// `growth` divided by the measured iterations.
    pub per_iteration: f64,
    /// Measured iterations that left something behind (for the heap: distinct iterations
    /// whose allocations were still live at the end).
    pub leaking_iterations: u32,
    /// Measured iterations that ran.
    pub measured_iterations: u32,
    /// Growth still held after teardown dropped the scenario's state, when measured.
    pub held_after_teardown: Option<i64>,
    /// Where the leaked memory was allocated, largest first (empty when not known).
    pub sites: Vec<Site>,
    /// The leaked things by name: new descriptors with their targets, new threads with
    /// their names, leftover paths.
    pub leaked: Vec<String>,
}

impl Finding {
    /// A finding of `resource` with `growth`, and no sites yet.
    pub fn new(resource: Resource, growth: i64, measured_iterations: u32) -> Self {
        Self {
            resource,
            expected: false,
            message: String::new(),
            growth,
            per_iteration: growth as f64 / f64::from(measured_iterations.max(1)),
            leaking_iterations: 0,
            measured_iterations,
            held_after_teardown: None,
            sites: Vec::new(),
            leaked: Vec::new(),
        }
    }
}

/// An allocation site: the blocks still live that were allocated from one call stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Site {
    /// Bytes still live.
    pub bytes: u64,
    /// Blocks still live.
    pub blocks: u64,
    /// Distinct measured iterations those blocks were allocated in.
    pub iterations: u32,
    /// The first measured iteration (0-based) with a live block from this site.
    pub first_iteration: u32,
    /// The last measured iteration (0-based) with a live block from this site.
    pub last_iteration: u32,
    /// Distinct measured iterations with a live block from this site, in each quarter
    /// of the measured run: even across the quarters for a leak, only in the last for
    /// a bounded cache's churn. Empty where not recorded (peak sites, older reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations_per_quarter: Vec<u32>,
    /// Return addresses of the site's stack, innermost first, as the process that
    /// recorded them saw them; the runner symbolizes them into `frames` and clears them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<u64>,
    /// The call stack, innermost user frame first; allocator and standard library frames
    /// are trimmed.
    pub frames: Vec<Frame>,
}

impl Site {
    /// A site with the given totals and no frames yet.
    pub fn new(bytes: u64, blocks: u64, iterations: u32, first: u32, last: u32) -> Self {
        Self {
            bytes,
            blocks,
            iterations,
            first_iteration: first,
            last_iteration: last,
            iterations_per_quarter: Vec::new(),
            addresses: Vec::new(),
            frames: Vec::new(),
        }
    }
}

/// One symbolized stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Frame {
    /// Demangled function name without its hash, or `"<unknown>"`.
    pub function: String,
    /// Source file, when debug info has it.
    pub file: Option<String>,
    /// Source line, when debug info has it.
    pub line: Option<u32>,
}

impl Frame {
    /// A frame of `function` at `file:line`.
    pub fn new(function: impl Into<String>, file: Option<String>, line: Option<u32>) -> Self {
        Self {
            function: function.into(),
            file,
            line,
        }
    }
}

/// Why and where a scenario's process ended abnormally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Crash {
    /// What ended it.
    pub cause: CrashCause,
    /// The signal's name (`"SIGSEGV"`, `"SIGABRT"`, …) when a signal ended it.
    pub signal: Option<String>,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The phase it was in: `start`, `setup`, `warm-up iteration N`, `baseline`,
    /// `iteration N`, `settle`, `teardown` or `done`.
    pub phase: String,
    /// The panic message or the first line of what the process printed about it.
    pub message: Option<String>,
    /// Where it faulted, for SIGSEGV, SIGBUS and stack overflows: the faulting thread's
    /// stack, innermost user frame first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Frame>,
}

impl Crash {
    /// A crash of `cause` in `phase`, with no signal or exit code yet.
    pub fn new(cause: CrashCause, phase: impl Into<String>, message: Option<String>) -> Self {
        Self {
            cause,
            signal: None,
            exit_code: None,
            phase: phase.into(),
            message,
            stack: Vec::new(),
        }
    }
}

/// What ended a scenario's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CrashCause {
    /// A Rust panic.
    Panic,
    /// The thread's stack overflowed.
    StackOverflow,
    /// `abort()` (SIGABRT) other than a stack overflow.
    Abort,
    /// Another signal (SIGSEGV, SIGBUS, SIGKILL, …).
    Signal,
    /// The scenario ran longer than its timeout and was killed.
    Timeout,
    /// It exited with a code but did not report a result.
    Exit,
    /// Its process could not be started or its result not read.
    Harness,
    /// Its heap grew past the memory limit and leakgate stopped it (a `peak` finding
    /// names the sites).
    MemoryLimit,
}

/// An error returned by an iteration closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IterationError {
    /// The phase it happened in (`warmup` or `measure`).
    pub phase: String,
    /// 0-based iteration within that phase.
    pub iteration: u32,
    /// The error, as displayed.
    pub message: String,
}

impl IterationError {
    /// An error at `iteration` of `phase`.
    pub fn new(phase: impl Into<String>, iteration: u32, message: impl Into<String>) -> Self {
        Self {
            phase: phase.into(),
            iteration,
            message: message.into(),
        }
    }
}

/// The samples of one scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Series {
    /// Before setup.
    pub pre_setup: Option<Sample>,
    /// After warm-up and settling: what the end is compared with.
    pub baseline: Option<Sample>,
    /// After each measured iteration, in order.
    pub iterations: Vec<Sample>,
    /// After the measured iterations and settling, before teardown.
    pub end: Option<Sample>,
    /// After teardown dropped the scenario's state.
    pub after_teardown: Option<Sample>,
    /// How many samples settling took (1 when memory was back at the first look).
    pub settle_attempts: u32,
}

/// Memory counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Sample {
    /// Live bytes allocated through Rust's global allocator.
    pub heap_bytes: u64,
    /// Live blocks allocated through Rust's global allocator.
    pub heap_blocks: u64,
    /// Highest live bytes since the baseline (approximate across threads; see the
    /// allocator's docs).
    pub heap_peak: u64,
    /// Allocations made so far (reallocations count once).
    pub allocations: u64,
    /// jemalloc `stats.allocated`: all live bytes including C's `malloc`, when available.
    pub process_allocated: Option<u64>,
    /// jemalloc `stats.active`.
    pub process_active: Option<u64>,
    /// jemalloc `stats.resident`.
    pub process_resident: Option<u64>,
    /// Live bytes of C and C++ code's `malloc`: jemalloc's `stats.allocated` less the
    /// Rust heap when the Rust heap is served by jemalloc too.
    pub c_heap_bytes: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<u64>,
    /// Live threads of the process.
    pub threads: Option<u64>,
    /// Files and directories under the scenario's and the watched directories.
    pub files: Option<u64>,
    /// Bytes of the regular files under those directories.
    pub disk_bytes: Option<u64>,
    /// Resident set size of the process, for context.
    pub rss_bytes: Option<u64>,
}

impl Sample {
    /// A sample of the Rust heap only.
    pub fn heap(heap_bytes: u64, heap_blocks: u64, heap_peak: u64, allocations: u64) -> Self {
        Self {
            heap_bytes,
            heap_blocks,
            heap_peak,
            allocations,
            ..Self::default()
        }
    }
}
