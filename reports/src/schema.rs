//! Serde types of `report.json`, documented field by field.
//!
//! Every struct is `#[non_exhaustive]` so fields can be added without breaking readers;
//! build values with the constructors and update fields in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the report format written by this crate.
///
/// Version 2 added the policy applied, the statistics behind each verdict, the
/// environment, run totals, and the raw addresses of sites and fault stacks with the
/// mappings that place them. A version-1 report reads as version 2 with those empty.
pub const FORMAT_VERSION: u32 = 2;

/// Versions [`read_report`](crate::read_report) accepts.
pub const READABLE_VERSIONS: [u32; 2] = [1, 2];

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
    /// Where the run happened (absent in version 1).
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Counts over the scenarios, kept in step by [`Report::upsert`].
    #[serde(default)]
    pub totals: Totals,
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
            environment: None,
            totals: Totals::default(),
            scenarios: Vec::new(),
        }
    }

    /// Adds `scenario`, replacing an earlier entry of the same name.
    pub fn upsert(&mut self, scenario: ScenarioReport) {
        match self.scenarios.iter_mut().find(|s| s.name == scenario.name) {
            Some(slot) => *slot = scenario,
            None => self.scenarios.push(scenario),
        }
        self.totals = Totals::of(&self.scenarios);
    }

    /// The scenario named `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.name == name)
    }
}

/// Where a run happened: enough to reproduce it or to symbolize its addresses offline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Environment {
    /// `git rev-parse HEAD` where the run started, when that is a git checkout.
    pub git_commit: Option<String>,
    /// `rustc --version` of the compiler that built leakgate.
    pub rustc: Option<String>,
    /// The target triple leakgate was built for.
    pub target: String,
    /// `debug` or `release`: whether debug assertions were on.
    pub profile: String,
    /// Version of the leakgate crate that ran the scenarios.
    pub leakgate_version: String,
}

impl Environment {
    /// An environment of `target` and `profile`, with nothing else known yet.
    pub fn new(target: impl Into<String>, profile: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            profile: profile.into(),
            ..Self::default()
        }
    }
}

/// Counts over a report's scenarios.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Totals {
    /// Scenarios in the report.
    pub scenarios: u32,
    /// Scenarios that passed.
    pub passed: u32,
    /// Scenarios that failed.
    pub failed: u32,
    /// Scenarios that crashed.
    pub crashed: u32,
    /// Findings the scenarios declared with `expect_leak` and that were found.
    pub expected_findings: u32,
    /// Findings nobody expected (suppressed ones not included).
    pub unexpected_findings: u32,
    /// Findings a suppression rule set aside.
    #[serde(default)]
    pub suppressed_findings: u32,
    /// Sum of the scenarios' durations, in milliseconds (more than the wall time when
    /// scenarios ran in parallel).
    pub duration_ms: u64,
}

impl Totals {
    /// Counts over `scenarios`.
    pub fn of(scenarios: &[ScenarioReport]) -> Self {
        let mut totals = Self::default();
        for scenario in scenarios {
            totals.scenarios += 1;
            match scenario.verdict {
                Verdict::Pass => totals.passed += 1,
                Verdict::Fail => totals.failed += 1,
                Verdict::Crashed => totals.crashed += 1,
            }
            for finding in &scenario.findings {
                if finding.expected {
                    totals.expected_findings += 1;
                } else if finding.suppressed.is_some() {
                    totals.suppressed_findings += 1;
                } else {
                    totals.unexpected_findings += 1;
                }
            }
            totals.duration_ms += scenario.duration_ms;
        }
        totals
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
    /// The rules the scenario was judged by (absent in version 1).
    #[serde(default)]
    pub policy: Option<Policy>,
    /// The statistics behind the verdict, one entry per byte series judged by trend
    /// (heap, C heap, disk), so a pass shows its margin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<TrendStatistics>,
    /// Engines the scenario exercised, with their versions (`"sqlite" → "3.46.0"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engines: BTreeMap<String, String>,
    /// The executable mappings of the scenario's process, which place the raw addresses
    /// of its sites and fault stack in files, for offline symbolization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<Mapping>,
    /// The scenario compared with a baseline (`LEAKGATE_BASELINE`), when it had figures
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::baseline::Comparison>,
}

/// The rules a scenario was judged by: its own declarations and the run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// Growth each resource may show after settling without counting as a leak (bytes
    /// for memory and disk, a count otherwise).
    pub tolerances: BTreeMap<Resource, u64>,
    /// The peak budget: highest heap allowed above baseline, when declared.
    pub peak_budget: Option<u64>,
    /// The memory limit that stops the scenario, when set.
    pub memory_limit: Option<u64>,
    /// Time the scenario's process may run, in milliseconds.
    pub timeout_ms: u64,
    /// `LEAKGATE_ITERATIONS_SCALE`.
    pub iterations_scale: f64,
    /// Whether allocation sites were recorded (`LEAKGATE_SITES`).
    pub sites: bool,
    /// Whether the run could stop early or extend (`LEAKGATE_ADAPTIVE`).
    pub adaptive: bool,
    /// The crash the scenario pinned with `expect_crash`.
    pub expected_crash: Option<CrashCause>,
    /// Where the scenario said its leak or crash is (`expect_site`).
    pub expected_site: Option<String>,
    /// The suppression rules that applied, as findings' `suppressed` names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressions: Vec<String>,
}

