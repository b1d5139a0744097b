//! Scenario templates, generic over [`Engine`]: each returns a ready [`Scenario`] named
//! `<engine>/<template>`.

use std::path::{Path, PathBuf};

use leakgate::{Growth, Scenario, fault};

use crate::engine::{Engine, EngineResult, Records, Recovery, Savepoints};

/// A scenario named `<engine>/<template>` with the engine's known tolerances and its
/// version, when it reports one.
fn engine_scenario<E: Engine>(template: &str) -> Scenario {
    let mut scenario = Scenario::new(format!("{}/{template}", E::NAME));
    if let Some(version) = E::version() {
        scenario = scenario.engine(E::NAME, version);
    }
    E::tolerances()
        .into_iter()
        .fold(scenario, |scenario, (resource, amount)| {
            scenario.tolerance(resource, amount)
        })
}

/// Records written per iteration by the templates.
const RECORDS: Records = Records::new(200, 100);

/// Write, checkpoint, repeat on a live engine, rewriting the same keys so the database
/// stays the same size: memory, descriptors and disk must stay flat (MatrixOne's
/// `TestCkpLeak`: a checkpoint that keeps buffers referenced).
pub fn checkpoint_loop<E: Engine>() -> Scenario<E> {
    engine_scenario::<E>("checkpoint_loop")
        // Enough for block caches and compaction state to reach their steady size.
        .warmup(30)
        .iterations(100)
        .setup(|ctx| E::open(ctx.dir()).expect("the engine opens"))
        .iterate(|engine: &mut E, i| -> EngineResult<()> {
            engine.write(&RECORDS.batch(i as u64))?;
            engine.checkpoint()?;
            RECORDS.verify(engine, i as u64)
        })
}

/// Take a snapshot, write a new batch over the same keys, check the snapshot still sees
/// the old one, release it, checkpoint: snapshots and read transactions must give back
/// everything they pinned.
pub fn snapshot_churn<E: Engine>() -> Scenario<E> {
    engine_scenario::<E>("snapshot_churn")
        .warmup(30)
        .iterations(100)
        .setup(|ctx| {
            let mut engine = E::open(ctx.dir()).expect("the engine opens");
            engine
                .write(&RECORDS.batch(0))
                .expect("the first batch is written");
            engine
        })
        .iterate(|engine: &mut E, i| -> EngineResult<()> {
            let (before, after) = (i as u64, i as u64 + 1);
            engine.write(&RECORDS.batch(before))?;
            let mut snapshot = engine.snapshot()?;
            engine.write(&RECORDS.batch(after))?;
            let seen = snapshot.read(&RECORDS.key(0))?;
            if seen.as_deref() != Some(RECORDS.value(before, 0).as_slice()) {
                return Err(format!("{}: a snapshot saw a later write", E::NAME).into());
            }
            drop(snapshot);
            engine.checkpoint()
        })
}

/// Point-in-time restore inside the database: write a batch, take a persistent
/// savepoint, write another, close and reopen, roll back to the savepoint and check the
/// first batch is back, delete the savepoint, checkpoint. A savepoint's pages must be
/// released once it is deleted.
pub fn savepoint_rollback<E: Savepoints>() -> Scenario<Reopenable<E>> {
    engine_scenario::<E>("savepoint_rollback")
        .warmup(5)
        .iterations(40)
        .setup(|ctx| Reopenable::<E>::open(ctx.dir().join("db")).expect("the engine opens"))
        .iterate(|state: &mut Reopenable<E>, i| -> EngineResult<()> {
            let (kept, discarded) = (i as u64, i as u64 + 1);
            state.engine()?.write(&RECORDS.batch(kept))?;
            let savepoint = state.engine()?.savepoint()?;
            state.engine()?.write(&RECORDS.batch(discarded))?;
            // The savepoint must outlive the process's handle on the database.
            state.reopen()?;
            let engine = state.engine()?;
            engine.restore_savepoint(savepoint)?;
            RECORDS.verify(engine, kept)?;
            engine.delete_savepoint(savepoint)?;
            engine.checkpoint()
        })
}

