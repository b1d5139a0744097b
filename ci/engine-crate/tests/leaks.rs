//! toykv under leakgate: three of its templates over the store.

use std::path::Path;

use leakgate_scenarios::templates::{self, Replay};
use leakgate_scenarios::{Engine, EngineResult, engines::copy_dir_or_nothing};
use toykv::ToyKv;

leakgate::global_allocator!();

/// The adapter: the few operations the templates need.
struct Toy(ToyKv);

impl Engine for Toy {
    const NAME: &'static str = "toykv";

    fn open(dir: &Path) -> EngineResult<Self> {
        Ok(Toy(ToyKv::open(dir)?))
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        Ok(self.0.write(records)?)
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.0.read(key))
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        Ok(self.0.checkpoint()?)
    }

    fn supports_backup() -> bool {
        true
    }

    fn backup(&mut self, to: &Path) -> EngineResult<()> {
        Ok(self.0.backup(to)?)
    }

    fn restore(from: &Path, into: &Path) -> EngineResult<()> {
        copy_dir_or_nothing(from, into)
    }
}

fn main() -> std::process::ExitCode {
    leakgate::Gate::new()
        .scenario(templates::checkpoint_loop::<Toy>())
        .scenario(templates::backup_restore_cycle::<Toy>())
        .scenario(templates::pitr_replay::<Toy>(Replay::Streaming))
        .run()
}