impl Policy {
    /// A policy with the given timeout and scale, no tolerances and nothing pinned.
    pub fn new(timeout_ms: u64, iterations_scale: f64) -> Self {
        Self {
            tolerances: BTreeMap::new(),
            peak_budget: None,
            memory_limit: None,
            timeout_ms,
            iterations_scale,
            sites: true,
            adaptive: true,
            expected_crash: None,
            expected_site: None,
            suppressions: Vec::new(),
        }
    }
}

/// How a byte series moved over the measured iterations, as the verdict saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrendStatistics {
    /// The series.
    pub resource: Resource,
    /// Above the baseline after settling.
    pub retained: i64,
    /// What it may retain without counting as a leak.
    pub tolerance: i64,
    /// Robust (Theil–Sen) slope, per iteration.
    pub slope: f64,
    /// How much the series moves without growing: twice its median drawdown.
    pub noise: u64,
    /// Iterations that set a new high above the noise.
    pub new_highs: u32,
    /// The first and last of them (0-based measured iterations).
    pub first_high: Option<u32>,
    /// See `first_high`.
    pub last_high: Option<u32>,
    /// Lowest value of the last quarter less the lowest of the first.
    pub floor_rise: i64,
    /// `growing`, `plateau` or `unsure`: whether the growth lasted to the end.
    pub persistence: String,
    /// Whether the trend alone reads as a leak.
    pub growth: bool,
}

impl TrendStatistics {
    /// Statistics of `resource`, which retained `retained` against `tolerance`, with a
    /// flat trend until the other fields are set.
    pub fn new(resource: Resource, retained: i64, tolerance: i64) -> Self {
        Self {
            resource,
            retained,
            tolerance,
            slope: 0.0,
            noise: 0,
            new_highs: 0,
            first_high: None,
            last_high: None,
            floor_rise: 0,
            persistence: "plateau".to_owned(),
            growth: false,
        }
    }
}

/// One executable mapping of a file in a scenario's process: addresses `start..end`
/// hold the file's bytes from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the file of the byte at `start`.
    pub offset: u64,
    /// The file.
    pub path: String,
}

impl Mapping {
    /// The mapping of `path` from `offset` at `start..end`.
    pub fn new(start: u64, end: u64, offset: u64, path: impl Into<String>) -> Self {
        Self {
            start,
            end,
            offset,
            path: path.into(),
        }
    }

    /// Where `address` lies in this mapping's file, if it lies in this mapping.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        (self.start..self.end)
            .contains(&address)
            .then(|| address - self.start + self.offset)
    }
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
            policy: None,
            statistics: Vec::new(),
            engines: BTreeMap::new(),
            mappings: Vec::new(),
            baseline: None,
        }
    }

    /// The finding of `resource`, if there is one.
    pub fn finding(&self, resource: Resource) -> Option<&Finding> {
        self.findings.iter().find(|f| f.resource == resource)
    }

    /// The trend statistics of `resource`, if it was judged by trend.
    pub fn trend(&self, resource: Resource) -> Option<&TrendStatistics> {
        self.statistics.iter().find(|t| t.resource == resource)
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
    /// The suppression rule that set this finding aside, with why and where it was
    /// declared; a suppressed finding does not fail the scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
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
            suppressed: None,
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
    /// The live bytes by the measured iteration that allocated them, in buckets of equal
    /// width (`ceil(measured iterations / len)` iterations each): spread over the whole
    /// run for a leak, piled at the end for churn. Empty where not recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes_by_iteration: Vec<u64>,
    /// Return addresses of the site's stack, innermost first, as the process that
    /// recorded them saw them (its `mappings` place them in files); `frames` are their
    /// symbolized, trimmed form.
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
            bytes_by_iteration: Vec::new(),
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
    /// The fault stack's raw addresses, innermost first, as the scenario's process saw
    /// them (its `mappings` place them in files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<u64>,
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
            addresses: Vec::new(),
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
