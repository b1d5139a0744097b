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
