use leakgate_user_example::{CRC_TABLE, RecentEntries, remember_request};

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
        .run()
}
