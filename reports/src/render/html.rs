//! `index.html`: the run on one self-contained page (no network, no script from
//! elsewhere), which opens from a downloaded CI artifact.
//!
//! A table has one row per scenario: verdict, heap growth per iteration, peak, margin to
//! the threshold, duration and evidence. Below it, each scenario has a section with its
//! chart inline (SVG), findings (expected ones marked), sites with frames, crash stack and
//! statistics: failing and crashed ones open, passing ones closed. The page is one file:
//! it opens alone, as well as from a downloaded artifact. A small script checks on load
//! that every chart rendered and records the result in `<body data-charts>`, for the
//! browser check in CI.

use std::fmt::Write;

use crate::schema::{Finding, Frame, Report, ScenarioReport, Verdict};
use crate::text::{TABLE_HEADER, bytes, run_wide_notes, table_row, totals_line, verdict_label};

/// Escapes `text` for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1b1f24; }
h1 { font-size: 22px; margin: 0 0 4px; }
.meta { color: #57606a; margin: 0 0 16px; }
table { border-collapse: collapse; }
th, td { padding: 3px 10px; border-bottom: 1px solid #d0d7de; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td, tr.crash td { background: #ffebe9; }
tr.expected td { background: #f6f8fa; }
.verdict { font-weight: 600; }
.FAIL, .CRASH { color: #cf222e; }
section { margin: 14px 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px; }
section.fail, section.crash { border-color: #cf222e; }
summary { cursor: pointer; font-weight: 600; }
.chart svg, .chart img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
ol.frames { margin: 2px 0 8px; font: 12px ui-monospace, monospace; }
.expected-tag { background: #ddf4ff; color: #0969da; border-radius: 4px; padding: 0 5px; font-size: 12px; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
";

/// Runs on load: every chart must have drawn something. Sets `data-charts` on `<body>`
/// to `ok N` or `broken: <names>`.
const CHECK: &str = "
window.addEventListener('load', function () {
  var broken = [], count = 0;
  document.querySelectorAll('.chart svg').forEach(function (svg) {
    count++;
    var box = svg.getBBox();
    if (!(box.width > 0 && box.height > 0)) broken.push(svg.closest('section').id);
  });
  document.body.setAttribute('data-charts', broken.length ? 'broken: ' + broken.join(' ') : 'ok ' + count);
});
";

/// The page for `report`. `svgs[i]` is the chart of `report.scenarios[i]`.
pub fn page(report: &Report, svgs: &[String]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>leakgate report {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&report.run_id)
    );
    let _ = writeln!(out, "<h1>leakgate report</h1>");
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} &middot; run {}{}</p>",
        escape(&totals_line(&report.scenarios)),
        escape(&report.run_id),
        environment(report)
    );
    for note in run_wide_notes(&report.scenarios) {
        let _ = writeln!(out, "<p class=\"meta\">note: {}</p>", escape(note));
    }
    table(&mut out, report);
    for (index, scenario) in report.scenarios.iter().enumerate() {
        let svg = svgs.get(index).map(String::as_str);
        section(&mut out, scenario, svg);
    }
    let _ = write!(out, "<script>{CHECK}</script>\n</body>\n</html>\n");
    out
}

fn environment(report: &Report) -> String {
    let Some(env) = &report.environment else {
        return String::new();
    };
    let mut parts = vec![
        format!("leakgate {}", env.leakgate_version),
        env.target.clone(),
        env.profile.clone(),
    ];
    parts.extend(env.rustc.clone());
    parts.extend(env.git_commit.as_ref().map(|c| format!("commit {c}")));
    format!(" &middot; {}", escape(&parts.join(" · ")))
}

fn anchor(scenario: &ScenarioReport) -> String {
    format!("s-{}", super::file_stem(&scenario.name))
}

fn row_class(scenario: &ScenarioReport) -> &'static str {
    match verdict_label(scenario) {
        "FAIL" => "fail",
        "CRASH" => "crash",
        "pass*" => "expected",
        _ => "pass",
    }
}

fn table(out: &mut String, report: &Report) {
    let _ = write!(out, "<table>\n<thead><tr>");
    for column in TABLE_HEADER {
        let _ = write!(out, "<th>{column}</th>");
    }
    let _ = writeln!(out, "</tr></thead>\n<tbody>");
    for scenario in &report.scenarios {
        let [name, verdict, rest @ ..] = table_row(scenario);
        let _ = write!(
            out,
            "<tr class=\"{}\"><td><a href=\"#{}\">{}</a></td><td class=\"verdict {verdict}\">{verdict}</td>",
            row_class(scenario),
            anchor(scenario),
            escape(&name),
        );
        let (numbers, evidence) = rest.split_at(rest.len() - 1);
        for cell in numbers {
            let _ = write!(out, "<td class=\"num\">{}</td>", escape(cell));
        }
        let _ = writeln!(out, "<td>{}</td></tr>", escape(&evidence[0]));
    }
    let _ = writeln!(out, "</tbody>\n</table>");
}

fn section(out: &mut String, scenario: &ScenarioReport, svg: Option<&str>) {
    let failing = scenario.verdict != Verdict::Pass;
    let _ = writeln!(
        out,
        "<section id=\"{}\" class=\"{}\"><details{}>\n<summary>{} &mdash; {} &mdash; {}</summary>",
        anchor(scenario),
        row_class(scenario),
        if failing { " open" } else { "" },
        escape(&scenario.name),
        verdict_label(scenario),
        escape(&scenario.summary)
    );
    if let Some(svg) = svg {
        // The SVG document's own XML declaration has no place inside HTML.
        let element = svg.find("<svg").map_or(svg, |start| &svg[start..]);
        let _ = writeln!(out, "<div class=\"chart\">{element}</div>");
    }
    for finding in &scenario.findings {
        finding_html(out, finding);
    }
    if let Some(crash) = &scenario.crash {
        let _ = writeln!(out, "<h4>Crash in {}</h4>", escape(&crash.phase));
        if let Some(message) = &crash.message {
            let _ = writeln!(out, "<pre>{}</pre>", escape(message));
        }
        frames_html(out, &crash.stack);
    }
    if let Some(error) = &scenario.iteration_error {
        let _ = writeln!(
            out,
            "<p>{} iteration {} failed: {}</p>",
            escape(&error.phase),
            error.iteration,
            escape(&error.message)
        );
    }
    statistics_html(out, scenario);
    if let Some(comparison) = &scenario.baseline {
        let _ = writeln!(
            out,
            "<h4>Against baseline {}</h4>\n<ul>",
            escape(&comparison.baseline)
        );
        for delta in &comparison.deltas {
            let mark = if delta.regressed {
                "<b>regressed</b>: "
            } else {
                ""
            };
            let _ = writeln!(out, "<li>{mark}{}</li>", escape(&delta.describe()));
        }
        for site in &comparison.new_sites {
            let _ = writeln!(out, "<li><b>new survivor site</b>: {}</li>", escape(site));
        }
        let _ = writeln!(out, "</ul>");
    }
    for note in scenario
        .notes
        .iter()
        .filter(|n| !crate::text::is_run_wide(n))
    {
        let _ = writeln!(out, "<p class=\"meta\">note: {}</p>", escape(note));
    }
    if let Some(output) = scenario.output.as_deref().filter(|_| failing) {
        let _ = writeln!(
            out,
            "<details><summary>output</summary><pre>{}</pre></details>",
            escape(output)
        );
    }
    let _ = writeln!(out, "</details></section>");
}

fn finding_html(out: &mut String, finding: &Finding) {
    let tag = if finding.expected {
        " <span class=\"expected-tag\">expected</span>".to_owned()
    } else if let Some(rule) = &finding.suppressed {
        format!(
            " <span class=\"expected-tag\">suppressed by {}</span>",
            escape(rule)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "<h4>{}{tag}</h4>\n<p>{}</p>",
        finding.resource,
        escape(&finding.message)
    );
    if !finding.leaked.is_empty() {
        let _ = writeln!(out, "<ul>");
        for item in &finding.leaked {
            let _ = writeln!(out, "<li><code>{}</code></li>", escape(item));
        }
        let _ = writeln!(out, "</ul>");
    }
    for (rank, site) in finding.sites.iter().enumerate() {
        let iterations = if finding.measured_iterations > 0 {
            format!(
                ", from {}/{} iterations",
                site.iterations, finding.measured_iterations
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<p>site #{}: {} in {} blocks{iterations}</p>",
            rank + 1,
            bytes(site.bytes as i64),
            site.blocks
        );
        frames_html(out, &site.frames);
    }
}

fn frames_html(out: &mut String, frames: &[Frame]) {
    if frames.is_empty() {
        return;
    }
    let _ = writeln!(out, "<ol class=\"frames\">");
    for frame in frames {
        let location = match (&frame.file, frame.line) {
            (Some(file), Some(line)) => format!(" &nbsp;{}:{line}", escape(file)),
            (Some(file), None) => format!(" &nbsp;{}", escape(file)),
            _ => String::new(),
        };
        let _ = writeln!(out, "<li>{}{location}</li>", escape(&frame.function));
    }
    let _ = writeln!(out, "</ol>");
}

fn statistics_html(out: &mut String, scenario: &ScenarioReport) {
    if scenario.statistics.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<table><thead><tr><th>series</th><th>retained</th><th>tolerance</th><th>slope/iter</th>\
         <th>noise</th><th>new highs</th><th>floor rise</th><th>ending</th><th>reads as growth</th>\
         </tr></thead><tbody>"
    );
    for t in &scenario.statistics {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            t.resource,
            bytes(t.retained),
            bytes(t.tolerance),
            bytes(t.slope.round() as i64),
            bytes(t.noise as i64),
            t.new_highs,
            bytes(t.floor_rise),
            escape(&t.persistence),
            if t.growth { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out, "</tbody></table>");
}
