//! History and trend: each nightly run appends its figures to a `history.jsonl`, and a
//! trend test over a sliding window flags a slow creep that no single run reveals.
//!
//! The test follows Firefox's Perfherder: for each run `i` of a scenario's series, the
//! runs before it (up to [`TrendConfig::window`]) are compared with the runs from it on
//! (up to the same window) by Welch's t statistic. A change is flagged at the run with
//! the largest t when `t ≥ t_threshold` and the means differ by at least `min_effect`
//! (relative) and by more than the figure's absolute floor. Only changes within the last
//! window are reported, so a step is flagged until 12 runs have confirmed it, not on every
//! night after. Defaults: a window of 12 runs, at least 6 runs before and 3 after, t ≥ 5,
//! an effect of at least 1 %.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::baseline::Figures;
use crate::json::{LOCK_FILE, ReportError};
use crate::schema::Report;

/// One run in a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// The run.
    pub run_id: String,
    /// The git commit it ran on, when known.
    pub git_commit: Option<String>,
    /// Each scenario's figures.
    pub figures: Vec<Figures>,
}

impl Entry {
    /// The entry of `report`.
    pub fn of(report: &Report) -> Self {
        Self {
            run_id: report.run_id.clone(),
            git_commit: report
                .environment
                .as_ref()
                .and_then(|e| e.git_commit.clone()),
            figures: report.scenarios.iter().filter_map(Figures::of).collect(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Appends `entry` to the history at `path` (created if absent) as one line, in one
/// write, under a lock beside it: a reader sees the line whole or not at all, and a line
/// torn by a killed writer is ended first so that it stays apart.
pub fn append(path: &Path, entry: &Entry) -> Result<(), ReportError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let mut line = Vec::new();
    if len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1)).map_err(io(path))?;
        file.read_exact(&mut last).map_err(io(path))?;
        if last[0] != b'\n' {
            line.push(b'\n');
        }
    }
    serde_json::to_writer(&mut line, entry).map_err(|e| io(path)(e.into()))?;
    line.push(b'\n');
    file.write_all(&line).map_err(io(path))
}

/// Reads a history, oldest run first. A line cut short (a killed writer) is skipped; any
/// other line that is not an entry is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Entry>, ReportError> {
    let file = File::open(path).map_err(io(path))?;
    let mut entries = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(entry) => entries.push(entry),
            Err(cut_short) if cut_short.is_eof() => {}
            Err(source) => {
                return Err(ReportError::MalformedLine {
                    path: PathBuf::from(path),
                    line: index + 1,
                    source,
                });
            }
        }
    }
    Ok(entries)
}

/// The trend test's settings (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TrendConfig {
    /// Runs on each side of a candidate change, at most.
    pub window: usize,
    /// Runs needed before a candidate change.
    pub min_before: usize,
    /// Runs needed from a candidate change on.
    pub min_after: usize,
    /// Welch's t at least this.
    pub t_threshold: f64,
    /// The means differ by at least this fraction of the earlier one.
    pub min_effect: f64,
}

impl Default for TrendConfig {
    fn default() -> Self {
        Self {
            window: 12,
            min_before: 6,
            min_after: 3,
            t_threshold: 5.0,
            min_effect: 0.01,
        }
    }
}

/// A figure of a scenario that moved up and stayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Alert {
    /// The scenario.
    pub scenario: String,
    /// The figure (`footprint`, `peak`, `retained`, `growth/iteration`).
    pub figure: String,
    /// Index of the first run of the change, in the scenario's series.
    pub run: usize,
    /// That run's id.
    pub run_id: String,
    /// Mean of the window before.
    pub before: f64,
    /// Mean of the window from the change on.
    pub after: f64,
    /// Welch's t.
    pub t: f64,
}

impl Alert {
    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} rose from {} to {} ({:+.1}%) at run {} ({}), t = {:.1}",
            self.scenario,
            self.figure,
            crate::text::bytes(self.before.round() as i64),
            crate::text::bytes(self.after.round() as i64),
            (self.after - self.before) / self.before.abs().max(1.0) * 100.0,
            self.run,
            self.run_id,
            self.t
        )
    }
}

/// The figures the trend watches, with their absolute floors (as for baselines).
pub const WATCHED: [(&str, f64); 4] = [
    ("footprint", 4096.0),
    ("peak", 16.0 * 1024.0),
    ("retained", 1024.0),
    ("growth/iteration", 4.0),
];

/// `figure` of `figures`, as the trend reads it.
pub fn figure(figures: &Figures, figure: &str) -> Option<f64> {
    match figure {
        "footprint" => Some(figures.footprint as f64),
        "peak" => Some(figures.peak as f64),
        "retained" => Some(figures.retained as f64),
        "growth/iteration" => Some(figures.growth_per_iteration),
        _ => None,
    }
}

/// One scenario's values of `figure` over the history, with the runs they came from.
pub fn series<'a>(history: &'a [Entry], scenario: &str, name: &str) -> Vec<(&'a str, f64)> {
    history
        .iter()
        .filter_map(|entry| {
            let figures = entry.figures.iter().find(|f| f.scenario == scenario)?;
            Some((entry.run_id.as_str(), figure(figures, name)?))
        })
        .collect()
}

