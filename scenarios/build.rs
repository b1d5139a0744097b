//! Builds the C half of the self-tests (`tests/c/c_heap.c`): functions that allocate
//! through `malloc`, whose C heap sites the self-tests check. Linked into this package's
//! test targets only; the library and its users get none of it.

fn main() {
    const SOURCE: &str = "tests/c/c_heap.c";
    println!("cargo::rerun-if-changed={SOURCE}");
    cc::Build::new()
        .file(SOURCE)
        .warnings(true)
        .cargo_metadata(false)
        .compile("leakgate_selftest_c");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    println!("cargo::rustc-link-arg-tests={out_dir}/libleakgate_selftest_c.a");
}