/// The state of [`savepoint_rollback`]: an engine that can be closed and opened again.
pub struct Reopenable<E> {
    engine: Option<E>,
    dir: PathBuf,
}

impl<E: Engine> Reopenable<E> {
    fn open(dir: PathBuf) -> EngineResult<Self> {
        Ok(Self {
            engine: Some(E::open(&dir)?),
            dir,
        })
    }

    fn engine(&mut self) -> EngineResult<&mut E> {
        self.engine
            .as_mut()
            .ok_or_else(|| "the engine did not reopen".into())
    }

    /// Closes the engine, then opens it again (an engine may refuse a second open while
    /// the first is alive).
    fn reopen(&mut self) -> EngineResult<()> {
        self.engine = None;
        self.engine = Some(E::open(&self.dir)?);
        Ok(())
    }
}

/// A long-lived reader that blocks checkpoints while writes go on; the write-ahead log
/// may grow while it reads, but must shrink back once it lets go (rqlite on SQLite: a
/// checkpoint that could not complete). Here the reader holds on for `hold` iterations
/// at a time; `hold = None` never lets go, which is the incident.
pub fn blocked_checkpoint<E: Engine>(hold: Option<usize>) -> Scenario<Blocked<E>> {
    let name = match hold {
        Some(_) => "blocked_checkpoint",
        None => "blocked_checkpoint_reader_never_lets_go",
    };
    engine_scenario::<E>(name)
        .warmup(hold.unwrap_or(1).max(10))
        .iterations(100)
        .setup(|ctx| Blocked {
            engine: E::open(ctx.dir()).expect("the engine opens"),
            reader: None,
        })
        .iterate(move |state: &mut Blocked<E>, i| -> EngineResult<()> {
            if hold.is_some_and(|hold| i.is_multiple_of(hold)) {
                // The reader lets go: this checkpoint can complete and truncate the log.
                state.reader = None;
                state.engine.checkpoint()?;
            }
            if state.reader.is_none() {
                state.reader = Some(state.engine.snapshot()?);
            }
            state.engine.write(&RECORDS.batch(i as u64))?;
            state.engine.checkpoint()
        })
}

/// The state of [`blocked_checkpoint`]: the engine and the reader that blocks it.
pub struct Blocked<E> {
    engine: E,
    reader: Option<Box<dyn crate::Snapshot>>,
}

/// Whether [`crash_recovery`] accepts records that read back missing with no error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilentLoss {
    /// A silently lost record fails the iteration: the engine must recover or refuse.
    Fails,
    /// The engine is known to lose records silently under this damage (it keeps no
    /// checksums): a finding, pinned with its evidence where the scenario is added.
    /// Records that read back wrong still fail.
    Pinned,
}

/// How [`crash_recovery`] damages the copy of an engine's largest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The first half of a page overwritten with `0xA5` bytes: a torn write at power loss.
    TornPage,
    /// A page overwritten with a copy of another: a misdirected write (bbolt's cycle).
    DuplicatedPage,
    /// A page of zeros: a write that never reached the disk.
    ZeroedPage,
    /// The file cut at a page boundary: a lost tail.
    Truncation,
}

impl Damage {
    /// Every kind of damage, in the order the engine targets run them.
    pub const ALL: [Damage; 4] = [
        Damage::TornPage,
        Damage::DuplicatedPage,
        Damage::ZeroedPage,
        Damage::Truncation,
    ];

    /// The name used in scenario names (`crash_recovery/torn_page`).
    pub const fn name(self) -> &'static str {
        match self {
            Damage::TornPage => "torn_page",
            Damage::DuplicatedPage => "duplicated_page",
            Damage::ZeroedPage => "zeroed_page",
            Damage::Truncation => "truncation",
        }
    }

    /// Applies this damage to a seeded random page of `pages`.
    fn apply(self, pages: &mut fault::pages::Pages) -> std::io::Result<()> {
        let page = pages.random_page()?;
        match self {
            Damage::TornPage => pages.tear(page, &[0xA5; PAGE as usize]),
            Damage::DuplicatedPage => {
                let other = pages.random_page()?;
                pages.duplicate(other, page)
            }
            Damage::ZeroedPage => pages.zero(page),
            Damage::Truncation => pages.truncate_to(page),
        }
    }
}

