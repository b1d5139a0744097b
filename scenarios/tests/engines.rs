//! The scenario templates over real engines: every scenario must pass the gate under
//! default settings, or pin a real finding with `expect_leak` and a comment with the
//! evidence.

use leakgate::{CrashCause, Gate, Resource};
use leakgate_scenarios::engines::{Fjall, Redb, Sqlite};
use leakgate_scenarios::incidents::CheckpointPinsSegments;
use leakgate_scenarios::templates::{
    Replay, backup_restore_cycle, blocked_checkpoint, checkpoint_loop, crash_recovery,
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
        .scenario(snapshot_churn::<Sqlite>())
        .scenario(snapshot_churn::<Redb>())
        .scenario(snapshot_churn::<Fjall>())
        .scenario(crash_recovery::<Sqlite>())
        // Finding, pinned: redb 4.5.0 panics instead of returning an error when it reads a
        // torn page ("Invalid page type byte 165 for page r0.8/0", tree_store/
        // btree_base.rs:35), on the first round (seed 0, the second half of a page
        // overwritten), reached from `ReadOnlyTable::get` after `Database::create` opened
        // the damaged file without complaint. leakgate contains it as a crash.
        .scenario(crash_recovery::<Redb>().expect_crash(CrashCause::Panic))
        .scenario(crash_recovery::<Fjall>())
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
        .scenario(crash_recovery::<RocksDb>())
        .scenario(pitr_replay::<RocksDb>(Replay::Streaming))
    };
    gate.run()
}
