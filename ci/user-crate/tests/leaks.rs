use leakgate::CrashCause;
use leakgate_user_example::{CRC_TABLE, RecentEntries, count_pages, read_page, remember_request};

leakgate::global_allocator!();

fn main() -> std::process::ExitCode {
    leakgate::Gate::new()
        .scenario(
            leakgate::Scenario::new("user/remember_requests")
                .warmup(5)
                .iterations(200)
                .setup(|ctx: &leakgate::Ctx| ctx.dir().to_path_buf())
                .iterate(|_dir: &mut std::path::PathBuf, i: usize| {
                    std::hint::black_box(remember_request(i));
                }),
        )
        .scenario(
            leakgate::Scenario::new("user/bounded_cache")
                .warmup(5)
                .iterations(200)
                .setup(|_ctx: &leakgate::Ctx| RecentEntries::new(32))
                .iterate(|cache: &mut RecentEntries, i: usize| cache.insert(format!("entry {i}"))),
        )
        .scenario(
            leakgate::Scenario::new("user/lazy_static")
                .warmup(5)
                .iterations(200)
                .iterate(|_: &mut (), i: usize| -> Result<(), String> {
                    std::hint::black_box(CRC_TABLE[i % 256]);
                    Ok(())
                }),
        )
        // Known crashes, pinned: each passes only if it happens, where it is expected.
        .scenario(
            leakgate::Scenario::new("user/pinned_segfault")
                .warmup(0)
                .iterations(10)
                .iterate(|_: &mut (), i: usize| {
                    // The fifth page number is damaged.
                    let page = if i == 4 { 8 } else { &CRC_TABLE[0] as *const u32 as usize };
                    std::hint::black_box(read_page(page));
                })
                .expect_crash(CrashCause::Signal)
                .expect_site("read_page"),
        )
        .scenario(
            leakgate::Scenario::new("user/pinned_overflow")
                .warmup(0)
                .iterations(10)
                .iterate(|_: &mut (), i: usize| {
                    std::hint::black_box(count_pages(i as u64, 0));
                })
                .expect_crash(CrashCause::StackOverflow)
                .expect_site("count_pages"),
        )
        .run()
}