/// Copy the engine's files at a consistent point, damage the copy's largest file as power
/// loss or a misdirected write would (`damage`, at a different seeded page every
/// iteration), and reopen it: the engine must recover (every record reads back right)
/// or return an error, and leave no memory, descriptor, thread or file behind either
/// way. A record that reads back wrong with no error fails the iteration; one that reads
/// back missing with no error (silent loss) fails it too, unless `loss` pins that as the
/// engine's known behaviour. A crash or a runaway is
/// contained and reported by leakgate (bbolt/etcd after power loss). Named
/// `<engine>/crash_recovery/<damage>`.
pub fn crash_recovery<E: Engine>(damage: Damage, loss: SilentLoss) -> Scenario<PathBuf> {
    engine_scenario::<E>(&format!("crash_recovery/{}", damage.name()))
        .warmup(2)
        .iterations(20)
        .peak_budget(64 << 20)
        .setup(|ctx| {
            let pristine = ctx.dir().join("pristine");
            let mut engine = E::open(&pristine).expect("the engine opens");
            engine
                .write(&RECORDS.batch(0))
                .expect("the batch is written");
            engine.checkpoint().expect("the checkpoint completes");
            pristine
        })
        .iterate(move |pristine: &mut PathBuf, i| -> EngineResult<()> {
            let victim = pristine.with_file_name("victim");
            crate::engines::copy_dir_or_nothing(pristine, &victim)?;
            let mut pages = fault::pages::Pages::open(largest_file(&victim)?, PAGE)?.seed(i as u64);
            damage.apply(&mut pages)?;
            drop(pages);
            // Recovered and refused are both fine; silent damage is not.
            let outcome = match E::open(&victim) {
                Ok(mut engine) => RECORDS.recovery(&mut engine, 0),
                Err(error) => Ok(Recovery::Refused(error.to_string())),
            };
            std::fs::remove_dir_all(&victim)?;
            match outcome? {
                Recovery::Lost(record) if loss == SilentLoss::Fails => Err(format!(
                    "{}: record {record} reads back missing, with no error (silent loss)",
                    E::NAME
                )
                .into()),
                _ => Ok(()),
            }
        })
}

/// The page size the damage is aligned to: the common 4 KiB.
const PAGE: u64 = 4096;

/// The largest file under `dir`, searched recursively: the engine's main data file.
fn largest_file(dir: &Path) -> EngineResult<PathBuf> {
    let mut largest: Option<(u64, PathBuf)> = None;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let len = entry.metadata()?.len();
                if largest.as_ref().is_none_or(|(size, _)| len > *size) {
                    largest = Some((len, entry.path()));
                }
            }
        }
    }
    Ok(largest.ok_or("no file to damage")?.1)
}

/// How [`pitr_replay`] applies its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// In batches of [`REPLAY_BATCH`] records, as it reads them: constant memory.
    Streaming,
    /// Reads the whole log into memory first (MatrixOne's point-in-time restore, which
    /// ran out of memory on long logs): memory grows with the log.
    WholeLog,
}

/// Records applied per batch by a streaming replay.
pub const REPLAY_BATCH: usize = 64;

/// Batches applied between checkpoints during a replay, so the engine's own buffers (a
/// memtable, a WAL) stay bounded whatever the log's length and the peak measures the
/// replay, not the engine's flush schedule.
const BATCHES_PER_CHECKPOINT: usize = 16;

/// Applies batch number `index` of a replay, checkpointing every
/// [`BATCHES_PER_CHECKPOINT`] batches.
fn apply<E: Engine>(
    engine: &mut E,
    index: usize,
    batch: &[(Vec<u8>, Vec<u8>)],
) -> EngineResult<()> {
    engine.write(batch)?;
    if (index + 1).is_multiple_of(BATCHES_PER_CHECKPOINT) {
        engine.checkpoint()?;
    }
    Ok(())
}

