//! Reading and writing reports, atomically and with errors that name the file.
//!
//! A run appends each scenario as one line to `report.jsonl` in its report directory
//! (the first line says which run it is), so writing costs the same for the hundredth
//! scenario as for the first, and processes running one scenario each (nextest) build
//! one report under a lock. [`assemble`] turns the lines into one [`Report`], written
//! as `report.json`; [`read_report`] reads either form, version 1 or 2.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::schema::{
    Environment, FORMAT_VERSION, READABLE_VERSIONS, Report, ScenarioReport, Totals,
};

/// The assembled report in a report directory.
pub const REPORT_FILE: &str = "report.json";
/// The lines a run appends to, in a report directory.
pub const LINES_FILE: &str = "report.jsonl";
/// The lock that serialises writers of a report directory.
pub const LOCK_FILE: &str = "report.lock";

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
    /// A line of `report.jsonl` (other than a torn last one) is not a scenario.
    #[error("{path}:{line}: not a leakgate scenario report: {source}")]
    MalformedLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by an incompatible format version.
    #[error(
        "{path}: report format version {found}, this leakgate reads versions {READABLE_VERSIONS:?}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
    /// The directory holds neither `report.jsonl` nor `report.json`.
    #[error("{path}: no {LINES_FILE} or {REPORT_FILE} here: is this a leakgate report directory?")]
    Missing {
        /// The directory.
        path: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_version(path: &Path, value: &serde_json::Value) -> Result<(), ReportError> {
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(found) if !READABLE_VERSIONS.iter().any(|&v| u64::from(v) == found) => {
            Err(ReportError::Version {
                path: path.to_owned(),
                found,
            })
        }
        _ => Ok(()),
    }
}

/// Reads a report: a `report.json` of version 1 or 2, a `report.jsonl`, or a report
/// directory (its `report.jsonl` when there is one, which is never older than its
/// `report.json`). The format version is checked before anything else, so an old or
/// foreign file gets a precise error.
pub fn read_report(path: &Path) -> Result<Report, ReportError> {
    if path.is_dir() {
        let lines = path.join(LINES_FILE);
        if lines.is_file() {
            return assemble(&lines);
        }
        let report = path.join(REPORT_FILE);
        if !report.is_file() {
            return Err(ReportError::Missing {
                path: path.to_owned(),
            });
        }
        return read_report(&report);
    }
    if path.extension().is_some_and(|e| e == "jsonl") {
        return assemble(path);
    }
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let malformed = |source| ReportError::Malformed {
        path: path.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(malformed)?;
    check_version(path, &value)?;
    let mut report: Report = serde_json::from_value(value).map_err(malformed)?;
    report.totals = Totals::of(&report.scenarios);
    Ok(report)
}

/// Writes `report` to `path` through a temporary file and a rename, so a reader never
/// sees half a report and a crash never leaves one.
pub fn write_report(path: &Path, report: &Report) -> Result<(), ReportError> {
    write_atomically(path, |file| {
        serde_json::to_writer_pretty(&mut *file, report)?;
        file.write_all(b"\n")
    })
}

/// Writes `path` through a temporary file beside it and a rename.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> Result<(), ReportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    // Unique per process, so concurrent writers never share a temporary file.
    let name = path
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let mut writer = io::BufWriter::new(file);
    let written = write(&mut writer)
        .and_then(|()| writer.flush())
        .and_then(|()| writer.get_ref().sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ReportError::Io { path: tmp, source });
    }
    fs::rename(&tmp, path).map_err(io_error(path))
}

/// The first line of `report.jsonl`: which run the lines belong to.
#[derive(Debug, Serialize, Deserialize)]
struct RunHeader {
    format_version: u32,
    run_id: String,
    tool_version: String,
    #[serde(default)]
    environment: Option<Environment>,
}

