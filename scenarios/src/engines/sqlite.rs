//! SQLite through `rusqlite` (bundled): WAL mode, `wal_checkpoint(TRUNCATE)`, and the
//! online backup API. SQLite allocates with C's `malloc`, so its memory is the C heap.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, MAIN_DB, OptionalExtension, params};

use crate::engine::{Engine, EngineResult, Snapshot};
use crate::engines::{COPY_FILE, copy_dir_or_nothing};

fn read_record(connection: &Connection, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
    let mut select = connection.prepare_cached("SELECT value FROM records WHERE key = ?1")?;
    Ok(select
        .query_row(params![key], |row| row.get(0))
        .optional()?)
}

/// A SQLite database in `<dir>/data.db`, in WAL mode.
pub struct Sqlite {
    connection: Connection,
    path: PathBuf,
}

/// A second connection inside an open read transaction.
struct SqliteSnapshot {
    connection: Connection,
}

impl Snapshot for SqliteSnapshot {
    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        read_record(&self.connection, key)
    }
}

const FILE: &str = "data.db";

impl Engine for Sqlite {
    const NAME: &'static str = "sqlite";

    fn version() -> Option<String> {
        Some(rusqlite::version().to_owned())
    }

    fn open(dir: &Path) -> EngineResult<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let connection = Connection::open(&path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // A checkpoint blocked by a reader reports it at once instead of waiting for the
        // busy timeout (rusqlite's default is 5 s) and then giving up anyway.
        connection.busy_timeout(std::time::Duration::ZERO)?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, value BLOB NOT NULL)",
        )?;
        Ok(Self { connection, path })
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT OR REPLACE INTO records (key, value) VALUES (?1, ?2)")?;
            for (key, value) in records {
                insert.execute(params![key, value])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        read_record(&self.connection, key)
    }

    /// `wal_checkpoint(TRUNCATE)`; a checkpoint a reader blocks is not an error (the
    /// pragma reports it in its first column), the WAL just keeps its frames.
    fn checkpoint(&mut self) -> EngineResult<()> {
        self.connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn supports_snapshots() -> bool {
        true
    }

    fn snapshot(&mut self) -> EngineResult<Box<dyn Snapshot>> {
        let connection = Connection::open(&self.path)?;
        // The read transaction starts at its first read, and pins the WAL from there.
        connection.execute_batch("BEGIN")?;
        connection.query_row("SELECT count(*) FROM records", [], |_| Ok(()))?;
        Ok(Box::new(SqliteSnapshot { connection }))
    }

    fn supports_backup() -> bool {
        true
    }

    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        self.connection.backup(
            MAIN_DB,
            to.join(FILE),
            None::<fn(rusqlite::backup::Progress)>,
        )?;
        Ok(())
    }

    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        copy_dir_or_nothing(from, into)
    }

    fn restore_failpoints() -> Vec<&'static str> {
        vec![COPY_FILE]
    }
}
