//! [`Scenario`]: what to run (setup, iterate, settle, teardown) and how to judge it.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leakgate_reports::{CrashCause, Resource};

/// What a scenario's closures see of the run.
#[derive(Debug)]
pub struct Ctx {
    dir: PathBuf,
    name: String,
    size: u64,
}

impl Ctx {
    pub(crate) fn new(dir: PathBuf, name: String, size: u64) -> Self {
        Self { dir, name, size }
    }

    /// The input size of this run, for scenarios run with [`Scenario::scaling`] (0
    /// otherwise): the setup builds its input at this size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A fresh, empty scratch directory for this scenario, removed after it ends (kept
    /// on failure with `LEAKGATE_KEEP_DIRS=on-failure`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What an iteration closure may return: `()`, or `Result<(), E>` with a displayable
/// error, which fails the scenario with the iteration number and the error.
pub trait IterationResult {
    /// `Err` with the error's text if the iteration failed.
    fn into_result(self) -> Result<(), String>;
}

impl IterationResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> IterationResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// C-heap bytes that never count as a leak unless set otherwise: jemalloc's own small
/// allocations (thread and extent bookkeeping) move its total by a few hundred bytes.
pub const DEFAULT_C_HEAP_TOLERANCE: u64 = 4096;

/// How a scenario is judged; independent of its state type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// Resources the scenario is declared to leak.
    pub expect: Vec<Resource>,
    /// Growth after settling that is never a leak, per resource (default 0).
    pub tolerances: Vec<(Resource, u64)>,
    /// Allowed heap peak above baseline.
    pub peak_budget: Option<u64>,
    /// Text the top site's first frame of an expected leak must contain.
    pub expect_site: Option<String>,
    /// The worst peak growth with input size that passes.
    pub expect_growth: Option<Growth>,
    /// A known crash the scenario must end with, pinned as a finding.
    pub expect_crash: Option<CrashCause>,
    /// Findings set aside while they are being fixed: the scenario's own rules and the
    /// run's suppressions file.
    pub suppressions: Vec<crate::suppress::Suppression>,
}

/// How memory grows with input size, from the exponent `e` of peak ≈ c · sizeᵉ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Growth {
    /// Does not grow with the input (e < 0.3): streaming.
    Constant,
    /// Grows in proportion to the input (0.3 ≤ e < 1.3): holds the input once.
    Linear,
    /// Grows faster than the input (e ≥ 1.3).
    Superlinear,
}

impl Growth {
    /// The class of a fitted exponent.
    pub fn of_exponent(exponent: f64) -> Self {
        if exponent < 0.3 {
            Growth::Constant
        } else if exponent < 1.3 {
            Growth::Linear
        } else {
            Growth::Superlinear
        }
    }

    /// `constant`, `linear` or `superlinear`.
    pub fn name(self) -> &'static str {
        match self {
            Growth::Constant => "constant",
            Growth::Linear => "linear",
            Growth::Superlinear => "superlinear",
        }
    }
}

impl Policy {
    /// The tolerance for `resource`: as set, else [`DEFAULT_C_HEAP_TOLERANCE`] for the C
    /// heap and 0 for everything else.
    pub(crate) fn tolerance(&self, resource: Resource) -> u64 {
        let default = match resource {
            Resource::CHeap => DEFAULT_C_HEAP_TOLERANCE,
            _ => 0,
        };
        self.tolerances
            .iter()
            .find(|(r, _)| *r == resource)
            .map_or(default, |(_, amount)| *amount)
    }
}

/// Everything about a scenario except its closures.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub name: String,
    pub warmup: usize,
    pub iterations: usize,
    pub timeout: Option<Duration>,
    pub watch_dirs: Vec<PathBuf>,
    /// Input sizes to run at, one full session each (empty: once, at size 0).
    pub scaling: Vec<u64>,
    /// Heap above baseline at which the scenario is stopped.
    pub memory_limit: Option<u64>,
    pub policy: Policy,
    /// The first builder call that cannot work, refused when the gate starts.
    pub misuse: Option<String>,
    /// Measured iterations before an early stop may be considered (`None`: half of them).
    pub min_iterations: Option<usize>,
    /// Engines the scenario exercises, with their versions, for the report.
    pub engines: Vec<(String, String)>,
}

