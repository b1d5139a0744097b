//! `leakgate`: renders, summarises, charts and merges the reports that leakgate runs
//! write. `cargo install leakgate-cli` installs it.
//!
//! ```text
//! leakgate render target/leakgate/gate         # index.html, summary.md, junit.xml, charts, DHAT
//! leakgate summary target/leakgate/gate        # the table, on stdout
//! leakgate chart target/leakgate/gate sqlite/checkpoint_loop -o chart.png
//! leakgate merge shard-1 shard-2 -o merged     # then: leakgate render merged
//! ```
//!
//! A report is a report directory, its `report.jsonl` or its `report.json` (format 1 or 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leakgate_reports::render::{self, chart, markdown};
use leakgate_reports::{
    LINES_FILE, REPORT_FILE, Report, ReportError, read_report, text, write_report,
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
    },
    /// Prints the table of a report's scenarios.
    Summary {
        /// A report directory, report.jsonl or report.json.
        report: PathBuf,
    },
    /// Draws one scenario's chart, as SVG or PNG by the output's extension.
    Chart {
        /// A report directory, report.jsonl or report.json.
        report: PathBuf,
        /// The scenario's name, as in the report.
        scenario: String,
        /// The chart's file (default: the scenario's name, as SVG, here).
        #[arg(long, short)]
        out: Option<PathBuf>,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("leakgate: error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Render { report, out } => {
            let loaded = read_report(&report)?;
            let dir = out.unwrap_or_else(|| report_dir(&report));
            // The assembled report goes with the outputs, so they can be read again.
            write_report(&dir.join(REPORT_FILE), &loaded)?;
            let written = render::render_all(&loaded, &dir)?;
            if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
                append(Path::new(&summary), &markdown::summary(&loaded, None))?;
            }
            println!(
                "leakgate: rendered {} scenarios into {} files under {}",
                loaded.scenarios.len(),
                written.len(),
                dir.display()
            );
            Ok(())
        }
        Command::Summary { report } => {
            print!("{}", text::run_table(&read_report(&report)?.scenarios));
            Ok(())
        }
        Command::Chart {
            report,
            scenario,
            out,
        } => {
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
            let drawn = if out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            {
                chart::png(found, &out).map_err(chart_error)?
            } else {
                let svg = chart::svg(found).map_err(chart_error)?;
                if let Some(svg) = &svg {
                    std::fs::write(&out, svg)
                        .map_err(|e| Failure(format!("{}: {e}", out.display())))?;
                }
                svg.is_some()
            };
            if !drawn {
                return Err(Failure(format!(
                    "{scenario}: nothing to chart (it ended before its measured iterations)"
                )));
            }
            println!("{}", out.display());
            Ok(())
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
            Ok(())
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
