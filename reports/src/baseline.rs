//! Baselines, criterion-style: the figures of each scenario from one run, stored under a
//! name (`target/leakgate/baselines/<name>/<scenario>.json`), that a later run is compared
//! with. A pull request compares against main's baseline and fails a scenario that leaks
//! more, retains or peaks higher, or holds a bigger footprint than main did, beyond a noise
//! threshold, even while it stays under its absolute thresholds; or whose survivors come
//! from a site main's did not.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::json::{ReportError, write_atomically};
use crate::schema::{Resource, ScenarioReport, Verdict};
use crate::text::{bytes, heap_per_iteration, peak_above_baseline};

/// The figures of one scenario's run that a baseline keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Figures {
    /// The scenario.
    pub scenario: String,
    /// Its verdict then.
    pub verdict: Verdict,
    /// Heap growth per measured iteration: the leak's rate, else the series' slope.
    pub growth_per_iteration: f64,
    /// Heap above the baseline after settling.
    pub retained: i64,
    /// The footprint: the heap held at the baseline above the heap before setup, which
    /// is what the scenario's state (a cache filled in warm-up, say) costs.
    pub footprint: i64,
    /// Highest heap above the baseline during the measured iterations.
    pub peak: u64,
    /// C heap above its baseline after settling, when measured.
    pub c_heap: Option<i64>,
    /// Disk bytes per measured iteration (slope), when watched.
    pub disk_rate: Option<f64>,
    /// The first frame of each site that held survivors in a heap or peak finding.
    pub sites: BTreeSet<String>,
}

impl Figures {
    /// The figures of `scenario`, or `None` when it has none (it crashed or ended before
    /// its baseline sample).
    pub fn of(scenario: &ScenarioReport) -> Option<Self> {
        let series = &scenario.series;
        let (baseline, end) = (series.baseline?, series.end?);
        let footprint = series
            .pre_setup
            .map_or(0, |pre| baseline.heap_bytes as i64 - pre.heap_bytes as i64);
        let c_heap = baseline
            .c_heap_bytes
            .zip(end.c_heap_bytes)
            .map(|(b, e)| e as i64 - b as i64);
        // A suppressed finding's sites are set aside with it; a frame that is only an
        // address moves with ASLR and would read as a new site every run.
        let sites = scenario
            .findings
            .iter()
            .filter(|f| matches!(f.resource, Resource::Heap | Resource::Peak))
            .filter(|f| f.suppressed.is_none())
            .flat_map(|f| &f.sites)
            .filter_map(|s| s.frames.first())
            .filter(|f| !f.function.starts_with("0x"))
            .map(|f| f.function.clone())
            .collect();
        Some(Self {
            scenario: scenario.name.clone(),
            verdict: scenario.verdict,
            growth_per_iteration: heap_per_iteration(scenario).unwrap_or(0.0),
            retained: end.heap_bytes as i64 - baseline.heap_bytes as i64,
            footprint,
            peak: peak_above_baseline(scenario).unwrap_or(0),
            c_heap,
            disk_rate: scenario.trend(Resource::Disk).map(|t| t.slope),
            sites,
        })
    }
}

/// How much worse than its baseline a figure may get before it is a regression: the
/// larger of `relative` × the baseline's value and the figure's absolute floor (so that
/// noise around zero never counts).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Thresholds {
    /// Relative allowance (`LEAKGATE_BASELINE_NOISE`, default 0.25: 25 %).
    pub relative: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { relative: 0.25 }
    }
}

impl Thresholds {
    /// Allowances of `relative` × the baseline's value.
    pub fn new(relative: f64) -> Self {
        Self { relative }
    }
}

/// Absolute floors of the allowance, per figure: below these, differences are noise
/// (a thread's 16 KiB peak granularity, an allocator's size classes, page-sized files).
const FLOORS: [(&str, f64); 6] = [
    ("growth/iteration", 8.0),
    ("retained", 4096.0),
    ("footprint", 64.0 * 1024.0),
    ("peak", 64.0 * 1024.0),
    ("C heap", 256.0 * 1024.0),
    ("disk/iteration", 1024.0),
];

