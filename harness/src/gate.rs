//! [`Gate`]: the libtest-compatible runner. In the parent it lists and filters scenarios
//! like libtest and runs each in a child process of its own (under `cargo test` and
//! under `cargo nextest run` alike, so verdicts, containment, timeouts and probes are
//! the same under both), has the judge decide, removes or keeps the scratch
//! directories, prints failures and hands the reports to the [`ReportSink`]. In a child
//! it runs the one scenario it was started for ([`crate::child`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leakgate_reports::baseline::{Figures, Thresholds};
use leakgate_reports::{Frame, ScenarioReport, Verdict};
use libtest_mimic::{Arguments, Failed, Trial};

use crate::channel::{CHANNEL_VAR, Channel, SCENARIO_VAR};
use crate::config::{Config, ConfigError, KeepDirs};
use crate::isolate::{self, ChildRun};
use crate::measure::Measurement;
use crate::scenario::{Scenario, Spec};
use crate::session::{self, SessionError};
use crate::sink::ReportSink;
use crate::tempdirs;
use crate::verdict;

/// Exit code for errors in how leakgate was invoked or configured.
const USAGE_ERROR: u8 = 2;

use leakgate_reports::text::NO_DEBUG_INFO_NOTE as DEBUG_INFO_FIX;

/// A scenario with its state type erased.
pub(crate) trait Runnable: Send {
    fn spec(&self) -> &Spec;
    fn has_iterate(&self) -> bool;
    fn run(&mut self, config: &Config, channel: &Arc<Channel>)
    -> Result<Measurement, SessionError>;
}

impl<S: 'static> Runnable for Scenario<S> {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn has_iterate(&self) -> bool {
        self.iterate.is_some()
    }

    fn run(
        &mut self,
        config: &Config,
        channel: &Arc<Channel>,
    ) -> Result<Measurement, SessionError> {
        session::run(self, config, channel)
    }
}

/// The set of scenarios in one test binary, and the runner for them.
///
/// ```no_run
/// leakgate::global_allocator!();
///
/// fn main() -> std::process::ExitCode {
///     leakgate::Gate::new()
///         .scenario(leakgate::Scenario::new("vec/reused").iterate(|_, i| {
///             let buffer = vec![0u8; 1 << (i % 12)];
///             std::hint::black_box(buffer);
///         }))
///         .run()
/// }
/// ```
#[derive(Default)]
#[must_use = "a gate does nothing until `run` is called"]
pub struct Gate {
    scenarios: Vec<Box<dyn Runnable>>,
}

/// Why a gate refused to start: nothing ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A `LEAKGATE_*` variable has a value leakgate does not accept.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A scenario was declared in a way that cannot give a verdict.
    #[error("scenario {scenario:?}: {problem}")]
    Scenario {
        /// The scenario's name.
        scenario: String,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// Two scenarios share a name.
    #[error("two scenarios are named {0:?}; names must be unique")]
    DuplicateName(String),
    /// The baseline to compare with (`LEAKGATE_BASELINE`) is missing or malformed.
    #[error("LEAKGATE_BASELINE: {0}")]
    Baseline(leakgate_reports::ReportError),
    /// The suppressions file (`LEAKGATE_SUPPRESSIONS`) cannot be read or holds a line
    /// that is not a rule.
    #[error("LEAKGATE_SUPPRESSIONS: {0}")]
    Suppressions(#[from] crate::suppress::SuppressionError),
}

/// What a gate's run concluded: libtest's counts and every scenario's report.
#[derive(Debug)]
#[must_use = "the conclusion carries the exit code"]
#[non_exhaustive]
pub struct Conclusion {
    /// Scenarios that passed.
    pub passed: u64,
    /// Scenarios that failed or crashed (or whose report could not be written).
    pub failed: u64,
    /// Scenarios the name filters left out.
    pub filtered_out: u64,
    /// The report of every scenario that ran, in the order they finished.
    pub reports: Vec<ScenarioReport>,
    /// Where the report was written, if it was: `report.json` under `cargo test`, the
    /// `report.jsonl` it is assembled from under nextest.
    pub report_path: Option<PathBuf>,
}

impl Conclusion {
    /// Success when nothing failed.
    pub fn exit_code(&self) -> ExitCode {
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(101)
        }
    }

    /// The verdict of the scenario named `name`, if it ran.
    pub fn verdict(&self, name: &str) -> Option<Verdict> {
        self.reports
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.verdict)
    }
}

