//! The report of a leakgate run: a versioned serde schema and its writers.
//!
//! This crate is the contract between the runner (crate `leakgate`) and everything that
//! reads its results: CI gates, dashboards, the pull-request summary. A run writes one
//! [`Report`] as `report.json`; [`FORMAT_VERSION`] changes whenever a field changes meaning
//! or disappears (adding a field does not change it).
//!
//! ```
//! use leakgate_reports::{Report, FORMAT_VERSION};
//! let report = Report::new("2026-11-21T12-00-00-123");
//! assert_eq!(report.format_version, FORMAT_VERSION);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod json;
mod schema;

pub use json::{ReportError, merge_scenario, read_report, write_report};
pub use schema::*;
