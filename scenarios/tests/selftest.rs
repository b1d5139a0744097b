//! leakgate's self-test: every leak kind it must catch, each attributed to the function
//! that leaks, next to the clean patterns it must let through under default settings.
//!
//! Seeded leaks are `#[inline(never)]` and go through `black_box` so the optimiser
//! keeps both the allocation and the frame that the report must name.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use leakgate::{Gate, Resource, Scenario};

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
