//! Adapters for real engines.

mod fjall;
mod redb;
mod sqlite;

pub use self::fjall::Fjall;
pub use self::redb::Redb;
pub use self::sqlite::Sqlite;

use std::path::Path;

use crate::EngineResult;

/// Copies every file of the directory `from` into `into`, which it creates; on error it
/// removes `into` again, so a failed restore leaves nothing behind.
pub(crate) fn copy_dir_or_nothing(from: &Path, into: &Path) -> EngineResult<()> {
    let copied = (|| -> std::io::Result<()> {
        std::fs::create_dir(into)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            std::fs::copy(entry.path(), into.join(entry.file_name()))?;
        }
        Ok(())
    })();
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    Ok(copied?)
}
