//! The checkpoint file: how far each source has been acknowledged by JetStream.
//!
//! `<state-dir>/checkpoints.json`:
//!
//! ```json
//! {"version":1,"box_id":"box-01","sources":[{"source":"box-01/00c0ffee00c0ffee-87",
//!   "path":"/data/hot/a.jsonl","dev":2049,"inode":1234,"offset":52000,
//!   "updated_at":"2025-08-22T00:37:41Z"}]}
//! ```
//!
//! `offset` is the end of the contiguous prefix of acknowledged messages: every byte below it is
//! in JetStream. `path`, `dev` and `inode` only say where the source was last seen; a restart
//! resumes by `source` (the content fingerprint). Writes go to a temporary file that is fsynced,
//! renamed over the old one, and the directory fsynced, so a crash leaves the old or the new
//! file, never a torn one. A file that cannot be read back (corrupt, or another version) is moved
//! aside and the shipper starts from 0: re-shipping is safe because the ingest ledger dedupes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, instrument, warn};

pub const CHECKPOINT_FILE: &str = "checkpoints.json";
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFile {
    pub version: u32,
    pub box_id: String,
    pub sources: Vec<SourceEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub source: String,
    pub path: String,
    pub dev: u64,
    pub inode: u64,
    pub offset: u64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read checkpoint {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write checkpoint {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Reads and atomically replaces `<state-dir>/checkpoints.json`.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
}

impl CheckpointStore {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            path: dir.join(CHECKPOINT_FILE),
            tmp: dir.join(format!("{CHECKPOINT_FILE}.tmp")),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoint, or `None` when there is none or it was unusable (then it is moved
    /// aside as `checkpoints.json.corrupt-<unix seconds>`).
    #[instrument(skip_all, fields(path = %self.path.display()))]
    pub fn load(&self) -> Result<Option<CheckpointFile>, CheckpointError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let problem = match serde_json::from_slice::<CheckpointFile>(&bytes) {
            Ok(file) if file.version == CHECKPOINT_VERSION => return Ok(Some(file)),
            Ok(file) => format!("unsupported version {}", file.version),
            Err(e) => e.to_string(),
        };
        let aside = self.dir.join(format!(
            "{CHECKPOINT_FILE}.corrupt-{}",
            Utc::now().timestamp()
        ));
        error!(problem, moved_to = %aside.display(),
            "checkpoint unusable; moving it aside and shipping every file from the start");
        if let Err(e) = fs::rename(&self.path, &aside) {
            warn!(error = %e, "cannot move the unusable checkpoint aside; it will be overwritten");
        }
        Ok(None)
    }

    /// Replaces the checkpoint: temporary file, fsync, rename, fsync of the directory.
    #[instrument(skip_all, fields(path = %self.path.display(), sources = file.sources.len()), err)]
    pub fn save(&self, file: &CheckpointFile) -> Result<(), CheckpointError> {
        let write_err = |source| CheckpointError::Write {
            path: self.path.clone(),
            source,
        };
        let mut tmp = io::BufWriter::new(File::create(&self.tmp).map_err(write_err)?);
        serde_json::to_writer(&mut tmp, file).map_err(|e| write_err(e.into()))?;
        let tmp = tmp.into_inner().map_err(|e| write_err(e.into_error()))?;
        tmp.sync_all().map_err(write_err)?;
        drop(tmp);
        fs::rename(&self.tmp, &self.path).map_err(write_err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointFile {
        CheckpointFile {
            version: CHECKPOINT_VERSION,
            box_id: "box1".into(),
            sources: vec![SourceEntry {
                source: "box1/00000000000000ff-12".into(),
                path: "/data/a.jsonl".into(),
                dev: 2049,
                inode: 77,
                offset: 4096,
                updated_at: "2025-08-22T00:37:41Z".parse().unwrap(),
            }],
        }
    }

    #[test]
    fn a_saved_checkpoint_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().join("state")).unwrap();
        assert_eq!(store.load().unwrap(), None);
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.starts_with(r#"{"version":1,"box_id":"box1","sources":[{"source":"#));
        assert!(text.contains(r#""updated_at":"2025-08-22T00:37:41Z""#));
        assert!(!dir.path().join("state/checkpoints.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_checkpoint_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        fs::write(store.path(), b"{\"version\":1,\"box_").unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert!(!store.path().exists());
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(
            aside[0].starts_with("checkpoints.json.corrupt-"),
            "{aside:?}"
        );
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
    }

    #[test]
    fn an_unknown_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let mut file = sample();
        file.version = 2;
        store.save(&file).unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert!(!store.path().exists());
    }
}