/// One figure of a scenario, before and now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delta {
    /// The figure: `growth/iteration`, `retained`, `footprint`, `peak`, `C heap`,
    /// `disk/iteration`.
    pub figure: String,
    /// Its value in the baseline.
    pub base: f64,
    /// Its value now.
    pub new: f64,
    /// The highest value that is not a regression.
    pub limit: f64,
    /// Whether `new` is above `limit`.
    pub regressed: bool,
}

impl Delta {
    /// `footprint 1.2 MiB → 12.0 MiB (+900%, limit 1.5 MiB)`.
    pub fn describe(&self) -> String {
        let show = |v: f64| {
            if self.figure.ends_with("/iteration") {
                format!("{}/iteration", bytes(v.round() as i64))
            } else {
                bytes(v.round() as i64)
            }
        };
        let change = if self.base.abs() >= 1.0 {
            format!("{:+.0}%", (self.new - self.base) / self.base.abs() * 100.0)
        } else {
            let difference = (self.new - self.base).round() as i64;
            let sign = if difference > 0 { "+" } else { "" };
            format!("{sign}{}", bytes(difference))
        };
        let figure = self.figure.trim_end_matches("/iteration");
        format!(
            "{figure} {} → {} ({change}, limit {})",
            show(self.base),
            show(self.new),
            show(self.limit)
        )
    }
}

/// A scenario compared with its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Comparison {
    /// The baseline's name (or the report it came from).
    pub baseline: String,
    /// Each figure, before and now.
    pub deltas: Vec<Delta>,
    /// Sites holding survivors now that held none in the baseline.
    pub new_sites: Vec<String>,
}

impl Comparison {
    /// Whether a figure regressed or a new site appeared.
    pub fn regressed(&self) -> bool {
        self.deltas.iter().any(|d| d.regressed) || !self.new_sites.is_empty()
    }

    /// One line on what regressed, or `None`.
    pub fn regression(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .deltas
            .iter()
            .filter(|d| d.regressed)
            .map(Delta::describe)
            .collect();
        if !self.new_sites.is_empty() {
            parts.push(format!(
                "new survivor site{}: {}",
                if self.new_sites.len() == 1 { "" } else { "s" },
                self.new_sites.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "regression against baseline {}: {}",
                self.baseline,
                parts.join("; ")
            )
        })
    }
}

/// Compares `new` with `base` (named `baseline`).
pub fn compare(
    baseline: &str,
    base: &Figures,
    new: &Figures,
    thresholds: Thresholds,
) -> Comparison {
    let pairs = [
        (base.growth_per_iteration, new.growth_per_iteration),
        (base.retained as f64, new.retained as f64),
        (base.footprint as f64, new.footprint as f64),
        (base.peak as f64, new.peak as f64),
        (
            base.c_heap.unwrap_or(0) as f64,
            new.c_heap.unwrap_or(0) as f64,
        ),
        (base.disk_rate.unwrap_or(0.0), new.disk_rate.unwrap_or(0.0)),
    ];
    let deltas = FLOORS
        .iter()
        .zip(pairs)
        .map(|(&(figure, floor), (before, now))| {
            let limit = before + (before.abs() * thresholds.relative).max(floor);
            Delta {
                figure: figure.to_owned(),
                base: before,
                new: now,
                limit,
                regressed: now > limit,
            }
        })
        .collect();
    Comparison {
        baseline: baseline.to_owned(),
        deltas,
        new_sites: new.sites.difference(&base.sites).cloned().collect(),
    }
}

/// The baselines under `root`: `root/<name>/<scenario file stem>.json`, one file per
/// scenario, each written atomically, so the processes of a nextest run save one baseline.
#[derive(Debug, Clone)]
pub struct Baselines {
    dir: PathBuf,
    name: String,
}

impl Baselines {
    /// The baseline `name` under `root`.
    pub fn new(root: &Path, name: &str) -> Self {
        Self {
            dir: root.join(name),
            name: name.to_owned(),
        }
    }

    /// The baseline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `figures`, replacing what the baseline held for that scenario.
    pub fn save(&self, figures: &Figures) -> Result<PathBuf, ReportError> {
        let path = self
            .dir
            .join(format!("{}.json", crate::file_stem(&figures.scenario)));
        write_atomically(&path, |file| {
            serde_json::to_writer_pretty(&mut *file, figures)?;
            std::io::Write::write_all(file, b"\n")
        })?;
        Ok(path)
    }

