//! Locating (and if needed building) the release builds of edge-shipper and ingest-worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::config::Config;

const SHIPPER: &str = "edge-shipper";
const WORKER: &str = "ingest-worker";

/// The binaries under test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Binaries {
    pub shipper: PathBuf,
    pub worker: PathBuf,
}

/// Finds the release builds (next to this executable, else in `<target>/release`); builds them
/// with cargo when missing or when `--rebuild` asks for it, unless `--no-build`.
pub fn locate(config: &Config) -> anyhow::Result<Binaries> {
    let release = release_dir();
    let found = find(&release);
    let bins = match found {
        Some(bins) if !config.rebuild => bins,
        _ if config.no_build => bail!(
            "release builds of {SHIPPER} and {WORKER} not found in {}; build them with \
             `cargo build --release -p {SHIPPER} -p {WORKER}` or drop --no-build",
            release.display()
        ),
        _ => {
            build()?;
            find(&release).with_context(|| {
                format!(
                    "cargo built {SHIPPER} and {WORKER} but they are not in {}",
                    release.display()
                )
            })?
        }
    };
    for (bin, krate) in [(&bins.shipper, SHIPPER), (&bins.worker, WORKER)] {
        if is_stale(bin, krate) {
            warn!(binary = %bin.display(), "binary is older than its sources; pass --rebuild to measure the current code");
        }
    }
    info!(shipper = %bins.shipper.display(), worker = %bins.worker.display(), "binaries under test");
    Ok(bins)
}

fn find(release: &Path) -> Option<Binaries> {
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
    Some(Binaries {
        shipper: path(SHIPPER)?,
        worker: path(WORKER)?,
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

fn build() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = testkit::bins::workspace_root();
    info!("building {SHIPPER} and {WORKER} (release)");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", SHIPPER, "-p", WORKER])
        .current_dir(&root)
        .status()
        .with_context(|| format!("run {cargo:?} build"))?;
    if !status.success() {
        bail!("cargo build --release -p {SHIPPER} -p {WORKER} failed ({status})");
    }
    Ok(())
}

/// True when a source file of the crate (or of the protocol crate) is newer than the binary.
fn is_stale(bin: &Path, krate: &str) -> bool {
    let Some(built) = modified(bin) else {
        return false;
    };
    let root = testkit::bins::workspace_root();
    [
        root.join(krate).join("src"),
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
