//! RocksDB through the `rocksdb` crate (feature `rocksdb`): memtable flush as the
//! checkpoint, and `BackupEngine` for backup and restore, which is the path Apache
//! Kvrocks restores through. RocksDB allocates with C++'s `new`, so its memory is the C
//! heap.
//!
//! Options are RocksDB's defaults but for the block cache, capped at [`BLOCK_CACHE`]: the
//! default (a 32 MiB HyperClockCache) takes each new table's data blocks as they are
//! read, so a checkpoint loop's C heap grows by about 24 KiB per flush until the cache is
//! full, a cache warming up for longer than any run, not a leak (measured with C heap
//! sites: `rocksdb::AllocateBlock` under `BlockFetcher::ReadBlock`).

use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{BlockBasedOptions, Cache, DB, Env, Options, WriteBatch};

use crate::engine::{Engine, EngineResult};

/// The block cache's capacity: a few tables' worth of data blocks.
pub const BLOCK_CACHE: usize = 256 << 10;

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
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE));
        options.set_block_based_table_factory(&table);
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