/// Measured iterations a verdict needs at the least: a trend needs two points.
pub(crate) const MIN_ITERATIONS: usize = 2;

impl Spec {
    /// Whether the measured phase may stop early or be extended: not for scenarios whose
    /// verdict needs the whole planned run (a peak budget, scaling, a pinned crash), nor
    /// under a memory limit, which the checks' own allocations would count toward.
    /// The heap above baseline at which the scenario is stopped: its own limit, else
    /// `LEAKGATE_MEMORY_LIMIT`, else four times its peak budget, else none.
    pub(crate) fn effective_memory_limit(&self, config: &crate::config::Config) -> Option<u64> {
        self.memory_limit
            .or(config.memory_limit)
            .or(self.policy.peak_budget.map(|b| b.saturating_mul(4)))
    }

    /// Whether this run of the scenario is adaptive: [`Spec::adaptive`], with
    /// `LEAKGATE_ADAPTIVE` on and no run-wide memory limit (the checks' own allocations
    /// would count toward it).
    pub(crate) fn adaptive_under(&self, config: &crate::config::Config) -> bool {
        config.adaptive && config.memory_limit.is_none() && self.adaptive()
    }

    pub(crate) fn adaptive(&self) -> bool {
        let p = &self.policy;
        p.peak_budget.is_none()
            && p.expect_growth.is_none()
            && p.expect_crash.is_none()
            && self.scaling.is_empty()
            && self.memory_limit.is_none()
    }

    /// Why this scenario cannot give a verdict under `config`, if it cannot.
    pub(crate) fn problem(&self, config: &crate::config::Config) -> Option<String> {
        let policy = &self.policy;
        if let Some(misuse) = &self.misuse {
            return Some(misuse.clone());
        }
        if let Some(site) = policy
            .expect_site
            .as_deref()
            .filter(|_| policy.expect.is_empty() && policy.expect_crash.is_none())
        {
            return Some(format!(
                "expect_site({site:?}) with nothing expected: add expect_leak(..) or expect_crash(..)"
            ));
        }
        if let Some(cause @ (CrashCause::MemoryLimit | CrashCause::Harness)) = policy.expect_crash {
            return Some(format!(
                "expect_crash({cause:?}) can never pass: pin a leak at the memory limit with \
                 expect_leak(Resource::Peak); a harness error is never the code's crash"
            ));
        }
        if policy.expect_growth.is_some() && self.scaling.len() < 2 {
            return Some(
                "expect_peak_growth(..) needs .scaling(..) with at least 2 input sizes".to_owned(),
            );
        }
        let scaled = config.scaled(self.iterations);
        if scaled < MIN_ITERATIONS && self.iterations >= MIN_ITERATIONS {
            return Some(format!(
                "LEAKGATE_ITERATIONS_SCALE={} leaves {scaled} of its {} measured iterations; a \
                 verdict needs at least {MIN_ITERATIONS}",
                config.iterations_scale, self.iterations
            ));
        }
        None
    }

    fn refuse(&mut self, misuse: String) {
        self.misuse.get_or_insert(misuse);
    }
}

type SetupFn<S> = Box<dyn FnMut(&Ctx) -> S + Send>;
type IterateFn<S> = Box<dyn FnMut(&mut S, usize) -> Result<(), String> + Send>;
type SettleFn<S> = Box<dyn FnMut(&mut S) + Send>;
type TeardownFn<S> = Box<dyn FnMut(S) + Send>;

/// A leak scenario: set up state once, run warm-up iterations, take a baseline, run the
/// measured iterations, settle, tear down; fail if a resource does not return to baseline.
///
/// ```
/// use leakgate::Scenario;
/// let scenario = Scenario::new("cache/bounded")
///     .warmup(10)
///     .iterations(200)
///     .setup(|_ctx| std::collections::VecDeque::<String>::new())
///     .iterate(|cache, i| {
///         cache.push_back(format!("entry {i}"));
///         if cache.len() > 8 {
///             cache.pop_front();
///         }
///     });
/// # let _ = scenario;
/// ```
#[must_use = "a scenario does nothing until it is added to a Gate"]
pub struct Scenario<S = ()> {
    pub(crate) spec: Spec,
    pub(crate) setup: SetupFn<S>,
    pub(crate) iterate: Option<IterateFn<S>>,
    pub(crate) settle: Option<SettleFn<S>>,
    pub(crate) teardown: Option<TeardownFn<S>>,
}

