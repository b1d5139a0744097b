//! LMDB through heed: a copy-on-write B+tree in one memory-mapped file, like bbolt.
//! Backups are LMDB's own environment copy (`mdb_env_copy2`); the checkpoint is a forced
//! sync (every commit is already durable).

#![allow(unsafe_code)]

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, CompactionOption, Database, Env, EnvOpenOptions, RoTxn, WithoutTls};

use crate::engine::{Engine, EngineResult, Snapshot};
use crate::engines::{COPY_FILE, copy_dir_or_nothing};

/// LMDB's data file in an environment directory.
pub const DATA_FILE: &str = "data.mdb";

/// The largest the map may grow; LMDB reserves the address space, not the memory.
const MAP_BYTES: usize = 256 << 20;

/// The unnamed database, which holds the records. heed ties a [`Database`] handle to a
/// borrow of its [`Env`], so the adapter opens it per operation (for the unnamed
/// database this is a lookup, not a new handle).
fn records(env: &Env<WithoutTls>) -> EngineResult<Database<'_, Bytes, Bytes>> {
    let transaction = env.read_txn()?;
    env.open_databases_and_commit(transaction, |opener, transaction| {
        opener
            .open_database::<Bytes, Bytes>(transaction, None)
            .map(CommitOrAbort::<_, ()>::Commit)
    })?
    .unwrap_commit()
    .ok_or_else(|| "LMDB has no unnamed database".into())
}

fn read_in(
    env: &Env<WithoutTls>,
    transaction: &RoTxn<'_, WithoutTls>,
    key: &[u8],
) -> EngineResult<Option<Vec<u8>>> {
    Ok(records(env)?.get(transaction, key)?.map(<[u8]>::to_vec))
}

/// A read transaction. It owns a handle on the environment, which stays open while it
/// lives; while it lives LMDB cannot reuse the pages it sees.
struct LmdbSnapshot {
    env: Env<WithoutTls>,
    transaction: RoTxn<'static, WithoutTls>,
}

impl Snapshot for LmdbSnapshot {
    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        read_in(&self.env, &self.transaction, key)
    }
}

/// An LMDB environment in `dir` (`data.mdb` and `lock.mdb`).
pub struct Lmdb {
    env: Env<WithoutTls>,
}

impl Engine for Lmdb {
    const NAME: &'static str = "lmdb";

    fn version() -> Option<String> {
        let version = heed::lmdb_version();
        Some(format!(
            "{}.{}.{}",
            version.major, version.minor, version.patch
        ))
    }

    fn open(dir: &Path) -> EngineResult<Self> {
        std::fs::create_dir_all(dir)?;
        // Without thread-local reader slots, so a snapshot and a read can be open at once
        // on one thread.
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(MAP_BYTES);
        // SAFETY: the templates give every environment its own directory, nothing else
        // writes its files while it is open, and heed refuses a second open of the same
        // path in this process. A file damaged before the open (crash_recovery) may make
        // LMDB misbehave; that is what the scenario is for, and leakgate contains it in
        // a child process.
        let env = unsafe { options.open(dir)? };
        let transaction = env.write_txn()?;
        env.create_databases_and_commit(transaction, |opener, transaction| {
            opener
                .create_database::<Bytes, Bytes>(transaction, None)
                .map(|_| CommitOrAbort::<_, ()>::Commit(()))
        })?;
        Ok(Self { env })
    }

    fn write(&mut self, batch: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        let database = records(&self.env)?;
        let mut transaction = self.env.write_txn()?;
        for (key, value) in batch {
            database.put(&mut transaction, key, value)?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        read_in(&self.env, &self.env.read_txn()?, key)
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        self.env.force_sync()?;
        Ok(())
    }

    fn supports_snapshots() -> bool {
        true
    }

    fn snapshot(&mut self) -> EngineResult<Box<dyn Snapshot>> {
        let env = self.env.clone();
        let transaction = self.env.clone().static_read_txn()?;
        Ok(Box::new(LmdbSnapshot { env, transaction }))
    }

    fn supports_backup() -> bool {
        true
    }

    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        // A consistent copy taken inside a read transaction; no lock file, LMDB makes a
        // new one on open.
        self.env
            .copy_to_path(to.join(DATA_FILE), CompactionOption::Disabled)?;
        Ok(())
    }

    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        copy_dir_or_nothing(from, into)
    }

    fn restore_failpoints() -> Vec<&'static str> {
        vec![COPY_FILE]
    }
}
