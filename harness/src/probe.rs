//! Samples of the heap: leakgate's own Rust-heap counters plus, with jemalloc, the
//! process-wide statistics that also cover C and C++ code calling `malloc`.

use leakgate_reports::Sample;

use crate::alloc::heap_stats;

/// Reads every counter now.
pub(crate) fn sample() -> Sample {
    let heap = heap_stats();
    let mut sample = Sample::heap(
        heap.live_bytes,
        heap.live_blocks,
        heap.peak_bytes,
        heap.allocations,
    );
    if let Some(process) = jemalloc::process_heap() {
        sample.process_allocated = Some(process.allocated);
        sample.process_active = Some(process.active);
        sample.process_resident = Some(process.resident);
    }
    sample
}

/// Why the process-wide heap is or is not measured, for the report's notes.
pub(crate) fn process_heap_note() -> Option<&'static str> {
    jemalloc::process_heap().is_none().then_some(
        "process-wide heap not measured: leakgate was built without its `jemalloc` feature",
    )
}

#[cfg(feature = "jemalloc")]
mod jemalloc {
    //! jemalloc's `stats.*` through `tikv-jemalloc-ctl`. Values refresh only when the
    //! epoch advances, and freed blocks parked in a thread's cache still count as
    //! allocated, so each read flushes this thread's cache and advances the epoch first.

    use tikv_jemalloc_ctl::{epoch, stats};

    pub(super) struct ProcessHeap {
        pub allocated: u64,
        pub active: u64,
        pub resident: u64,
    }

    pub(super) fn process_heap() -> Option<ProcessHeap> {
        // SAFETY: `thread.tcache.flush` takes no input or output; passing null for all
        // four pointers is how jemalloc documents calling it.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"thread.tcache.flush".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
        epoch::advance().ok()?;
        Some(ProcessHeap {
            allocated: stats::allocated::read().ok()? as u64,
            active: stats::active::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
        })
    }
}

#[cfg(not(feature = "jemalloc"))]
mod jemalloc {
    pub(super) struct ProcessHeap {
        pub allocated: u64,
        pub active: u64,
        pub resident: u64,
    }

    pub(super) fn process_heap() -> Option<ProcessHeap> {
        None
    }
}
