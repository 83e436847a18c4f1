//! Locating (and if needed building) the release builds of edge-shipper and ingest-worker, and of
//! mes-api when the API part runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::config::{Config, Part};

const SHIPPER: &str = "edge-shipper";
const WORKER: &str = "ingest-worker";
const API: &str = "mes-api";

/// The binaries under test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Binaries {
    pub shipper: PathBuf,
    pub worker: PathBuf,
    /// mes-api; located (and built) only when the API part runs.
    pub api: Option<PathBuf>,
}

/// Finds the release builds (next to this executable, else in `<target>/release`); builds them
/// with cargo when missing or when `--rebuild` asks for it, unless `--no-build`. mes-api is
/// needed only when the API part runs.
pub fn locate(config: &Config) -> anyhow::Result<Binaries> {
    let release = release_dir();
    let with_api = config.runs(Part::Api);
    let mut crates = vec![SHIPPER, WORKER];
    if with_api {
        crates.push(API);
    }
    let wanted = crates
        .iter()
        .map(|c| format!("-p {c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let bins = match find(&release, with_api) {
        Some(bins) if !config.rebuild => bins,
        _ if config.no_build => bail!(
            "release builds of {} not found in {}; build them with \
             `cargo build --release {wanted}` or drop --no-build",
            crates.join(", "),
            release.display()
        ),
        _ => {
            build(&crates)?;
            find(&release, with_api).with_context(|| {
                format!(
                    "cargo built {} but they are not in {}",
                    crates.join(", "),
                    release.display()
                )
            })?
        }
    };
    let mut under_test = vec![(&bins.shipper, SHIPPER), (&bins.worker, WORKER)];
    if let Some(api) = &bins.api {
        under_test.push((api, "api"));
    }
    for (bin, dir) in under_test {
        if is_stale(bin, dir) {
            warn!(binary = %bin.display(), "binary is older than its sources; pass --rebuild to measure the current code");
        }
    }
    info!(
        shipper = %bins.shipper.display(),
        worker = %bins.worker.display(),
        api = ?bins.api.as_ref().map(|p| p.display().to_string()),
        "binaries under test"
    );
    Ok(bins)
}

fn find(release: &Path, with_api: bool) -> Option<Binaries> {
    let path = |name: &str| {
        // testkit looks next to the running executable first; accept only a release build.
        testkit::bins::bin_path(name)
            .ok()
            .filter(|p| {
                p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|d| d == "release")
            })
            .or_else(|| Some(release.join(name)).filter(|p| p.is_file()))
    };
    let api = if with_api { Some(path(API)?) } else { None };
    Some(Binaries {
        shipper: path(SHIPPER)?,
        worker: path(WORKER)?,
        api,
    })
}

/// `<target>/release`: the directory of this executable when it is a release build, else
/// `$CARGO_TARGET_DIR/release` or `<workspace>/target/release`.
fn release_dir() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .filter(|d| d.file_name().is_some_and(|n| n == "release"))
    {
        return dir;
    }
    let root = testkit::bins::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || root.join("target"),
            |t| if t.is_relative() { root.join(t) } else { t },
        );
    target.join("release")
}

/// `cargo build --release -p edge-mes-bench -p <crate> ...`. The bench is named too: the bench
/// depends on the three binaries' crates, so this build resolves exactly the features that the
/// bench's own build resolved and only links the binaries, instead of compiling the shared
/// dependencies again with the smaller feature set of the binaries alone.
fn build(crates: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = testkit::bins::workspace_root();
    info!(crates = %crates.join(" "), "building (release)");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "-p", env!("CARGO_PKG_NAME")]);
    // Under `cargo run` this process has the variables cargo sets for the crate it runs; build
    // scripts that watch one of them (ring's watches CARGO_MANIFEST_DIR and OUT_DIR) would
    // otherwise see a change and rebuild (ring, rustls, async-nats and all that depends on them: 3 minutes on 2
    // cores in CI).
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_set_by_cargo_run) {
            cmd.env_remove(key);
        }
    }
    for krate in crates {
        cmd.args(["-p", krate]);
    }
    let status = cmd
        .current_dir(&root)
        .status()
        .with_context(|| format!("run {cargo:?} build"))?;
    if !status.success() {
        bail!(
            "cargo build --release -p {} failed ({status})",
            crates.join(" -p ")
        );
    }
    Ok(())
}

/// Whether `cargo run` sets `name` for the binary it runs (never build configuration).
fn is_set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "OUT_DIR"
        )
}

/// True when a source file of the crate in `dir` (or of the protocol crate) is newer than the
/// binary.
fn is_stale(bin: &Path, dir: &str) -> bool {
    let Some(built) = modified(bin) else {
        return false;
    };
    let root = testkit::bins::workspace_root();
    [
        root.join(dir).join("src"),
        root.join("protocol").join("src"),
    ]
    .iter()
    .filter_map(|dir| newest_in(dir))
    .any(|t| t > built)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_in(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(t);
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_variables_of_cargo_run_are_dropped_from_the_build() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(is_set_by_cargo_run(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "CARGO",
            "PATH",
        ] {
            assert!(!is_set_by_cargo_run(name), "{name}");
        }
    }
}
