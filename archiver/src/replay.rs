//! Replay: load archived days back into `readings`, each part exactly once.
//!
//! A part is verified first (a damaged archive is never loaded), then its rows go in with the
//! worker's own binary COPY encoding (`ingest_worker::copy_format`), and the part is recorded in
//! `archive_replays` in the same transaction as its rows. A second replay, or one after a kill,
//! finds the record and skips the part; a kill before the commit leaves neither rows nor record.
//!
//! Parts whose rows are still in the database are not loaded again: a part this database
//! archived and has not sealed (its rows are hot) is skipped, and a day this database knows no
//! part of is refused while it holds rows that no replay loaded.

use std::borrow::Cow;

use chrono::NaiveDate;
use ingest_worker::copy_format::{self, READINGS_COLUMNS};
use protocol::Reading;
use sqlx::{PgConnection, PgPool};
use tracing::{info, instrument, warn};

use crate::db;
use crate::error::ArchiveError;
use crate::layout;
use crate::manifest::Manifest;
use crate::parquet_file;
use crate::store::Store;
use crate::verify;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Parts loaded now, and their rows.
    pub parts_loaded: usize,
    pub rows_loaded: u64,
    /// Parts loaded by an earlier replay.
    pub parts_already: usize,
    /// Parts skipped because their rows are hot in this database.
    pub parts_hot: usize,
}

/// Send COPY data in pieces of about this size.
const SEND_CHUNK_BYTES: usize = 1024 * 1024;

/// Replays every archived part of the days `from..=to`.
#[instrument(skip(pool, store), err)]
pub async fn replay(
    pool: &PgPool,
    store: &Store,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<ReplayReport, ArchiveError> {
    if to < from {
        return Err(ArchiveError::Refused(format!(
            "--to {to} is before --from {from}"
        )));
    }
    let mut report = ReplayReport::default();
    let mut day = from;
    loop {
        let prefix = format!("{}/{}", layout::MANIFEST_DIR, layout::day_dir(day));
        let manifests: Vec<String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|p| p.ends_with(".json"))
            .collect();
        for path in manifests {
            replay_part(pool, store, &path, &mut report).await?;
        }
        match day.succ_opt() {
            Some(next) if next <= to => day = next,
            _ => break,
        }
    }
    Ok(report)
}

async fn replay_part(
    pool: &PgPool,
    store: &Store,
    manifest_path: &str,
    report: &mut ReplayReport,
) -> Result<(), ArchiveError> {
    let v = verify::verify_part(store, manifest_path).await?;
    let m = &v.manifest;
    let part =
        i32::try_from(m.part).map_err(|_| ArchiveError::State(format!("part {}", m.part)))?;
    let mut tx = pool.begin().await?;
    // One replay at a time per database: the checks below and the load are one step.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('edge_mes_archive_replay'))")
        .execute(&mut *tx)
        .await?;
    let done: Option<String> = sqlx::query_scalar(
        "SELECT manifest_sha256 FROM archive_replays WHERE day = $1 AND part = $2",
    )
    .bind(m.day)
    .bind(part)
    .fetch_optional(&mut *tx)
    .await?;
    match done {
        Some(sha) if sha == v.manifest_sha256 => {
            report.parts_already += 1;
            return Ok(());
        }
        Some(sha) => {
            return Err(ArchiveError::Refused(format!(
                "{manifest_path}: a replay loaded this part with manifest SHA-256 {sha}, the \
                 archive now holds {}",
                v.manifest_sha256
            )))
        }
        None => {}
    }
    let known: Option<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT sealed_at FROM archive_parts WHERE day = $1 AND part = $2")
            .bind(m.day)
            .bind(part)
            .fetch_optional(&mut *tx)
            .await?;
    match known {
        Some(None) => {
            warn!(path = %manifest_path, "part skipped: its rows are hot in this database");
            report.parts_hot += 1;
            return Ok(());
        }
        Some(Some(_)) => {}
        None => {
            let live = db::count_day_rows(&mut tx, m.day).await?;
            let replayed: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(rows), 0)::int8 FROM archive_replays WHERE day = $1",
            )
            .bind(m.day)
            .fetch_one(&mut *tx)
            .await?;
            if live > replayed {
                return Err(ArchiveError::Refused(format!(
                    "{manifest_path}: day {} holds {} rows that no replay loaded; replay into a \
                     database without them (or after retention removed them)",
                    m.day,
                    live - replayed
                )));
            }
        }
    }
    let rows = load_rows(&mut tx, store, m).await?;
    if rows != m.rows {
        return Err(ArchiveError::State(format!(
            "{manifest_path}: loaded {rows} rows, the manifest says {}",
            m.rows
        )));
    }
    sqlx::query(
        "INSERT INTO archive_replays (day, part, manifest_sha256, rows) VALUES ($1, $2, $3, $4)",
    )
    .bind(m.day)
    .bind(part)
    .bind(&v.manifest_sha256)
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    info!(path = %manifest_path, rows, "replayed part");
    report.parts_loaded += 1;
    report.rows_loaded += rows;
    Ok(())
}

/// COPYs the rows of every file of `m` into readings. Returns the number of rows.
async fn load_rows(
    conn: &mut PgConnection,
    store: &Store,
    m: &Manifest,
) -> Result<u64, ArchiveError> {
    let statement = format!("COPY readings ({READINGS_COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = conn.copy_in_raw(&statement).await?;
    let result = async {
        let mut buf = copy_format::header();
        let mut rows = 0u64;
        for f in &m.files {
            let data = store.get(&f.path).await?;
            for (resource_id, sensor, r) in parquet_file::read_rows(data)? {
                let reading = Reading {
                    ts_micros: r.ts_micros,
                    resource_id: Cow::Owned(resource_id),
                    work_order_id: r.work_order_id.map(Cow::Owned),
                    operation_id: r.operation_id.map(Cow::Owned),
                    sensor: Cow::Owned(sensor),
                    value: r.value,
                    unit: r.unit.map(Cow::Owned),
                    meta: r.meta.map(Cow::Owned),
                };
                copy_format::encode_row(&mut buf, &f.site, &reading);
                rows += 1;
                if buf.len() >= SEND_CHUNK_BYTES {
                    copy.send(std::mem::take(&mut buf)).await?;
                }
            }
        }
        buf.extend_from_slice(&copy_format::trailer());
        copy.send(buf).await?;
        Ok::<u64, ArchiveError>(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            copy.finish().await?;
            Ok(rows)
        }
        Err(e) => {
            let _ = copy.abort("edge-mes-archiver: replay failed").await;
            Err(e)
        }
    }
}
