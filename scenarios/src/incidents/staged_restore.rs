//! Apache Kvrocks's failed restore: the restore copies the backup into `db.tmp` and
//! renames it into place. When the copy fails midway (a full disk, an I/O error), the
//! early return skips the cleanup; `db.tmp` stays behind, and every later restore fails
//! because `db.tmp` already exists.

use std::path::Path;

use leakgate::Resource;
use leakgate::fault::failpoints::fail::fail_point;

use crate::engine::{Engine, EngineResult, Snapshot};

/// The staging directory, next to the restore's target.
pub const STAGING: &str = "db.tmp";

/// The failpoint between the staged copy and the rename into place.
pub const BEFORE_RENAME: &str = "restore::before_rename";

/// `E` restored as Kvrocks restores: through `db.tmp`. `CLEANS_UP = false` is the
/// incident (the error path leaves `db.tmp`); `true` is its fix, which removes it.
pub struct StagedRestore<E, const CLEANS_UP: bool>(E);

/// Creates `db.tmp` next to `into` (failing if a previous restore left it, as Kvrocks
/// does), restores `E`'s backup inside it, and renames the result into place. The planted
/// bug, when `cleans_up` is false: the error path returns without removing `db.tmp`.
#[inline(never)]
fn restore_through_staging<E: Engine>(
    from: &Path,
    into: &Path,
    cleans_up: bool,
) -> EngineResult<()> {
    let staging = into.with_file_name(STAGING);
    std::fs::create_dir(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let staged = E::restore(from, &staging.join("db")).and_then(|()| {
        fail_point!(BEFORE_RENAME, |_| Err(
            "injected failure before the rename".into()
        ));
        std::fs::rename(staging.join("db"), into)?;
        Ok(std::fs::remove_dir(&staging)?)
    });
    if staged.is_err() && cleans_up {
        let _ = std::fs::remove_dir_all(&staging);
    }
    staged
}

impl<E: Engine, const CLEANS_UP: bool> Engine for StagedRestore<E, CLEANS_UP> {
    const NAME: &'static str = if CLEANS_UP {
        "incident/staged_restore_cleans_up"
    } else {
        "incident/staged_restore_leaves_db_tmp"
    };

    fn open(dir: &Path) -> EngineResult<Self> {
        E::open(dir).map(Self)
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        self.0.write(records)
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        self.0.read(key)
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        self.0.checkpoint()
    }

    fn tolerances() -> Vec<(Resource, u64)> {
        E::tolerances()
    }

    fn supports_snapshots() -> bool {
        E::supports_snapshots()
    }

    fn snapshot(&mut self) -> EngineResult<Box<dyn Snapshot>> {
        self.0.snapshot()
    }

    fn supports_backup() -> bool {
        E::supports_backup()
    }

    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        self.0.backup(to)
    }

    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        restore_through_staging::<E>(from, into, CLEANS_UP)
    }

    fn restore_failpoints() -> Vec<&'static str> {
        let mut failpoints = E::restore_failpoints();
        failpoints.push(BEFORE_RENAME);
        failpoints
    }
}
