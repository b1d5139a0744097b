//! leakgate's self-test: every leak kind it must catch, each attributed to the function
//! that leaks, next to the clean patterns it must let through under default settings.
//!
//! Seeded leaks are `#[inline(never)]` and go through `black_box` so the optimiser
//! keeps both the allocation and the frame that the report must name.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use leakgate::fault::{self, failpoints, failpoints::fail::fail_point};
use leakgate::{Gate, Growth, Resource, Scenario};

leakgate::global_allocator!();

// ----- leaks ---------------------------------------------------------------------------

#[inline(never)]
fn leak_sixteen_bytes(i: usize) {
    black_box(Box::leak(Box::new([i as u8; 16])));
}

#[inline(never)]
fn leak_every_tenth(i: usize) {
    if i.is_multiple_of(10) {
        black_box(Box::leak(Box::new([i as u8; 64])));
    }
}

struct Node {
    _payload: [u8; 48],
    peer: RefCell<Option<Rc<Node>>>,
}

#[inline(never)]
fn make_cycle() {
    let a = Rc::new(Node {
        _payload: [1; 48],
        peer: RefCell::new(None),
    });
    let b = Rc::new(Node {
        _payload: [2; 48],
        peer: RefCell::new(Some(Rc::clone(&a))),
    });
    *a.peer.borrow_mut() = Some(b);
}

static SESSIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[inline(never)]
fn register_session(i: usize) {
    let name = format!("session-{i:08}");
    SESSIONS.lock().unwrap().push(black_box(name));
}

#[inline(never)]
fn send_event(events: &Sender<Vec<u8>>, i: usize) {
    let _ = events.send(vec![i as u8; 32]);
}

#[inline(never)]
fn cache_insert(cache: &mut HashMap<usize, Vec<u8>>, i: usize) {
    cache.insert(i, vec![0; 40]);
}

#[inline(never)]
fn worker_leak(job: usize) {
    black_box(Box::leak(vec![job as u8; 24].into_boxed_slice()));
}