/// The scenarios of a history, sorted, each once.
pub fn scenarios(history: &[Entry]) -> Vec<&str> {
    let mut scenarios: Vec<&str> = history
        .iter()
        .flat_map(|e| e.figures.iter().map(|f| f.scenario.as_str()))
        .collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    scenarios
}

/// Every scenario and watched figure whose series rose and stayed up.
pub fn trend(history: &[Entry], config: TrendConfig) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for scenario in scenarios(history) {
        for (name, floor) in WATCHED {
            let points = series(history, scenario, name);
            let values: Vec<f64> = points.iter().map(|p| p.1).collect();
            if let Some((run, before, after, t)) = change(&values, config, floor) {
                alerts.push(Alert {
                    scenario: scenario.to_owned(),
                    figure: name.to_owned(),
                    run,
                    run_id: points[run].0.to_owned(),
                    before,
                    after,
                    t,
                });
            }
        }
    }
    alerts
}

/// The run where `values` rose the most significantly, if any rose enough:
/// `(run, mean before, mean after, t)`.
pub fn change(values: &[f64], config: TrendConfig, floor: f64) -> Option<(usize, f64, f64, f64)> {
    let mut best: Option<(usize, f64, f64, f64)> = None;
    // Changes older than a window have been reported already, every night since.
    let recent = values.len().saturating_sub(config.window);
    for run in config.min_before.max(recent)..=values.len().saturating_sub(config.min_after) {
        let before = &values[run.saturating_sub(config.window)..run];
        let after = &values[run..(run + config.window).min(values.len())];
        let (mb, vb) = mean_variance(before);
        let (ma, va) = mean_variance(after);
        let difference = ma - mb;
        if difference <= floor || difference < config.min_effect * mb.abs() {
            continue;
        }
        let spread = (vb / before.len() as f64 + va / after.len() as f64).sqrt();
        let t = if spread > 0.0 {
            difference / spread
        } else {
            f64::INFINITY
        };
        if t >= config.t_threshold && best.is_none_or(|b| t > b.3) {
            best = Some((run, mb, ma, t));
        }
    }
    best
}

fn mean_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, variance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1].
    fn noise(i: usize) -> f64 {
        let x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    const LEVEL: f64 = 1_000_000.0;

    #[test]
    fn flat_with_noise_gives_no_alert() {
        let values: Vec<f64> = (0..40).map(|i| LEVEL * (1.0 + 0.005 * noise(i))).collect();
        assert_eq!(change(&values, TrendConfig::default(), 4096.0), None);
    }

    #[test]
    fn a_two_percent_step_is_flagged_where_it_happened() {
        let values: Vec<f64> = (0..30)
            .map(|i| {
                let step = if i >= 20 { 1.02 } else { 1.0 };
                LEVEL * step * (1.0 + 0.003 * noise(i))
            })
            .collect();
        let (run, before, after, t) = change(&values, TrendConfig::default(), 4096.0).unwrap();
        assert_eq!(run, 20);
        assert!((after / before - 1.02).abs() < 0.005, "{before} {after}");
        assert!(t >= 5.0);
        // The step is not seen before enough runs after it, nor reported again once a
        // whole window has passed since.
        assert_eq!(change(&values[..22], TrendConfig::default(), 4096.0), None);
        let long: Vec<f64> = (0..60)
            .map(|i| if i >= 20 { LEVEL * 1.02 } else { LEVEL } * (1.0 + 0.003 * noise(i)))
            .collect();
        assert_eq!(change(&long, TrendConfig::default(), 4096.0), None);
    }

    #[test]
    fn a_slow_creep_is_caught_within_the_window() {
        // 0.2 % a run from run 10: no single run stands out.
        let values: Vec<f64> = (0..40)
            .map(|i| {
                let creep = 1.0 + 0.002 * (i as f64 - 10.0).max(0.0);
                LEVEL * creep * (1.0 + 0.003 * noise(i))
            })
            .collect();
        let first_alert = (10..=values.len())
            .find(|&n| change(&values[..n], TrendConfig::default(), 4096.0).is_some())
            .expect("the creep is caught");
        assert!(
            first_alert <= 10 + 12,
            "caught only after {first_alert} runs"
        );
    }

    #[test]
    fn history_appends_whole_lines_and_skips_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let entry = Entry {
            run_id: "r1".into(),
            git_commit: None,
            figures: Vec::new(),
        };
        append(&path, &entry).unwrap();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"run_id":"torn","fig"#)
            .unwrap();
        let second = Entry {
            run_id: "r2".into(),
            ..entry.clone()
        };
        append(&path, &second).unwrap();
        let runs: Vec<String> = read(&path).unwrap().into_iter().map(|e| e.run_id).collect();
        assert_eq!(runs, ["r1", "r2"]);
        std::fs::write(&path, "not json\n").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("history.jsonl:1:")
        );
    }
}
