//! `leakgate`: renders, summarises, charts and merges the reports that leakgate runs
//! write. `cargo install leakgate-cli` installs it.
//!
//! ```text
//! leakgate render target/leakgate/gate         # index.html, summary.md, junit.xml, charts, DHAT
//! leakgate summary target/leakgate/gate        # the table, on stdout
//! leakgate chart target/leakgate/gate sqlite/checkpoint_loop -o chart.png
//! leakgate merge shard-1 shard-2 -o merged     # then: leakgate render merged
//! leakgate compare main target/leakgate/gate   # a baseline (or report) against a report
//! leakgate history append target/leakgate/nightly --to history.jsonl
//! leakgate trend history.jsonl --charts trend  # exit 1 when a figure crept up
//! ```
//!
//! A report is a report directory, its `report.jsonl` or its `report.json` (format 1 or 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::collections::BTreeMap;

use leakgate_reports::baseline::{Baselines, Figures, Thresholds, compare};
use leakgate_reports::render::{self, chart, markdown, trend};
use leakgate_reports::{
    LINES_FILE, REPORT_FILE, Report, ReportError, Verdict, history, read_report, text, write_report,
};

#[derive(Parser)]
#[command(
    name = "leakgate",
    version,
    about = "Render, summarise, chart and merge leakgate reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes every output next to a report: report.json (assembled from report.jsonl),
    /// index.html, summary.md, junit.xml, charts/ and dhat/. Appends the summary to
    /// $GITHUB_STEP_SUMMARY when that is set.
    Render {
        /// A report directory, report.jsonl or report.json.
        report: PathBuf,
        /// Where the outputs go (default: the report's directory).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Where summary.md's chart images are, as its readers reach them: a URL for a
        /// pull-request comment (default: `charts`, next to it).
        #[arg(long, default_value = render::CHARTS_DIR)]
        charts_url: String,
    },
    /// Prints the table of a report's scenarios.
    Summary {
        /// A report directory, report.jsonl or report.json.
        report: PathBuf,
        /// Exit code 1 when a scenario failed or crashed.
        #[arg(long)]
        check: bool,
    },
    /// Draws one scenario's chart, as SVG or PNG by the output's extension; or, with
    /// --failing, the PNG chart of every failing scenario into a directory.
    Chart {
        /// A report directory, report.jsonl or report.json.
        report: PathBuf,
        /// The scenario's name, as in the report.
        #[arg(required_unless_present = "failing", conflicts_with = "failing")]
        scenario: Option<String>,
        /// The chart's file (default: the scenario's name, as SVG, here); with --failing,
        /// the directory.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Every failing or crashed scenario's chart, as PNG named like the report's.
        #[arg(long)]
        failing: bool,
    },
    /// Compares a report with a baseline: each scenario's figures (growth per iteration,
    /// retained, footprint, peak, C heap, disk rate) and survivor sites. Exit code 1 when
    /// something regressed.
    Compare {
        /// A baseline name (under --baseline-dir), a baseline directory, or a report.
        base: String,
        /// The report to compare: a report directory, report.jsonl or report.json.
        new: PathBuf,
        /// Where baselines live.
        #[arg(long, default_value = "target/leakgate/baselines")]
        baseline_dir: PathBuf,
        /// A figure's allowed rise over its baseline, as a fraction.
        #[arg(long, default_value_t = 0.25)]
        noise: f64,
        /// Print Markdown, for a pull request, instead of the console table.
        #[arg(long)]
        markdown: bool,
    },
    /// A nightly history of figures.
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Flags figures that crept up across the runs of a history (Welch's t over a sliding
    /// window of 12 runs, t ≥ 5, at least 1 %). Exit code 1 when one did.
    Trend {
        /// The history (`history.jsonl`).
        history: PathBuf,
        /// Write a trend chart per scenario (SVG and PNG) into this directory.
        #[arg(long)]
        charts: Option<PathBuf>,
    },
    /// Merges reports (the shards of one run) into one `report.json` in a directory; a
    /// scenario in several takes the last one's entry.
    Merge {
        /// The reports, in order.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        /// The directory of the merged report.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Appends a report's figures to a history, as one line (atomic; a torn last line
    /// left by a killed writer is skipped).
    Append {
        /// A report directory, report.jsonl or report.json.
        report: PathBuf,
        /// The history file.
        #[arg(long)]
        to: PathBuf,
    },
}

/// What went wrong, naming the file or scenario; printed as `leakgate: error: …`.
#[derive(Debug)]
struct Failure(String);

impl From<ReportError> for Failure {
    fn from(error: ReportError) -> Self {
        Self(error.to_string())
    }
}

impl From<render::RenderError> for Failure {
    fn from(error: render::RenderError) -> Self {
        Self(error.to_string())
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Regressed) => ExitCode::from(1),
        Err(Failure(message)) => {
            eprintln!("leakgate: error: {message}");
            ExitCode::from(2)
        }
    }
}

