//! Seeded incident reproductions on real engines: each plants a real incident's bug, so
//! the test targets can show leakgate catching and attributing it next to its fixed
//! twin, which must pass.
//!
//! | incident | here | caught as |
//! |---|---|---|
//! | MatrixOne `TestCkpLeak` | [`CheckpointPinsSegments`] over SQLite | heap, at `pin_segment` |
//! | MatrixOne PITR OOM | [`crate::templates::pitr_replay`] with `Replay::WholeLog` | peak, at `replay_whole_log` |
//! | rqlite's WAL | [`crate::templates::blocked_checkpoint`] with no release | disk |
//! | Kvrocks `db.tmp` | [`StagedRestore`] without cleanup | files, `db.tmp` |
//! | bbolt page cycle | [`page_cycle_check`] with [`Walk::Unguarded`] on LMDB | stack overflow, in `count_leaves` |

mod checkpoint;
#[cfg(feature = "lmdb")]
mod page_cycle;
mod staged_restore;

pub use checkpoint::CheckpointPinsSegments;
#[cfg(feature = "lmdb")]
pub use page_cycle::{Walk, page_cycle_check};
pub use staged_restore::StagedRestore;