impl Gate {
    /// A gate with no scenarios.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a scenario.
    pub fn scenario<S: 'static>(mut self, scenario: Scenario<S>) -> Self {
        self.scenarios.push(Box::new(scenario));
        self
    }

    /// Runs the scenarios selected by the command line (libtest's arguments: filters,
    /// `--exact`, `--skip`, `--list`, `--test-threads`, …) and returns the exit code:
    /// success only if every selected scenario passed; 2 when the gate could not start
    /// (a malformed variable, a misdeclared scenario), with the reason on stderr.
    pub fn run(self) -> ExitCode {
        match self.conclude(std::env::args()) {
            Ok(conclusion) => {
                if let Some(path) = &conclusion.report_path {
                    eprintln!("leakgate: report {}", path.display());
                }
                conclusion.exit_code()
            }
            Err(error) => {
                eprintln!("leakgate: {error}");
                ExitCode::from(USAGE_ERROR)
            }
        }
    }

    /// Like [`run`](Self::run), with the arguments given (the first is the program
    /// name), returning the conclusion so a test can inspect the verdicts.
    ///
    /// Each scenario runs in a child process: this same binary, started again. In that
    /// child, this call runs the one scenario and ends the process with its exit code,
    /// so `main` must build the same gate on every start.
    pub fn conclude<I>(self, args: I) -> Result<Conclusion, SetupError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let config = Config::from_env()?;
        if let Some(channel) = std::env::var_os(CHANNEL_VAR) {
            let name = std::env::var(SCENARIO_VAR).unwrap_or_default();
            let code = crate::child::run(self.scenarios, &config, channel.as_ref(), &name);
            // A child has nothing to hand back: its parent reads the channel.
            std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 2 });
        }
        for warning in config.warnings() {
            eprintln!("leakgate: warning: {warning}");
        }
        self.check(&config)?;
        let mut args = Arguments::from_iter(args.into_iter().map(Into::into));
        if args.test_threads.is_none() {
            // Each scenario is a child process that spends much of its time asleep
            // (settling waits with back-off for deferred frees), and verdicts come from
            // allocation counts, not timings: two per core keep the cores busy.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            args.test_threads = Some(2 * cores);
        }
        if !args.list {
            tempdirs::remove_stale();
        }
        let baselines = Arc::new(Baselines::of(&config)?);
        let file_rules = match &config.suppressions {
            Some(path) => crate::suppress::Suppression::load(path)?,
            None => Vec::new(),
        };
        let sink = Arc::new(ReportSink::new(&config));
        let reports = Arc::new(Mutex::new(Vec::new()));
        // Longest first, so the last to start does not end the run alone: a scenario
        // that runs once per input size is the one to start early.
        let mut scenarios = self.scenarios;
        scenarios.sort_by_key(|s| std::cmp::Reverse(s.spec().scaling.len()));
        let trials = scenarios
            .into_iter()
            .map(|runnable| {
                let mut spec = runnable.spec().clone();
                spec.policy.suppressions.extend(file_rules.iter().cloned());
                let (sink, config, reports, baselines) = (
                    Arc::clone(&sink),
                    config.clone(),
                    Arc::clone(&reports),
                    Arc::clone(&baselines),
                );
                Trial::test(spec.name.clone(), move || {
                    let started = Instant::now();
                    let run =
                        isolate::run_child(&spec.name, spec.timeout.unwrap_or(config.timeout));
                    let report =
                        scenario_report(&spec, &config, &baselines, run, started.elapsed());
                    let recorded = sink.record(&report);
                    let verdict = report.verdict;
                    let text =
                        leakgate_reports::text::failure_text(&report, recorded.as_deref().ok());
                    reports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(report);
                    match (recorded, verdict) {
                        (Err(error), _) => Err(Failed::from(format!(
                            "cannot write the report: {error}\n{text}"
                        ))),
                        (Ok(_), Verdict::Pass) => Ok(()),
                        (Ok(_), _) => Err(Failed::from(text)),
                    }
                })
            })
            .collect();
        let libtest = libtest_mimic::run(&args, trials);
        let reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failed = libtest.num_failed;
        // Under nextest each process runs one scenario and the run ends elsewhere: the
        // lines stay lines, and `leakgate render` assembles them.
        let run_ends_here = std::env::var_os("NEXTEST_RUN_ID").is_none();
        let assembled = if run_ends_here { sink.finish() } else { None };
        let report_path = match assembled {
            Some(Ok(_)) => Some(sink.dir().join(leakgate_reports::REPORT_FILE)),
            Some(Err(error)) => {
                eprintln!("leakgate: cannot assemble the report: {error}");
                failed += 1;
                None
            }
            None => sink.written(),
        };
        if run_ends_here && !reports.is_empty() {
            // stderr: libtest's own output (`--format json` included) owns stdout.
            eprint!("\n{}", leakgate_reports::text::run_table(&reports));
        }
        Ok(Conclusion {
            passed: libtest.num_passed,
            failed,
            filtered_out: libtest.num_filtered_out,
            reports,
            report_path,
        })
    }

    /// Refuses, before anything runs, a gate whose scenarios cannot give verdicts.
    fn check(&self, config: &Config) -> Result<(), SetupError> {
        let mut names: Vec<&str> = self
            .scenarios
            .iter()
            .map(|s| s.spec().name.as_str())
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SetupError::DuplicateName(pair[0].to_owned()));
        }
        for scenario in &self.scenarios {
            let spec = scenario.spec();
            let problem = if spec.name.trim().is_empty() {
                Some("a scenario needs a name that is not blank".to_owned())
            } else if !scenario.has_iterate() {
                Some(
                    "it has no iterate function: call `.iterate(..)` after `.setup(..)`".to_owned(),
                )
            } else {
                spec.problem(config)
            };
            if let Some(problem) = problem {
                return Err(SetupError::Scenario {
                    scenario: spec.name.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

/// The report of one scenario's run: the judge's verdict, the evidence, and what became
/// of its scratch directories.
fn scenario_report(
    spec: &Spec,
    config: &Config,
    baselines: &Baselines,
    run: ChildRun,
    elapsed: Duration,
) -> ScenarioReport {
    let analysis = verdict::judge(&run.outcome, &spec.policy);
    let mut report = ScenarioReport::new(&spec.name, analysis.verdict, analysis.summary);
    report.findings = analysis.findings;
    report.scaling = analysis.scaling;
    report.statistics = analysis.statistics;
    report.policy = Some(policy_report(spec, config));
    report.engines = spec.engines.iter().cloned().collect();
    report.mappings = run
        .mappings
        .iter()
        .map(|m| {
            leakgate_reports::Mapping::new(
                m.start as u64,
                m.end as u64,
                m.offset as u64,
                m.path.to_string_lossy(),
            )
        })
        .collect();
    let measurement = run.outcome.measurement();
    report.iteration_error = measurement.iteration_error.clone();
    report.series = measurement.series.clone();
    report.notes = measurement.notes.clone();
    report.notes.extend(analysis.notes);
    if let crate::measure::Outcome::Crashed { crash, .. } = run.outcome {
        report.crash = Some(crash);
    }
    // Before what depends on the verdict (output kept, scratch dirs kept): a regression
    // against the baseline is a failure like any other.
    baselines.apply(&mut report, config);
    if report.verdict != Verdict::Pass && !run.output.is_empty() {
        report.output = Some(run.output);
    }
    let keep = match config.keep_dirs {
        KeepDirs::Always => true,
        KeepDirs::OnFailure => report.verdict != Verdict::Pass,
        KeepDirs::Never => false,
    };
    for dir in &run.scratch_dirs {
        let note = if keep {
            match tempdirs::keep(dir) {
                Ok(kept) => {
                    eprintln!(
                        "leakgate: {}: scratch directory kept at {}",
                        spec.name,
                        kept.display()
                    );
                    format!("scratch directory kept at {}", kept.display())
                }
                Err(error) => format!("cannot keep scratch directory {}: {error}", dir.display()),
            }
        } else {
            match tempdirs::remove(dir) {
                Ok(()) => continue,
                Err(error) => format!("cannot remove scratch directory {}: {error}", dir.display()),
            }
        };
        report.notes.push(note);
    }
    // Rust frames only: a C library built without `-g` says nothing about this build.
    if frames_of(&report).any(|f| f.file.is_none() && f.function.contains("::")) {
        report.notes.push(DEBUG_INFO_FIX.to_owned());
    }
    report.expected_leaks = spec.policy.expect.clone();
    report.warmup = spec.warmup as u32;
    report.iterations = config.scaled(spec.iterations) as u32;
    report.duration_ms = elapsed.as_millis() as u64;
    report
}

/// The baselines of a run: the one to compare with, loaded before any scenario runs, and
/// the one to save.
struct Baselines {
    compare: Option<(String, BTreeMap<String, Figures>)>,
    save: Option<leakgate_reports::baseline::Baselines>,
}

impl Baselines {
    fn of(config: &Config) -> Result<Self, SetupError> {
        let root = config
            .baseline_dir
            .clone()
            .unwrap_or_else(|| crate::sink::default_report_root().join("baselines"));
        let compare = match &config.baseline {
            Some(name) => {
                let figures = leakgate_reports::baseline::Baselines::new(&root, name)
                    .load()
                    .map_err(SetupError::Baseline)?;
                Some((name.clone(), figures))
            }
            None => None,
        };
        let save = config
            .save_baseline
            .as_deref()
            .map(|name| leakgate_reports::baseline::Baselines::new(&root, name));
        Ok(Self { compare, save })
    }

    /// Compares `report` with its baseline figures (the judge decides what a regression
    /// does to the verdict) and saves its figures, as the run asked.
    fn apply(&self, report: &mut ScenarioReport, config: &Config) {
        let Some(figures) = Figures::of(report) else {
            return;
        };
        if let Some((name, baseline)) = &self.compare {
            match baseline.get(&report.name) {
                Some(base) => {
                    let comparison = leakgate_reports::baseline::compare(
                        name,
                        base,
                        &figures,
                        Thresholds::new(config.baseline_noise),
                    );
                    (report.verdict, report.summary) =
                        verdict::against_baseline(report.verdict, &report.summary, &comparison);
                    report.baseline = Some(comparison);
                }
                None => report
                    .notes
                    .push(format!("not in baseline {name}: nothing to compare with")),
            }
        }
        if let Some(save) = &self.save {
            match save.save(&figures) {
                Ok(_) => {}
                Err(error) => {
                    report.verdict = Verdict::Fail;
                    report.summary = format!("cannot save baseline {}: {error}", save.name());
                }
            }
        }
    }
}

/// The rules `spec` was judged by under `config`, as the report records them.
fn policy_report(spec: &Spec, config: &Config) -> leakgate_reports::Policy {
    let timeout = spec.timeout.unwrap_or(config.timeout);
    let mut policy =
        leakgate_reports::Policy::new(timeout.as_millis() as u64, config.iterations_scale);
    use leakgate_reports::Resource;
    for resource in [
        Resource::Heap,
        Resource::CHeap,
        Resource::Fds,
        Resource::Threads,
        Resource::Files,
        Resource::Disk,
    ] {
        policy
            .tolerances
            .insert(resource, spec.policy.tolerance(resource));
    }
    policy.peak_budget = spec.policy.peak_budget;
    policy.memory_limit = spec.effective_memory_limit(config);
    policy.sites = config.sites;
    policy.adaptive = spec.adaptive_under(config);
    policy.expected_crash = spec.policy.expect_crash;
    policy.expected_site = spec.policy.expect_site.clone();
    policy.suppressions = spec
        .policy
        .suppressions
        .iter()
        .map(|rule| rule.describe())
        .collect();
    policy
}

/// Every frame the report shows: its sites' and its crash's.
fn frames_of(report: &ScenarioReport) -> impl Iterator<Item = &Frame> {
    let sites = report
        .findings
        .iter()
        .flat_map(|f| &f.sites)
        .flat_map(|s| &s.frames);
    sites.chain(report.crash.iter().flat_map(|c| &c.stack))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakgate_reports::Resource;

    fn refusal(scenario: Scenario<()>, vars: &[(&str, &str)]) -> String {
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let gate = Gate::new().scenario(scenario.iterate(|_, _| {}));
        gate.check(&config).unwrap_err().to_string()
    }

    #[test]
    fn misdeclared_scenarios_are_refused_naming_the_scenario_and_the_fix() {
        assert_eq!(
            refusal(Scenario::new("a/one").iterations(1), &[]),
            r#"scenario "a/one": iterations(1): a verdict needs at least 2 measured iterations"#
        );
        assert!(refusal(Scenario::new("a/none").iterations(0), &[]).contains("iterations(0)"));
        assert_eq!(
            refusal(Scenario::new("a/site").expect_site("pin_segment"), &[]),
            r#"scenario "a/site": expect_site("pin_segment") with nothing expected: add expect_leak(..) or expect_crash(..)"#
        );
        assert!(
            refusal(
                Scenario::new("a/growth").expect_peak_growth(crate::Growth::Constant),
                &[]
            )
            .contains("needs .scaling(..) with at least 2 input sizes")
        );
        assert!(
            refusal(Scenario::new("a/peak").tolerance(Resource::Peak, 1), &[])
                .contains("use .peak_budget(bytes)")
        );
        assert!(
            refusal(
                Scenario::new("a/scale").iterations(100),
                &[("LEAKGATE_ITERATIONS_SCALE", "0.01")]
            )
            .contains("LEAKGATE_ITERATIONS_SCALE=0.01 leaves 1 of its 100 measured iterations")
        );
        assert_eq!(
            refusal(Scenario::new("a/supp").suppress("function:x"), &[]),
            "scenario \"a/supp\": suppress(\"function:x\"): scenario a/supp: \"function:x\" has no \
             comment saying why; expected `function:TEXT`, `thread:TEXT` or `path:TEXT`, then `# why`"
        );
        // `setup` after `iterate` drops the iterate function: refused as such.
        let late_setup = Gate::new().scenario(
            Scenario::new("a/late_setup")
                .iterate(|_, _| {})
                .setup(|_| 0u8)
                .iterate(|_, _| {}),
        );
        let config = Config::from_lookup(|_| None).unwrap();
        assert!(
            late_setup
                .check(&config)
                .unwrap_err()
                .to_string()
                .contains("setup(..) after iterate/settle/teardown")
        );
    }

    #[test]
    fn two_scenarios_with_one_name_are_refused() {
        let config = Config::from_lookup(|_| None).unwrap();
        let gate = Gate::new()
            .scenario(Scenario::new("same").iterate(|_, _| {}))
            .scenario(Scenario::new("same").iterate(|_, _| {}));
        assert_eq!(
            gate.check(&config).unwrap_err().to_string(),
            r#"two scenarios are named "same"; names must be unique"#
        );
    }
}
