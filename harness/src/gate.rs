//! [`Gate`]: the libtest-compatible runner. In the parent it lists and filters scenarios
//! like libtest, runs each in a child process (in-process under nextest, which already
//! runs one process per test), judges the measurements, prints failures and writes the
//! report. In a child it runs the one scenario it was started for.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leakgate_reports::{
    Crash, CrashCause, Finding, Resource, ScenarioReport, Verdict, merge_scenario,
};
use libtest_mimic::{Arguments, Failed, Trial};

use crate::config::{Config, KeepDirs};
use crate::console;
use crate::isolate::{self, CHANNEL_VAR, ChildRun, MemoryLimitHit, SCENARIO_VAR};
use crate::measure::{Event, Measurement, PROTOCOL, Position};
use crate::scenario::{Scenario, Spec};
use crate::session::{self, SessionError};
use crate::verdict;

/// Exit code for errors in how leakgate was invoked or configured.
const USAGE_ERROR: u8 = 2;
/// Events buffered by a child between flushes.
const CHANNEL_BUFFER: usize = 64 << 10;

/// A scenario with its state type erased.
trait Runnable: Send {
    fn spec(&self) -> &Spec;
    fn has_iterate(&self) -> bool;
    fn run(
        &mut self,
        config: &Config,
        emit: &mut dyn FnMut(&Event),
    ) -> Result<Measurement, SessionError>;
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
        emit: &mut dyn FnMut(&Event),
    ) -> Result<Measurement, SessionError> {
        session::run(self, config, emit)
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
    /// success only if every selected scenario passed.
    pub fn run(self) -> ExitCode {
        let config = match Config::from_env() {
            Ok(config) => config,
            Err(error) => {
                eprintln!("leakgate: {error}");
                return ExitCode::from(USAGE_ERROR);
            }
        };
        if let Some(channel) = std::env::var_os(CHANNEL_VAR) {
            let name = std::env::var(SCENARIO_VAR).unwrap_or_default();
            return self.run_child(&config, Path::new(&channel), &name);
        }
        if let Err(message) = self.check_names() {
            eprintln!("leakgate: {message}");
            return ExitCode::from(USAGE_ERROR);
        }
        let args = Arguments::from_args();
        let sink = Arc::new(ReportSink::new(&config));
        let in_process =
            std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test");
        let trials = self
            .scenarios
            .into_iter()
            .map(|runnable| {
                let name = runnable.spec().name.clone();
                let (sink, config) = (Arc::clone(&sink), config.clone());
                Trial::test(name, move || {
                    let report = if in_process {
                        run_in_process(runnable, &config, &sink)
                    } else {
                        run_isolated(runnable.spec(), &config)
                    };
                    let path = sink.record(report.clone());
                    match report.verdict {
                        Verdict::Pass => Ok(()),
                        _ => Err(Failed::from(console::failure_text(
                            &report,
                            path.as_deref(),
                        ))),
                    }
                })
            })
            .collect();
        let conclusion = libtest_mimic::run(&args, trials);
        if let Some(path) = sink.written() {
            println!("leakgate: report {}", path.display());
        }
        conclusion.exit_code()
    }

    fn check_names(&self) -> Result<(), String> {
        let mut names: Vec<&str> = self
            .scenarios
            .iter()
            .map(|s| s.spec().name.as_str())
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "two scenarios are named {:?}; names must be unique",
                pair[0]
            ));
        }
        if let Some(idle) = self.scenarios.iter().find(|s| !s.has_iterate()) {
            return Err(format!(
                "scenario {:?} has no iterate function: call `.iterate(..)` after `.setup(..)`",
                idle.spec().name
            ));
        }
        if let Some(empty) = self
            .scenarios
            .iter()
            .find(|s| s.spec().name.trim().is_empty())
        {
            return Err(format!(
                "a scenario has an empty name ({:?})",
                empty.spec().name
            ));
        }
        Ok(())
    }

    /// In a child: run the named scenario, streaming events to the channel file.
    fn run_child(self, config: &Config, channel: &Path, name: &str) -> ExitCode {
        let file = match OpenOptions::new().append(true).open(channel) {
            Ok(file) => file,
            Err(error) => {
                eprintln!(
                    "leakgate: cannot open the channel {}: {error}",
                    channel.display()
                );
                return ExitCode::from(USAGE_ERROR);
            }
        };
        let mut writer = BufWriter::with_capacity(CHANNEL_BUFFER, file);
        let mut emit = |event: &Event| {
            // Best effort: if the parent is gone, there is nobody to tell.
            let _ = serde_json::to_writer(&mut writer, event);
            let _ = writer.write_all(b"\n");
            let _ = writer.flush();
        };
        emit(&Event::Hello { protocol: PROTOCOL });
        report_panics_to(channel.to_owned());
        crate::crash_stack::install();
        let Some(mut scenario) = self.scenarios.into_iter().find(|s| s.spec().name == name) else {
            emit(&Event::HarnessError {
                message: format!("this test binary has no scenario named {name:?}"),
            });
            return ExitCode::from(USAGE_ERROR);
        };
        match scenario.run(config, &mut emit) {
            Ok(measurement) => {
                emit(&Event::Finished {
                    measurement: Box::new(measurement),
                });
                ExitCode::SUCCESS
            }
            Err(error) => {
                emit(&Event::HarnessError {
                    message: error.to_string(),
                });
                ExitCode::from(USAGE_ERROR)
            }
        }
    }
}