/// A background worker that leaks on every job it runs.
struct Worker {
    jobs: Option<Sender<usize>>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(work: fn(usize)) -> Self {
        let (jobs, inbox) = mpsc::channel::<usize>();
        let (finished, done) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("leaky-worker".into())
            .spawn(move || {
                for job in inbox {
                    work(job);
                    let _ = finished.send(());
                }
            })
            .unwrap();
        Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        }
    }

    fn run(&self, job: usize) {
        self.jobs.as_ref().unwrap().send(job).unwrap();
        self.done.recv().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

#[inline(never)]
fn open_and_forget(segment: &Path) -> std::io::Result<()> {
    std::mem::forget(File::open(segment)?);
    Ok(())
}

#[inline(never)]
fn spawn_and_abandon() {
    // Parked forever and never joined: the thread outlives every iteration.
    let _ = thread::Builder::new()
        .name("parked-worker".into())
        .spawn(|| {
            loop {
                thread::park();
            }
        });
}

/// Restores `backup` into `dir/db` through the staging directory `dir/restore.tmp`, as
/// Apache Kvrocks restores through `db.tmp`. `clean_up` says whether the error path removes
/// the staging directory; when it does not, the leftover also makes every later restore
/// fail (`create_dir` finds it), which is the incident.
#[inline(never)]
fn restore(dir: &Path, backup: &[u8], clean_up: bool) -> std::io::Result<()> {
    let staging = dir.join("restore.tmp");
    let staged = (|| {
        std::fs::create_dir(&staging)?;
        std::fs::write(staging.join("CURRENT"), backup)?;
        fail_point!("restore::before_rename", |_| Err(std::io::Error::other(
            "injected failure"
        )));
        let db = dir.join("db");
        if db.exists() {
            std::fs::remove_dir_all(&db)?;
        }
        std::fs::rename(&staging, &db)
    })();
    if staged.is_err() && clean_up {
        std::fs::remove_dir_all(&staging)?;
    }
    staged
}

/// A restore that must fail under the injected fault; then, when it cleans up, the next
/// restore must succeed.
fn failed_restore(dir: &Path, clean_up: bool, inject: Inject) -> Result<(), String> {
    let backup = vec![7u8; 64 << 10];
    let attempt = || restore(dir, &backup, clean_up);
    if inject(&attempt).is_ok() {
        return Err("the restore should have failed under the injected fault".to_owned());
    }
    if clean_up {
        attempt().map_err(|e| format!("the restore after a failed one failed: {e}"))?;
    }
    Ok(())
}

type Inject = fn(&dyn Fn() -> std::io::Result<()>) -> std::io::Result<()>;

/// A restore failing under `inject` every iteration: the version that does not clean up
/// must be caught leaving `restore.tmp`; the one that does must pass.
fn restore_under_fault(name: &str, clean_up: bool, inject: Inject) -> Scenario<PathBuf> {
    let scenario = Scenario::new(match clean_up {
        true => format!("clean/{name}_cleans_up"),
        false => format!("leak/{name}_leaves_staging"),
    })
    .warmup(if clean_up { 5 } else { 0 })
    .iterations(20)
    .setup(|ctx| ctx.dir().to_path_buf())
    .iterate(move |dir: &mut PathBuf, _| failed_restore(dir, clean_up, inject));
    match clean_up {
        true => scenario,
        false => scenario
            .expect_leak(Resource::Files)
            .expect_site("restore.tmp"),
    }
}

fn disk_full_midway(attempt: &dyn Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    fault::disk_full(16 << 10, attempt)
}

fn failpoint_before_rename(attempt: &dyn Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    let _armed = failpoints::arm("restore::before_rename", 1).map_err(std::io::Error::other)?;
    attempt()
}

/// Appends a record to the WAL, truncating it every `checkpoint_every` records (never
/// when `None`: a checkpoint that cannot complete, as rqlite's could not).
#[inline(never)]
fn append_to_wal(dir: &Path, i: usize, checkpoint_every: Option<usize>) -> std::io::Result<()> {
    let path = dir.join("wal");
    if checkpoint_every.is_some_and(|n| i.is_multiple_of(n)) {
        File::create(&path)?;
    }
    let mut wal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    wal.write_all(&[i as u8; 4096])
}

// The C half of the self-tests: tests/c/c_heap.c, built by build.rs.
unsafe extern "C" {
    /// Mallocs an entry of `size` payload bytes and keeps it forever; 0, or -1.
    fn selftest_c_cache_insert(size: usize) -> i32;
    /// Mallocs a scratch buffer of `size` bytes, fills it and frees it; 0, or -1.
    fn selftest_c_scratch_buffer(size: usize) -> i32;
    /// Reallocs a global log `size` bytes longer; 0, or -1.
    fn selftest_c_log_append(size: usize) -> i32;
}

/// One append to the C log that `realloc` grows for good.
fn c_log_append() -> Result<(), String> {
    // SAFETY: the function only reallocates and writes its own buffer.
    let status = unsafe { selftest_c_log_append(64) };
    (status == 0)
        .then_some(())
        .ok_or_else(|| "out of memory in C".to_owned())
}

/// One call into the C half: the cache that keeps every entry, or the scratch buffer.
fn c_code(keeps: bool) -> Result<(), String> {
    // SAFETY: both functions only allocate, write and free memory of their own.
    let status = unsafe {
        if keeps {
            selftest_c_cache_insert(192)
        } else {
            selftest_c_scratch_buffer(192)
        }
    };
    (status == 0)
        .then_some(())
        .ok_or_else(|| "out of memory in C".to_owned())
}

#[inline(never)]
fn c_malloc(free: bool) {
    // SAFETY: a plain malloc, freed at once or deliberately leaked; never dereferenced.
    unsafe {
        let block = black_box(libc::malloc(256));
        if free {
            libc::free(block);
        }
    }
}

/// Point-in-time restore that collects the whole log before applying it (MatrixOne PITR):
/// its peak grows with the log.
#[inline(never)]
fn replay_whole_log(records: usize) -> usize {
    let log: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; 1024]).collect();
    black_box(&log).len()
}

/// The same replay, applying the log in batches of 16 records.
#[inline(never)]
fn replay_in_batches(records: usize) -> usize {
    (0..records.div_ceil(16))
        .map(|batch| {
            let records: Vec<Vec<u8>> = (0..16).map(|i| vec![(batch + i) as u8; 1024]).collect();
            black_box(&records).len()
        })
        .sum()
}

/// A replay of `size` records at four log lengths, expected to keep a constant peak.
fn replay_at_scale(name: &str, replay: fn(usize) -> usize) -> Scenario<usize> {
    Scenario::new(name)
        .warmup(1)
        .iterations(5)
        .scaling(&[512, 1024, 2048, 4096])
        .expect_peak_growth(Growth::Constant)
        .setup(|ctx| ctx.size() as usize)
        .iterate(move |records: &mut usize, _| {
            black_box(replay(*records));
        })
}

