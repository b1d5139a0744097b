//! Reading and writing `report.json`, atomically and with errors that name the file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::schema::{FORMAT_VERSION, Report, ScenarioReport};

/// An error reading or writing a report; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The file could not be read, written or locked.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a report this version understands.
    #[error("{path}: not a leakgate report: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by an incompatible format version.
    #[error("{path}: report format version {found}, this leakgate reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a report, checking its format version before anything else so an old or
/// foreign file gets a precise error.
pub fn read_report(path: &Path) -> Result<Report, ReportError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ReportError::Malformed {
            path: path.to_owned(),
            source,
        })?;
    let found = value.get("format_version").and_then(|v| v.as_u64());
    if let Some(found) = found.filter(|&v| v != u64::from(FORMAT_VERSION)) {
        return Err(ReportError::Version {
            path: path.to_owned(),
            found,
        });
    }
    serde_json::from_value(value).map_err(|source| ReportError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// Writes `report` to `path` through a temporary file and a rename, so a reader never
/// sees half a report and a crash never leaves one.
pub fn write_report(path: &Path, report: &Report) -> Result<(), ReportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    // Unique per process, so concurrent writers never share a temporary file.
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    serde_json::to_writer_pretty(&mut file, report).map_err(|e| ReportError::Io {
        path: tmp.clone(),
        source: e.into(),
    })?;
    file.write_all(b"\n").map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

/// Adds `scenario` to the report at `path` (creating it for `run_id` if absent), under
/// an exclusive lock, so processes that each run one scenario (nextest) build one report.
pub fn merge_scenario(
    path: &Path,
    run_id: &str,
    scenario: ScenarioReport,
) -> Result<(), ReportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let lock_path = path.with_extension("lock");
    let lock = File::create(&lock_path).map_err(io_error(&lock_path))?;
    lock.lock().map_err(io_error(&lock_path))?;
    let mut report = match path.exists() {
        true => read_report(path)?,
        false => Report::new(run_id),
    };
    report.upsert(scenario);
    write_report(path, &report)
    // The lock is released when `lock` is dropped.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Finding, Frame, Resource, Site, Verdict};

    fn sample_report() -> Report {
        let mut report = Report::new("run-1");
        let mut scenario = ScenarioReport::new("demo/leaky", Verdict::Fail, "heap grew");
        let mut finding = Finding::new(Resource::CHeap, 3200, 200);
        let mut site = Site::new(3200, 200, 200, 0, 199);
        site.frames
            .push(Frame::new("demo::leak", Some("src/lib.rs".into()), Some(7)));
        finding.sites.push(site);
        scenario.findings.push(finding);
        report.scenarios.push(scenario);
        report
    }

    #[test]
    fn round_trips_and_uses_the_documented_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let report = sample_report();
        write_report(&path, &report).unwrap();
        assert_eq!(read_report(&path).unwrap(), report);
        let value: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["format_version"], 1);
        let finding = &value["scenarios"][0]["findings"][0];
        assert_eq!(value["scenarios"][0]["verdict"], "fail");
        assert_eq!(finding["resource"], "c_heap");
        assert_eq!(finding["sites"][0]["frames"][0]["line"], 7);
    }

    #[test]
    fn malformed_and_foreign_versions_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(&path, "{ not json").unwrap();
        let err = read_report(&path).unwrap_err().to_string();
        assert!(
            err.contains("report.json") && err.contains("not a leakgate report"),
            "{err}"
        );
        fs::write(&path, r#"{"format_version": 99, "scenarios": []}"#).unwrap();
        let err = read_report(&path).unwrap_err().to_string();
        assert!(err.contains("format version 99"), "{err}");
    }

    #[test]
    fn merge_replaces_a_scenario_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        merge_scenario(&path, "r", ScenarioReport::new("a", Verdict::Crashed, "x")).unwrap();
        merge_scenario(&path, "r", ScenarioReport::new("b", Verdict::Pass, "ok")).unwrap();
        merge_scenario(&path, "r", ScenarioReport::new("a", Verdict::Pass, "ok")).unwrap();
        let report = read_report(&path).unwrap();
        let verdicts: Vec<_> = report
            .scenarios
            .iter()
            .map(|s| (s.name.as_str(), s.verdict))
            .collect();
        assert_eq!(verdicts, [("a", Verdict::Pass), ("b", Verdict::Pass)]);
    }
}
