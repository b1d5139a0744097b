//! Adapters for real engines, each behind the feature of its name (`sqlite`, `lmdb`,
//! `redb`, `fjall` by default; `rocksdb`), and helpers for adapters of your own.

#[cfg(feature = "fjall")]
mod fjall;
#[cfg(feature = "lmdb")]
mod lmdb;
#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "fjall")]
pub use self::fjall::Fjall;
#[cfg(feature = "lmdb")]
pub use self::lmdb::{DATA_FILE as LMDB_DATA_FILE, Lmdb};
#[cfg(feature = "redb")]
pub use self::redb::Redb;
#[cfg(feature = "rocksdb")]
pub use self::rocks::RocksDb;
#[cfg(feature = "sqlite")]
pub use self::sqlite::Sqlite;

use std::path::Path;

use leakgate::fault::failpoints::fail::fail_point;

use crate::EngineResult;

/// The failpoint before each file [`copy_dir_or_nothing`] copies.
pub const COPY_FILE: &str = "restore::copy_file";

/// Copies the directory tree `from` into `into`, which it creates; on error it removes
/// `into` again, so a failed restore leaves nothing behind. Passes [`COPY_FILE`] before
/// each file.
pub fn copy_dir_or_nothing(from: &Path, into: &Path) -> EngineResult<()> {
    let copied = copy_tree(from, into);
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    Ok(copied?)
}

fn copy_tree(from: &Path, into: &Path) -> std::io::Result<()> {
    std::fs::create_dir(into)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = into.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fail_point!(COPY_FILE, |_| Err(std::io::Error::other(
                "injected failure"
            )));
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
