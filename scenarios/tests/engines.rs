//! The scenario templates over real engines, and the five incidents reproduced on them:
//! every scenario must pass the gate under default settings, or pin a real finding with
//! `expect_leak` / `expect_crash` and a comment with the evidence.

use leakgate::{CrashCause, Gate, Resource, Scenario};
use leakgate_scenarios::Engine;
use leakgate_scenarios::engines::{Fjall, Lmdb, Redb, Sqlite};
use leakgate_scenarios::incidents::{
    CheckpointPinsSegments, StagedRestore, Walk, page_cycle_check,
};
use leakgate_scenarios::templates::{
    Damage, Replay, SilentLoss, backup_restore_cycle, blocked_checkpoint, checkpoint_loop,
    crash_recovery, failed_restore_sweep, pitr_replay, savepoint_rollback, snapshot_churn,
};

leakgate::global_allocator!();

fn main() -> std::process::ExitCode {
    let gate = Gate::new();

    // SQLite (rusqlite, bundled): WAL, wal_checkpoint(TRUNCATE), the online backup API.
    let gate = gate
        .scenario(checkpoint_loop::<Sqlite>())
        .scenario(snapshot_churn::<Sqlite>())
        .scenario(backup_restore_cycle::<Sqlite>())
        .scenario(pitr_replay::<Sqlite>(Replay::Streaming))
        .scenario(blocked_checkpoint::<Sqlite>(Some(10)));
    let gate = add(gate, failed_restore_sweep::<Sqlite>());
    // Finding, pinned: SQLite keeps no page checksums; a file cut at a page boundary
    // (iteration 14's seed) opens and answers lookups of the lost records with "no such
    // row" rather than an error.
    let gate = with_crash_recovery::<Sqlite>(gate, &[(Damage::Truncation, Pin::SilentLoss)]);

    // redb: savepoints, compaction, file copies between commits.
    let gate = gate
        .scenario(checkpoint_loop::<Redb>())
        .scenario(snapshot_churn::<Redb>())
        .scenario(backup_restore_cycle::<Redb>())
        .scenario(savepoint_rollback::<Redb>())
        .scenario(pitr_replay::<Redb>(Replay::Streaming));
    let gate = add(gate, failed_restore_sweep::<Redb>());
    // Finding, pinned: redb 4.5.0 panics instead of returning an error when it reads a
    // damaged page: torn, duplicated and zeroed pages all panic on the first round,
    // reached from `ReadOnlyTable::get` after `Database::create` opened the damaged file
    // without complaint. Where depends on the build: debug builds stop at a debug
    // assertion ("Invalid page type byte 165 for page r0.8/0", tree_store/
    // btree_base.rs:35; byte 165 = 0xA5 is the tear's fill), release builds go on to
    // "internal error: entered unreachable code" (tree_store/btree.rs:1104); what is
    // pinned holds in both: a panic in redb's B-tree code. A truncated file is refused
    // with an error on most seeds, but iteration 14's opens and reads its lost records
    // as missing, with no error: pinned as silent loss.
    let gate = with_crash_recovery::<Redb>(
        gate,
        &[
            (Damage::TornPage, REDB_BTREE_PANIC),
            (Damage::DuplicatedPage, REDB_BTREE_PANIC),
            (Damage::ZeroedPage, REDB_BTREE_PANIC),
            (Damage::Truncation, Pin::SilentLoss),
        ],
    );

    // fjall: snapshots, memtable flush and major compaction; no backup API.
    let gate = gate
        .scenario(checkpoint_loop::<Fjall>())
        .scenario(snapshot_churn::<Fjall>())
        .scenario(pitr_replay::<Fjall>(Replay::Streaming));
    let gate = with_crash_recovery::<Fjall>(gate, &[]);

    // LMDB (heed): read transactions, environment copies.
    let gate = gate
        .scenario(checkpoint_loop::<Lmdb>())
        .scenario(snapshot_churn::<Lmdb>())
        .scenario(backup_restore_cycle::<Lmdb>())
        .scenario(pitr_replay::<Lmdb>(Replay::Streaming))
        .scenario(blocked_checkpoint::<Lmdb>(Some(10)))
        // LMDB's documented behaviour, found as such: a read transaction that never ends
        // keeps every page written since, so the file grows with every commit (38.8 KiB
        // per iteration here).
        .scenario(blocked_checkpoint::<Lmdb>(None).expect_leak(Resource::Disk));
    let gate = add(gate, failed_restore_sweep::<Lmdb>());
    // Finding, pinned: LMDB (0.9 from lmdb-master-sys 0.2.6, through heed 0.23.1) trusts
    // its file, by design, and dies of SIGBUS on two kinds of damage, on the first round.
    // A torn leaf page (page 6 of 10, its header now 0xA5 bytes) reads as a branch page
    // whose node offsets point past the end of the file: `mdb_page_search_root`
    // (mdb.c:6655) from `mdb_get` in debug builds; optimised, it is inlined into
    // `mdb_page_search`, which is what is pinned. A truncated file is mapped, and read,
    // past its end, in the same function. A duplicated page loses the records of the
    // page it overwrote with no error (warm-up iteration 1: record 96 reads as missing):
    // pinned as silent loss. Zeroed pages are refused with errors.
    let gate = with_crash_recovery::<Lmdb>(
        gate,
        &[
            (Damage::TornPage, LMDB_PAGE_SEARCH_SIGBUS),
            (Damage::DuplicatedPage, Pin::SilentLoss),
            (Damage::Truncation, LMDB_PAGE_SEARCH_SIGBUS),
        ],
    );

    // The five incidents, each next to its fixed twin.
    let gate = gate
        // MatrixOne's TestCkpLeak planted on SQLite; `sqlite/checkpoint_loop` is its twin.
        .scenario(
            checkpoint_loop::<CheckpointPinsSegments<Sqlite>>()
                .expect_leak(Resource::Heap)
                .expect_site("pin_segment"),
        )
        // MatrixOne's PITR on SQLite: the replay holds the whole log; the streaming
        // `sqlite/pitr_replay` is its twin.
        .scenario(
            pitr_replay::<Sqlite>(Replay::WholeLog)
                .expect_leak(Resource::Peak)
                .expect_site("replay_whole_log"),
        )
        // rqlite on SQLite: a reader that never lets go, so no checkpoint can truncate
        // the WAL; `sqlite/blocked_checkpoint`, whose reader lets go, is its twin.
        .scenario(blocked_checkpoint::<Sqlite>(None).expect_leak(Resource::Disk))
        // bbolt's page cycle on an LMDB file: the recursive check overflows the stack in
        // `count_leaves`; `lmdb/page_cycle_check` remembers visited pages and reports it.
        .scenario(page_cycle_check(Walk::Unguarded))
        .scenario(page_cycle_check(Walk::Guarded));
    // Kvrocks's `db.tmp` on SQLite, under each fault; the twin cleans up.
    let gate = add(
        gate,
        failed_restore_sweep::<StagedRestore<Sqlite, false>>()
            .into_iter()
            .map(|scenario| scenario.expect_leak(Resource::Files).expect_site("db.tmp"))
            .collect(),
    );
    let gate = add(gate, failed_restore_sweep::<StagedRestore<Sqlite, true>>());

    // RocksDB with the `rocksdb` feature (the nightly run: it builds for ~16 minutes).
    #[cfg(feature = "rocksdb")]
    let gate = {
        use leakgate_scenarios::engines::RocksDb;
        use leakgate_scenarios::templates::{RestoreFault, failed_restore};
        // Findings, pinned (RocksDB 11.8.1 via rocksdb 0.25.0; see the README):
        // - Over 100 flushes the directory grows about 6 KiB per flush: the info LOG,
        //   which grows with every flush and compaction and is never rotated by default,
        //   under the sawtooth of compactions.
        // - Each `DB::Open` registers periodic tasks in RocksDB's process-wide `Timer`;
        //   closing cancels them, which only marks them invalid: each stays in the
        //   timer's heap and map (about 690 B an open) until its next run time, up to
        //   600 s (stats dump and persist, and the compaction trigger bounded by them).
        //   Both templates below reopen the database every iteration. The backup
        //   cycle's directory also grows 534 B per backup (the info LOG).
        let gate = gate
            .scenario(checkpoint_loop::<RocksDb>().expect_leak(Resource::Disk))
            .scenario(
                backup_restore_cycle::<RocksDb>()
                    .expect_leak(Resource::CHeap)
                    .expect_site(ROCKSDB_CANCELLED_TIMER_TASKS)
                    .expect_leak(Resource::Disk),
            )
            .scenario(
                failed_restore::<RocksDb>(RestoreFault::DiskFull)
                    .expect_leak(Resource::CHeap)
                    .expect_site(ROCKSDB_CANCELLED_TIMER_TASKS),
            )
            .scenario(pitr_replay::<RocksDb>(Replay::Streaming));
        with_crash_recovery::<RocksDb>(gate, &[])
    };
    gate.run()
}

