//! Suppressions as a user meets them: rules by function, by thread name and by path set
//! real findings aside (which stay in the report, marked with the rule), a rule that
//! matched nothing is reported as stale, rules from a file apply to every scenario, and
//! a malformed rule stops the run naming the file and line.

mod common;

use std::path::Path;
use std::process::Output;

use common::said;
use leakgate_reports::{Resource, Verdict, read_report};

const FIXTURE: &str = env!("CARGO_BIN_EXE_suppress-fixture");

fn run(reports: &Path, vars: &[(&str, &str)]) -> Output {
    common::run(FIXTURE, reports, vars)
}

#[test]
fn findings_are_suppressed_by_function_thread_and_path_and_stay_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &[]);
    assert!(output.status.success(), "{}", said(&output));
    let report = read_report(dir.path()).unwrap();
    for (scenario, resource, rule) in [
        (
            "leak/by_function",
            Resource::Heap,
            "function:remember_forever (upstream issue 42, fixed in the next release; scenario leak/by_function)",
        ),
        (
            "leak/by_thread",
            Resource::Threads,
            "thread:parked-worker (the worker pool outlives the scenario by design; scenario leak/by_thread)",
        ),
        (
            "leak/by_path",
            Resource::Files,
            "path:.lock (lock files are the engine's own business; scenario leak/by_path)",
        ),
    ] {
        let s = report.scenario(scenario).unwrap();
        assert_eq!(s.verdict, Verdict::Pass, "{scenario}: {}", s.summary);
        let finding = s
            .finding(resource)
            .unwrap_or_else(|| panic!("{scenario}: no {resource} finding"));
        assert_eq!(finding.suppressed.as_deref(), Some(rule), "{scenario}");
    }
    assert!(
        said(&output).contains("stale suppression: function:leak_fixed_long_ago (fixed in 1.2; scenario clean/stale_rule) matched nothing in this run"),
        "{}",
        said(&output)
    );

    // Without the rules, the same findings fail: they are real.
    let unsuppressed = tempfile::tempdir().unwrap();
    let output = run(unsuppressed.path(), &[("SUPPRESS_FIXTURE_RULES", "off")]);
    assert_eq!(output.status.code(), Some(101), "{}", said(&output));
    let report = read_report(unsuppressed.path()).unwrap();
    assert_eq!(report.totals.failed, 3, "{}", said(&output));
}

#[test]
fn rules_from_a_file_apply_to_every_scenario_and_a_malformed_one_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("leakgate.supp");
    std::fs::write(
        &rules,
        "# Known leaks, each with its issue.\n\
         function:remember_forever  # issue 42\n\
         thread:parked-worker       # pool\n\
         path:writer-               # locks\n",
    )
    .unwrap();
    let rules_var = rules.to_str().unwrap();
    let output = run(
        &dir.path().join("report"),
        &[
            ("SUPPRESS_FIXTURE_RULES", "off"),
            ("LEAKGATE_SUPPRESSIONS", rules_var),
        ],
    );
    assert!(output.status.success(), "{}", said(&output));
    let report = read_report(&dir.path().join("report")).unwrap();
    let finding = report
        .scenario("leak/by_function")
        .unwrap()
        .finding(Resource::Heap)
        .unwrap();
    assert!(
        finding
            .suppressed
            .as_deref()
            .unwrap()
            .ends_with("leakgate.supp:2)"),
        "{:?}",
        finding.suppressed
    );

    std::fs::write(
        &rules,
        "function:remember_forever  # issue 42\nthread:parked-worker\n",
    )
    .unwrap();
    let output = run(
        &dir.path().join("bad"),
        &[("LEAKGATE_SUPPRESSIONS", rules_var)],
    );
    assert_eq!(output.status.code(), Some(2), "{}", said(&output));
    assert!(
        said(&output)
            .contains("leakgate.supp:2: \"thread:parked-worker\" has no comment saying why"),
        "{}",
        said(&output)
    );
}
