//! RocksDB through the `rocksdb` crate (feature `rocksdb`): memtable flush as the
//! checkpoint, and `BackupEngine` for backup and restore, which is the path Apache
//! Kvrocks restores through. RocksDB allocates with C++'s `new`, so its memory is the C
//! heap.

use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{DB, Env, Options, WriteBatch};

use crate::engine::{Engine, EngineResult};

/// A RocksDB database in `dir`.
pub struct RocksDb {
    db: DB,
}

fn backup_engine(dir: &Path) -> EngineResult<BackupEngine> {
    let env = Env::new()?;
    Ok(BackupEngine::open(&BackupEngineOptions::new(dir)?, &env)?)
}

impl Engine for RocksDb {
    const NAME: &'static str = "rocksdb";

    fn open(dir: &Path) -> EngineResult<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        Ok(Self {
            db: DB::open(&options, dir)?,
        })
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        let mut batch = WriteBatch::default();
        for (key, value) in records {
            batch.put(key, value);
        }
        self.db.write(batch)?;
        Ok(())
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        self.db.flush()?;
        Ok(())
    }

    fn supports_backup() -> bool {
        true
    }

    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        backup_engine(to)?.create_new_backup_flush(&self.db, true)?;
        Ok(())
    }

    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        let restored = backup_engine(from).and_then(|mut engine| {
            Ok(engine.restore_from_latest_backup(into, into, &RestoreOptions::default())?)
        });
        if restored.is_err() {
            // RocksDB leaves the half-restored directory; a failed restore must not.
            let _ = std::fs::remove_dir_all(into);
        }
        restored
    }
}
