//! Locating the workspace's binaries (`edge-shipper`, `ingest-worker`, ...) from a test.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// Path of the workspace binary `name`, built in the same profile as the running test.
///
/// A test executable lives in `<target>/<profile>/deps/`, so the binary is looked up in
/// `<target>/<profile>/`; with `CARGO_TARGET_DIR` set, `$CARGO_TARGET_DIR/<profile>/` is tried too.
/// Cargo builds a package's binaries before its own integration tests, and `cargo test
/// --workspace` builds all of them; a test of another package must have them built first.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let candidates = candidate_dirs();
    for dir in &candidates {
        let path = dir.join(&file);
        if path.is_file() {
            return Ok(path);
        }
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "binary `{name}` not found (looked in: {}); build it first with `cargo build -p {name}` or \
         `cargo build --workspace`, or run the tests with `cargo test --workspace`",
        looked.join(", ")
    )
}

/// Root of the workspace (the directory holding the top `Cargo.toml`), e.g. to find
/// `db/migrations` or `hotdata/`.
pub fn workspace_root() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().unwrap_or(testkit).to_path_buf()
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut profile = None;
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
            exe_dir.parent().map(Path::to_path_buf)
        } else {
            None
        };
        if let Some(p) = profile_dir {
            profile = p.file_name().map(|n| n.to_os_string());
            dirs.push(p);
        }
        dirs.push(exe_dir);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_relative() {
            workspace_root().join(target)
        } else {
            target
        };
        let profile = profile.clone().unwrap_or_else(|| "debug".into());
        dirs.push(target.join(profile));
    } else if profile.is_none() {
        dirs.push(workspace_root().join("target").join("debug"));
    }
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_error_says_how_to_build_it() {
        let e = bin_path("no-such-edge-mes-binary").unwrap_err().to_string();
        assert!(e.contains("cargo build"), "{e}");
        assert!(e.contains("no-such-edge-mes-binary"), "{e}");
    }

    #[test]
    fn candidates_start_next_to_the_test_executable() {
        let dirs = candidate_dirs();
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        assert_eq!(dirs[0], profile_dir);
        assert!(workspace_root().join("Cargo.toml").is_file());
    }
}