/// How a command ended, when it did not fail.
enum Outcome {
    Clean,
    /// `compare` found a regression, or `trend` a creep.
    Regressed,
}

fn run(command: Command) -> Result<Outcome, Failure> {
    match command {
        Command::Compare {
            base,
            new,
            baseline_dir,
            noise,
            markdown,
        } => {
            let (name, base) = load_figures(&base, &baseline_dir)?;
            let report = read_report(&new)?;
            let rows = comparison_rows(&name, &base, &report, Thresholds::new(noise));
            let regressed = rows.iter().any(|r| r.1 == "REGRESSED");
            print!("{}", comparison_table(&name, &rows, markdown));
            Ok(if regressed {
                Outcome::Regressed
            } else {
                Outcome::Clean
            })
        }
        Command::History {
            command: HistoryCommand::Append { report, to },
        } => {
            let entry = history::Entry::of(&read_report(&report)?);
            history::append(&to, &entry)?;
            println!(
                "leakgate: appended run {} ({} scenarios) to {}",
                entry.run_id,
                entry.figures.len(),
                to.display()
            );
            Ok(Outcome::Clean)
        }
        Command::Trend {
            history: path,
            charts,
        } => {
            let entries = history::read(&path)?;
            let alerts = history::trend(&entries, history::TrendConfig::default());
            for alert in &alerts {
                println!("ALERT {}", alert.describe());
            }
            println!(
                "leakgate: {} runs in {}, {} alert{}",
                entries.len(),
                path.display(),
                alerts.len(),
                if alerts.len() == 1 { "" } else { "s" }
            );
            if let Some(dir) = charts {
                write_trend_charts(&entries, &alerts, &dir)?;
            }
            Ok(if alerts.is_empty() {
                Outcome::Clean
            } else {
                Outcome::Regressed
            })
        }
        Command::Render {
            report,
            out,
            charts_url,
        } => {
            let loaded = read_report(&report)?;
            let dir = out.unwrap_or_else(|| report_dir(&report));
            // The assembled report goes with the outputs, so they can be read again.
            write_report(&dir.join(REPORT_FILE), &loaded)?;
            let written = render::render_all(&loaded, &dir, &charts_url)?;
            if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
                append(Path::new(&summary), &markdown::summary(&loaded, None))?;
            }
            println!(
                "leakgate: rendered {} scenarios into {} files under {}",
                loaded.scenarios.len(),
                written.len(),
                dir.display()
            );
            Ok(Outcome::Clean)
        }
        Command::Summary { report, check } => {
            let loaded = read_report(&report)?;
            print!("{}", text::run_table(&loaded.scenarios));
            let failing = loaded.totals.failed + loaded.totals.crashed;
            Ok(if check && failing > 0 {
                Outcome::Regressed
            } else {
                Outcome::Clean
            })
        }
        Command::Chart {
            report,
            failing: true,
            out,
            ..
        } => {
            let loaded = read_report(&report)?;
            let dir = out.unwrap_or_else(|| PathBuf::from(render::CHARTS_DIR));
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
            let mut drawn = 0;
            for scenario in loaded
                .scenarios
                .iter()
                .filter(|s| s.verdict != Verdict::Pass)
            {
                drawn += 1;
                let path = dir.join(format!(
                    "{}.png",
                    leakgate_reports::file_stem(&scenario.name)
                ));
                chart::png(scenario, &path).map_err(|e| {
                    Failure(format!(
                        "{}: chart of {}: {e}",
                        path.display(),
                        scenario.name
                    ))
                })?;
            }
            println!(
                "leakgate: {drawn} charts of failing scenarios in {}",
                dir.display()
            );
            Ok(Outcome::Clean)
        }
        Command::Chart {
            report,
            scenario,
            out,
            ..
        } => {
            let scenario = scenario.expect("clap requires a scenario without --failing");
            let loaded = read_report(&report)?;
            let found = loaded.scenario(&scenario).ok_or_else(|| {
                Failure(format!(
                    "{}: no scenario named {scenario:?} (it has {})",
                    report.display(),
                    names(&loaded)
                ))
            })?;
            let out = out
                .unwrap_or_else(|| PathBuf::from(format!("{}.svg", render::file_stem(&scenario))));
            let chart_error = |e: Box<dyn std::error::Error>| {
                Failure(format!("{}: chart of {scenario}: {e}", out.display()))
            };
            if out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            {
                chart::png(found, &out).map_err(chart_error)?;
            } else {
                let svg = chart::svg(found).map_err(chart_error)?;
                std::fs::write(&out, svg)
                    .map_err(|e| Failure(format!("{}: {e}", out.display())))?;
            }
            println!("{}", out.display());
            Ok(Outcome::Clean)
        }
        Command::Merge { reports, out } => {
            // A report directory's lines take precedence over its report.json: merging
            // into one would be shadowed by what it already holds.
            let lines = out.join(LINES_FILE);
            if lines.exists() {
                return Err(Failure(format!(
                    "{}: the output directory already holds a run's lines; merge into a new directory",
                    lines.display()
                )));
            }
            let mut merged: Option<Report> = None;
            for path in &reports {
                let shard = read_report(path)?;
                match &mut merged {
                    None => merged = Some(shard),
                    Some(report) => {
                        for scenario in shard.scenarios {
                            report.upsert(scenario);
                        }
                    }
                }
            }
            let merged = merged.expect("clap requires at least two reports");
            let path = out.join(REPORT_FILE);
            write_report(&path, &merged)?;
            println!(
                "leakgate: merged {} scenarios from {} reports into {}",
                merged.scenarios.len(),
                reports.len(),
                path.display()
            );
            Ok(Outcome::Clean)
        }
    }
}