/// Adds a panic's message to the channel, after the usual message on stderr.
fn report_panics_to(channel: PathBuf) {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        let message = panic_message(info.payload_as_str(), info.location());
        if let Ok(mut file) = OpenOptions::new().append(true).open(&channel) {
            let line = serde_json::to_string(&Event::Panic { message }).unwrap_or_default();
            let _ = writeln!(file, "{line}");
        }
    }));
}

fn panic_message(payload: Option<&str>, location: Option<&std::panic::Location<'_>>) -> String {
    let text = payload.unwrap_or("(a panic with a non-string payload)");
    match location {
        Some(at) => format!("{text} (at {}:{})", at.file(), at.line()),
        None => text.to_owned(),
    }
}

fn run_isolated(spec: &Spec, config: &Config) -> ScenarioReport {
    let started = Instant::now();
    let run = isolate::run_child(&spec.name, spec.timeout.unwrap_or(config.timeout));
    if run.crash.is_some() && config.keep_dirs == KeepDirs::Never {
        // The child died before it could remove its scratch directory.
        if let Some(dir) = &run.scratch_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    scenario_report(spec, config, run, started.elapsed())
}

fn run_in_process(
    mut runnable: Box<dyn Runnable>,
    config: &Config,
    sink: &ReportSink,
) -> ScenarioReport {
    let started = Instant::now();
    let spec = runnable.spec().clone();
    // If this process dies (abort, signal), the placeholder is what the report keeps.
    let mut placeholder = ScenarioReport::new(
        &spec.name,
        Verdict::Crashed,
        "crashed: the test process died before the scenario finished; see the test runner's output",
    );
    placeholder.crash = Some(Crash::new(CrashCause::Signal, "unknown", None));
    sink.record(placeholder);
    let mut position: Option<Position> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runnable.run(config, &mut |event| {
            if let Event::At(at) = event {
                position = Some(*at);
            }
        })
    }));
    // A panic skipped the session's own cleanup: stop recording sites.
    crate::alloc::sites::clear();
    let phase = position.map_or_else(|| "start".to_owned(), |p| p.to_string());
    let crash = |cause, message: String| Crash::new(cause, phase.clone(), Some(message));
    let run = match outcome {
        Ok(Ok(measurement)) => ChildRun::finished(measurement),
        Ok(Err(error)) => ChildRun::crashed(crash(CrashCause::Harness, error.to_string())),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned());
            ChildRun::crashed(crash(
                CrashCause::Panic,
                panic_message(text.as_deref(), None),
            ))
        }
    };
    scenario_report(&spec, config, run, started.elapsed())
}

