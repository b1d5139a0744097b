//! Storage scenarios for leakgate: an [`Engine`] trait, scenario templates generic over
//! it ([`templates`]), adapters for real engines ([`engines`]), and the seeded scenarios
//! leakgate tests itself with.
//!
//! Each bundled engine's adapter is behind the feature of its name: `sqlite`, `lmdb`,
//! `redb` and `fjall` (the default), and `rocksdb`. A crate testing its own engine
//! depends with `default-features = false`: only the trait and the templates, no bundled
//! engine compiled.
//!
//! To test your own engine: implement [`Engine`] for it, pick templates, and add a test
//! target with `harness = false`:
//!
//! ```no_run
//! use leakgate_scenarios::{Engine, EngineResult, templates};
//! use std::collections::BTreeMap;
//! use std::path::Path;
//!
//! /// An engine that keeps everything in memory and in one file.
//! struct Toy {
//!     path: std::path::PathBuf,
//!     data: BTreeMap<Vec<u8>, Vec<u8>>,
//! }
//!
//! impl Engine for Toy {
//!     const NAME: &'static str = "toy";
//!     fn open(dir: &Path) -> EngineResult<Self> {
//!         Ok(Toy { path: dir.join("toy.db"), data: BTreeMap::new() })
//!     }
//!     fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
//!         self.data.extend(records.iter().cloned());
//!         Ok(())
//!     }
//!     fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
//!         Ok(self.data.get(key).cloned())
//!     }
//!     fn checkpoint(&mut self) -> EngineResult<()> {
//!         let bytes: usize = self.data.values().map(Vec::len).sum();
//!         std::fs::write(&self.path, bytes.to_le_bytes())?;
//!         Ok(())
//!     }
//! }
//!
//! leakgate::global_allocator!();
//!
//! fn main() -> std::process::ExitCode {
//!     leakgate::Gate::new()
//!         .scenario(templates::checkpoint_loop::<Toy>())
//!         .run()
//! }
//! ```
//!
//! The self-test targets live in `tests/`: `selftest` seeds every leak kind leakgate must
//! catch (each declared with `expect_leak` and the function it must be attributed to)
//! next to the clean patterns it must let through; `containment` runs the
//! `crash-fixture` binary, whose scenarios panic, abort, overflow the stack, segfault,
//! run away and hang, and checks that each is reported by name and cause while the others
//! still run; `engines` runs the templates over the real engines and the five incidents
//! ([`incidents`]) reproduced on them.
// Only the LMDB adapter opens a memory map, which heed marks unsafe.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod engine;
pub mod engines;
pub mod incidents;
pub mod templates;

pub use engine::{Engine, EngineResult, Records, Savepoints, Snapshot, unsupported};
