//! The `leakgate` command as a user runs it: on a report written the way a run writes
//! one (lines appended per scenario), on shards to merge, and on files that are not
//! reports, which must get an error naming the file, never a panic.

use std::path::Path;
use std::process::{Command, Output};

use leakgate_reports::{
    Environment, Report, Sample, ScenarioReport, Verdict, append_scenario, read_report,
};

fn leakgate(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A scenario with a short heap series, so it has a chart.
fn scenario(name: &str, verdict: Verdict) -> ScenarioReport {
    let mut scenario = ScenarioReport::new(name, verdict, "no leak: heap back at baseline");
    scenario.series.baseline = Some(Sample::heap(1000, 10, 1000, 10));
    for i in 0..10 {
        scenario
            .series
            .iterations
            .push(Sample::heap(1000 + i * 8, 10 + i, 1200, 20 + i));
    }
    scenario.iterations = 10;
    scenario
}

fn run_into(dir: &Path, run: &str, scenarios: &[(&str, Verdict)]) {
    let env = Environment::new("x86_64-unknown-linux-gnu", "debug");
    for &(name, verdict) in scenarios {
        append_scenario(dir, run, &env, &scenario(name, verdict)).unwrap();
    }
}

#[test]
fn render_writes_every_output_and_summary_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    run_into(
        dir.path(),
        "r",
        &[("a/clean", Verdict::Pass), ("b/leaky", Verdict::Fail)],
    );
    let summary_file = dir.path().join("step-summary.md");
    let output = Command::new(env!("CARGO_BIN_EXE_leakgate"))
        .args(["render", "."])
        .current_dir(dir.path())
        .env("GITHUB_STEP_SUMMARY", &summary_file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    for file in [
        "report.json",
        "index.html",
        "summary.md",
        "junit.xml",
        "charts/a~clean.svg",
        "charts/b~leaky.png",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let step = std::fs::read_to_string(&summary_file).unwrap();
    assert!(step.contains("| b/leaky | FAIL |"), "{step}");
    assert_eq!(
        read_report(&dir.path().join("report.json"))
            .unwrap()
            .scenarios
            .len(),
        2
    );

    let output = leakgate(&["summary", "report.jsonl"], dir.path());
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("scenario "), "{table}");
    assert!(table.contains("2 scenarios: 1 passed"), "{table}");

    let output = leakgate(&["chart", ".", "b/leaky", "-o", "one.png"], dir.path());
    assert!(output.status.success(), "{}", text(&output));
    assert!(dir.path().join("one.png").is_file());
    let output = leakgate(&["chart", ".", "c/absent"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("no scenario named \"c/absent\" (it has a/clean, b/leaky)"));
}

#[test]
fn shards_merge_into_one_report_with_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("shard-1"), dir.path().join("shard-2"));
    run_into(&one, "r", &[("a/x", Verdict::Pass), ("a/y", Verdict::Pass)]);
    run_into(&two, "r", &[("b/z", Verdict::Fail)]);
    let output = leakgate(&["merge", "shard-1", "shard-2", "-o", "merged"], dir.path());
    assert!(output.status.success(), "{}", text(&output));
    let merged: Report = read_report(&dir.path().join("merged")).unwrap();
    let names: Vec<&str> = merged.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a/x", "a/y", "b/z"]);
    assert_eq!((merged.totals.passed, merged.totals.failed), (2, 1));
    // Into a directory holding a run's lines, the merge would be shadowed by them.
    let output = leakgate(
        &["merge", "shard-1", "shard-2", "-o", "shard-1"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("report.jsonl: the output directory already holds a run's lines")
    );
}

#[test]
fn a_malformed_or_foreign_report_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.json"), "{ not json").unwrap();
    std::fs::write(dir.path().join("foreign.json"), r#"{"format_version": 7}"#).unwrap();
    std::fs::write(
        dir.path().join("other.json"),
        r#"{"name": "a package.json"}"#,
    )
    .unwrap();
    for (file, says) in [
        ("broken.json", "broken.json: not a leakgate report"),
        ("foreign.json", "foreign.json: report format version 7"),
        ("other.json", "other.json: not a leakgate report"),
        ("missing.json", "missing.json: No such file"),
        (".", "no report.jsonl or report.json here"),
    ] {
        for command in ["summary", "render"] {
            let output = leakgate(&[command, file], dir.path());
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} {file}: {}",
                text(&output)
            );
            let said = text(&output);
            assert!(said.starts_with("leakgate: error: "), "{said}");
            assert!(said.contains(says), "{command} {file}: {said}");
            assert!(!said.contains("panicked"), "{said}");
        }
    }
}

/// A report of one scenario whose footprint (heap at its baseline above the heap before
/// setup) is `footprint` bytes.
fn footprint_report(dir: &Path, footprint: u64) {
    let mut s = scenario("cache/bounded", Verdict::Pass);
    s.series.pre_setup = Some(Sample::heap(1000, 10, 1000, 10));
    let base = 1000 + footprint;
    s.series.baseline = Some(Sample::heap(base, 10, base, 10));
    s.series.end = Some(Sample::heap(base, 10, base, 10));
    let _ = std::fs::remove_dir_all(dir);
    append_scenario(dir, "r", &Environment::new("t", "debug"), &s).unwrap();
}

#[test]
fn compare_prints_the_delta_and_fails_on_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    footprint_report(&dir.path().join("main"), 100 << 10);
    footprint_report(&dir.path().join("same"), 104 << 10);
    footprint_report(&dir.path().join("bigger"), 1000 << 10);
    let same = leakgate(&["compare", "main", "same"], dir.path());
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    assert!(text(&same).contains("cache/bounded ok"), "{}", text(&same));
    let bigger = leakgate(&["compare", "main", "bigger", "--markdown"], dir.path());
    assert_eq!(bigger.status.code(), Some(1), "{}", text(&bigger));
    let table = text(&bigger);
    assert!(
        table.contains("| cache/bounded | REGRESSED | footprint 100.0 KiB → 1000.0 KiB"),
        "{table}"
    );
    let missing = leakgate(&["compare", "nightly", "same"], dir.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("no baseline named \"nightly\""),
        "{}",
        text(&missing)
    );
}

#[test]
fn history_and_trend_flag_a_step_and_draw_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    for run in 0..24u64 {
        // ±0.4 % of noise, and 3 % more footprint from run 16.
        let noise = [0, 3, -2, 4, -4, 1, -1, 2][run as usize % 8];
        let step = if run >= 16 { 103 } else { 100 };
        let footprint = ((1u64 << 20) * step / 100) as i64 + noise * 1000;
        footprint_report(&dir.path().join("run"), footprint as u64);
        let output = leakgate(
            &["history", "append", "run", "--to", "history.jsonl"],
            dir.path(),
        );
        assert!(output.status.success(), "{}", text(&output));
        if run == 12 {
            let flat = leakgate(&["trend", "history.jsonl"], dir.path());
            assert_eq!(flat.status.code(), Some(0), "flat so far: {}", text(&flat));
        }
    }
    assert_eq!(
        std::fs::read_to_string(&history).unwrap().lines().count(),
        24
    );
    let output = leakgate(&["trend", "history.jsonl", "--charts", "trend"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("ALERT cache/bounded: footprint rose"),
        "{}",
        text(&output)
    );
    assert!(text(&output).contains("at run 16"), "{}", text(&output));
    let svg = std::fs::read_to_string(dir.path().join("trend/cache~bounded.svg")).unwrap();
    assert!(
        svg.contains("alert: footprint rose at run 16"),
        "the alert is marked"
    );
    assert!(dir.path().join("trend/cache~bounded.png").is_file());
}