/// The directory a report path belongs to.
fn report_dir(report: &Path) -> PathBuf {
    if report.is_dir() {
        report.to_owned()
    } else {
        report
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned)
    }
}

fn names(report: &Report) -> String {
    let mut names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    names.truncate(5);
    let more = report.scenarios.len().saturating_sub(names.len());
    let mut text = names.join(", ");
    if more > 0 {
        text += &format!(" and {more} more");
    }
    text
}

fn append(path: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| Failure(format!("{}: {e}", path.display())))
}

/// The figures of `base`: a report (its scenarios' figures), a baseline directory, or a
/// baseline name under `root`; with the name to call it by.
fn load_figures(base: &str, root: &Path) -> Result<(String, BTreeMap<String, Figures>), Failure> {
    let path = Path::new(base);
    if path.is_file() || path.join(LINES_FILE).is_file() || path.join(REPORT_FILE).is_file() {
        let report = read_report(path)?;
        let figures = report
            .scenarios
            .iter()
            .filter_map(Figures::of)
            .map(|f| (f.scenario.clone(), f))
            .collect();
        return Ok((base.to_owned(), figures));
    }
    let baselines = if path.is_dir() {
        let name = path
            .file_name()
            .map_or_else(|| base.to_owned(), |n| n.to_string_lossy().into_owned());
        Baselines::new(path.parent().unwrap_or(Path::new(".")), &name)
    } else {
        Baselines::new(root, base)
    };
    Ok((baselines.name().to_owned(), baselines.load()?))
}