impl Scenario<()> {
    /// A scenario named `name` (unique within the test binary; `/` groups names) with
    /// 5 warm-up and 100 measured iterations and no state.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            spec: Spec {
                name: name.into(),
                warmup: 5,
                iterations: 100,
                timeout: None,
                watch_dirs: Vec::new(),
                scaling: Vec::new(),
                memory_limit: None,
                policy: Policy {
                    expect: Vec::new(),
                    tolerances: Vec::new(),
                    peak_budget: None,
                    expect_site: None,
                    expect_growth: None,
                    expect_crash: None,
                    suppressions: Vec::new(),
                },
                misuse: None,
                min_iterations: None,
                engines: Vec::new(),
            },
            setup: Box::new(|_| ()),
            iterate: None,
            settle: None,
            teardown: None,
        }
    }
}

impl<S: 'static> Scenario<S> {
    /// Iterations run before the baseline, to fill caches, pools and lazy statics.
    pub fn warmup(mut self, iterations: usize) -> Self {
        self.spec.warmup = iterations;
        self
    }

    /// Measured iterations (scaled by `LEAKGATE_ITERATIONS_SCALE`); at least 2, or the
    /// gate refuses to start.
    pub fn iterations(mut self, iterations: usize) -> Self {
        if iterations < MIN_ITERATIONS {
            self.spec.refuse(format!(
                "iterations({iterations}): a verdict needs at least {MIN_ITERATIONS} measured iterations"
            ));
        }
        self.spec.iterations = iterations;
        self
    }

    /// Names an engine the scenario exercises and its version (`"sqlite"`, `"3.46.0"`),
    /// recorded in the report's `engines` so a finding can be traced to a release.
    pub fn engine(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.spec.engines.push((name.into(), version.into()));
        self
    }

    /// The fewest measured iterations (after scaling, at least 2) before the runner may
    /// stop early on conclusive evidence; by default half of them. See
    /// `LEAKGATE_ADAPTIVE`.
    pub fn min_iterations(mut self, iterations: usize) -> Self {
        self.spec.min_iterations = Some(iterations);
        self
    }

    /// How long the scenario may run before it is killed and reported as timed out
    /// (default: `LEAKGATE_TIMEOUT`, itself 300 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout);
        self
    }

    /// Creates the state the iterations work on; runs once, before warm-up. Replaces the
    /// scenario's state type, so call it before `iterate`, `settle` and `teardown` (the
    /// gate refuses to start otherwise).
    pub fn setup<T: 'static>(
        mut self,
        setup: impl FnMut(&Ctx) -> T + Send + 'static,
    ) -> Scenario<T> {
        if self.iterate.is_some() || self.settle.is_some() || self.teardown.is_some() {
            self.spec.refuse(
                "setup(..) after iterate/settle/teardown: setup replaces the state type and \
                 drops them; call setup(..) first"
                    .to_owned(),
            );
        }
        Scenario {
            spec: self.spec,
            setup: Box::new(setup),
            iterate: None,
            settle: None,
            teardown: None,
        }
    }

    /// One iteration of the workload; gets the state and the 0-based iteration number
    /// (warm-up and measured iterations are numbered separately).
    pub fn iterate<R: IterationResult>(
        mut self,
        mut iterate: impl FnMut(&mut S, usize) -> R + Send + 'static,
    ) -> Self {
        self.iterate = Some(Box::new(move |state, i| iterate(state, i).into_result()));
        self
    }

    /// Lets background work finish before the baseline and before the end sample (flush
    /// queues, join compactions). Deferred frees get bounded retries after it anyway.
    pub fn settle(mut self, settle: impl FnMut(&mut S) + Send + 'static) -> Self {
        self.settle = Some(Box::new(settle));
        self
    }

    /// Consumes the state at the end (default: drops it).
    pub fn teardown(mut self, teardown: impl FnMut(S) + Send + 'static) -> Self {
        self.teardown = Some(Box::new(teardown));
        self
    }

    /// Stops the scenario, with a `peak` finding naming the sites at the peak, once its
    /// heap is `bytes` above baseline (default: `LEAKGATE_MEMORY_LIMIT`, else four times
    /// the peak budget, else no limit).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.spec.memory_limit = Some(bytes);
        self
    }

    /// Fails the scenario when the heap's high-water mark above baseline exceeds `bytes`.
    pub fn peak_budget(mut self, bytes: u64) -> Self {
        self.spec.policy.peak_budget = Some(bytes);
        self
    }

    /// Growth of `resource` after settling that never counts as a leak: bytes for `Heap`,
    /// `CHeap` and `Disk`, a count for `Fds`, `Threads` and `Files`. The default is 0, or
    /// [`DEFAULT_C_HEAP_TOLERANCE`] for the C heap. For `Peak`, use
    /// [`peak_budget`](Self::peak_budget).
    pub fn tolerance(mut self, resource: Resource, amount: u64) -> Self {
        if resource == Resource::Peak {
            self.spec.refuse(
                "tolerance(Peak, ..): the peak has a budget, not a tolerance; use .peak_budget(bytes)"
                    .to_owned(),
            );
        }
        self.spec.policy.tolerances.retain(|(r, _)| *r != resource);
        self.spec.policy.tolerances.push((resource, amount));
        self
    }

    /// Also watches `dir` (besides the scratch directory) for leftover files and disk
    /// growth: a staging directory a restore leaves beside the database, say.
    pub fn watch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spec.watch_dirs.push(dir.into());
        self
    }

    /// Runs the whole scenario once per input size (setup reads it from
    /// [`Ctx::size`]) and fits peak memory against size; see
    /// [`expect_peak_growth`](Self::expect_peak_growth).
    pub fn scaling(mut self, sizes: &[u64]) -> Self {
        self.spec.scaling = sizes.to_vec();
        self.spec.scaling.sort_unstable();
        self.spec.scaling.dedup();
        self
    }

    /// With `scaling`: fails with a `peak` finding when the peak grows faster with the
    /// input size than `growth` (a restore that should stream but holds the whole log is
    /// linear, not constant).
    pub fn expect_peak_growth(mut self, growth: Growth) -> Self {
        self.spec.policy.expect_growth = Some(growth);
        self
    }

    /// Pins a known crash of the code under test (an engine that panics on a corrupted
    /// page, say): the scenario passes only if it crashes with this cause, and the report
    /// still shows the crash. Say why in a comment, with the evidence.
    pub fn expect_crash(mut self, cause: CrashCause) -> Self {
        self.spec.policy.expect_crash = Some(cause);
        self
    }

    /// Declares that this scenario leaks `resource`: it passes only if that leak is
    /// found (the report still shows it). For seeded leaks and known engine bugs.
    pub fn expect_leak(mut self, resource: Resource) -> Self {
        if !self.spec.policy.expect.contains(&resource) {
            self.spec.policy.expect.push(resource);
        }
        self
    }

    /// Sets a known finding of this scenario aside while it is being fixed, with a rule
    /// such as `"function:hashbrown::raw::RawTable::reserve  # upstream issue 123"`:
    /// `function:` matches a heap, C heap or peak finding when any frame of its top site
    /// contains the text, `thread:` a threads finding when every leaked thread's name does,
    /// `path:` a files or descriptors finding when every leaked path does; the comment
    /// after `#` says why and is required. The finding stays in the report, marked with the
    /// rule; a rule that matches nothing is reported as stale. `LEAKGATE_SUPPRESSIONS`
    /// names a file of such rules, one per line, for every scenario.
    pub fn suppress(mut self, rule: &str) -> Self {
        let origin = format!("scenario {}", self.spec.name);
        match crate::suppress::Suppression::parse(rule, &origin) {
            Ok(rule) => self.spec.policy.suppressions.push(rule),
            Err(error) => self.spec.refuse(format!("suppress({rule:?}): {error}")),
        }
        self
    }

    /// With `expect_leak`: the first leak declared must also be attributed to `function`:
    /// the first frame of its top allocation site (heap) or its first leaked item (a descriptor's target,
    /// a thread's name, a path) must contain this text, such as
    /// `my_engine::checkpoint::pin_segment` or `db.tmp`.
    pub fn expect_site(mut self, function: impl Into<String>) -> Self {
        self.spec.policy.expect_site = Some(function.into());
        self
    }
}