impl ChildRun {
    fn finished(measurement: Measurement) -> Self {
        Self {
            measurement: Some(measurement),
            partial: Measurement::default(),
            crash: None,
            output: String::new(),
            scratch_dir: None,
            memory_limit: None,
        }
    }

    fn crashed(crash: Crash) -> Self {
        Self {
            measurement: None,
            partial: Measurement::default(),
            crash: Some(crash),
            output: String::new(),
            scratch_dir: None,
            memory_limit: None,
        }
    }
}

fn scenario_report(
    spec: &Spec,
    config: &Config,
    run: ChildRun,
    elapsed: Duration,
) -> ScenarioReport {
    let mut report = match (run.crash, run.measurement) {
        (None, Some(m)) => {
            let analysis = verdict::analyze(&m, &spec.policy);
            let mut report = ScenarioReport::new(&spec.name, analysis.verdict, analysis.summary);
            report.findings = analysis.findings;
            report.iteration_error = m.iteration_error;
            report.series = m.series;
            report.notes = m.notes;
            report.notes.extend(analysis.notes);
            report.scaling = analysis.scaling;
            if let Some(cause) = spec
                .policy
                .expect_crash
                .filter(|_| report.verdict == Verdict::Pass)
            {
                report.verdict = Verdict::Fail;
                report.summary = format!("expected a crash ({cause:?}), but the scenario finished");
            }
            report
        }
        (crash, _) => {
            let crash = crash.unwrap_or_else(|| {
                Crash::new(
                    CrashCause::Harness,
                    "unknown",
                    Some("no result and no cause".to_owned()),
                )
            });
            let mut report = match run.memory_limit {
                Some(hit) => memory_limit_report(spec, hit, &crash),
                None if spec.policy.expect_crash == Some(crash.cause) => {
                    match verdict::crash_misattribution(&crash, &spec.policy) {
                        None => ScenarioReport::new(
                            &spec.name,
                            Verdict::Pass,
                            format!("expected crash found: {}", crash_summary(&crash)),
                        ),
                        Some(error) => ScenarioReport::new(&spec.name, Verdict::Fail, error),
                    }
                }
                None => ScenarioReport::new(&spec.name, Verdict::Crashed, crash_summary(&crash)),
            };
            report.series = run.partial.series;
            report.crash = Some(crash);
            report
        }
    };
    if report.verdict != Verdict::Pass && !run.output.is_empty() {
        report.output = Some(run.output);
    }
    report.expected_leaks = spec.policy.expect.clone();
    report.warmup = spec.warmup as u32;
    report.iterations = config.scaled(spec.iterations) as u32;
    report.duration_ms = elapsed.as_millis() as u64;
    report
}

/// A scenario the watchdog stopped at the memory limit: a `peak` finding with the sites
/// at the peak, judged like any other (it passes if a peak leak was expected).
fn memory_limit_report(spec: &Spec, hit: MemoryLimitHit, crash: &Crash) -> ScenarioReport {
    let mut finding = Finding::new(Resource::Peak, hit.heap as i64, 0);
    finding.expected = spec.policy.expect.contains(&Resource::Peak);
    finding.message = format!(
        "heap reached {} above baseline in {}, over the memory limit of {}: stopped",
        console::bytes(hit.heap as i64),
        crash.phase,
        console::bytes(hit.limit as i64)
    );
    finding.sites = hit.sites;
    let findings = [finding];
    let misattributed = verdict::misattribution(&findings, &spec.policy, true);
    let [finding] = findings;
    let (verdict, summary) = match (finding.expected, misattributed) {
        (true, None) => (
            Verdict::Pass,
            format!("expected leak found: {}", finding.message),
        ),
        (true, Some(error)) => (Verdict::Fail, error),
        (false, _) => (Verdict::Fail, finding.message.clone()),
    };
    let mut report = ScenarioReport::new(&spec.name, verdict, summary);
    report.findings.push(finding);
    report
}

