//! Rebuilds when the migrations change (they are embedded with `sqlx::migrate!`) and records the
//! compiler version for the benchmark's machine description.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=../db/migrations");
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BENCH_RUSTC_VERSION={version}");
}
