//! The scenario templates over real engines: every scenario must pass the gate under
//! default settings, or pin a real finding with `expect_leak` and a comment with the
//! evidence.

use leakgate::{CrashCause, Gate, Resource};
use leakgate_scenarios::Engine;
use leakgate_scenarios::engines::{Fjall, Lmdb, Redb, Sqlite};
use leakgate_scenarios::incidents::CheckpointPinsSegments;
use leakgate_scenarios::templates::{
    Damage, Replay, backup_restore_cycle, blocked_checkpoint, checkpoint_loop, crash_recovery,
    failed_restore, pitr_replay, snapshot_churn,
};

leakgate::global_allocator!();

fn main() -> std::process::ExitCode {
    let gate = Gate::new()
        .scenario(checkpoint_loop::<Sqlite>())
        .scenario(backup_restore_cycle::<Sqlite>())
        .scenario(failed_restore::<Sqlite>())
        .scenario(checkpoint_loop::<Redb>())
        .scenario(backup_restore_cycle::<Redb>())
        .scenario(failed_restore::<Redb>())
        .scenario(checkpoint_loop::<Fjall>())
        .scenario(checkpoint_loop::<Lmdb>())
        .scenario(backup_restore_cycle::<Lmdb>())
        .scenario(failed_restore::<Lmdb>())
        .scenario(snapshot_churn::<Lmdb>())
        .scenario(pitr_replay::<Lmdb>(Replay::Streaming))
        .scenario(blocked_checkpoint::<Lmdb>(Some(10)))
        // The same on LMDB, whose documented behaviour it is: a read transaction that
        // never ends keeps every page written since, so the file grows with every commit.
        .scenario(blocked_checkpoint::<Lmdb>(None).expect_leak(Resource::Disk))
        .scenario(snapshot_churn::<Sqlite>())
        .scenario(snapshot_churn::<Redb>())
        .scenario(snapshot_churn::<Fjall>())
        .scenario(pitr_replay::<Sqlite>(Replay::Streaming))
        .scenario(pitr_replay::<Redb>(Replay::Streaming))
        .scenario(pitr_replay::<Fjall>(Replay::Streaming))
        // MatrixOne's PITR incident on SQLite: the replay holds the whole log.
        .scenario(
            pitr_replay::<Sqlite>(Replay::WholeLog)
                .expect_leak(Resource::Peak)
                .expect_site("replay_whole_log"),
        )
        .scenario(blocked_checkpoint::<Sqlite>(Some(10)))
        // rqlite's incident on SQLite: a reader that never lets go, so no checkpoint can
        // truncate the WAL, which grows with every write.
        .scenario(blocked_checkpoint::<Sqlite>(None).expect_leak(Resource::Disk))
        // MatrixOne's TestCkpLeak planted on SQLite; `sqlite/checkpoint_loop` is its twin.
        .scenario(
            checkpoint_loop::<CheckpointPinsSegments<Sqlite>>()
                .expect_leak(Resource::Heap)
                .expect_site("pin_segment"),
        );
    let gate = with_crash_recovery::<Sqlite>(gate, &[]);
    // Finding, pinned: redb 4.5.0 panics instead of returning an error when it reads a
    // damaged page ("Invalid page type byte 165 for page r0.8/0", tree_store/
    // btree_base.rs:35): torn (byte 165 = 0xA5, the tear's fill), duplicated (114) and
    // zeroed (0) pages all panic on the first round, reached from `ReadOnlyTable::get`
    // after `Database::create` opened the damaged file without complaint. A truncated
    // file is refused with an error. leakgate contains the panics as crashes.
    let gate = with_crash_recovery::<Redb>(
        gate,
        &[
            (Damage::TornPage, CrashCause::Panic),
            (Damage::DuplicatedPage, CrashCause::Panic),
            (Damage::ZeroedPage, CrashCause::Panic),
        ],
    );
    let gate = with_crash_recovery::<Fjall>(gate, &[]);
    // Finding, pinned: LMDB (0.9 from lmdb-master-sys 0.2.6, through heed 0.23.1) trusts
    // its file, by design, and dies of SIGBUS on two kinds of damage, on the first
    // round. A torn leaf page (page 6 of 10, its header now 0xA5 bytes) reads as a
    // branch page, whose node offsets point past the end of the file:
    // `mdb_page_search_root` (mdb.c:6655) from `mdb_get`. A truncated file is mapped
    // past its end and read there. Duplicated and zeroed pages are refused with errors
    // (a cycle ends at LMDB's 32-deep cursor stack).
    let gate = with_crash_recovery::<Lmdb>(
        gate,
        &[
            (Damage::TornPage, CrashCause::Signal),
            (Damage::Truncation, CrashCause::Signal),
        ],
    );
    // RocksDB with the `rocksdb` feature (the nightly run: it builds for ~16 minutes).
    #[cfg(feature = "rocksdb")]
    let gate = {
        use leakgate_scenarios::engines::RocksDb;
        // Findings, pinned (RocksDB 11.8.1 via rocksdb 0.25.0, default options, not yet
        // root-caused: C-heap sites need jemalloc profiling). Over 100 flushes the C heap
        // grew 2.4 MiB (24 KiB per flush) and the directory 595 KiB (5.9 KiB per flush):
        // block cache and table readers warming, and the info LOG, which grows with every
        // flush and compaction and is never rotated by default.
        gate.scenario(
            checkpoint_loop::<RocksDb>()
                .expect_leak(Resource::CHeap)
                .expect_leak(Resource::Disk),
        )
        // Opening a BackupEngine (with a new Env) per backup or restore leaves about
        // 615 B of C heap each time (30 KiB over 50), in both templates below; the
        // backup cycle's directory also grows 534 B per backup (the info LOG).
        .scenario(
            backup_restore_cycle::<RocksDb>()
                .expect_leak(Resource::CHeap)
                .expect_leak(Resource::Disk),
        )
        .scenario(failed_restore::<RocksDb>().expect_leak(Resource::CHeap))
        .scenario(pitr_replay::<RocksDb>(Replay::Streaming))
    };
    #[cfg(feature = "rocksdb")]
    let gate = with_crash_recovery::<leakgate_scenarios::engines::RocksDb>(gate, &[]);
    gate.run()
}

/// `crash_recovery` with every kind of damage; `crashes` pins the engine's known crashes.
fn with_crash_recovery<E: Engine>(gate: Gate, crashes: &[(Damage, CrashCause)]) -> Gate {
    Damage::ALL.into_iter().fold(gate, |gate, damage| {
        let scenario = crash_recovery::<E>(damage);
        gate.scenario(match crashes.iter().find(|(pinned, _)| *pinned == damage) {
            Some(&(_, cause)) => scenario.expect_crash(cause),
            None => scenario,
        })
    })
}
