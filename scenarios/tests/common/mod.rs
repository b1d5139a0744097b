//! Running a fixture binary as a user's CI would, for the tests that check what it did.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `exe` with its report in `reports` and `vars` set, as its own run: outside CI,
/// and not as a process of the nextest run that may be running this test (which would
/// leave the end of its run to nextest: no report.json, no end-of-run table).
pub fn run(exe: &str, reports: &Path, vars: &[(&str, &str)]) -> Output {
    Command::new(exe)
        .env_remove("CI")
        .env_remove("NEXTEST_RUN_ID")
        .env("LEAKGATE_REPORT_DIR", reports)
        .envs(vars.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{exe} runs: {e}"))
}

/// What the run printed, stdout then stderr.
pub fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
