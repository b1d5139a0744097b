//! Writers of what people look at, all from a [`Report`]: per-scenario charts (SVG and
//! PNG), an HTML page, a Markdown summary for pull requests, JUnit XML for CI test tabs,
//! and DHAT viewer files for heap and peak findings. [`render_all`] writes them next to
//! the report; each writer is also usable on its own.

pub mod chart;
pub mod dhat;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod trend;

use std::path::{Path, PathBuf};

pub use crate::file_stem;
use crate::json::write_atomically;
use crate::schema::Report;
use crate::{ReportError, ScenarioReport};

/// The HTML page's file name.
pub const HTML_FILE: &str = "index.html";
/// The Markdown summary's file name.
pub const MARKDOWN_FILE: &str = "summary.md";
/// The JUnit file's name.
pub const JUNIT_FILE: &str = "junit.xml";
/// The directory of the charts, next to the report.
pub const CHARTS_DIR: &str = "charts";
/// The directory of the DHAT viewer files, next to the report.
pub const DHAT_DIR: &str = "dhat";

/// An error rendering a report; each names the file or the scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] ReportError),
    /// A chart could not be drawn.
    #[error("chart of {scenario}: {message}")]
    Chart {
        /// The scenario.
        scenario: String,
        /// What plotters said.
        message: String,
    },
    /// The JUnit XML could not be serialized.
    #[error("{path}: {message}")]
    Junit {
        /// The file.
        path: PathBuf,
        /// What quick-junit said.
        message: String,
    },
}

/// Where the chart of `scenario` goes, relative to the report directory, as SVG or PNG.
pub fn chart_path(scenario: &ScenarioReport, extension: &str) -> String {
    format!("{CHARTS_DIR}/{}.{extension}", file_stem(&scenario.name))
}

/// Where the DHAT file of `scenario` goes, relative to the report directory.
pub fn dhat_path(scenario: &ScenarioReport) -> String {
    format!("{DHAT_DIR}/{}.json", file_stem(&scenario.name))
}

/// Writes every output of `report` into `dir`: the charts of each scenario, the DHAT
/// files of heap and peak findings, `index.html`, `summary.md` (whose images point at
/// `charts_url`: [`CHARTS_DIR`] next to it, or a URL for a pull-request comment) and
/// `junit.xml`. Returns the paths written. Each file is written whole or not at all.
pub fn render_all(
    report: &Report,
    dir: &Path,
    charts_url: &str,
) -> Result<Vec<PathBuf>, RenderError> {
    let mut written = Vec::new();
    let mut svgs = Vec::with_capacity(report.scenarios.len());
    for scenario in &report.scenarios {
        let chart_error = |error: Box<dyn std::error::Error>| RenderError::Chart {
            scenario: scenario.name.clone(),
            message: error.to_string(),
        };
        let svg = chart::svg(scenario).map_err(chart_error)?;
        let path = dir.join(chart_path(scenario, "svg"));
        write_text(&path, &svg)?;
        written.push(path);
        let png = dir.join(chart_path(scenario, "png"));
        // Written beside and renamed, as the other files are; plotters picks the image
        // format by the extension, so the temporary name keeps `.png`.
        let tmp = dir.join(CHARTS_DIR).join(format!(
            ".{}.{}.png",
            file_stem(&scenario.name),
            std::process::id()
        ));
        chart::png(scenario, &tmp).map_err(chart_error)?;
        std::fs::rename(&tmp, &png).map_err(|source| ReportError::Io {
            path: png.clone(),
            source,
        })?;
        written.push(png);
        svgs.push(svg);
        if let Some(file) = dhat::file(scenario, report) {
            let path = dir.join(dhat_path(scenario));
            write_text(&path, &file)?;
            written.push(path);
        }
    }
    let html_path = dir.join(HTML_FILE);
    write_text(&html_path, &html::page(report, &svgs))?;
    written.push(html_path);
    let markdown_path = dir.join(MARKDOWN_FILE);
    write_text(&markdown_path, &markdown::summary(report, Some(charts_url)))?;
    written.push(markdown_path);
    let junit_path = dir.join(JUNIT_FILE);
    let xml = junit::xml(report).map_err(|message| RenderError::Junit {
        path: junit_path.clone(),
        message,
    })?;
    write_text(&junit_path, &xml)?;
    written.push(junit_path);
    Ok(written)
}

fn write_text(path: &Path, text: &str) -> Result<(), ReportError> {
    write_atomically(path, |file| {
        std::io::Write::write_all(file, text.as_bytes())
    })
}
