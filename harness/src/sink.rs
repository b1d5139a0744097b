//! [`ReportSink`]: where a run's report goes (`LEAKGATE_REPORT_DIR`, or
//! `target/leakgate/<run-id>/` with a `latest` link). Each scenario is appended to the
//! directory's `report.jsonl` under a lock, so the processes of one nextest run build one
//! report and writing stays linear in the number of scenarios; at the end of a
//! `cargo test` run the lines are assembled into `report.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use leakgate_reports::{
    Environment, LINES_FILE, Report, ReportError, ScenarioReport, append_scenario, write_assembled,
};

use crate::config::Config;

/// Where this run's report goes, and the appending writer for it.
pub(crate) struct ReportSink {
    dir: PathBuf,
    run_id: String,
    environment: Environment,
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
            dir,
            run_id,
            environment: environment(),
            default_root,
            written: AtomicBool::new(false),
        }
    }

    /// Appends `report` to the report and returns the path written.
    pub(crate) fn record(&self, report: &ScenarioReport) -> Result<PathBuf, ReportError> {
        let path = append_scenario(&self.dir, &self.run_id, &self.environment, report)?;
        let first = !self.written.swap(true, Ordering::Relaxed);
        if let Some(root) = self.default_root.as_deref().filter(|_| first) {
            point_latest_at(root, &self.run_id);
        }
        Ok(path)
    }

    /// Assembles what this run (and any other that shares the directory) wrote into
    /// `report.json`, once the run is over; `None` when nothing was written.
    pub(crate) fn finish(&self) -> Option<Result<Report, ReportError>> {
        self.written().map(|_| write_assembled(&self.dir))
    }

    /// The report directory's `report.jsonl`, once something was written to it.
    pub(crate) fn written(&self) -> Option<PathBuf> {
        self.written
            .load(Ordering::Relaxed)
            .then(|| self.dir.join(LINES_FILE))
    }

    /// The report directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Where this run happens: the compiler and target leakgate was built with, its profile,
/// and the git commit of the working directory, when there is one.
fn environment() -> Environment {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut environment = Environment::new(env!("LEAKGATE_TARGET"), profile);
    environment.rustc = Some(env!("LEAKGATE_RUSTC"))
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    environment.leakgate_version = env!("CARGO_PKG_VERSION").to_owned();
    environment.git_commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    environment
}

/// `<target>/leakgate`: cargo's target directory is the nearest ancestor of the test
/// binary that holds `CACHEDIR.TAG`.
pub(crate) fn default_report_root() -> PathBuf {
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