/// Point-in-time restore: replay a log of updates into a fresh database, at several log
/// lengths (`.scaling`), and check the peak does not grow with the log. Keys repeat, so
/// the database stays the same size whatever the log's length.
pub fn pitr_replay<E: Engine>(replay: Replay) -> Scenario<PathBuf> {
    let name = match replay {
        Replay::Streaming => "pitr_replay",
        Replay::WholeLog => "pitr_replay_holds_the_whole_log",
    };
    engine_scenario::<E>(name)
        .warmup(1)
        .iterations(5)
        .scaling(&[2048, 4096, 8192, 16384])
        .expect_peak_growth(Growth::Constant)
        .setup(|ctx| write_log(ctx.dir(), ctx.size()).expect("the log is written"))
        .iterate(move |log: &mut PathBuf, _| -> EngineResult<()> {
            let target = log.with_file_name("restored");
            let mut engine = E::open(&target)?;
            match replay {
                Replay::Streaming => replay_streaming(&mut engine, log)?,
                Replay::WholeLog => replay_whole_log(&mut engine, log)?,
            }
            engine.checkpoint()?;
            drop(engine);
            std::fs::remove_dir_all(&target)?;
            Ok(())
        })
}

const LOG_RECORD: usize = 16 + 112;

/// A log of `records` updates to 64 keys, in `dir/log`.
fn write_log(dir: &Path, records: u64) -> std::io::Result<PathBuf> {
    let path = dir.join("log");
    let mut log = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..records {
        std::io::Write::write_all(&mut log, format!("key-{:012}", i % 64).as_bytes())?;
        std::io::Write::write_all(&mut log, &[(i % 251) as u8; LOG_RECORD - 16])?;
    }
    std::io::Write::flush(&mut log)?;
    Ok(path)
}

fn parse(record: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (record[..16].to_vec(), record[16..].to_vec())
}

fn replay_streaming<E: Engine>(engine: &mut E, log: &Path) -> EngineResult<()> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(log)?);
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    let mut record = [0u8; LOG_RECORD];
    let mut index = 0;
    while std::io::Read::read_exact(&mut reader, &mut record).is_ok() {
        batch.push(parse(&record));
        if batch.len() == REPLAY_BATCH {
            apply(engine, index, &batch)?;
            batch.clear();
            index += 1;
        }
    }
    if !batch.is_empty() {
        apply(engine, index, &batch)?;
    }
    Ok(())
}

/// The planted bug: the whole log in memory before the first record is applied.
#[inline(never)]
fn replay_whole_log<E: Engine>(engine: &mut E, log: &Path) -> EngineResult<()> {
    let bytes = std::fs::read(log)?;
    let records: Vec<(Vec<u8>, Vec<u8>)> = bytes.chunks_exact(LOG_RECORD).map(parse).collect();
    for (index, batch) in records.chunks(REPLAY_BATCH).enumerate() {
        apply(engine, index, batch)?;
    }
    Ok(())
}

/// The state of the backup templates: the live engine, where its backup lives, and the
/// names in that directory after setup.
pub struct Backed<E> {
    engine: E,
    dir: PathBuf,
    names_at_setup: Vec<std::ffi::OsString>,
}

impl<E: Engine> Backed<E> {
    /// Opens the engine in `dir/db` with one batch written; with `backup`, also backs it
    /// up into `dir/backup`.
    fn open(dir: &Path, backup: bool) -> EngineResult<Self> {
        let mut engine = E::open(&dir.join("db"))?;
        engine.write(&RECORDS.batch(0))?;
        engine.checkpoint()?;
        if backup {
            std::fs::create_dir(dir.join("backup"))?;
            engine.backup(&dir.join("backup"))?;
        }
        Ok(Self {
            engine,
            dir: dir.to_owned(),
            names_at_setup: names_in(dir)?,
        })
    }

