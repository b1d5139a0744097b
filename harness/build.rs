//! Records the compiler and target that build leakgate, for the `environment` of its
//! reports: a test binary cannot ask cargo once it runs.
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
}