// ----- clean patterns ------------------------------------------------------------------

static LOOKUP: LazyLock<Vec<u64>> = LazyLock::new(|| (0..512).collect());
static LATE: OnceLock<Vec<u8>> = OnceLock::new();

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Two pool threads, each with a thread-local scratch buffer, fed round-robin.
struct Pool {
    workers: Vec<Worker>,
}

fn use_scratch(job: usize) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        s.resize(4096, job as u8);
    });
}

/// A thread that drops what it is sent a little later.
struct LateDropper {
    sender: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl LateDropper {
    fn start() -> Self {
        let (sender, inbox) = mpsc::channel::<Vec<u8>>();
        let thread = thread::spawn(move || {
            for buffer in inbox {
                thread::sleep(Duration::from_millis(2));
                drop(buffer);
            }
        });
        Self {
            sender: Some(sender),
            thread: Some(thread),
        }
    }
}

impl Drop for LateDropper {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// A leak of 24 bytes an iteration, hidden in the totals by [`ChurningCache`].
// Boxed on purpose: one block per iteration, as a registry of boxed entries keeps.
#[allow(clippy::vec_box)]
#[inline(never)]
fn remember_in_registry(registry: &mut Vec<Box<[u8; 24]>>, i: usize) {
    registry.push(black_box(Box::new([i as u8; 24])));
}

/// 32 buffers, one replaced every iteration by one of random size (0–8 KiB): the total
/// swings by about ±13 KiB while nothing accumulates.
struct ChurningCache {
    slots: Vec<Vec<u8>>,
    rng: fastrand::Rng,
}

impl ChurningCache {
    fn new() -> Self {
        let mut rng = fastrand::Rng::with_seed(24);
        let slots = (0..32).map(|_| vec![0u8; rng.usize(0..8192)]).collect();
        Self { slots, rng }
    }

    #[inline(never)]
    fn replace_one(&mut self) {
        let slot = self.rng.usize(0..self.slots.len());
        self.slots[slot] = black_box(vec![1u8; self.rng.usize(0..8192)]);
    }
}

/// A cache that fills one entry an iteration up to its capacity (a quarter of the run),
/// then evicts its oldest; every 20 iterations it rebuilds its index and retires the
/// old one, freed two rebuilds later (deferred reclamation, epoch style).
struct SlowFillingCache {
    entries: VecDeque<Vec<u8>>,
    capacity: usize,
    index: Vec<u64>,
    retired: VecDeque<Vec<u64>>,
}

impl SlowFillingCache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            index: Vec::new(),
            retired: VecDeque::new(),
        }
    }

    fn insert(&mut self, i: usize) {
        self.entries.push_back(vec![i as u8; 256]);
        if self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
        if i.is_multiple_of(20) {
            let rebuilt = vec![i as u64; 64 * self.entries.len()];
            self.retired
                .push_back(std::mem::replace(&mut self.index, rebuilt));
            if self.retired.len() > 2 {
                self.retired.pop_front();
            }
        }
    }
}

fn leaky(name: &str, site: &str) -> Scenario {
    Scenario::new(name)
        .warmup(5)
        .iterations(200)
        .expect_leak(Resource::Heap)
        .expect_site(site)
}

