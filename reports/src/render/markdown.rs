//! `summary.md`: the run as a pull request shows it. A table of every scenario, then each
//! failing or crashed scenario expanded with its console text, top sites and chart.

use std::fmt::Write;

use crate::schema::{Report, Verdict};
use crate::text::{TABLE_HEADER, failure_text, run_wide_notes, table_row, totals_line};

/// The Markdown summary of `report`. `charts`, when given, is the path of the charts
/// directory as the page showing the summary reaches it (relative to the summary, or a
/// URL); failing scenarios then show their chart.
pub fn summary(report: &Report, charts: Option<&str>) -> String {
    let mut out = String::new();
    let failing = report
        .scenarios
        .iter()
        .filter(|s| s.verdict != Verdict::Pass)
        .count();
    let mark = if failing == 0 { "passed" } else { "failed" };
    let _ = writeln!(out, "## leakgate: {mark}\n");
    let _ = writeln!(out, "{}\n", totals_line(&report.scenarios));
    let _ = writeln!(out, "| {} |", TABLE_HEADER.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        ["---", "---", "--:", "--:", "--:", "--:", "---"].join("|")
    );
    for scenario in &report.scenarios {
        let row = table_row(scenario).map(|cell| escape_cell(&cell));
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    for scenario in report
        .scenarios
        .iter()
        .filter(|s| s.verdict != Verdict::Pass)
    {
        let _ = writeln!(
            out,
            "\n<details open><summary><b>{}</b>: {}</summary>\n",
            escape_html(&scenario.name),
            escape_html(&scenario.summary)
        );
        let text = failure_text(scenario, None);
        let fence = "`".repeat(longest_backtick_run(&text).max(2) + 1);
        let _ = writeln!(out, "{fence}text\n{text}{fence}\n");
        if let Some(charts) = charts {
            let _ = writeln!(
                out,
                "![chart of {}]({charts}/{}.png)\n",
                escape_html(&scenario.name).replace(['[', ']'], ""),
                super::file_stem(&scenario.name)
            );
        }
        let _ = writeln!(out, "</details>");
    }
    for note in run_wide_notes(&report.scenarios) {
        let _ = writeln!(out, "\n> note: {}", escape_cell(note));
    }
    out
}

/// A table cell: pipes would end it, a line break would end the row, and GitHub reads
/// `<…>` as HTML.
fn escape_cell(text: &str) -> String {
    escape_html(text).replace('|', "\\|").replace('\n', " ")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

fn escape_html(text: &str) -> String {
    super::html::escape(text)
}
