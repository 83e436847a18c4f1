//! edge-mes-archiver: the Parquet archive of readings (issue 16; docs/archive.md).
//!
//! The archiver reads closed days from the database, not from NATS: READINGS is a work-queue
//! stream that the ingest workers consume, so it admits no second consumer, and what it holds
//! is only what is not loaded yet. The database is where every row lands exactly once; the
//! ingest ledger says which ingest positions a day's rows came from.
//!
//! - [`config`]: flags and environment.
//! - [`layout`]: Hive-style paths and the percent-encoding of partition values.
//! - [`schema`]: the Arrow/Parquet schema and its fingerprint.
//! - [`parquet_file`]: writing one file, reading its row groups and rows back.
//! - [`spill`]: grouping a day's rows by series on local disk, sorted per series.
//! - [`merkle`]: the RFC 6962 Merkle tree over row groups.
//! - [`manifest`]: the JSON manifest of a part.
//! - [`store`]: local directory or S3-compatible storage (object_store).
//! - [`db`]: the archive's state in PostgreSQL (migration 0021).
//! - [`archive`]: archiving one day.
//! - [`verify`]: re-reading manifests and files.
//! - [`replay`]: loading the archive back, exactly once.
//! - [`metrics`]: Prometheus metrics of `run`.

pub mod archive;
pub mod config;
pub mod db;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod merkle;
pub mod metrics;
pub mod parquet_file;
pub mod replay;
pub mod schema;
pub mod spill;
pub mod store;
pub mod verify;

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use error::ArchiveError;

use crate::archive::DayOutcome;
use crate::config::RunArgs;
use crate::store::Store;

/// Connects and prepares the schema as configured.
pub async fn open_database(config: &Config) -> Result<PgPool, ArchiveError> {
    let pool = db::connect(config.database_url.expose()).await?;
    service::db::prepare(&pool, config.migrate).await?;
    Ok(pool)
}

/// Totals of one archiving pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub days_archived: usize,
    pub rows: u64,
    pub bytes: u64,
    pub failures: usize,
}

/// One pass: archive every closed day that is pending, then verify parts not yet verified.
/// `scan_unknown` (once per start): also look at days with storage but no part (rows that did not
/// come through the ledger) and, while ledger entries of unknown span exist, at every day with
/// rows.
pub async fn archive_pass(
    pool: &PgPool,
    store: &Store,
    grace: Duration,
    scan_unknown: bool,
    spill_dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> Result<PassReport, ArchiveError> {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let closed_before = Utc::now()
        .checked_sub_signed(grace)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
        .date_naive();
    let mut days = db::pending_days(pool, closed_before).await?;
    if scan_unknown {
        match db::days_without_parts(pool, closed_before).await {
            Ok(more) => days.extend(more),
            // Only an extra: days with ledger entries are found above anyway.
            Err(e) => warn!(error = %e, "cannot list the days with storage but no archive part"),
        }
        if db::has_unknown_spans(pool).await? {
            days.extend(db::days_with_rows(pool, closed_before).await?);
        }
        days.sort_unstable();
        days.dedup();
    }
    let mut report = PassReport::default();
    let pending = days.len();
    for day in days {
        if shutdown.is_cancelled() {
            break;
        }
        let started = std::time::Instant::now();
        match archive::archive_day(pool, store, day, spill_dir, shutdown).await {
            Ok(DayOutcome::Archived { rows, bytes, .. }) => {
                metrics::day_archived(rows, bytes, started.elapsed());
                report.days_archived += 1;
                report.rows += rows;
                report.bytes += bytes;
            }
            Ok(DayOutcome::Restored) => {
                warn!(%day, "day was restored by a replay into this database; not archived again")
            }
            Ok(_) => {}
            Err(e) => {
                metrics::day_failed();
                report.failures += 1;
                warn!(%day, error = %e, "archiving the day failed; retried at the next pass");
            }
        }
    }
    if !shutdown.is_cancelled() {
        verify::verify_unverified(pool, store).await?;
    }
    metrics::pass_done(pending, Utc::now().timestamp());
    Ok(report)
}

/// `run`: archive until `shutdown` (or after one pass with `--once`). Only one archiver works
/// on a database at a time (a session advisory lock); a second one waits.
pub async fn run(
    config: Config,
    args: RunArgs,
    shutdown: CancellationToken,
) -> Result<PassReport, ArchiveError> {
    let store = Store::open(&config.target)?;
    if let Some(addr) = args.metrics_addr {
        metrics::install(addr)
            .map_err(|e| ArchiveError::State(format!("metrics on {addr}: {e}")))?;
        info!(%addr, "serving metrics");
    }
    let pool = open_database(&config).await?;
    let mut lock = pool.acquire().await?;
    let mut waited = false;
    while !db::try_run_lock(&mut lock).await? {
        if !waited {
            info!("another archiver works on this database; waiting for it to stop");
            waited = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(PassReport::default()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    store.sweep_staging();
    info!(target = %store.display, grace_minutes = args.grace_minutes, "archiver started");
    let mut scan_unknown = true;
    let mut total = PassReport::default();
    loop {
        match archive_pass(
            &pool,
            &store,
            args.grace(),
            scan_unknown,
            &args.spill_dir(),
            &shutdown,
        )
        .await
        {
            Ok(r) => {
                scan_unknown = false;
                if r.days_archived > 0 || r.failures > 0 {
                    info!(
                        days = r.days_archived,
                        rows = r.rows,
                        bytes = r.bytes,
                        failures = r.failures,
                        "archive pass done"
                    );
                }
                total.days_archived += r.days_archived;
                total.rows += r.rows;
                total.bytes += r.bytes;
                total.failures += r.failures;
            }
            Err(e) if args.once => return Err(e),
            Err(e) => warn!(error = %e, "archive pass failed; retrying"),
        }
        if args.once || shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(args.poll()) => {}
        }
    }
    drop(lock);
    pool.close().await;
    Ok(total)
}
