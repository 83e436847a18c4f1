//! Archiving one UTC day: read its rows and the ledger ranges that touch it in one snapshot,
//! write the Parquet files and the manifest, record the part, read it back and mark it verified.
//!
//! # Parts
//! While a day's rows are in the database its last part is open: it holds every row of the day
//! and is rewritten, deterministically, when late rows arrive (same rows, same bytes). Retention
//! seals the parts when it removes the day's rows (`edge_mes_archive_release_day`); rows that
//! arrive later for the day make a new part. So a row is in exactly one live part, and no part
//! is ever replaced by one with fewer rows: if the day holds fewer rows than its open part (rows
//! removed without a release), the open part is sealed as it is and the rows go to a new part.
//!
//! # Reading a day
//! The rows are read in storage order (no sort in the database) and grouped by series through
//! spill files on local disk ([`crate::spill`]); each series is sorted in memory into the
//! archive's total order, so the files do not depend on the order the database returned.
//!
//! # Crash safety
//! Files first, then the manifest, then the database row (in one transaction with the positions).
//! A kill anywhere leaves the database naming the previous manifest or none; the next run reads
//! a snapshot holding at least the same rows and writes the part again. Files of the part that
//! its new manifest does not list (left by a killed run) are deleted after the record commits.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::db::{self, DayRow, NewPart, Recorded};
use crate::error::ArchiveError;
use crate::layout::{self, PartitionKey};
use crate::manifest::{self, FileEntry, Manifest, RowGroupEntry};
use crate::parquet_file::{self, ArchiveRow, FileWriter};
use crate::schema;
use crate::spill::{self, Spill};
use crate::store::Store;
use crate::verify;

/// What archiving a day did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayOutcome {
    /// Part `part` written (or rewritten) with `rows` rows in `files` files of `bytes` bytes.
    Archived {
        part: u32,
        rows: u64,
        files: usize,
        bytes: u64,
    },
    /// Nothing new: every ledger entry touching the day is covered.
    UpToDate,
    /// The day holds no rows (never had, or retention removed them).
    NoRows,
    /// Rows of the day were replayed into this database: the archive has them already, and
    /// re-archiving would copy them into a second part.
    Restored,
    /// Shutdown was requested mid-way; nothing was recorded.
    Interrupted,
}

