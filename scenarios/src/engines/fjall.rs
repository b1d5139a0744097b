//! fjall: an LSM-tree. The checkpoint flushes the memtable and runs a major compaction,
//! so the number of table files returns to where it was; fjall has no backup API.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use leakgate::Resource;

use crate::engine::{Engine, EngineResult, Snapshot};

/// An MVCC snapshot of the database.
struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    records: Keyspace,
}

impl Snapshot for FjallSnapshot {
    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self
            .snapshot
            .get(&self.records, key)?
            .map(|value| value.to_vec()))
    }
}

/// Block cache of the databases the templates open.
const CACHE_BYTES: u64 = 256 << 10;
/// Memtable bytes before fjall flushes, in the databases the templates open.
const MEMTABLE_BYTES: u64 = 256 << 10;

/// A fjall database in `dir`, with one keyspace.
pub struct Fjall {
    database: Database,
    records: Keyspace,
}

impl Engine for Fjall {
    const NAME: &'static str = "fjall";

    fn open(dir: &Path) -> EngineResult<Self> {
        // A block cache small enough to fill during warm-up: fjall's default (tens of
        // MiB) keeps growing over any short run, which is a cache warming up, not a leak.
        let database = Database::builder(dir).cache_size(CACHE_BYTES).open()?;
        // Likewise the memtable: it holds every version until it flushes, so a replay's
        // peak follows the log until the memtable (64 MiB by default) is full.
        let records = database.keyspace("records", || {
            KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
        })?;
        Ok(Self { database, records })
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        let mut batch = self.database.batch();
        for (key, value) in records {
            batch.insert(&self.records, key.as_slice(), value.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.records.get(key)?.map(|value| value.to_vec()))
    }

    /// Measured with fjall 3.1.13 over `checkpoint_loop` (100 iterations after 30 of
    /// warm-up): the heap wanders by ±12 KiB and ends about 11 KiB up, all of it in the
    /// block cache (`quick_cache` slab growth and cached blocks, bounded by
    /// `CACHE_BYTES`); the manifest grows once by about 255 bytes and then stays. Neither
    /// keeps growing, so they are allowed up to the cache's size and a page.
    fn tolerances() -> Vec<(Resource, u64)> {
        vec![(Resource::Heap, CACHE_BYTES), (Resource::Disk, 4096)]
    }

    fn supports_snapshots() -> bool {
        true
    }

    fn snapshot(&mut self) -> EngineResult<Box<dyn Snapshot>> {
        Ok(Box::new(FjallSnapshot {
            snapshot: self.database.snapshot(),
            records: self.records.clone(),
        }))
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        self.records.rotate_memtable_and_wait()?;
        self.records.major_compact()?;
        Ok(())
    }
}
