//! Fault injection for error paths: a full disk, failpoints in the code under test, and
//! page corruption for crash-recovery scenarios.
//!
//! After an injected failure the usual verdict applies: the failed operation must leave
//! no memory, descriptors, threads or files behind, so a scenario that injects a fault
//! each iteration catches error paths that forget to clean up.
//!
//! ```no_run
//! use leakgate::fault;
//! # fn restore(_: &std::path::Path) -> std::io::Result<()> { Ok(()) }
//! # let dir = std::path::Path::new("/tmp");
//! // Writes that would make any file larger than 64 KiB fail with EFBIG.
//! let failed = fault::disk_full(64 << 10, || restore(dir));
//! assert!(failed.is_err());
//! ```

mod disk;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod pages;

pub use disk::disk_full;
