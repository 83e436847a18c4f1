//! The archive's storage through `object_store`: a local directory or an S3-compatible bucket.
//!
//! Every object is written whole with one put. On S3 a put is atomic (a reader sees the old
//! object or the new one). On a local directory `object_store` writes a staging file
//! `<name>#<n>` beside the target, fsyncs it (fsync is on here) and renames it into place; a
//! process killed mid-write can leave such a staging file, which [`Store::sweep_staging`] removes
//! at start (dataset readers would otherwise see it).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::TargetArgs;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("archive target {target:?}: {reason}")]
    Target { target: String, reason: String },
    #[error("cannot create the archive directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid archive path {path:?}: {source}")]
    Path {
        path: String,
        #[source]
        source: Box<object_store::path::Error>,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
}

impl StoreError {
    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Io { source, .. } if matches!(**source, object_store::Error::NotFound { .. })
        )
    }
}

/// The archive's storage.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The directory of a local target.
    local_root: Option<PathBuf>,
    /// The target as configured, for logs.
    pub display: String,
}

fn parse(path: &str) -> Result<Path, StoreError> {
    Path::parse(path).map_err(|source| StoreError::Path {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

impl Store {
    /// Opens the target (creating a local directory if needed).
    pub fn open(args: &TargetArgs) -> Result<Self, StoreError> {
        let target = args.target.trim();
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Target {
                    target: target.to_owned(),
                    reason: "no bucket after s3://".into(),
                });
            }
            install_tls_provider();
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&args.s3_region)
                .with_virtual_hosted_style_request(!args.s3_path_style)
                .with_allow_http(args.s3_allow_http);
            if let Some(endpoint) = &args.s3_endpoint {
                b = b.with_endpoint(endpoint);
            }
            if let Some(key) = &args.s3_access_key_id {
                b = b.with_access_key_id(key.expose());
            }
            if let Some(secret) = &args.s3_secret_access_key {
                b = b.with_secret_access_key(secret.expose());
            }
            let s3 = b.build().map_err(|e| StoreError::Target {
                target: target.to_owned(),
                reason: e.to_string(),
            })?;
            let prefix = prefix.trim_matches('/');
            let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, parse(prefix)?))
            };
            return Ok(Self {
                inner,
                local_root: None,
                display: target.to_owned(),
            });
        }
        let dir = PathBuf::from(target.strip_prefix("file://").unwrap_or(target));
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let local = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StoreError::Target {
                target: target.to_owned(),
                reason: e.to_string(),
            })?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Self {
            inner: Arc::new(local),
            local_root: Some(dir),
            display: target.to_owned(),
        })
    }

    /// The directory of a local target.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        let p = parse(path)?;
        self.inner
            .put(&p, PutPayload::from_bytes(bytes))
            .await
            .map_err(|source| StoreError::Io {
                op: "write",
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let p = parse(path)?;
        let io = |source| StoreError::Io {
            op: "read",
            path: path.to_owned(),
            source: Box::new(source),
        };
        self.inner
            .get(&p)
            .await
            .map_err(io)?
            .bytes()
            .await
            .map_err(io)
    }

    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let p = parse(path)?;
        match self.inner.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Io {
                op: "delete",
                path: path.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    /// Every object under `prefix`, as paths relative to the archive root, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = parse(prefix)?;
        let mut out: Vec<String> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|source| StoreError::Io {
                op: "list",
                path: prefix.to_owned(),
                source: Box::new(source),
            })?;
        out.sort();
        Ok(out)
    }

    /// Removes staging files a killed process left in a local target (see the module docs).
    /// Returns how many.
    pub fn sweep_staging(&self) -> usize {
        let Some(root) = &self.local_root else {
            return 0;
        };
        let mut removed = 0;
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if is_staging_name(&entry.file_name().to_string_lossy()) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            warn!(path = %path.display(), error = %e, "cannot remove a staging file")
                        }
                    }
                }
            }
        }
        if removed > 0 {
            info!(removed, "removed staging files of an interrupted write");
        }
        removed
    }
}

/// `name#<digits>`: a staging file of `object_store`'s local store.
pub fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// HTTPS to S3 uses rustls with the ring provider (no aws-lc build); installed once per process.
fn install_tls_provider() {
    // Err: a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_recognised() {
        assert!(is_staging_name("part-00000.parquet#1"));
        assert!(is_staging_name("part-00000.json#12"));
        assert!(!is_staging_name("part-00000.parquet"));
        assert!(!is_staging_name("a#b"));
        assert!(!is_staging_name("a#"));
    }

    #[test]
    fn s3_targets_are_parsed() {
        let mut args = TargetArgs::local(PathBuf::from("/unused"));
        args.target = "s3://archive-bucket/plant/bkk/".into();
        args.s3_endpoint = Some("http://127.0.0.1:9000".into());
        args.s3_allow_http = true;
        args.s3_access_key_id = Some("id".parse().unwrap());
        args.s3_secret_access_key = Some("secret".parse().unwrap());
        let store = Store::open(&args).unwrap();
        assert!(store.local_root().is_none());
        assert_eq!(store.display, "s3://archive-bucket/plant/bkk/");
        args.target = "s3://".into();
        assert!(matches!(Store::open(&args), Err(StoreError::Target { .. })));
    }

    #[tokio::test]
    async fn local_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&TargetArgs::local(dir.path().to_path_buf())).unwrap();
        store
            .put(
                "date=2025-08-22/site=a%2Fb/x.parquet",
                Bytes::from_static(b"abc"),
            )
            .await
            .unwrap();
        assert!(dir
            .path()
            .join("date=2025-08-22/site=a%2Fb/x.parquet")
            .is_file());
        assert_eq!(
            store
                .get("date=2025-08-22/site=a%2Fb/x.parquet")
                .await
                .unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(
            store.list("date=2025-08-22").await.unwrap(),
            vec!["date=2025-08-22/site=a%2Fb/x.parquet"]
        );
        std::fs::write(dir.path().join("date=2025-08-22/y.parquet#3"), b"x").unwrap();
        assert_eq!(store.sweep_staging(), 1);
        store
            .delete("date=2025-08-22/site=a%2Fb/x.parquet")
            .await
            .unwrap();
        assert!(store
            .get("date=2025-08-22/site=a%2Fb/x.parquet")
            .await
            .unwrap_err()
            .is_not_found());
        assert!(store.list("date=2025-08-22").await.unwrap().is_empty());
    }
}
