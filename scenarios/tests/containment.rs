//! Runs the `crash-fixture` binary as a user's CI would and checks that every scenario
//! that panics, aborts, overflows its stack, segfaults or hangs is reported by name,
//! cause and phase, that the clean ones around them still pass, and that libtest's
//! arguments (`--list`, filters, `--exact`) and configuration errors behave.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use leakgate_reports::{CrashCause, Report, ScenarioReport, Verdict, read_report};

const FIXTURE: &str = env!("CARGO_BIN_EXE_crash-fixture");

fn fixture(report_dir: &Path, args: &[&str]) -> Output {
    fixture_with(report_dir, args, &[])
}

fn fixture_with(report_dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(FIXTURE)
        .args(args)
        .envs(vars.iter().copied())
        .env("LEAKGATE_REPORT_DIR", report_dir)
        .output()
        .expect("the crash fixture runs")
}

fn scenario<'a>(report: &'a Report, name: &str) -> &'a ScenarioReport {
    report
        .scenarios
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} missing from the report"))
}

#[test]
fn crashes_are_reported_by_name_cause_and_phase_and_the_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = fixture(dir.path(), &["--test-threads", "2", "--skip", "hang/"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(101), "{stdout}");
    assert!(
        stdout.contains("test result: FAILED. 4 passed; 9 failed"),
        "{stdout}"
    );
    let report = read_report(dir.path()).unwrap();
    assert_eq!(report.scenarios.len(), 13);

    // The one that left a process holding its output passed, without waiting for it.
    for clean in [
        "clean/before",
        "clean/after",
        "clean/leaves_a_process_holding_its_output",
    ] {
        assert_eq!(scenario(&report, clean).verdict, Verdict::Pass, "{clean}");
    }
    // Each crash's message says what happened: the panic's text and location, the
    // runtime's overflow line, the abort's last words, the fault's last output line.
    let expectations = [
        (
            "crash/panic",
            CrashCause::Panic,
            None,
            "iteration 3",
            "boom at iteration 3 (at scenarios/src/bin/crash_fixture.rs:",
        ),
        (
            "crash/abort",
            CrashCause::Abort,
            Some("SIGABRT"),
            "iteration 2",
            "aborting at iteration 2",
        ),
        // SIGABRT from the runtime's handler, or SIGSEGV when the overflow hits inside
        // the allocator (no stack probes there), as ASLR decides: checked below.
        (
            "crash/stack_overflow",
            CrashCause::StackOverflow,
            None,
            "iteration 1",
            "overflowed its stack",
        ),
        (
            "crash/segfault",
            CrashCause::Signal,
            Some("SIGSEGV"),
            "iteration 5",
            "writing through a null pointer at iteration 5",
        ),
        (
            "crash/timeout",
            CrashCause::Timeout,
            None,
            "iteration 0",
            "still running after 2.0 s",
        ),
        (
            "crash/panic_in_setup",
            CrashCause::Panic,
            None,
            "setup",
            "cannot open the engine",
        ),
    ];
    for (name, cause, signal, phase, message) in expectations {
        let s = scenario(&report, name);
        assert_eq!(s.verdict, Verdict::Crashed, "{name}");
        let crash = s.crash.as_ref().unwrap();
        let crash_signal = crash.signal.as_deref();
        let crash_signal = if cause == CrashCause::StackOverflow {
            assert!(
                matches!(crash_signal, Some("SIGABRT" | "SIGSEGV")),
                "{name}: {crash:?}"
            );
            None
        } else {
            crash_signal
        };
        assert_eq!(
            (crash.cause, crash_signal, crash.phase.as_str()),
            (cause, signal, phase),
            "{name}"
        );
        let said = crash.message.as_deref().unwrap_or("(no message)");
        assert!(said.contains(message), "{name}: {crash:?}");
        assert!(
            stdout.contains(&format!("---- {name} ----\ncrashed: ")),
            "{name} in {stdout}"
        );
    }
    // Faults are located: the overflow by the recursion it ran through, the segfault by
    // the closure that wrote through a null pointer.
    let overflow = scenario(&report, "crash/stack_overflow")
        .crash
        .as_ref()
        .unwrap();
    // The recursion fills the top of the stack (under the allocator's frames, when the
    // overflow hit inside it).
    let walks = overflow.stack.iter().take(12);
    assert!(
        walks
            .filter(|f| f.function == "crash_fixture::walk")
            .count()
            >= 4,
        "{overflow:?}"
    );
    assert!(
        stdout.contains("; recursing through crash_fixture::walk\n"),
        "{stdout}"
    );
    // In debug the innermost frame is the closure; release inlines it into `main`.
    let segfault = scenario(&report, "crash/segfault").crash.as_ref().unwrap();
    assert!(
        segfault
            .stack
            .first()
            .is_some_and(|f| f.function.starts_with("crash_fixture::main")),
        "{segfault:?}"
    );
    assert!(!stdout.contains("leakgate-fault-stack"), "{stdout}");

    // Samples streamed before the crash are kept.
    assert_eq!(
        scenario(&report, "crash/segfault").series.iterations.len(),
        5
    );

    // A runaway restore ends as a peak finding naming the site, not as an OOM kill.
    let runaway = scenario(&report, "crash/runaway_restore");
    assert_eq!(runaway.verdict, Verdict::Fail, "{runaway:?}");
    assert_eq!(
        runaway.crash.as_ref().map(|c| c.cause),
        Some(CrashCause::MemoryLimit)
    );
    let peak = &runaway.findings[0];
    assert_eq!(peak.resource, leakgate_reports::Resource::Peak);
    assert!(
        peak.growth >= 4 << 20 && peak.growth < 256 << 20,
        "{}",
        peak.growth
    );
    let top = &peak.sites[0].frames[0].function;
    assert!(top.contains("runaway_replay"), "{top}");

    // A pinned crash passes and is still reported.
    let pinned = scenario(&report, "pinned/known_panic");
    assert_eq!(pinned.verdict, Verdict::Pass, "{pinned:?}");
    assert_eq!(
        pinned.crash.as_ref().map(|c| c.cause),
        Some(CrashCause::Panic)
    );

    // A pinned crash somewhere else than `expect_site` says fails, naming where it was.
    let elsewhere = scenario(&report, "pinned/overflow_elsewhere");
    assert_eq!(elsewhere.verdict, Verdict::Fail, "{elsewhere:?}");
    assert_eq!(
        elsewhere.summary,
        "expected the crash in not_the_recursion, found crash_fixture::walk"
    );

    let failed = scenario(&report, "fail/iteration_error");
    assert_eq!(failed.verdict, Verdict::Fail);
    assert_eq!(failed.summary, "iteration 4 failed: write failed at 4");
}