fn crash_summary(crash: &Crash) -> String {
    let how = match (crash.cause, crash.signal.as_deref()) {
        (CrashCause::StackOverflow, Some(signal)) => format!("stack overflow ({signal})"),
        (CrashCause::StackOverflow, None) => "stack overflow".to_owned(),
        (CrashCause::Abort, _) => "aborted (SIGABRT)".to_owned(),
        (CrashCause::Signal, Some(signal)) => format!("killed by {signal}"),
        (CrashCause::Panic, _) => "panicked".to_owned(),
        (CrashCause::Timeout, _) => "timed out".to_owned(),
        (CrashCause::MemoryLimit, _) => "stopped at the memory limit".to_owned(),
        (CrashCause::Exit, _) => match crash.exit_code {
            Some(code) => format!("exited with code {code} before reporting a result"),
            None => "exited before reporting a result".to_owned(),
        },
        _ => "could not be run".to_owned(),
    };
    let mut summary = format!("crashed: {how} in {}", crash.phase);
    if let Some(message) = &crash.message {
        summary = format!("{summary}: {message}");
    }
    match (
        crate::crash_stack::recursion(&crash.stack),
        crash.stack.first(),
    ) {
        (Some(function), _) => format!("{summary}; recursing through {function}"),
        (None, Some(frame)) => format!("{summary}; at {}", frame.function),
        (None, None) => summary,
    }
}

/// Where this run's report goes, and the merging writer for it.
struct ReportSink {
    path: PathBuf,
    run_id: String,
    /// `target/leakgate`, whose `latest` link is pointed at this run once it writes.
    default_root: Option<PathBuf>,
    written: std::sync::atomic::AtomicBool,
}

impl ReportSink {
    fn new(config: &Config) -> Self {
        let run_id = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("run-{secs}-{}", std::process::id())
        });
        let default_root = config.report_dir.is_none().then(default_report_root);
        let dir = match (&config.report_dir, &default_root) {
            (Some(dir), _) => dir.clone(),
            (None, Some(root)) => root.join(&run_id),
            (None, None) => unreachable!("one of the two is set"),
        };
        Self {
            path: dir.join("report.json"),
            run_id,
            default_root,
            written: Default::default(),
        }
    }

    /// Adds `report` to the report file; returns its path, or `None` (after saying why
    /// on stderr) if it could not be written.
    fn record(&self, report: ScenarioReport) -> Option<PathBuf> {
        match merge_scenario(&self.path, &self.run_id, report) {
            Ok(()) => {
                let first = !self
                    .written
                    .swap(true, std::sync::atomic::Ordering::Relaxed);
                if let Some(root) = self.default_root.as_deref().filter(|_| first) {
                    point_latest_at(root, &self.run_id);
                }
                Some(self.path.clone())
            }
            Err(error) => {
                eprintln!("leakgate: cannot write the report: {error}");
                None
            }
        }
    }

    fn written(&self) -> Option<&Path> {
        self.written
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(self.path.as_path())
    }
}

/// `<target>/leakgate`: cargo's target directory is the nearest ancestor of the test
/// binary that holds `CACHEDIR.TAG`.
fn default_report_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("leakgate");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("leakgate")
}

/// Points `<root>/latest` at `run_id` (a relative link, replaced atomically).
fn point_latest_at(root: &Path, run_id: &str) {
    let staging = root.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(root);
    let _ = std::fs::remove_file(&staging);
    if std::os::unix::fs::symlink(run_id, &staging).is_ok() {
        let _ = std::fs::rename(&staging, root.join("latest"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_summaries_name_cause_phase_and_message() {
        let mut crash = Crash::new(
            CrashCause::StackOverflow,
            "iteration 3",
            Some("thread 'main' has overflowed its stack".into()),
        );
        crash.signal = Some("SIGABRT".into());
        assert_eq!(
            crash_summary(&crash),
            "crashed: stack overflow (SIGABRT) in iteration 3: thread 'main' has overflowed its stack"
        );
    }
}
