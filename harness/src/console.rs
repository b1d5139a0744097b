//! What people read: the failure text printed under a failed scenario.

use std::fmt::Write;
use std::path::Path;

use leakgate_reports::{Frame, ScenarioReport, Verdict};

/// Sites printed per finding.
const SITES_SHOWN: usize = 3;
/// Frames printed per site.
const FRAMES_SHOWN: usize = 6;
/// Leaked things (descriptors, threads, paths) listed per finding.
const LEAKED_SHOWN: usize = 10;
/// Lines of the child's output shown under a crash.
const OUTPUT_LINES: usize = 20;

/// `16 B`, `3.1 KiB`, `12.0 MiB`; negative amounts keep their sign.
pub(crate) fn bytes(amount: i64) -> String {
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
pub(crate) fn failure_text(report: &ScenarioReport, report_path: Option<&Path>) -> String {
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
    for note in &report.notes {
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

#[cfg(test)]
mod tests {
    use super::*;
    use leakgate_reports::{Finding, Resource, Site};

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