fn main() -> std::process::ExitCode {
    Gate::new()
        // The contract's example, exactly: a Vec in the state that grows forever.
        .scenario(
            leakgate::Scenario::new("demo/leaky")
                .warmup(5)
                .iterations(200)
                .setup(|ctx: &leakgate::Ctx| (ctx.dir().to_path_buf(), Vec::<u64>::new()))
                .iterate(|state: &mut (std::path::PathBuf, Vec<u64>), i: usize| {
                    state.1.push(i as u64)
                })
                .expect_leak(Resource::Heap)
                .expect_site("selftest::main"),
        )
        .scenario(
            leaky(
                "leak/sixteen_bytes_per_iteration",
                "selftest::leak_sixteen_bytes",
            )
            .iterate(|_, i| leak_sixteen_bytes(i)),
        )
        .scenario(
            leaky("leak/every_tenth_iteration", "selftest::leak_every_tenth")
                .iterate(|_, i| leak_every_tenth(i)),
        )
        .scenario(
            leaky("leak/reference_cycle", "selftest::make_cycle").iterate(|_, _| make_cycle()),
        )
        .scenario(
            leaky("leak/global_registry", "selftest::register_session")
                .iterate(|_, i| register_session(i)),
        )
        .scenario(
            leaky("leak/channel_backlog", "selftest::send_event")
                .setup(|_| mpsc::channel::<Vec<u8>>())
                .iterate(|(events, _unread), i| send_event(events, i)),
        )
        .scenario(
            leaky("leak/unbounded_cache_in_state", "selftest::cache_insert")
                .setup(|_| HashMap::new())
                .iterate(cache_insert),
        )
        .scenario(
            leaky("leak/background_thread", "selftest::worker_leak")
                .setup(|_| Worker::start(worker_leak))
                .iterate(|worker, i| worker.run(i)),
        )
        // Beyond the Rust heap: each leak names what leaked, next to its clean twin.
        .scenario(
            Scenario::new("leak/forgotten_file")
                .iterations(50)
                .setup(|ctx| {
                    let segment = ctx.dir().join("segment-0");
                    std::fs::write(&segment, b"records").unwrap();
                    segment
                })
                .iterate(|segment: &mut PathBuf, _| open_and_forget(segment))
                .expect_leak(Resource::Fds)
                .expect_site("segment-"),
        )
        .scenario(
            Scenario::new("clean/fd_churn")
                .iterations(50)
                .setup(|ctx| ctx.dir().to_path_buf())
                .iterate(|dir: &mut PathBuf, i| -> std::io::Result<()> {
                    File::create(dir.join(format!("segment-{}", i % 3)))?.write_all(b"x")
                }),
        )
        .scenario(
            Scenario::new("leak/parked_thread_never_joined")
                .iterations(20)
                .iterate(|_, _| spawn_and_abandon())
                .expect_leak(Resource::Threads)
                // A thread that never exits keeps its own allocations too; libc's share
                // (a few hundred bytes each) is too close to the C heap's noise to judge.
                .expect_leak(Resource::Heap)
                .tolerance(Resource::CHeap, 1 << 30)
                .expect_site("parked-worker"),
        )
        .scenario(
            Scenario::new("clean/thread_spawn_and_join")
                .iterations(20)
                .iterate(|_, i| {
                    thread::spawn(move || black_box(i))
                        .join()
                        .map(drop)
                        .map_err(|_| "panicked")
                }),
        )
        .scenario(restore_under_fault(
            "restore_on_a_full_disk",
            false,
            disk_full_midway,
        ))
        .scenario(restore_under_fault(
            "restore_on_a_full_disk",
            true,
            disk_full_midway,
        ))
        .scenario(restore_under_fault(
            "restore_failpoint",
            false,
            failpoint_before_rename,
        ))
        .scenario(restore_under_fault(
            "restore_failpoint",
            true,
            failpoint_before_rename,
        ))
        .scenario(
            Scenario::new("leak/pitr_replay_holds_the_whole_log")
                .iterations(10)
                .peak_budget(256 << 10)
                // The budget is judged here; the memory limit has its own test.
                .memory_limit(1 << 30)
                .iterate(|_, _| {
                    black_box(replay_whole_log(4096));
                })
                .expect_leak(Resource::Peak)
                .expect_site("replay_whole_log"),
        )
        .scenario(
            replay_at_scale("leak/pitr_replay_peak_grows_with_the_log", replay_whole_log)
                .expect_leak(Resource::Peak)
                .expect_site("replay_whole_log"),
        )
        .scenario(replay_at_scale(
            "clean/pitr_replay_in_batches_peak_is_constant",
            replay_in_batches,
        ))
        .scenario(
            Scenario::new("clean/pitr_replay_in_batches")
                .iterations(10)
                .peak_budget(256 << 10)
                .iterate(|_, _| {
                    black_box(replay_in_batches(4096));
                }),
        )
        .scenario(
            Scenario::new("leak/wal_never_checkpointed")
                .iterations(100)
                .setup(|ctx| ctx.dir().to_path_buf())
                .iterate(|dir: &mut PathBuf, i| append_to_wal(dir, i, None))
                .expect_leak(Resource::Disk),
        )
        .scenario(
            Scenario::new("clean/wal_truncated_by_checkpoints")
                .iterations(100)
                .setup(|ctx| ctx.dir().to_path_buf())
                .iterate(|dir: &mut PathBuf, i| append_to_wal(dir, i, Some(8))),
        )
        .scenario(
            Scenario::new("leak/c_malloc_without_free")
                .iterations(200)
                .iterate(|_, _| c_malloc(false))
                .expect_leak(Resource::CHeap)
                .expect_site("c_malloc"),
        )
        .scenario(
            Scenario::new("leak/c_cache_keeps_every_entry")
                .iterations(200)
                .iterate(|_, _| c_code(true))
                .expect_leak(Resource::CHeap)
                .expect_site("selftest_c_cache_insert"),
        )
        .scenario(
            // One block, moved or grown in place by `realloc`: attributed to the realloc.
            Scenario::new("leak/c_log_grown_by_realloc")
                .iterations(200)
                .iterate(|_, _| c_log_append())
                .expect_leak(Resource::CHeap)
                .expect_site("selftest_c_log_append"),
        )
        .scenario(
            Scenario::new("clean/c_scratch_buffer_freed")
                .iterations(200)
                .iterate(|_, _| c_code(false)),
        )
        .scenario(
            Scenario::new("clean/c_malloc_freed")
                .iterations(200)
                .iterate(|_, _| c_malloc(true)),
        )
        .scenario(
            Scenario::new("clean/bounded_cache")
                .iterations(200)
                .setup(|_| VecDeque::<String>::new())
                .iterate(|cache, i| {
                    cache.push_back(format!("entry-{i:06}"));
                    if cache.len() > 16 {
                        cache.pop_front();
                    }
                }),
        )
        .scenario(
            Scenario::new("clean/lazy_statics")
                .iterations(200)
                // The whole run: the lazy static is made half way, after an early stop.
                .min_iterations(200)
                .iterate(|_, i| {
                    black_box(LOOKUP[i % 512]);
                    // Made once, in the middle of the measured iterations.
                    if i >= 100 {
                        black_box(LATE.get_or_init(|| vec![7; 4096]));
                    }
                }),
        )
        .scenario(
            Scenario::new("clean/buffer_grows_then_stays")
                .iterations(200)
                .setup(|_| Vec::<u8>::new())
                .iterate(|buffer, i| {
                    buffer.clear();
                    buffer.resize(1024 * i.min(30), 1);
                }),
        )
        .scenario(
            Scenario::new("clean/thread_pool_with_thread_locals")
                .iterations(200)
                .setup(|_| Pool {
                    workers: (0..2).map(|_| Worker::start(use_scratch)).collect(),
                })
                .iterate(|pool, i| pool.workers[i % 2].run(i)),
        )
        .scenario(
            Scenario::new("clean/deferred_frees_on_a_background_thread")
                .iterations(200)
                .setup(|_| LateDropper::start())
                .iterate(|dropper, i| {
                    dropper
                        .sender
                        .as_ref()
                        .unwrap()
                        .send(vec![i as u8; 4096])
                        .unwrap();
                }),
        )
        // Growth only the sites show: the leak's survivors come from every iteration,
        // the churn's only from the last few.
        .scenario(
            Scenario::new("leak/hidden_under_churn")
                .warmup(5)
                .iterations(300)
                .setup(|_| (ChurningCache::new(), Vec::new()))
                .iterate(|(cache, registry), i| {
                    cache.replace_one();
                    remember_in_registry(registry, i);
                })
                .expect_leak(Resource::Heap)
                .expect_site("selftest::remember_in_registry"),
        )
        // Full before the baseline, larger than the run: every iteration's entry
        // survives, each evicting one made before the baseline; the block count stays.
        .scenario(
            Scenario::new("clean/cache_full_before_the_baseline")
                .warmup(400)
                .iterations(200)
                .setup(|_| VecDeque::<Vec<u8>>::new())
                .iterate(|cache, i| {
                    cache.push_back(vec![i as u8; 64]);
                    if cache.len() > 400 {
                        cache.pop_front();
                    }
                }),
        )
        // Rises for a quarter of the run, then stays: a plateau, not a leak.
        .scenario(
            Scenario::new("clean/slow_filling_cache_with_deferred_reclamation")
                .warmup(5)
                .iterations(200)
                .setup(|_| SlowFillingCache::new(50))
                .iterate(|cache, i| cache.insert(i)),
        )
        .scenario(
            Scenario::new("clean/files_in_the_scratch_dir")
                .iterations(100)
                .setup(|ctx| ctx.dir().to_path_buf())
                .iterate(|dir, i| -> std::io::Result<()> {
                    let path = dir.join(format!("segment-{}", i % 4));
                    std::fs::write(&path, vec![i as u8; 256])?;
                    black_box(std::fs::read(&path)?);
                    Ok(())
                }),
        )
        .run()
}
