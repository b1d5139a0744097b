//! A gate run from a test's own `main`, as a user's test that wants more than an exit
//! code would: `Gate::conclude` returns the verdicts and reports, checked here. Under
//! nextest, each process runs one scenario (`--exact NAME`); what did not run is `None`.

use std::hint::black_box;
use std::process::ExitCode;

use leakgate::{Gate, Resource, Scenario};
use leakgate_reports::Verdict;

leakgate::global_allocator!();

// Boxed on purpose: one block per iteration, as a registry of boxed entries keeps.
#[allow(clippy::vec_box)]
#[inline(never)]
fn keep_forever(registry: &mut Vec<Box<[u8; 40]>>, i: usize) {
    registry.push(black_box(Box::new([i as u8; 40])));
}

// The C half of the self-tests: tests/c/c_heap.c, built by build.rs.
unsafe extern "C" {
    /// Mallocs an entry of `size` payload bytes and keeps it forever; 0, or -1.
    fn selftest_c_cache_insert(size: usize) -> i32;
}

fn main() -> ExitCode {
    let conclusion = Gate::new()
        .scenario(
            Scenario::new("conclusion/registry")
                .iterations(50)
                .min_iterations(50)
                .setup(|_| Vec::new())
                .iterate(keep_forever)
                .expect_leak(Resource::Heap)
                .expect_site("conclusion::keep_forever"),
        )
        .scenario(
            Scenario::new("conclusion/reused_buffer")
                .iterations(50)
                .setup(|_| Vec::<u8>::with_capacity(4096))
                .iterate(|buffer, i| {
                    buffer.clear();
                    buffer.resize(1 + i % 4096, 7);
                }),
        )
        .scenario(
            Scenario::new("conclusion/c_cache")
                .iterations(50)
                .min_iterations(50)
                .iterate(|_, _| {
                    // SAFETY: the function only allocates and writes memory of its own.
                    let status = unsafe { selftest_c_cache_insert(192) };
                    (status == 0).then_some(()).ok_or("out of memory in C")
                })
                .expect_leak(Resource::CHeap),
        )
        .conclude(std::env::args())
        .expect("the gate starts");
    let registry = conclusion
        .reports
        .iter()
        .find(|r| r.name == "conclusion/registry");
    if let Some(report) = registry {
        // Found, and attributed: the finding's top site is the function that keeps.
        let finding = &report.findings[0];
        assert_eq!(finding.resource, Resource::Heap);
        assert!(finding.growth >= 40 * 50, "{}", finding.growth);
        assert_eq!(
            finding.sites[0].frames[0].function,
            "conclusion::keep_forever"
        );
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.summary);
    }
    if let Some(report) = conclusion
        .reports
        .iter()
        .find(|r| r.name == "conclusion/c_cache")
    {
        // A C function's leak: its C site starts at that function, past malloc.
        let finding = &report.findings[0];
        assert_eq!(finding.resource, Resource::CHeap);
        assert!(finding.growth >= 192 * 50, "{}", finding.growth);
        assert_eq!(
            finding.sites[0].frames[0].function,
            "selftest_c_cache_insert"
        );
        assert_eq!(finding.sites[0].iterations, 50);
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.summary);
    }
    if let Some(verdict) = conclusion.verdict("conclusion/reused_buffer") {
        assert_eq!(verdict, Verdict::Pass);
    }
    assert_eq!(
        conclusion.passed as usize + conclusion.failed as usize,
        conclusion.reports.len()
    );
    // Every scenario ran or was filtered out, unless this run only lists them.
    if !std::env::args().any(|a| a == "--list") {
        assert_eq!(
            conclusion.reports.len() + conclusion.filtered_out as usize,
            3,
            "{conclusion:?}"
        );
    }
    conclusion.exit_code()
}
