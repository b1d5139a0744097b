//! [`Engine`]: the few operations the scenario templates need from a storage engine.

use std::path::Path;

use leakgate::Resource;

/// The result of an engine operation; adapters box their engine's own error.
pub type EngineResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The error of an operation an engine does not offer.
pub fn unsupported(engine: &str, operation: &str) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{engine} does not support {operation}").into()
}

/// A storage engine as the templates drive it. Optional capabilities (`backup`,
/// `restore`) report themselves through [`Engine::supports_backup`] instead of being
/// faked; templates that need them are not offered for engines without them.
pub trait Engine: Sized + 'static {
    /// Short name, used as the first part of scenario names (`sqlite/checkpoint_loop`).
    const NAME: &'static str;

    /// The engine's version as it reports it at run time (the library linked, not the
    /// wrapper crate), for the report; `None` when it does not say.
    fn version() -> Option<String> {
        None
    }

    /// Opens the database in `dir`, creating it if it does not exist.
    fn open(dir: &Path) -> EngineResult<Self>;

    /// Writes `records` in one batch (one transaction).
    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()>;

    /// Reads `key`.
    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>>;

    /// Makes what was written durable in the main files: a WAL checkpoint that truncates
    /// the log, a memtable flush.
    fn checkpoint(&mut self) -> EngineResult<()>;

    /// Growth the engine is known to show without leaking (a bounded cache that fills
    /// slowly, metadata that settles), applied by every template: `(resource, amount)`
    /// as for `Scenario::tolerance`. Default: none. Each entry wants a comment with the
    /// evidence.
    fn tolerances() -> Vec<(Resource, u64)> {
        Vec::new()
    }

    /// Whether [`snapshot`](Engine::snapshot) works.
    fn supports_snapshots() -> bool {
        false
    }

    /// A read snapshot of the database as it is now, held until dropped: a read
    /// transaction, an MVCC snapshot. While it lives, the engine must keep what it sees
    /// (which is what blocks a WAL checkpoint).
    fn snapshot(&mut self) -> EngineResult<Box<dyn Snapshot>> {
        Err(unsupported(Self::NAME, "snapshots"))
    }

    /// Whether [`backup`](Engine::backup) and [`restore`](Engine::restore) work.
    fn supports_backup() -> bool {
        false
    }

    /// Writes a consistent copy of the database into the empty directory `to`.
    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        let _ = to;
        Err(unsupported(Self::NAME, "backup"))
    }

    /// Restores the backup in `from` into `into`, which must not exist yet; on error it
    /// must leave nothing behind.
    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        let _ = (from, into);
        Err(unsupported(Self::NAME, "restore"))
    }

    /// The failpoints (`fail` crate) on [`restore`](Engine::restore)'s path, for
    /// `failed_restore`'s sweep. Default: none.
    fn restore_failpoints() -> Vec<&'static str> {
        Vec::new()
    }
}

/// Persistent savepoints: a point-in-time restore inside the database, for engines that
/// have them (redb). A capability checked by the compiler: templates that need it take
/// `E: Savepoints`.
pub trait Savepoints: Engine {
    /// Records the current state as a savepoint that survives closing the database;
    /// returns its id.
    fn savepoint(&mut self) -> EngineResult<u64>;

    /// Rolls the database back to savepoint `id`.
    fn restore_savepoint(&mut self, id: u64) -> EngineResult<()>;

    /// Deletes savepoint `id`, so the engine may reuse the pages it kept.
    fn delete_savepoint(&mut self, id: u64) -> EngineResult<()>;
}

/// A read snapshot taken by [`Engine::snapshot`].
pub trait Snapshot {
    /// Reads `key` as of the snapshot.
    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>>;
}

/// Deterministic records: `count` keys, with values that depend on `seed`, so a batch
/// written with one seed can be told from one written with another.
#[derive(Debug, Clone, Copy)]
pub struct Records {
    /// Number of distinct keys; rewriting them keeps the database's size bounded.
    pub count: usize,
    /// Bytes per value.
    pub value_len: usize,
}

impl Records {
    /// `count` keys with values of `value_len` bytes.
    pub const fn new(count: usize, value_len: usize) -> Self {
        Self { count, value_len }
    }

    /// The key of record `i`.
    pub fn key(&self, i: usize) -> Vec<u8> {
        format!("key-{i:08}").into_bytes()
    }

    /// The value of record `i` in the batch written with `seed`.
    pub fn value(&self, seed: u64, i: usize) -> Vec<u8> {
        let byte = (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
        vec![byte; self.value_len]
    }

    /// Every record of the batch written with `seed`.
    pub fn batch(&self, seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..self.count)
            .map(|i| (self.key(i), self.value(seed, i)))
            .collect()
    }

    /// What `engine`, opened on a damaged copy of the batch written with `seed`, does
    /// with it: every record reads back right, some read is refused with an error, or
    /// a record is missing with no error. A record that reads back wrong with no error
    /// (silent corruption) is an error.
    pub fn recovery<E: Engine>(&self, engine: &mut E, seed: u64) -> EngineResult<Recovery> {
        for i in 0..self.count {
            let found = match engine.read(&self.key(i)) {
                Ok(found) => found,
                Err(error) => return Ok(Recovery::Refused(error.to_string())),
            };
            match found {
                None => return Ok(Recovery::Lost(i)),
                Some(value) if value != self.value(seed, i) => {
                    return Err(format!(
                        "{}: record {i} of batch {seed} reads back wrong, with no error (silent corruption)",
                        E::NAME
                    )
                    .into());
                }
                Some(_) => {}
            }
        }
        Ok(Recovery::Recovered)
    }

    /// Checks that `engine` holds the batch written with `seed`.
    pub fn verify<E: Engine>(&self, engine: &mut E, seed: u64) -> EngineResult<()> {
        for i in 0..self.count {
            let found = engine.read(&self.key(i))?;
            if found.as_deref() != Some(self.value(seed, i).as_slice()) {
                return Err(
                    format!("{}: record {i} of batch {seed} reads back wrong", E::NAME).into(),
                );
            }
        }
        Ok(())
    }
}

/// What an engine did with a damaged copy of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every record reads back as written.
    Recovered,
    /// Opening or reading was refused with this error.
    Refused(String),
    /// This record (the first such) reads back missing, with no error.
    Lost(usize),
}
