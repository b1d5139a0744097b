//! Records the compiler and target that build leakgate, for the `environment` of its
//! reports: a test binary cannot ask cargo once it runs; and chooses where the tracking
//! allocator keeps its thread-local counters.
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=LEAKGATE_TARGET={target}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=LEAKGATE_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    choose_thread_slot();
}

/// Sets `leakgate_asm_tls` where the counters' thread-local can be reached with x86-64
/// assembly (64-bit Linux, not Miri, and not `--cfg leakgate_portable_tls`, which keeps
/// `thread_local!`), and names its symbol after this build of the crate, so that no two
/// copies of leakgate in one link share it.
fn choose_thread_slot() {
    println!("cargo:rustc-check-cfg=cfg(leakgate_asm_tls)");
    let cfg = |name: &str| std::env::var(format!("CARGO_CFG_{name}")).ok();
    let asm_tls = cfg("TARGET_ARCH").as_deref() == Some("x86_64")
        && cfg("TARGET_OS").as_deref() == Some("linux")
        && cfg("TARGET_POINTER_WIDTH").as_deref() == Some("64")
        && cfg("MIRI").is_none()
        && cfg("LEAKGATE_PORTABLE_TLS").is_none();
    if !asm_tls {
        return;
    }
    println!("cargo:rustc-cfg=leakgate_asm_tls");
    // `target/<profile>/build/leakgate-<hash>/out`: the hash names this build of the crate.
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let instance: String = std::path::Path::new(&out_dir)
        .parent()
        .and_then(|dir| dir.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    println!("cargo:rustc-env=LEAKGATE_TLS_SYMBOL={instance}_thread_counters");
}
