//! redb: a copy-on-write B-tree in one file. Backups are copies of the file taken between
//! committed write transactions (redb has no online backup API). Persistent savepoints
//! give point-in-time restore.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::engine::{Engine, EngineResult, Savepoints, Snapshot};
use crate::engines::{COPY_FILE, copy_dir_or_nothing};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const FILE: &str = "data.redb";

fn read_in(transaction: &redb::ReadTransaction, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
    let table = transaction.open_table(RECORDS)?;
    Ok(table.get(key)?.map(|value| value.value().to_vec()))
}

/// A read transaction.
struct RedbSnapshot(redb::ReadTransaction);

impl Snapshot for RedbSnapshot {
    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        read_in(&self.0, key)
    }
}

/// A redb database in `<dir>/data.redb`.
pub struct Redb {
    database: Database,
    path: PathBuf,
}

impl Engine for Redb {
    const NAME: &'static str = "redb";

    fn open(dir: &Path) -> EngineResult<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let database = Database::create(&path)?;
        let write = database.begin_write()?;
        write.open_table(RECORDS)?;
        write.commit()?;
        Ok(Self { database, path })
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        let write = self.database.begin_write()?;
        {
            let mut table = write.open_table(RECORDS)?;
            for (key, value) in records {
                table.insert(key.as_slice(), value.as_slice())?;
            }
        }
        write.commit()?;
        Ok(())
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        read_in(&self.database.begin_read()?, key)
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        // Every commit is durable; compaction returns the space old pages held.
        self.database.compact()?;
        Ok(())
    }

    fn supports_snapshots() -> bool {
        true
    }

    fn snapshot(&mut self) -> EngineResult<Box<dyn Snapshot>> {
        Ok(Box::new(RedbSnapshot(self.database.begin_read()?)))
    }

    fn supports_backup() -> bool {
        true
    }

    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        // No write transaction is open between calls, so the file is consistent.
        std::fs::copy(&self.path, to.join(FILE))?;
        Ok(())
    }

    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        copy_dir_or_nothing(from, into)
    }

    fn restore_failpoints() -> Vec<&'static str> {
        vec![COPY_FILE]
    }
}

impl Savepoints for Redb {
    fn savepoint(&mut self) -> EngineResult<u64> {
        let write = self.database.begin_write()?;
        let id = write.persistent_savepoint()?;
        write.commit()?;
        Ok(id)
    }

    fn restore_savepoint(&mut self, id: u64) -> EngineResult<()> {
        let mut write = self.database.begin_write()?;
        let savepoint = write.get_persistent_savepoint(id)?;
        write.restore_savepoint(&savepoint)?;
        write.commit()?;
        Ok(())
    }

    fn delete_savepoint(&mut self, id: u64) -> EngineResult<()> {
        let write = self.database.begin_write()?;
        if !write.delete_persistent_savepoint(id)? {
            return Err(format!("redb has no savepoint {id}").into());
        }
        write.commit()?;
        Ok(())
    }
}
