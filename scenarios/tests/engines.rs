//! The scenario templates over real engines: every scenario must pass the gate under
//! default settings, or pin a real finding with `expect_leak` and a comment with the
//! evidence.

use leakgate::Gate;
use leakgate_scenarios::engines::{Redb, Sqlite};
use leakgate_scenarios::templates::{backup_restore_cycle, checkpoint_loop, failed_restore};

leakgate::global_allocator!();

fn main() -> std::process::ExitCode {
    Gate::new()
        .scenario(checkpoint_loop::<Sqlite>())
        .scenario(backup_restore_cycle::<Sqlite>())
        .scenario(failed_restore::<Sqlite>())
        .scenario(checkpoint_loop::<Redb>())
        .scenario(backup_restore_cycle::<Redb>())
        .scenario(failed_restore::<Redb>())
        .run()
}
