//! [`ReportSink`]: where a run's `report.json` goes (`LEAKGATE_REPORT_DIR`, or
//! `target/leakgate/<run-id>/` with a `latest` link), written by merging one scenario at
//! a time under a lock, so the processes of one nextest run build one report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use leakgate_reports::{ReportError, ScenarioReport, merge_scenario};

use crate::config::Config;

/// Where this run's report goes, and the merging writer for it.
pub(crate) struct ReportSink {
    path: PathBuf,
    run_id: String,
    /// `target/leakgate`, whose `latest` link is pointed at this run once it writes.
    default_root: Option<PathBuf>,
    written: AtomicBool,
}

impl ReportSink {
    pub(crate) fn new(config: &Config) -> Self {
        let run_id = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("run-{secs}-{}", std::process::id())
        });
        let (dir, default_root) = match &config.report_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let root = default_report_root();
                (root.join(&run_id), Some(root))
            }
        };
        Self {
            path: dir.join("report.json"),
            run_id,
            default_root,
            written: AtomicBool::new(false),
        }
    }

    /// Adds `report` to the report file and returns its path.
    pub(crate) fn record(&self, report: ScenarioReport) -> Result<PathBuf, ReportError> {
        merge_scenario(&self.path, &self.run_id, report)?;
        let first = !self.written.swap(true, Ordering::Relaxed);
        if let Some(root) = self.default_root.as_deref().filter(|_| first) {
            point_latest_at(root, &self.run_id);
        }
        Ok(self.path.clone())
    }

    /// The report's path, once something was written to it.
    pub(crate) fn written(&self) -> Option<&Path> {
        self.written
            .load(Ordering::Relaxed)
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

/// Points `<root>/latest` at `run_id` (a relative link, replaced atomically). Best
/// effort: the link is a convenience, the report's path is printed anyway.
fn point_latest_at(root: &Path, run_id: &str) {
    let staging = root.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(root);
    let _ = std::fs::remove_file(&staging);
    if std::os::unix::fs::symlink(run_id, &staging).is_ok() {
        let _ = std::fs::rename(&staging, root.join("latest"));
    }
}
