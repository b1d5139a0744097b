//! Samples of everything leakgate watches: its own Rust-heap counters, jemalloc's
//! process-wide statistics (which also cover C and C++ code calling `malloc`), open file
//! descriptors, threads, and the files and bytes under the scenario's directories.
//!
//! Counts are taken after every iteration; the [`Inventory`] (which descriptor points
//! where, which thread is called what, which paths exist) only at the baseline and the
//! end, to name what leaked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use leakgate_reports::Sample;
use serde::{Deserialize, Serialize};

use crate::alloc::heap_stats;

/// What a session samples: the directories to watch, and how to split jemalloc's total.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    dirs: Vec<PathBuf>,
    rust_heap_in_jemalloc: bool,
}

impl Probe {
    /// A probe watching `dirs` (the scratch directory and any `watch_dir`).
    pub(crate) fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            rust_heap_in_jemalloc: rust_heap_in_jemalloc(),
        }
    }

    /// Reads every counter now.
    pub(crate) fn sample(&self) -> Sample {
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
            let rust = if self.rust_heap_in_jemalloc {
                heap.live_bytes
            } else {
                0
            };
            let live = process.allocated.saturating_sub(process.cached);
            sample.c_heap_bytes = Some(live.saturating_sub(rust));
        }
        sample.fds = count_entries(Path::new("/proc/self/fd")).map(|n| n.saturating_sub(1));
        sample.threads = count_entries(Path::new("/proc/self/task"));
        let (mut files, mut bytes) = (0, 0);
        self.walk_files(|_, size| {
            files += 1;
            bytes += size;
        });
        sample.files = Some(files);
        sample.disk_bytes = Some(bytes);
        sample.rss_bytes = rss_bytes();
        sample
    }

    /// Names every descriptor, thread and path now.
    pub(crate) fn inventory(&self) -> Inventory {
        Inventory {
            fds: open_fds(),
            threads: live_threads(),
            files: {
                let mut paths = BTreeSet::new();
                self.walk_files(|path, _| {
                    paths.insert(path.to_owned());
                });
                paths
            },
        }
    }

    /// Calls `visit` with every path under the watched directories (not following links)
    /// and its size (0 for all but regular files). Per-iteration samples only count, so
    /// they hold no list of paths that would add to the measured peak.
    fn walk_files(&self, mut visit: impl FnMut(&Path, u64)) {
        let mut pending: Vec<PathBuf> = self.dirs.clone();
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let size = match entry.file_type() {
                    Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
                    _ => 0,
                };
                visit(&path, size);
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    pending.push(path);
                }
            }
        }
    }
}

/// Named descriptors, threads and paths at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Inventory {
    fds: BTreeMap<u32, String>,
    threads: BTreeMap<u32, String>,
    files: BTreeSet<PathBuf>,
}

/// What exists now that did not at the baseline, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Leaked {
    pub fds: Vec<String>,
    pub threads: Vec<String>,
    pub files: Vec<String>,
}

impl Inventory {
    /// What is in `self` and was not in `baseline`. A descriptor number reused for
    /// another target counts as new.
    pub(crate) fn new_since(&self, baseline: &Inventory) -> Leaked {
        Leaked {
            fds: self
                .fds
                .iter()
                .filter(|(fd, target)| baseline.fds.get(fd) != Some(target))
                .map(|(fd, target)| format!("fd {fd} -> {target}"))
                .collect(),
            threads: self
                .threads
                .iter()
                .filter(|(tid, _)| !baseline.threads.contains_key(tid))
                .map(|(tid, name)| format!("{name} (tid {tid})"))
                .collect(),
            files: self
                .files
                .difference(&baseline.files)
                .map(|p| p.display().to_string())
                .collect(),
        }
    }
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.count() as u64)
}

fn open_fds() -> BTreeMap<u32, String> {
    let listing_itself = format!("/proc/{}/fd", std::process::id());
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?.display().to_string();
            (target != listing_itself).then_some((fd, target))
        })
        .collect()
}

fn live_threads() -> BTreeMap<u32, String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/task") else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let tid = entry.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((tid, name.trim_end().to_owned()))
        })
        .collect()
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The system's page size (`statm` counts pages).
fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system; it has no memory arguments.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Whether Rust's global allocations land in jemalloc's statistics: a 4 MiB block must
/// move `stats.allocated` by at least that much.
fn rust_heap_in_jemalloc() -> bool {
    let Some(before) = jemalloc::process_heap() else {
        return false;
    };
    let block = std::hint::black_box(vec![1u8; 4 << 20]);
    let during = jemalloc::process_heap().map_or(0, |p| p.allocated);
    drop(block);
    during >= before.allocated + (4 << 20)
}

/// Why the process-wide heap is or is not measured, for the report's notes.
pub(crate) fn process_heap_note() -> Option<&'static str> {
    jemalloc::process_heap().is_none().then_some(
        "process-wide and C heap not measured: leakgate was built without its `jemalloc` feature",
    )
}

#[cfg(feature = "jemalloc")]
mod jemalloc {
    //! jemalloc's `stats.*` through `tikv-jemalloc-ctl`. Values refresh only when the
    //! epoch advances, and freed blocks parked in threads' caches still count as
    //! allocated: each read flushes this thread's cache, advances the epoch, and reports
    //! what all threads' caches hold (`stats.arenas.<all>.tcache_bytes`) alongside.

    use tikv_jemalloc_ctl::{epoch, stats};

    pub(super) struct ProcessHeap {
        pub allocated: u64,
        pub active: u64,
        pub resident: u64,
        /// Freed bytes parked in thread caches, counted in `allocated` all the same.
        pub cached: u64,
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
            // SAFETY: `stats.arenas.4096.tcache_bytes` (4096: all arenas merged) is a
            // read-only `size_t`, read as `usize`.
            cached: unsafe {
                tikv_jemalloc_ctl::raw::read::<usize>(b"stats.arenas.4096.tcache_bytes\0")
            }
            .unwrap_or(0) as u64,
        })
    }
}

#[cfg(not(feature = "jemalloc"))]
mod jemalloc {
    pub(super) struct ProcessHeap {
        pub allocated: u64,
        pub active: u64,
        pub resident: u64,
        pub cached: u64,
    }

    pub(super) fn process_heap() -> Option<ProcessHeap> {
        None
    }
}
