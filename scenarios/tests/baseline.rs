//! Baselines as a pull request meets them: a run saves one, and later runs compare with
//! it. A cache that now holds ten times more (no leak, a bigger footprint) fails with the
//! delta; a leak that moved to a new site fails naming it; an unchanged rerun passes; a
//! malformed baseline stops the run naming the file; and no baseline is saved in CI
//! unless asked twice.

mod common;

use std::path::Path;
use std::process::Output;

use common::said;
use leakgate_reports::{Verdict, read_report};

const FIXTURE: &str = env!("CARGO_BIN_EXE_baseline-fixture");

fn run(reports: &Path, baselines: &Path, vars: &[(&str, &str)]) -> Output {
    let baselines = baselines.to_str().expect("a UTF-8 temp path");
    let mut all = vec![("LEAKGATE_BASELINE_DIR", baselines)];
    all.extend_from_slice(vars);
    common::run(FIXTURE, reports, &all)
}

#[test]
fn regressions_against_a_saved_baseline_fail_with_their_delta() {
    let work = tempfile::tempdir().unwrap();
    let baselines = work.path().join("baselines");
    let saved = run(
        &work.path().join("save"),
        &baselines,
        &[("LEAKGATE_SAVE_BASELINE", "main")],
    );
    assert!(saved.status.success(), "{}", said(&saved));
    assert!(baselines.join("main/cache~filled_in_warmup.json").is_file());

    let same = run(
        &work.path().join("same"),
        &baselines,
        &[("LEAKGATE_BASELINE", "main")],
    );
    assert!(
        same.status.success(),
        "an unchanged rerun passes: {}",
        said(&same)
    );

    let bigger = run(
        &work.path().join("bigger"),
        &baselines,
        &[
            ("LEAKGATE_BASELINE", "main"),
            ("BASELINE_FIXTURE_CACHE_SCALE", "10"),
        ],
    );
    assert_eq!(bigger.status.code(), Some(101), "{}", said(&bigger));
    let report = read_report(&work.path().join("bigger")).unwrap();
    let cache = report.scenario("cache/filled_in_warmup").unwrap();
    assert_eq!(cache.verdict, Verdict::Fail);
    assert!(cache.findings.is_empty(), "no leak: {:?}", cache.findings);
    assert!(
        cache
            .summary
            .starts_with("regression against baseline main: footprint "),
        "{}",
        cache.summary
    );
    assert!(
        said(&bigger).contains("REGRESSED footprint"),
        "{}",
        said(&bigger)
    );
    let footprint = &cache.baseline.as_ref().unwrap().deltas[2];
    assert!(
        footprint.regressed && footprint.new > 8.0 * footprint.base,
        "{footprint:?}"
    );

    let moved = run(
        &work.path().join("moved"),
        &baselines,
        &[
            ("LEAKGATE_BASELINE", "main"),
            ("BASELINE_FIXTURE_NEW_SITE", "1"),
        ],
    );
    assert_eq!(moved.status.code(), Some(101), "{}", said(&moved));
    let report = read_report(&work.path().join("moved")).unwrap();
    let registry = report.scenario("registry/expected_leak").unwrap();
    assert!(
        registry
            .summary
            .contains("new survivor site: baseline_fixture::remember_elsewhere"),
        "{}",
        registry.summary
    );
}

#[test]
fn a_malformed_or_missing_baseline_stops_the_run_naming_the_file() {
    let work = tempfile::tempdir().unwrap();
    let baselines = work.path().join("baselines");
    let missing = run(work.path(), &baselines, &[("LEAKGATE_BASELINE", "main")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        said(&missing).contains("no baseline named \"main\""),
        "{}",
        said(&missing)
    );

    std::fs::create_dir_all(baselines.join("main")).unwrap();
    std::fs::write(baselines.join("main/cache~filled_in_warmup.json"), "{ torn").unwrap();
    let malformed = run(work.path(), &baselines, &[("LEAKGATE_BASELINE", "main")]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(
        said(&malformed).contains("cache~filled_in_warmup.json"),
        "{}",
        said(&malformed)
    );
}

#[test]
fn no_baseline_is_saved_in_ci_unless_asked_twice() {
    let work = tempfile::tempdir().unwrap();
    let baselines = work.path().join("baselines");
    let refused = run(
        &work.path().join("ci"),
        &baselines,
        &[("CI", "true"), ("LEAKGATE_SAVE_BASELINE", "main")],
    );
    assert!(refused.status.success(), "{}", said(&refused));
    assert!(
        said(&refused).contains("LEAKGATE_SAVE_BASELINE_IN_CI=1"),
        "{}",
        said(&refused)
    );
    assert!(!baselines.join("main").exists());
    let asked = run(
        &work.path().join("ci2"),
        &baselines,
        &[
            ("CI", "true"),
            ("LEAKGATE_SAVE_BASELINE", "main"),
            ("LEAKGATE_SAVE_BASELINE_IN_CI", "1"),
        ],
    );
    assert!(asked.status.success(), "{}", said(&asked));
    assert!(baselines.join("main/registry~expected_leak.json").is_file());
}
