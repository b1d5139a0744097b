//! The report of a leakgate run: a versioned serde schema and its writers.
//!
//! This crate is the contract between the runner (crate `leakgate`) and everything that
//! reads its results: CI gates, dashboards, the pull-request summary. A run writes one
//! [`Report`]: scenario by scenario into `report.jsonl`, assembled into `report.json`.
//! [`FORMAT_VERSION`] changes whenever a field changes meaning or disappears, or when a
//! reader needs to know what was added.
//!
//! ```
//! use leakgate_reports::{Report, FORMAT_VERSION};
//! let report = Report::new("2026-11-21T12-00-00-123");
//! assert_eq!(report.format_version, FORMAT_VERSION);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod baseline;
pub mod history;
mod json;
#[cfg(feature = "render")]
pub mod render;
mod schema;
pub mod text;

pub use json::{
    LINES_FILE, LOCK_FILE, REPORT_FILE, ReportError, append_scenario, assemble, read_report,
    write_assembled, write_atomically, write_report,
};
pub use schema::*;

/// A scenario's name as a file name: `sqlite/checkpoint_loop` → `sqlite~checkpoint_loop`.
/// ASCII letters, digits, `-`, `_` and `.` stay, `/` becomes `~`, and any other byte
/// becomes `+XX` (hex), so that two names never share a file.
pub fn file_stem(name: &str) -> String {
    let mut stem = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'/' => stem.push('~'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') => {
                stem.push(b as char)
            }
            b => stem.push_str(&format!("+{b:02x}")),
        }
    }
    stem
}
