//! The memory limit: a thread that stops a scenario whose heap runs away, after writing
//! down the sites that made it, so a runaway restore ends as a reported `peak` finding
//! instead of a machine-wide OOM kill with no report.
//!
//! It polls the heap every [`POLL`]; a scenario can overshoot the limit by what it
//! allocates in that time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::alloc::heap_stats;
use crate::channel::Channel;
use crate::measure::{Event, MemoryLimitHit};
use leakgate_reports::text::bytes;

/// How often the heap is looked at; it trips on the second poll over the limit.
const POLL: Duration = Duration::from_millis(5);

/// The running watchdog; stops and joins its thread on drop.
pub(crate) struct Watchdog {
    stop: Arc<AtomicBool>,
    ceiling: Arc<AtomicU64>,
    limit: u64,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching; nothing trips until [`arm`](Self::arm) sets the baseline. Started
    /// before the baseline so its thread is part of it.
    pub(crate) fn start(limit: u64, channel: Arc<Channel>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let ceiling = Arc::new(AtomicU64::new(u64::MAX));
        let thread = std::thread::Builder::new()
            .name("leakgate-watchdog".into())
            .spawn({
                let (stop, ceiling) = (Arc::clone(&stop), Arc::clone(&ceiling));
                move || {
                    // Two polls in a row over the ceiling: one can be taken mid-update.
                    let mut over = false;
                    while !stop.load(Relaxed) {
                        let live = heap_stats().live_bytes;
                        let ceiling = ceiling.load(Relaxed);
                        if live > ceiling && over {
                            trip(limit, live - (ceiling - limit), &channel);
                        }
                        over = live > ceiling;
                        std::thread::sleep(POLL);
                    }
                }
            })?;
        Ok(Self {
            stop,
            ceiling,
            limit,
            thread: Some(thread),
        })
    }

    /// Trips once the heap exceeds `baseline` by more than the limit.
    pub(crate) fn arm(&self, baseline: u64) {
        self.ceiling
            .store(baseline.saturating_add(self.limit), Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reports the sites at the peak and stops the process.
fn trip(limit: u64, heap: u64, channel: &Channel) -> ! {
    crate::alloc::peak::copy_now(heap_stats().live_bytes);
    // The report's own allocations are not sites of the scenario.
    let _untracked = crate::alloc::ReentrancyGuard::enter();
    let sites = crate::attribution::peak_sites();
    eprintln!(
        "leakgate: the heap reached {} above baseline, over the memory limit of {}: stopping the scenario",
        bytes(heap as i64),
        bytes(limit as i64)
    );
    channel.send(&Event::MemoryLimit(MemoryLimitHit { limit, heap, sites }));
    std::process::abort()
}
