//! Scenarios that end badly, next to clean ones, for the `containment` test: each must
//! be reported by name, cause and phase, and must not stop the others.

use std::time::Duration;

use leakgate::{Gate, Scenario};

leakgate::global_allocator!();

/// Follows page links recursively with no visited set, as a recovery walk over a
/// B+tree would: a torn write that links pages into a cycle recurses until the stack is
/// gone (bbolt after power loss).
#[inline(never)]
fn walk(pages: &[usize], page: usize) -> usize {
    let frame = std::hint::black_box([page; 512]);
    let rest = match pages[page] {
        0 => 0,
        next => walk(pages, next),
    };
    1 + rest + frame[0] % 2
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
                        std::process::abort();
                    }
                }),
        )
        .scenario(
            Scenario::new("crash/stack_overflow")
                .warmup(0)
                .iterations(20)
                .iterate(|_, i| {
                    if i == 1 {
                        std::hint::black_box(walk(&[0, 2, 3, 1], 1));
                    }
                }),
        )
        .scenario(
            Scenario::new("crash/segfault")
                .warmup(0)
                .iterations(20)
                .iterate(|_, i| {
                    if i == 5 {
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
            Scenario::new("crash/panic_in_setup")
                .setup(|_| -> u32 { panic!("cannot open the engine") })
                .iterate(|_, _| {}),
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
        .scenario(Scenario::new("clean/after").iterations(20).iterate(|_, i| {
            std::hint::black_box(format!("{i}"));
        }))
        .run()
}
