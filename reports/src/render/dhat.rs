//! DHAT viewer files: for each scenario with a heap or peak finding, its sites in
//! dhat-rs's `dhat-heap.json` format (file version 2, mode `rust-heap`), so they open in
//! DHAT's `dh_view.html` as a tree of sites with their bytes, blocks and frames.
//!
//! leakgate records where the blocks that survived (or made the peak) came from, not
//! every allocation: each site becomes one program point whose end and at-peak figures
//! are its surviving bytes and blocks, and whose totals are the same (a lower bound of
//! what it allocated). Lifetimes are not measured and read as zero.

use serde_json::{Value, json};

use crate::schema::{Finding, Frame, Report, Resource, ScenarioReport};

/// The DHAT file of `scenario`'s first heap or peak finding, or `None` without one.
pub fn file(scenario: &ScenarioReport, report: &Report) -> Option<String> {
    let finding = scenario
        .findings
        .iter()
        .find(|f| matches!(f.resource, Resource::Heap | Resource::Peak) && !f.sites.is_empty())?;
    Some(document(scenario, report, finding).to_string())
}

fn document(scenario: &ScenarioReport, report: &Report, finding: &Finding) -> Value {
    // Frame 0 is DHAT's root; each distinct frame gets the next index.
    let mut frames: Vec<String> = vec!["[root]".to_owned()];
    let mut index_of = |text: String| match frames.iter().position(|f| *f == text) {
        Some(index) => index,
        None => {
            frames.push(text);
            frames.len() - 1
        }
    };
    // DHAT's viewer refuses two program points with the same frames, which trimmed
    // stacks can be (two callers past the frames kept): such sites are added up.
    let mut points: Vec<(Vec<usize>, u64, u64)> = Vec::new();
    for site in &finding.sites {
        let fs: Vec<usize> = site
            .frames
            .iter()
            .map(|f| index_of(frame_text(f)))
            .collect();
        match points.iter_mut().find(|(frames, ..)| *frames == fs) {
            Some((_, bytes, blocks)) => {
                *bytes += site.bytes;
                *blocks += site.blocks;
            }
            None => points.push((fs, site.bytes, site.blocks)),
        }
    }
    // A site's survivors are what it holds at the end and at the peak; its totals are
    // at least that much.
    let points: Vec<Value> = points
        .into_iter()
        .map(|(fs, bytes, blocks)| {
            json!({
                "tb": bytes, "tbk": blocks, "tl": 0,
                "mb": bytes, "mbk": blocks,
                "gb": bytes, "gbk": blocks,
                "eb": bytes, "ebk": blocks,
                "fs": fs,
            })
        })
        .collect();
    let end_us = scenario.duration_ms.saturating_mul(1000);
    json!({
        "dhatFileVersion": 2,
        "mode": "rust-heap",
        "verb": "Allocated",
        "bklt": true,
        "bkacc": false,
        "tu": "µs",
        "Mtu": "s",
        "tuth": 10,
        "cmd": format!("leakgate {} ({}): {}", scenario.name, report.run_id, finding.message),
        "pid": 0,
        "tg": end_us,
        "te": end_us,
        "pps": points,
        "ftbl": frames,
    })
}

/// A frame as DHAT shows it: `function (file:line:0)`. The frames are symbolized and
/// trimmed (inlined calls expanded), so they carry no one address each.
fn frame_text(frame: &Frame) -> String {
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line}:0)", frame.function),
        _ => frame.function.clone(),
    }
}
