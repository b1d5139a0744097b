//! Scenarios that end badly, next to clean ones, for the `containment` test: each must
//! be reported by name, cause and phase, and must not stop the others.

use std::time::Duration;

use std::path::{Path, PathBuf};

use leakgate::fault::pages::Pages;
use leakgate::{CrashCause, Gate, Scenario};

leakgate::global_allocator!();

/// Follows the `next` links of a page file recursively with no visited set, as a
/// recovery walk over a B+tree would: once a misdirected write links pages into a cycle,
/// it recurses until the stack is gone (bbolt after power loss).
#[inline(never)]
fn walk(pages: &Pages, page: u64) -> u64 {
    let contents = pages.read_page(page).expect("page reads");
    let next = u64::from_le_bytes(contents[..8].try_into().expect("a page holds a link"));
    let frame = std::hint::black_box([page; 64]);
    let rest = if next == 0 { 0 } else { walk(pages, next) };
    1 + rest + frame[0] % 2
}

/// A point-in-time restore that reads its whole log into memory before applying it, for
/// a log that never ends: it runs away until the memory limit stops it (MatrixOne PITR).
/// Capped at 1 GiB so a broken watchdog cannot take the machine down.
#[inline(never)]
fn runaway_replay() -> usize {
    let log: Vec<Vec<u8>> = (0..1 << 20).map(|i| vec![i as u8; 1024]).collect();
    std::hint::black_box(log).len()
}

/// A file of four 16-byte pages linked 0 → 1 → 2 → 3 → end.
fn page_chain(dir: &Path) -> PathBuf {
    let path = dir.join("tree.db");
    let links: Vec<u8> = [1u64, 2, 3, 0]
        .iter()
        .flat_map(|next| [next.to_le_bytes(), [0; 8]].concat())
        .collect();
    std::fs::write(&path, links).expect("the page file is written");
    path
}

/// Walks a page chain each iteration; at iteration 1 a duplicated page links it into a
/// cycle, and [`walk`] overflows the stack.
fn page_cycle(name: &str) -> Scenario<PathBuf> {
    Scenario::new(name)
        .warmup(0)
        .iterations(20)
        .setup(|ctx| page_chain(ctx.dir()))
        .iterate(|path: &mut PathBuf, i| -> std::io::Result<()> {
            let mut pages = Pages::open(&*path, 16)?;
            if i == 1 {
                // Page 3 now links back to 2: 2 → 3 → 2 → …
                pages.duplicate(1, 3)?;
            }
            std::hint::black_box(walk(&pages, 0));
            Ok(())
        })
}

fn main() -> std::process::ExitCode {
    Gate::new()
        .scenario(
            Scenario::new("clean/before")
                .iterations(20)
                .iterate(|_, i| {
                    std::hint::black_box(vec![i; 8]);
                }),
        )
        .scenario(
            Scenario::new("crash/panic")
                .warmup(0)
                .iterations(20)
                .iterate(|_, i| {
                    assert!(i < 3, "boom at iteration {i}");
                }),
        )
        .scenario(
            Scenario::new("crash/abort")
                .warmup(0)
                .iterations(20)
                .iterate(|_, i| {
                    if i == 2 {
                        eprintln!("aborting at iteration {i}");
                        std::process::abort();
                    }
                }),
        )
        .scenario(page_cycle("crash/stack_overflow"))
        .scenario(
            Scenario::new("crash/segfault")
                .warmup(0)
                .iterations(20)
                .iterate(|_, i| {
                    if i == 5 {
                        eprintln!("writing through a null pointer at iteration {i}");
                        // A real fault: `raise(SIGSEGV)` would be swallowed by the handler
                        // std installs to detect stack overflows, which re-raises only
                        // real faults.
                        // SAFETY: none; crashing is the point of this scenario.
                        unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
                    }
                }),
        )
        .scenario(
            Scenario::new("crash/timeout")
                .warmup(0)
                .timeout(Duration::from_secs(2))
                .iterate(|_, _| std::thread::sleep(Duration::from_secs(3600))),
        )
        .scenario(
            Scenario::new("crash/runaway_restore")
                .warmup(0)
                .iterations(3)
                .peak_budget(1 << 20)
                .iterate(|_, _| {
                    std::hint::black_box(runaway_replay());
                }),
        )
        .scenario(
            Scenario::new("crash/panic_in_setup")
                .setup(|_| -> u32 { panic!("cannot open the engine") })
                .iterate(|_, _| {}),
        )
        .scenario(
            Scenario::new("pinned/known_panic")
                .warmup(0)
                .iterations(5)
                .expect_crash(CrashCause::Panic)
                .iterate(|_, i| assert!(i < 2, "a known engine panic")),
        )
        // Pinned, but blamed on the wrong function: must fail, naming the right one.
        .scenario(
            page_cycle("pinned/overflow_elsewhere")
                .expect_crash(CrashCause::StackOverflow)
                .expect_site("not_the_recursion"),
        )
        .scenario(
            Scenario::new("fail/iteration_error")
                .warmup(0)
                .iterations(20)
                .iterate(|_, i| {
                    if i == 4 {
                        Err(format!("write failed at {i}"))
                    } else {
                        Ok(())
                    }
                }),
        )
        // For the test that kills a whole run (`--skip hang/` elsewhere).
        .scenario(
            Scenario::new("hang/until_killed")
                .warmup(0)
                .timeout(Duration::from_secs(60))
                .iterate(|_, _| std::thread::sleep(Duration::from_secs(3600))),
        )
        // Leaves a process behind that holds its stdout and stderr: the runner must not
        // wait for it to close them.
        .scenario(
            Scenario::new("clean/leaves_a_process_holding_its_output")
                .warmup(0)
                .iterations(5)
                .iterate(|_, i| {
                    if i == 0 {
                        let left_running = std::process::Command::new("sleep")
                            .arg("600")
                            .spawn()
                            .expect("sleep starts");
                        // Never waited for: it outlives the scenario on purpose.
                        std::mem::forget(left_running);
                    }
                }),
        )
        .scenario(Scenario::new("clean/after").iterations(20).iterate(|_, i| {
            std::hint::black_box(format!("{i}"));
        }))
        .run()
}