fn add<S: 'static>(gate: Gate, scenarios: Vec<Scenario<S>>) -> Gate {
    scenarios.into_iter().fold(gate, Gate::scenario)
}

/// Where RocksDB's cancelled periodic tasks were registered (see its finding).
#[cfg(feature = "rocksdb")]
const ROCKSDB_CANCELLED_TIMER_TASKS: &str = "PeriodicTaskScheduler::Register";

/// redb's panic on a damaged page, wherever the build stops it (see its finding).
const REDB_BTREE_PANIC: Pin = Pin::Crash(CrashCause::Panic, "src/tree_store/btree");
/// LMDB's SIGBUS on a damaged page (see its finding).
const LMDB_PAGE_SEARCH_SIGBUS: Pin = Pin::Crash(CrashCause::Signal, "mdb_page_search");

/// A known behaviour of an engine on one kind of damage.
enum Pin {
    /// It crashes with this cause, in this function or source location.
    Crash(CrashCause, &'static str),
    /// It loses records silently (it keeps no checksums).
    SilentLoss,
}

/// `crash_recovery` with every kind of damage; `pins` holds the engine's known
/// behaviours, each with the evidence in a comment where it is given.
fn with_crash_recovery<E: Engine>(gate: Gate, pins: &[(Damage, Pin)]) -> Gate {
    Damage::ALL.into_iter().fold(gate, |gate, damage| {
        let pin = pins
            .iter()
            .find(|(pinned, _)| *pinned == damage)
            .map(|(_, pin)| pin);
        let loss = match pin {
            Some(Pin::SilentLoss) => SilentLoss::Pinned,
            _ => SilentLoss::Fails,
        };
        let scenario = crash_recovery::<E>(damage, loss);
        gate.scenario(match pin {
            Some(&Pin::Crash(cause, site)) => scenario.expect_crash(cause).expect_site(site),
            _ => scenario,
        })
    })
}
