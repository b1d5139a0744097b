//! Text for people: byte amounts, the failure text printed under a failed scenario (on
//! the console and in JUnit), and the end-of-run table.

use std::fmt::Write;
use std::path::Path;

use crate::schema::{Frame, Resource, ScenarioReport, Verdict};

/// A note for a whole run, printed once at its end rather than under each scenario:
/// sites were captured slowly because the code has no frame pointers.
pub const DWARF_NOTE: &str = "allocation sites captured by DWARF unwinding (slow); build with \
     RUSTFLAGS=\"-C force-frame-pointers=yes\" for fast capture";

/// A note for a whole run: frames lack file:line, and the line of `Cargo.toml` that
/// fixes it.
pub const NO_DEBUG_INFO_NOTE: &str = "some frames have no file:line because this build has no \
     debug info; add `debug = \"line-tables-only\"` under `[profile.release]` (or the profile \
     in use) in Cargo.toml";

/// Whether `note` concerns the whole run (see [`DWARF_NOTE`], [`NO_DEBUG_INFO_NOTE`]).
pub fn is_run_wide(note: &str) -> bool {
    note == DWARF_NOTE || note == NO_DEBUG_INFO_NOTE
}

/// Sites printed per finding.
const SITES_SHOWN: usize = 3;
/// Frames printed per site.
const FRAMES_SHOWN: usize = 6;
/// Leaked things (descriptors, threads, paths) listed per finding.
const LEAKED_SHOWN: usize = 10;
/// Lines of the child's output shown under a crash.
const OUTPUT_LINES: usize = 20;

/// `16 B`, `3.1 KiB`, `12.0 MiB`; negative amounts keep their sign.
pub fn bytes(amount: i64) -> String {
    let magnitude = amount.unsigned_abs();
    let sign = if amount < 0 { "-" } else { "" };
    if magnitude < 1024 {
        return format!("{sign}{magnitude} B");
    }
    let units = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = magnitude as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{sign}{value:.1} {}", units[unit])
}

/// The text under a failed or crashed scenario: summary, findings with their top sites,
/// crash details and output, and where the report is.
pub fn failure_text(report: &ScenarioReport, report_path: Option<&Path>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.summary);
    for finding in report
        .findings
        .iter()
        .filter(|f| !f.expected || report.verdict != Verdict::Pass)
    {
        if report.findings.len() > 1 {
            let _ = writeln!(out, "{}: {}", finding.resource, finding.message);
        }
        if let Some(rule) = &finding.suppressed {
            let _ = writeln!(out, "  suppressed by {rule}");
        }
        for item in finding.leaked.iter().take(LEAKED_SHOWN) {
            let _ = writeln!(out, "  - {item}");
        }
        if finding.leaked.len() > LEAKED_SHOWN {
            let _ = writeln!(
                out,
                "  - … and {} more (all in the report)",
                finding.leaked.len() - LEAKED_SHOWN
            );
        }
        for (rank, site) in finding.sites.iter().take(SITES_SHOWN).enumerate() {
            let _ = writeln!(
                out,
                "  #{} {} in {} blocks, from {}/{} iterations",
                rank + 1,
                bytes(site.bytes as i64),
                site.blocks,
                site.iterations,
                finding.measured_iterations
            );
            for frame in site.frames.iter().take(FRAMES_SHOWN) {
                let _ = writeln!(out, "     at {}{}", frame.function, location(frame));
            }
        }
    }
    if let Some(crash) = &report.crash {
        write_crash_stack(&mut out, &crash.stack);
    }
    if let Some(comparison) = &report.baseline {
        let _ = writeln!(out, "  against baseline {}:", comparison.baseline);
        for delta in &comparison.deltas {
            let mark = if delta.regressed { "REGRESSED" } else { "ok" };
            let _ = writeln!(out, "    {mark:9} {}", delta.describe());
        }
        for site in &comparison.new_sites {
            let _ = writeln!(out, "    REGRESSED new survivor site {site}");
        }
    }
    for note in report.notes.iter().filter(|n| !is_run_wide(n)) {
        let _ = writeln!(out, "  note: {note}");
    }
    if let Some(output) = report
        .output
        .as_deref()
        .filter(|_| report.verdict == Verdict::Crashed)
    {
        let lines: Vec<&str> = output.lines().collect();
        let _ = writeln!(
            out,
            "  --- last {} lines of its output ---",
            lines.len().min(OUTPUT_LINES)
        );
        for line in &lines[lines.len().saturating_sub(OUTPUT_LINES)..] {
            let _ = writeln!(out, "  | {line}");
        }
    }
    if let Some(path) = report_path {
        let _ = writeln!(out, "  report {}", path.display());
    }
    out
}