#[test]
fn list_filters_and_exact_select_scenarios_like_libtest() {
    let dir = tempfile::tempdir().unwrap();
    let listed = fixture(dir.path(), &["--list"]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success());
    assert!(
        listing.contains("crash/stack_overflow: test") && listing.contains("clean/after: test"),
        "{listing}"
    );
    assert!(
        !dir.path().join("report.jsonl").exists(),
        "--list runs nothing"
    );

    let filtered = fixture(dir.path(), &["clean/", "--skip", "clean/leaves"]);
    assert!(
        filtered.status.success(),
        "{}",
        String::from_utf8_lossy(&filtered.stdout)
    );
    let report = read_report(dir.path()).unwrap();
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let exact = tempfile::tempdir().unwrap();
    let output = fixture(exact.path(), &["--exact", "clean/after"]);
    assert!(output.status.success());
    let report = read_report(exact.path()).unwrap();
    assert_eq!(report.scenarios.len(), 1);
    assert_eq!(report.scenarios[0].name, "clean/after");
}

#[test]
fn a_malformed_variable_stops_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(FIXTURE)
        .env("LEAKGATE_TIMEOUT", "soon")
        .env("LEAKGATE_REPORT_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"invalid LEAKGATE_TIMEOUT="soon": expected a duration"#),
        "{stderr}"
    );
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_naming_the_path() {
    let output = fixture(Path::new("/dev/null/reports"), &["--exact", "clean/after"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(101), "{stdout}");
    assert!(
        stdout.contains("cannot write the report: /dev/null/reports"),
        "{stdout}"
    );
}

/// The temp directory's entries named `leakgate-…` that hold `needle`.
fn leftovers(needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("leakgate-") && name.contains(needle)
        })
        .collect()
}

#[test]
fn what_a_killed_run_left_behind_is_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Command::new(FIXTURE)
        .args(["--exact", "hang/until_killed"])
        .env("LEAKGATE_REPORT_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let channel = format!("leakgate-channel-{}-", run.id());
    let scratch = || {
        leftovers("-hang_until_killed-")
            .into_iter()
            .find(|p| !p.to_string_lossy().contains("-kept-"))
    };
    // Until the scenario's child has made its scratch directory.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scratch().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = scratch().expect("the scenario made its scratch directory");
    run.kill().unwrap(); // SIGKILL: nothing of the runner gets to clean up.
    run.wait().unwrap();
    assert!(left.exists());
    assert_eq!(leftovers(&channel).len(), 1, "the channel file is left");

    // The next run, of anything, removes them once their owners are gone (the child
    // dies with its parent).
    let next = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = fixture(next.path(), &["--exact", "clean/after"]);
        assert!(output.status.success());
        if !left.exists() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!left.exists(), "{} is still there", left.display());
    assert!(leftovers(&channel).is_empty());
}

#[test]
fn a_failed_scenarios_scratch_dir_is_kept_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let keep = [("LEAKGATE_KEEP_DIRS", "on-failure")];
    let output = fixture_with(dir.path(), &["--exact", "fail/iteration_error"], &keep);
    assert_eq!(output.status.code(), Some(101));
    let report = read_report(dir.path()).unwrap();
    let kept = report.scenarios[0]
        .notes
        .iter()
        .find_map(|n| n.strip_prefix("scratch directory kept at "))
        .expect("a note naming the kept directory");
    assert!(Path::new(kept).is_dir(), "{kept}");
    assert!(
        kept.contains("leakgate-kept-fail_iteration_error-"),
        "{kept}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "fail/iteration_error: scratch directory kept at {kept}"
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(kept).unwrap();
}