/// One row per scenario of `report`: name, status (`ok`, `REGRESSED`, `new`) and what
/// changed.
fn comparison_rows(
    name: &str,
    base: &BTreeMap<String, Figures>,
    report: &Report,
    thresholds: Thresholds,
) -> Vec<(String, &'static str, String)> {
    report
        .scenarios
        .iter()
        .map(|scenario| {
            let Some(now) = Figures::of(scenario) else {
                // It ended before its figures (a crash): nothing is known to be fine.
                let why = format!("no figures: {}", scenario.summary);
                return (scenario.name.clone(), "REGRESSED", why);
            };
            let Some(before) = base.get(&scenario.name) else {
                let why = "not in the baseline".to_owned();
                return (scenario.name.clone(), "new", why);
            };
            let comparison = compare(name, before, &now, thresholds);
            let status = if comparison.regressed() {
                "REGRESSED"
            } else {
                "ok"
            };
            let mut changes: Vec<String> = comparison
                .deltas
                .iter()
                .filter(|d| d.regressed || (d.new - d.base).abs() > (d.limit - d.base) / 2.0)
                .map(|d| d.describe())
                .collect();
            changes.extend(
                comparison
                    .new_sites
                    .iter()
                    .map(|s| format!("new survivor site {s}")),
            );
            let changes = if changes.is_empty() {
                "within the noise".to_owned()
            } else {
                changes.join("; ")
            };
            (scenario.name.clone(), status, changes)
        })
        .collect()
}

fn comparison_table(name: &str, rows: &[(String, &'static str, String)], markdown: bool) -> String {
    let regressed = rows.iter().filter(|r| r.1 == "REGRESSED").count();
    let headline = format!(
        "against baseline {name}: {} scenarios, {regressed} regressed, {} new",
        rows.len(),
        rows.iter().filter(|r| r.1 == "new").count()
    );
    let mut out = String::new();
    if markdown {
        out +=
            &format!("### leakgate: {headline}\n\n| scenario | status | change |\n|---|---|---|\n");
        for (scenario, status, change) in rows {
            let cell = |t: &str| render::html::escape(t).replace('|', "\\|");
            out += &format!("| {} | {status} | {} |\n", cell(scenario), cell(change));
        }
    } else {
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(8).max(8);
        out += &format!("{:width$} {:9} change\n", "scenario", "status");
        for (scenario, status, change) in rows {
            out += &format!("{scenario:width$} {status:9} {change}\n");
        }
        out += &headline;
        out.push('\n');
    }
    out
}

/// A trend chart per scenario of the history, SVG and PNG, in `dir`.
fn write_trend_charts(
    entries: &[history::Entry],
    alerts: &[history::Alert],
    dir: &Path,
) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    for scenario in history::scenarios(entries) {
        let stem = leakgate_reports::file_stem(scenario);
        let svg_path = dir.join(format!("{stem}.svg"));
        let chart_error = |path: &Path| {
            let path = path.display().to_string();
            move |e: Box<dyn std::error::Error>| {
                Failure(format!("{path}: trend of {scenario}: {e}"))
            }
        };
        if let Some(svg) = trend::svg(entries, scenario, alerts).map_err(chart_error(&svg_path))? {
            std::fs::write(&svg_path, svg)
                .map_err(|e| Failure(format!("{}: {e}", svg_path.display())))?;
            let png_path = dir.join(format!("{stem}.png"));
            trend::png(entries, scenario, alerts, &png_path).map_err(chart_error(&png_path))?;
        }
    }
    println!("leakgate: trend charts in {}", dir.display());
    Ok(())
}