/// Archives `day` if it is pending (see the module docs).
#[instrument(skip_all, fields(%day), err)]
pub async fn archive_day(
    pool: &PgPool,
    store: &Store,
    day: NaiveDate,
    spill_dir: &Path,
    shutdown: &CancellationToken,
) -> Result<DayOutcome, ArchiveError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    if db::day_replayed(&mut tx, day).await? {
        return Ok(DayOutcome::Restored);
    }
    let parts = db::parts_of_day(&mut tx, day).await?;
    let open = parts.last().filter(|p| p.sealed_at.is_none()).cloned();
    // A day without parts is archived when it has rows even if no ledger entry touches it (rows
    // that did not come through the ingest ledger); afterwards only the ledger makes it pending.
    if !db::day_pending(&mut tx, day).await? && !parts.is_empty() {
        return Ok(DayOutcome::UpToDate);
    }
    let rows_now = db::count_day_rows(&mut tx, day).await?;
    if rows_now == 0 {
        return Ok(DayOutcome::NoRows);
    }
    let next_part = parts.last().map_or(0, |p| p.part + 1);
    let (part, seal_first) = match &open {
        Some(o) if rows_now < o.rows => {
            warn!(
                part = o.part,
                archived = o.rows,
                now = rows_now,
                "rows of an archived day were removed without edge_mes_archive_release_day; \
                 sealing its part as it is and archiving the remaining rows as a new part"
            );
            (next_part, Some(o.part))
        }
        Some(o) => (o.part, None),
        None => (next_part, None),
    };
    let part = u32::try_from(part).map_err(|_| ArchiveError::State(format!("part {part}")))?;
    let positions = db::day_positions(&mut tx, day).await?;
    let positions = manifest::merge_positions(positions.into_iter().map(|(s, lo, hi)| {
        (
            s,
            u64::try_from(lo).unwrap_or(0),
            u64::try_from(hi).unwrap_or(0),
        )
    }));

    // The day's rows, in storage order, spread over spill buckets by series (see crate::spill).
    let (start, end) = db::day_bounds(day);
    let expected = u64::try_from(rows_now).unwrap_or(0);
    let mut spill = Spill::new(spill_dir, spill::buckets_for(expected))?;
    let mut read = 0u64;
    {
        let mut stream = sqlx::query_as::<_, DayRow>(db::DAY_ROWS_SQL)
            .bind(start)
            .bind(end)
            .fetch(&mut *tx);
        while let Some((site, resource_id, sensor, ts, wo, op, value, unit, meta)) =
            stream.try_next().await?
        {
            let row = ArchiveRow {
                ts_micros: ts.timestamp_micros(),
                work_order_id: wo,
                operation_id: op,
                value,
                unit,
                meta,
            };
            spill.push(&site, &resource_id, &sensor, &row)?;
            read += 1;
        }
    }
    tx.rollback().await?;
    spill.finish()?;
    if read != expected {
        return Err(ArchiveError::State(format!(
            "{day}: the snapshot counted {expected} rows but returned {read}"
        )));
    }

    let mut files: Vec<FileEntry> = Vec::new();
    for bucket in 0..spill.buckets() {
        for (key, rows) in spill.bucket(bucket)? {
            if shutdown.is_cancelled() {
                return Ok(DayOutcome::Interrupted);
            }
            let mut writer = FileWriter::new(&key.resource_id, &key.sensor)?;
            for row in rows {
                writer.push(row)?;
            }
            files.push(store_file(store, day, part, key, writer).await?);
        }
    }
    drop(spill);
    files.sort_by(|a, b| {
        (&a.site, &a.resource_id, &a.sensor).cmp(&(&b.site, &b.resource_id, &b.sensor))
    });

    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let root = manifest::root_of(&files)
        .ok_or_else(|| ArchiveError::State("a leaf hash is not hex".into()))?;
    let m = Manifest {
        format: schema::FORMAT.to_owned(),
        day,
        part,
        rows,
        min_ts: files.iter().map(|f| f.min_ts).min(),
        max_ts: files.iter().map(|f| f.max_ts).max(),
        schema_fingerprint: schema::fingerprint(&schema::schema()),
        schema: schema::canonical_lines(&schema::schema()),
        merkle_root: hex::encode(root),
        files,
        ingest_positions: positions,
    };
    let manifest_bytes = m.to_bytes();
    let manifest_sha = hex::encode(Sha256::digest(&manifest_bytes));
    let manifest_path = layout::manifest_path(day, part);
    if shutdown.is_cancelled() {
        return Ok(DayOutcome::Interrupted);
    }
    store
        .put(&manifest_path, Bytes::from(manifest_bytes))
        .await?;
    let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    let recorded = db::record_part(
        pool,
        &NewPart {
            day,
            part: i32::try_from(part).unwrap_or(i32::MAX),
            manifest_path: &manifest_path,
            manifest_sha256: &manifest_sha,
            rows: i64::try_from(rows).unwrap_or(i64::MAX),
            files: i32::try_from(m.files.len()).unwrap_or(i32::MAX),
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            positions: &m.ingest_positions,
            seal_first,
        },
    )
    .await?;
    if recorded == Recorded::Sealed {
        // Retention released the day after our snapshot: nothing new can have been loaded
        // between (the release requires every ledger range covered), so the files written are
        // the sealed ones, byte for byte.
        info!(part, "part was sealed meanwhile; left as it is");
        return Ok(DayOutcome::UpToDate);
    }
    remove_unlisted(store, day, part, &m).await?;
    let verified = verify::verify_part(store, &manifest_path).await?;
    if verified.manifest_sha256 != manifest_sha {
        return Err(ArchiveError::State(format!(
            "{manifest_path} changed while it was being verified"
        )));
    }
    db::mark_verified(
        pool,
        day,
        i32::try_from(part).unwrap_or(i32::MAX),
        &manifest_sha,
    )
    .await?;
    info!(
        part,
        rows,
        files = m.files.len(),
        bytes,
        unchanged = recorded == Recorded::Unchanged,
        "archived day"
    );
    Ok(DayOutcome::Archived {
        part,
        rows,
        files: m.files.len(),
        bytes,
    })
}

/// Encodes, stores and describes one file.
async fn store_file(
    store: &Store,
    day: NaiveDate,
    part: u32,
    key: PartitionKey,
    writer: FileWriter,
) -> Result<FileEntry, ArchiveError> {
    let (bytes, rows, min_ts, max_ts) = writer.finish()?;
    let bytes = Bytes::from(bytes);
    let facts = parquet_file::facts(&bytes)?;
    let path = layout::file_path(day, &key, part);
    let sha = hex::encode(Sha256::digest(&bytes));
    let len = bytes.len() as u64;
    store.put(&path, bytes).await?;
    Ok(FileEntry {
        path,
        site: key.site,
        resource_id: key.resource_id,
        sensor: key.sensor,
        rows,
        bytes: len,
        sha256: sha,
        min_ts: micros_to_utc(min_ts)?,
        max_ts: micros_to_utc(max_ts)?,
        row_groups: facts.row_groups.iter().map(RowGroupEntry::from).collect(),
    })
}

fn micros_to_utc(us: i64) -> Result<DateTime<Utc>, ArchiveError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| ArchiveError::State(format!("timestamp {us} µs is out of range")))
}

/// Deletes Parquet files of `part` of `day` that `m` does not list (left by a killed run whose
/// snapshot had a partition this one has not: only possible after rows were removed).
async fn remove_unlisted(
    store: &Store,
    day: NaiveDate,
    part: u32,
    m: &Manifest,
) -> Result<(), ArchiveError> {
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for path in store.list(&layout::day_dir(day)).await? {
        if path.ends_with(".parquet")
            && layout::part_of(&path) == Some(part)
            && !listed.contains(path.as_str())
        {
            warn!(%path, "removing a file its part's manifest does not list");
            store.delete(&path).await?;
        }
    }
    Ok(())
}