/// The faulting thread's top frames, a run of the same frame (a recursion) folded into
/// one line with its count.
fn write_crash_stack(out: &mut String, stack: &[Frame]) {
    let mut shown = 0;
    let mut frames = stack.iter().peekable();
    while let Some(frame) = frames.next() {
        if shown == FRAMES_SHOWN {
            break;
        }
        let mut repeats = 1;
        while frames.next_if(|next| *next == frame).is_some() {
            repeats += 1;
        }
        let times = if repeats > 1 {
            format!(" (×{repeats})")
        } else {
            String::new()
        };
        let _ = writeln!(out, "  at {}{}{times}", frame.function, location(frame));
        shown += 1;
    }
}

fn location(frame: &Frame) -> String {
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("  {file}:{line}"),
        (Some(file), None) => format!("  {file}"),
        _ => String::new(),
    }
}

/// The verdict as the table shows it: `pass`, `pass*` (passed with an expected
/// finding or a pinned crash), `FAIL` or `CRASH`.
pub fn verdict_label(scenario: &ScenarioReport) -> &'static str {
    match scenario.verdict {
        Verdict::Pass
            if scenario.findings.iter().any(|f| f.expected) || scenario.crash.is_some() =>
        {
            "pass*"
        }
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Crashed => "CRASH",
    }
}

/// Heap growth per measured iteration, as the verdict saw it: the leak's rate when the
/// heap leaked, else the series' robust slope.
pub fn heap_per_iteration(scenario: &ScenarioReport) -> Option<f64> {
    scenario
        .finding(Resource::Heap)
        .map(|f| f.per_iteration)
        .or_else(|| scenario.trend(Resource::Heap).map(|t| t.slope))
}

/// The heap's highest point above its baseline during the measured iterations.
pub fn peak_above_baseline(scenario: &ScenarioReport) -> Option<u64> {
    let baseline = scenario.series.baseline?.heap_bytes;
    let peak = scenario
        .series
        .iterations
        .iter()
        .map(|s| s.heap_peak)
        .max()?;
    Some(peak.saturating_sub(baseline))
}

/// How far the scenario stayed from its threshold (negative: past it). With a peak
/// budget, the budget less the peak; otherwise the heap's tolerance less the rise of its
/// floor (a leak raises the floor of the series beyond the tolerance; noise and caches
/// that fill and evict do not). `None` without statistics.
pub fn margin(scenario: &ScenarioReport) -> Option<i64> {
    let budget = scenario.policy.as_ref().and_then(|p| p.peak_budget);
    match (budget, peak_above_baseline(scenario)) {
        (Some(budget), Some(peak)) => Some(budget as i64 - peak as i64),
        _ => scenario
            .trend(Resource::Heap)
            .map(|t| t.tolerance - t.floor_rise.max(0)),
    }
}

