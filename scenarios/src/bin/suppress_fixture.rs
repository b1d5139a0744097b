//! Scenarios with real findings that suppression rules set aside, for the `suppress`
//! test: a heap leak (by function), abandoned threads (by thread name) and leftover lock
//! files (by path), each with its rule, and a clean scenario whose rule matches nothing
//! (stale). With `SUPPRESS_FIXTURE_RULES=off`, the scenarios' own rules are left out, so
//! the findings show as failures.

use std::hint::black_box;
use std::path::PathBuf;
use std::thread;

use leakgate::{Gate, Resource, Scenario};

leakgate::global_allocator!();

#[inline(never)]
fn remember_forever(registry: &mut Vec<Vec<u8>>, i: usize) {
    registry.push(black_box(vec![i as u8; 64]));
}

fn abandon_a_worker() {
    let _ = thread::Builder::new()
        .name("parked-worker".into())
        .spawn(|| {
            loop {
                thread::park();
            }
        });
}

/// `scenario` with the suppression `rule`, unless `SUPPRESS_FIXTURE_RULES=off`.
fn rule<S: 'static>(scenario: Scenario<S>, rule: &str) -> Scenario<S> {
    if std::env::var("SUPPRESS_FIXTURE_RULES").is_ok_and(|v| v == "off") {
        scenario
    } else {
        scenario.suppress(rule)
    }
}

fn main() -> std::process::ExitCode {
    Gate::new()
        .scenario(rule(
            Scenario::new("leak/by_function")
                .iterations(40)
                .setup(|_| Vec::with_capacity(1024))
                .iterate(remember_forever),
            "function:remember_forever  # upstream issue 42, fixed in the next release",
        ))
        .scenario(rule(
            Scenario::new("leak/by_thread")
                .iterations(10)
                // The threads keep their own allocations: only the threads are judged here.
                .tolerance(Resource::Heap, 1 << 30)
                .tolerance(Resource::CHeap, 1 << 30)
                .iterate(|_, _| abandon_a_worker()),
            "thread:parked-worker  # the worker pool outlives the scenario by design",
        ))
        .scenario(rule(
            Scenario::new("leak/by_path")
                .iterations(10)
                .setup(|ctx| (ctx.dir().to_path_buf(), 0))
                .iterate(|(dir, written): &mut (PathBuf, usize), _| {
                    // A new file each time, warm-up included: one left behind per iteration.
                    *written += 1;
                    std::fs::write(dir.join(format!("writer-{written}.lock")), b"").expect("writes")
                }),
            "path:.lock  # lock files are the engine's own business",
        ))
        .scenario(rule(
            Scenario::new("clean/stale_rule")
                .iterations(10)
                .iterate(|_, i| drop(black_box(vec![i as u8; 32]))),
            "function:leak_fixed_long_ago  # fixed in 1.2",
        ))
        .run()
}
