//! MatrixOne's `TestCkpLeak`: checkpoints that keep their buffers referenced.

use std::path::Path;
use std::sync::Mutex;

use crate::engine::{Engine, EngineResult};

/// Segments pinned by checkpoints and never released.
static PINNED_SEGMENTS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// MatrixOne's `TestCkpLeak`: every checkpoint pins the segment it flushed in a global
/// registry that nothing ever clears, so each checkpoint keeps its buffers referenced.
pub struct CheckpointPinsSegments<E> {
    inner: E,
    last_batch: Vec<u8>,
}

/// The planted bug: keeps a copy of the checkpointed segment forever.
#[inline(never)]
fn pin_segment(segment: &[u8]) {
    let mut pinned = PINNED_SEGMENTS.lock().unwrap_or_else(|e| e.into_inner());
    pinned.push(std::hint::black_box(segment.to_vec()));
}

impl<E: Engine> Engine for CheckpointPinsSegments<E> {
    const NAME: &'static str = "incident/checkpoint_pins_segments";

    fn open(dir: &Path) -> EngineResult<Self> {
        Ok(Self {
            inner: E::open(dir)?,
            last_batch: Vec::new(),
        })
    }

    fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        self.last_batch = records
            .iter()
            .take(4)
            .flat_map(|(_, v)| v.clone())
            .collect();
        self.inner.write(records)
    }

    fn read(&mut self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        self.inner.read(key)
    }

    fn checkpoint(&mut self) -> EngineResult<()> {
        self.inner.checkpoint()?;
        pin_segment(&self.last_batch);
        Ok(())
    }
}
