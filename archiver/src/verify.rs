//! Verifying a part: re-read its manifest and every file it lists, and check each file's size,
//! SHA-256, row count, row groups (offsets, rows, leaf hashes), schema fingerprint, and the
//! manifest's totals and Merkle root. A failure names the file.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use thiserror::Error;
use tracing::{info, warn};

use crate::db;
use crate::error::ArchiveError;
use crate::layout;
use crate::manifest::{self, Manifest, RowGroupEntry};
use crate::parquet_file;
use crate::schema;
use crate::store::{Store, StoreError};

/// Why a part does not verify. Every variant names the file (or manifest) at fault.
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("{path}: not a valid manifest: {detail}")]
    Manifest { path: String, detail: String },
    #[error("{path}: SHA-256 is {actual}, the manifest says {expected}")]
    Sha256 {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {detail}")]
    Mismatch { path: String, detail: String },
    #[error("{path}: not a readable Parquet file: {detail}")]
    Parquet { path: String, detail: String },
}

/// A part that verified.
#[derive(Debug, Clone)]
pub struct VerifiedPart {
    pub manifest: Manifest,
    pub manifest_sha256: String,
}

fn mismatch(path: &str, detail: String) -> VerifyError {
    VerifyError::Mismatch {
        path: path.to_owned(),
        detail,
    }
}

/// Reads and checks the manifest at `manifest_path` and all its files.
pub async fn verify_part(store: &Store, manifest_path: &str) -> Result<VerifiedPart, VerifyError> {
    let bytes = store
        .get(manifest_path)
        .await
        .map_err(|source| VerifyError::Read {
            path: manifest_path.to_owned(),
            source,
        })?;
    let manifest_sha256 = hex::encode(Sha256::digest(&bytes));
    let m = Manifest::from_bytes(&bytes).map_err(|e| VerifyError::Manifest {
        path: manifest_path.to_owned(),
        detail: e.to_string(),
    })?;
    if layout::manifest_path(m.day, m.part) != manifest_path {
        return Err(mismatch(
            manifest_path,
            format!("names day {} part {}, which lives elsewhere", m.day, m.part),
        ));
    }
    let expected_fp = schema::fingerprint(&schema::schema());
    if m.schema_fingerprint != expected_fp || m.schema != schema::canonical_lines(&schema::schema())
    {
        return Err(mismatch(
            manifest_path,
            "schema fingerprint or text is not this format's".into(),
        ));
    }
    let mut total = 0u64;
    for f in &m.files {
        let data = store
            .get(&f.path)
            .await
            .map_err(|source| VerifyError::Read {
                path: f.path.clone(),
                source,
            })?;
        check_file(f, &data)?;
        total += f.rows;
    }
    if total != m.rows {
        return Err(mismatch(
            manifest_path,
            format!("files hold {total} rows, the manifest says {}", m.rows),
        ));
    }
    let root = manifest::root_of(&m.files)
        .map(hex::encode)
        .ok_or_else(|| mismatch(manifest_path, "a row group hash is not hex".into()))?;
    if root != m.merkle_root {
        return Err(mismatch(
            manifest_path,
            format!("Merkle root is {root}, the manifest says {}", m.merkle_root),
        ));
    }
    Ok(VerifiedPart {
        manifest: m,
        manifest_sha256,
    })
}

fn check_file(f: &manifest::FileEntry, data: &Bytes) -> Result<(), VerifyError> {
    if data.len() as u64 != f.bytes {
        return Err(mismatch(
            &f.path,
            format!("{} bytes, the manifest says {}", data.len(), f.bytes),
        ));
    }
    let actual = hex::encode(Sha256::digest(data));
    if actual != f.sha256 {
        return Err(VerifyError::Sha256 {
            path: f.path.clone(),
            expected: f.sha256.clone(),
            actual,
        });
    }
    let facts = parquet_file::facts(data).map_err(|e| VerifyError::Parquet {
        path: f.path.clone(),
        detail: e.to_string(),
    })?;
    if facts.rows != f.rows {
        return Err(mismatch(
            &f.path,
            format!("{} rows, the manifest says {}", facts.rows, f.rows),
        ));
    }
    let groups: Vec<RowGroupEntry> = facts.row_groups.iter().map(RowGroupEntry::from).collect();
    if groups != f.row_groups {
        return Err(mismatch(
            &f.path,
            "row groups (offsets, rows or hashes) differ from the manifest".into(),
        ));
    }
    if facts.schema_fingerprint != schema::fingerprint(&schema::schema()) {
        return Err(mismatch(&f.path, "schema fingerprint differs".into()));
    }
    Ok(())
}