    /// Every scenario's figures, by name. A baseline that does not exist, or a file in it
    /// that is not figures, is an error naming the path.
    pub fn load(&self) -> Result<BTreeMap<String, Figures>, ReportError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| ReportError::Io {
            path: self.dir.clone(),
            source: std::io::Error::new(
                source.kind(),
                format!(
                    "no baseline named {:?} here ({source}): save one with LEAKGATE_SAVE_BASELINE={}",
                    self.name, self.name
                ),
            ),
        })?;
        let mut figures = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|source| ReportError::Io {
                    path: self.dir.clone(),
                    source,
                })?
                .path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|source| ReportError::Io {
                path: path.clone(),
                source,
            })?;
            let one: Figures =
                serde_json::from_str(&text).map_err(|source| ReportError::Malformed {
                    path: path.clone(),
                    source,
                })?;
            figures.insert(one.scenario.clone(), one);
        }
        Ok(figures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Finding, Frame, Sample, Site};

    fn scenario(footprint: u64, retained: u64, site: Option<&str>) -> ScenarioReport {
        let mut s = ScenarioReport::new("cache/bounded", Verdict::Pass, "");
        s.series.pre_setup = Some(Sample::heap(1 << 20, 10, 1 << 20, 10));
        let base = (1 << 20) + footprint;
        s.series.baseline = Some(Sample::heap(base, 10, base, 10));
        s.series.end = Some(Sample::heap(base + retained, 10, base + retained, 10));
        if let Some(function) = site {
            let mut finding = Finding::new(Resource::Heap, retained as i64, 10);
            let mut survivor = Site::new(retained, 1, 1, 0, 0);
            survivor.frames.push(Frame::new(function, None, None));
            finding.sites.push(survivor);
            s.findings.push(finding);
        }
        s
    }

    #[test]
    fn a_footprint_ten_times_bigger_regresses_and_an_unchanged_rerun_passes() {
        let base = Figures::of(&scenario(100 << 10, 0, None)).unwrap();
        assert_eq!(base.footprint, 100 << 10);
        let same = compare("main", &base, &base, Thresholds::default());
        assert!(!same.regressed(), "{same:?}");
        let bigger = Figures::of(&scenario(1000 << 10, 0, None)).unwrap();
        let comparison = compare("main", &base, &bigger, Thresholds::default());
        assert_eq!(
            comparison.regression().unwrap(),
            "regression against baseline main: footprint 100.0 KiB → 1000.0 KiB (+900%, limit 164.0 KiB)"
        );
        // Within the noise: 10 % more footprint is not a regression.
        let noisy = Figures::of(&scenario(110 << 10, 0, None)).unwrap();
        assert!(!compare("main", &base, &noisy, Thresholds::default()).regressed());
    }

    #[test]
    fn a_new_survivor_site_is_named() {
        let base = Figures::of(&scenario(0, 100, Some("engine::known"))).unwrap();
        let new = Figures::of(&scenario(0, 100, Some("engine::pin_segment"))).unwrap();
        let comparison = compare("main", &base, &new, Thresholds::default());
        assert_eq!(comparison.new_sites, ["engine::pin_segment"]);
        assert!(
            comparison
                .regression()
                .unwrap()
                .contains("new survivor site: engine::pin_segment")
        );
    }

    #[test]
    fn baselines_save_atomically_and_a_malformed_or_missing_one_names_its_path() {
        let root = tempfile::tempdir().unwrap();
        let baselines = Baselines::new(root.path(), "main");
        let err = baselines.load().unwrap_err().to_string();
        assert!(
            err.contains("main") && err.contains("LEAKGATE_SAVE_BASELINE=main"),
            "{err}"
        );
        let figures = Figures::of(&scenario(4096, 0, None)).unwrap();
        let path = baselines.save(&figures).unwrap();
        assert!(path.ends_with("main/cache~bounded.json"));
        assert_eq!(baselines.load().unwrap()["cache/bounded"], figures);
        fs::write(&path, "{ torn").unwrap();
        let err = baselines.load().unwrap_err().to_string();
        assert!(err.contains("cache~bounded.json"), "{err}");
    }
}