    /// What the directory holds now that it did not after setup.
    fn leftovers(&self) -> EngineResult<Vec<std::ffi::OsString>> {
        let mut names = names_in(&self.dir)?;
        names.retain(|name| !self.names_at_setup.contains(name));
        Ok(names)
    }
}

fn names_in(dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

/// Back up the live engine, restore the backup into a fresh directory, open it, verify,
/// close, remove both: every iteration.
pub fn backup_restore_cycle<E: Engine>() -> Scenario<Backed<E>> {
    engine_scenario::<E>("backup_restore_cycle")
        .warmup(5)
        .iterations(50)
        .setup(|ctx| Backed::<E>::open(ctx.dir(), false).expect("the engine opens"))
        .iterate(|state: &mut Backed<E>, _| -> EngineResult<()> {
            let (backup, restored) = (state.dir.join("backup"), state.dir.join("restored"));
            std::fs::create_dir(&backup)?;
            state.engine.backup(&backup)?;
            E::restore(&backup, &restored)?;
            let mut copy = E::open(&restored)?;
            RECORDS.verify(&mut copy, 0)?;
            drop(copy);
            std::fs::remove_dir_all(&backup)?;
            std::fs::remove_dir_all(&restored)?;
            Ok(())
        })
}

/// What makes [`failed_restore`]'s restore fail midway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFault {
    /// The disk fills up: writes past 4 KiB fail, which no engine's files fit in.
    DiskFull,
    /// This failpoint on the restore's path fails on its first hit.
    Failpoint(String),
}

/// A restore that fails midway (`fault`) must leave nothing behind (no staging
/// directory, descriptor, thread or memory), and the next restore must succeed (Apache
/// Kvrocks's `db.tmp`). When the failed restore left something, the next restore is not
/// tried (a leftover like `db.tmp` would only make it fail too): leakgate's file probe
/// names the leftover instead. No warm-up: a leftover appears on the first failure, and a
/// warm-up would take it into the baseline. Named
/// `<engine>/failed_restore/<disk_full|failpoint>`.
pub fn failed_restore<E: Engine>(fault: RestoreFault) -> Scenario<Backed<E>> {
    let name = match &fault {
        RestoreFault::DiskFull => "failed_restore/disk_full".to_owned(),
        RestoreFault::Failpoint(failpoint) => format!("failed_restore/{failpoint}"),
    };
    engine_scenario::<E>(&name)
        .warmup(0)
        .iterations(50)
        .setup(|ctx| Backed::<E>::open(ctx.dir(), true).expect("the engine opens"))
        .iterate(move |state: &mut Backed<E>, _| -> EngineResult<()> {
            let (backup, restored) = (state.dir.join("backup"), state.dir.join("restored"));
            let attempt = || E::restore(&backup, &restored);
            let failed = match &fault {
                RestoreFault::DiskFull => fault::disk_full(4096, attempt).is_err(),
                RestoreFault::Failpoint(failpoint) => {
                    let _armed = fault::failpoints::arm(failpoint, 1)?;
                    attempt().is_err()
                }
            };
            if !failed {
                return Err(format!("the restore should fail under {fault:?}").into());
            }
            if !state.leftovers()?.is_empty() {
                return Ok(());
            }
            E::restore(&backup, &restored)
                .map_err(|e| format!("the restore after a failed one failed: {e}"))?;
            let mut copy = E::open(&restored)?;
            RECORDS.verify(&mut copy, 0)?;
            drop(copy);
            std::fs::remove_dir_all(&restored)?;
            Ok(())
        })
}

/// [`failed_restore`] once per failpoint on the engine's restore path, then with a full
/// disk: every error path of the restore is checked for leftovers.
pub fn failed_restore_sweep<E: Engine>() -> Vec<Scenario<Backed<E>>> {
    let mut scenarios = fault::failpoints::sweep(&E::restore_failpoints(), |failpoint| {
        failed_restore::<E>(RestoreFault::Failpoint(failpoint.to_owned()))
    });
    scenarios.push(failed_restore::<E>(RestoreFault::DiskFull));
    scenarios
}