/// Summary of a `verify` run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub parts: usize,
    pub rows: u64,
    pub failures: Vec<String>,
}

/// Verifies every manifest in the archive (days in `[from, to]`). With a database, also checks
/// that each manifest is the one the database recorded, and records `verified_at`.
pub async fn verify_archive(
    store: &Store,
    pool: Option<&PgPool>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<VerifyReport, ArchiveError> {
    let mut report = VerifyReport::default();
    let manifests: Vec<String> = store
        .list(layout::MANIFEST_DIR)
        .await?
        .into_iter()
        .filter(|p| p.ends_with(".json"))
        .filter(|p| {
            let day = manifest_day(p);
            day.is_some_and(|d| from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t))
        })
        .collect();
    let recorded = match pool {
        Some(pool) => db::parts(pool, from, to).await?,
        None => Vec::new(),
    };
    for r in &recorded {
        if !manifests.contains(&r.manifest_path) {
            report.failures.push(format!(
                "{}: recorded in the database but missing",
                r.manifest_path
            ));
        }
    }
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut days: BTreeSet<NaiveDate> = BTreeSet::new();
    for path in manifests {
        report.parts += 1;
        days.extend(manifest_day(&path));
        // The files a manifest lists are its, whether or not they verify.
        if let Some(m) = store
            .get(&path)
            .await
            .ok()
            .and_then(|b| Manifest::from_bytes(&b).ok())
        {
            listed.extend(m.files.into_iter().map(|f| f.path));
        }
        match verify_part(store, &path).await {
            Ok(v) => {
                report.rows += v.manifest.rows;
                if let Some(pool) = pool {
                    let row = recorded.iter().find(|r| r.manifest_path == path);
                    match row {
                        Some(r) if r.manifest_sha256 == v.manifest_sha256 => {
                            db::mark_verified(pool, r.day, r.part, &v.manifest_sha256).await?;
                        }
                        Some(r) => report.failures.push(format!(
                            "{path}: SHA-256 is {}, the database recorded {}",
                            v.manifest_sha256, r.manifest_sha256
                        )),
                        None => warn!(%path, "manifest not recorded in this database"),
                    }
                }
                info!(%path, rows = v.manifest.rows, "verified");
            }
            Err(e) => report.failures.push(e.to_string()),
        }
    }
    // A Parquet file no manifest lists would be read twice, or out of place, by a reader that
    // lists the directory (a dataset scan): the live files are exactly the manifests' files.
    for day in days {
        for path in store.list(&layout::day_dir(day)).await? {
            if path.ends_with(".parquet") && !listed.contains(&path) {
                report.failures.push(format!(
                    "{path}: no manifest lists this file (left by a failed run, or written by \
                     one in progress)"
                ));
            }
        }
    }
    Ok(report)
}

/// The day of a manifest path `_manifests/date=YYYY-MM-DD/part-N.json`.
pub fn manifest_day(path: &str) -> Option<NaiveDate> {
    let dir = path
        .strip_prefix(layout::MANIFEST_DIR)?
        .trim_start_matches('/');
    let day = dir.split('/').next()?.strip_prefix("date=")?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// Verifies parts the database has not marked verified (a run killed between recording and
/// verifying, or a rewrite): retention waits for them.
pub async fn verify_unverified(pool: &PgPool, store: &Store) -> Result<usize, ArchiveError> {
    let mut done = 0;
    for r in db::parts(pool, None, None).await? {
        if r.verified_at.is_some() {
            continue;
        }
        match verify_part(store, &r.manifest_path).await {
            Ok(v) if v.manifest_sha256 == r.manifest_sha256 => {
                if db::mark_verified(pool, r.day, r.part, &r.manifest_sha256).await? {
                    done += 1;
                }
            }
            Ok(_) => {
                warn!(path = %r.manifest_path, "stored manifest differs from the recorded one; the day is archived again")
            }
            Err(e) => warn!(error = %e, "part does not verify"),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_days_parse() {
        assert_eq!(
            manifest_day("_manifests/date=2025-08-22/part-00000.json"),
            NaiveDate::from_ymd_opt(2025, 8, 22)
        );
        assert_eq!(manifest_day("date=2025-08-22/part-00000.json"), None);
    }
}