/// Appends `scenario` to the report directory `dir`, starting its `report.jsonl` for
/// `run_id` in `environment` if absent, under an exclusive lock so that several
/// processes build one report. Returns the path of `report.jsonl`.
pub fn append_scenario(
    dir: &Path,
    run_id: &str,
    environment: &Environment,
    scenario: &ScenarioReport,
) -> Result<PathBuf, ReportError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(io_error(&lock_path))?;
    lock.lock().map_err(io_error(&lock_path))?;
    let path = dir.join(LINES_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let len = file.metadata().map_err(io_error(&path))?.len();
    let mut text = Vec::new();
    if len == 0 {
        let header = RunHeader {
            format_version: FORMAT_VERSION,
            run_id: run_id.to_owned(),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            environment: Some(environment.clone()),
        };
        serde_json::to_writer(&mut text, &header).map_err(|e| ReportError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        text.push(b'\n');
    } else if !ends_with_newline(&mut file, len).map_err(io_error(&path))? {
        // A writer killed mid-line left it torn: end it, so it stays a line of its own
        // that readers skip, and this one stays whole.
        text.push(b'\n');
    }
    serde_json::to_writer(&mut text, scenario).map_err(|e| ReportError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    text.push(b'\n');
    // One write of the whole line: with O_APPEND, it lands after every earlier line.
    file.write_all(&text).map_err(io_error(&path))?;
    Ok(path)
    // The lock is released when `lock` is dropped.
}

fn ends_with_newline(file: &mut File, len: u64) -> io::Result<bool> {
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Reads a `report.jsonl` into one report. A later line for a scenario replaces an
/// earlier one (a rerun); a line cut short (by a writer killed mid-line) is skipped; any
/// other line that does not parse is an error naming it.
pub fn assemble(path: &Path) -> Result<Report, ReportError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut lines = BufReader::new(file).lines().enumerate();
    let Some((_, first)) = lines.next() else {
        return Err(ReportError::Malformed {
            path: path.to_owned(),
            source: serde::de::Error::custom("empty file"),
        });
    };
    let first = first.map_err(io_error(path))?;
    let malformed = |source| ReportError::Malformed {
        path: path.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&first).map_err(malformed)?;
    check_version(path, &value)?;
    let header: RunHeader = serde_json::from_value(value).map_err(malformed)?;
    let mut report = Report::new(header.run_id);
    report.tool_version = header.tool_version;
    report.environment = header.environment;
    for (index, line) in lines {
        let line = line.map_err(io_error(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ScenarioReport>(&line) {
            Ok(scenario) => report.upsert(scenario),
            Err(cut_short) if cut_short.is_eof() => {}
            Err(source) => {
                return Err(ReportError::MalformedLine {
                    path: path.to_owned(),
                    line: index + 1,
                    source,
                });
            }
        }
    }
    Ok(report)
}

/// Assembles the report directory `dir`'s `report.jsonl` into its `report.json`, and
/// returns the report.
pub fn write_assembled(dir: &Path) -> Result<Report, ReportError> {
    // Under the writers' lock: a report assembled from fewer lines must not replace one
    // assembled from more.
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(io_error(&lock_path))?;
    lock.lock().map_err(io_error(&lock_path))?;
    let report = assemble(&dir.join(LINES_FILE))?;
    write_report(&dir.join(REPORT_FILE), &report)?;
    Ok(report)
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
        report.upsert(scenario);
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
        assert_eq!(value["format_version"], 2);
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
    fn appended_lines_assemble_into_one_report_and_a_rerun_replaces_its_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment::new("x86_64-unknown-linux-gnu", "debug");
        for (name, verdict) in [
            ("a", Verdict::Crashed),
            ("b", Verdict::Pass),
            ("a", Verdict::Pass),
        ] {
            append_scenario(
                dir.path(),
                "r",
                &env,
                &ScenarioReport::new(name, verdict, "x"),
            )
            .unwrap();
        }
        let report = write_assembled(dir.path()).unwrap();
        let verdicts: Vec<_> = report
            .scenarios
            .iter()
            .map(|s| (s.name.as_str(), s.verdict))
            .collect();
        assert_eq!(verdicts, [("a", Verdict::Pass), ("b", Verdict::Pass)]);
        assert_eq!((report.totals.scenarios, report.totals.passed), (2, 2));
        assert_eq!(report.environment.as_ref().unwrap().profile, "debug");
        assert_eq!(read_report(&dir.path().join(REPORT_FILE)).unwrap(), report);
        assert_eq!(read_report(dir.path()).unwrap(), report);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_append_stays_whole() {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment::new("t", "debug");
        append_scenario(
            dir.path(),
            "r",
            &env,
            &ScenarioReport::new("a", Verdict::Pass, ""),
        )
        .unwrap();
        let lines = dir.path().join(LINES_FILE);
        let mut file = OpenOptions::new().append(true).open(&lines).unwrap();
        file.write_all(br#"{"name":"torn","verd"#).unwrap();
        assert_eq!(assemble(&lines).unwrap().scenarios.len(), 1);
        append_scenario(
            dir.path(),
            "r",
            &env,
            &ScenarioReport::new("b", Verdict::Fail, ""),
        )
        .unwrap();
        let names: Vec<String> = assemble(&lines)
            .unwrap()
            .scenarios
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        // A bad line in the middle is an error naming its line.
        fs::write(
            &lines,
            format!(
                "{}\nnot json\n{}\n",
                fs::read_to_string(&lines).unwrap().lines().next().unwrap(),
                r#"{"name":"c"}"#
            ),
        )
        .unwrap();
        let err = assemble(&lines).unwrap_err().to_string();
        assert!(err.contains("report.jsonl:2:"), "{err}");
    }

    #[test]
    fn version_1_reports_are_read_with_totals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPORT_FILE);
        fs::write(
            &path,
            r#"{"format_version":1,"run_id":"old","tool_version":"0.1.0","scenarios":[
              {"name":"a","verdict":"fail","summary":"heap grew","expected_leaks":[],"findings":[],
               "crash":null,"iteration_error":null,"warmup":2,"iterations":10,"duration_ms":5,
               "series":{"pre_setup":null,"baseline":null,"iterations":[],"end":null,
                         "after_teardown":null,"settle_attempts":1},
               "notes":[],"output":null,"scaling":null}]}"#,
        )
        .unwrap();
        let report = read_report(&path).unwrap();
        assert_eq!((report.format_version, report.totals.failed), (1, 1));
        assert!(report.scenarios[0].policy.is_none());
        let err = read_report(dir.path().join("nothing").as_path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = read_report(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no report.jsonl or report.json"), "{err}");
    }
}