/// What the verdict rests on, in a few words: the crash's cause, the expected or
/// unexpected findings' resources, or `clean`.
pub fn evidence(scenario: &ScenarioReport) -> String {
    if let Some(crash) = &scenario.crash {
        let cause = serde_json::to_value(crash.cause)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        return format!("crash: {cause}");
    }
    if scenario.findings.is_empty() {
        return match (scenario.verdict, &scenario.iteration_error) {
            (_, Some(_)) => "iteration error".to_owned(),
            (Verdict::Pass, None) => "clean".to_owned(),
            (_, None) => "expectation not met".to_owned(),
        };
    }
    scenario
        .findings
        .iter()
        .map(|f| {
            if f.expected {
                format!("{} (expected)", f.resource)
            } else if f.suppressed.is_some() {
                format!("{} (suppressed)", f.resource)
            } else {
                f.resource.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1.2 s`, `850 ms`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The columns of [`table_row`].
pub const TABLE_HEADER: [&str; 7] = [
    "scenario",
    "verdict",
    "heap/iter",
    "peak",
    "margin",
    "time",
    "evidence",
];

/// One scenario's row of the run table: name, [`verdict_label`], heap growth per
/// iteration, peak above baseline, [`margin`], duration, [`evidence`].
pub fn table_row(s: &ScenarioReport) -> [String; 7] {
    [
        s.name.clone(),
        verdict_label(s).to_owned(),
        heap_per_iteration(s).map_or("-".to_owned(), |r| bytes(r.round() as i64)),
        peak_above_baseline(s).map_or("-".to_owned(), |p| bytes(p as i64)),
        margin(s).map_or("-".to_owned(), bytes),
        duration(s.duration_ms),
        evidence(s),
    ]
}

/// `12 scenarios: 10 passed (4 with an expected finding), 1 failed, 1 crashed`.
pub fn totals_line(scenarios: &[ScenarioReport]) -> String {
    let totals = crate::schema::Totals::of(scenarios);
    format!(
        "{} scenarios: {} passed ({} with an expected finding), {} failed, {} crashed",
        totals.scenarios,
        totals.passed,
        scenarios
            .iter()
            .filter(|s| verdict_label(s) == "pass*")
            .count(),
        totals.failed,
        totals.crashed
    )
}

/// The suppression rules that applied in `scenarios` but set no finding aside in any of
/// them: stale, the leak they were for is fixed (or the rule never matched).
pub fn stale_suppressions(scenarios: &[ScenarioReport]) -> Vec<&str> {
    let used: std::collections::BTreeSet<&str> = scenarios
        .iter()
        .flat_map(|s| &s.findings)
        .filter_map(|f| f.suppressed.as_deref())
        .collect();
    let mut stale: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s.policy.as_ref())
        .flat_map(|p| &p.suppressions)
        .map(String::as_str)
        .filter(|rule| !used.contains(rule))
        .collect();
    stale.sort_unstable();
    stale.dedup();
    stale
}

/// Each note of `scenarios` that concerns the whole run, once, sorted.
pub fn run_wide_notes(scenarios: &[ScenarioReport]) -> Vec<&str> {
    let mut notes: Vec<&str> = scenarios
        .iter()
        .flat_map(|s| &s.notes)
        .map(String::as_str)
        .filter(|n| is_run_wide(n))
        .collect();
    notes.sort_unstable();
    notes.dedup();
    notes
}

/// The end-of-run table: one [`table_row`] per scenario, the totals, and each note that
/// concerns the whole run, once.
pub fn run_table(scenarios: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 7]> = scenarios.iter().map(table_row).collect();
    let mut widths = TABLE_HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            // Names and words left-aligned, amounts right-aligned; the last cell unpadded.
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            match i {
                0 | 1 => text += &format!("{cell}{pad} "),
                6 => text += cell,
                _ => text += &format!("{pad}{cell} "),
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut out, &TABLE_HEADER);
    for row in &rows {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    let _ = writeln!(out, "{}", totals_line(scenarios));
    for note in run_wide_notes(scenarios) {
        let _ = writeln!(out, "note: {note}");
    }
    for rule in stale_suppressions(scenarios) {
        let _ = writeln!(out, "stale suppression: {rule} matched nothing in this run");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Finding, Resource, Site};

    #[test]
    fn formats_bytes_like_people_write_them() {
        assert_eq!(bytes(16), "16 B");
        assert_eq!(bytes(3200), "3.1 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(bytes(-2048), "-2.0 KiB");
    }

    #[test]
    fn failure_text_shows_growth_sites_and_report_path() {
        let mut report = ScenarioReport::new(
            "demo",
            Verdict::Fail,
            "heap grew 12.5 KiB over 200 measured iterations",
        );
        let mut finding = Finding::new(Resource::Heap, 12_800, 200);
        let mut site = Site::new(12_800, 200, 200, 0, 199);
        site.frames.push(Frame::new(
            "my_engine::pin_segment",
            Some("src/checkpoint.rs".into()),
            Some(212),
        ));
        finding.sites.push(site);
        report.findings.push(finding);
        let text = failure_text(
            &report,
            Some(Path::new("target/leakgate/latest/report.json")),
        );
        assert_eq!(
            text,
            "heap grew 12.5 KiB over 200 measured iterations\n  \
             #1 12.5 KiB in 200 blocks, from 200/200 iterations\n     \
             at my_engine::pin_segment  src/checkpoint.rs:212\n  \
             report target/leakgate/latest/report.json\n"
        );
    }
}
