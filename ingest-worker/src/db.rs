//! Database setup and upkeep: connect (creating the database if missing), migrate, daily
//! partitions, retention, compression and ledger compaction.

use std::time::Duration;

use chrono::{DateTime, Days, SecondsFormat, Utc};
use sqlx::PgPool;
use thiserror::Error;
use tracing::{info, instrument, warn};

pub use service::db::MIGRATOR;

#[derive(Debug, Error)]
pub enum DbError {
    #[error(transparent)]
    Setup(#[from] service::db::DbSetupError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// Opens the worker's pool, creating the database if it is missing.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let settings = service::db::PoolSettings {
        application_name: "ingest-worker",
        max_connections,
        acquire_timeout: Duration::from_secs(10),
        ping_if_idle_for: None,
    };
    Ok(service::db::connect(url, &settings).await?)
}

/// Applies the embedded migrations (see [`service::db::migrate`]).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    Ok(service::db::migrate(pool).await?)
}

/// Migrates or, as a least-privilege login, checks the schema (see [`service::db::prepare`]).
pub async fn prepare(pool: &PgPool, mode: service::db::MigrateMode) -> Result<(), DbError> {
    Ok(service::db::prepare(pool, mode).await?)
}

/// Creates the daily partitions around today (no-op on TimescaleDB). Returns how many were made.
#[instrument(skip(pool), err)]
pub async fn ensure_partitions(
    pool: &PgPool,
    days_back: u32,
    days_ahead: u32,
) -> Result<i32, DbError> {
    let today = Utc::now().date_naive();
    let from = today
        .checked_sub_days(Days::new(days_back.into()))
        .unwrap_or(today);
    let to = today
        .checked_add_days(Days::new(days_ahead.into()))
        .unwrap_or(today);
    let created: i32 = sqlx::query_scalar("SELECT edge_mes_ensure_partitions($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
    if created > 0 {
        info!(created, %from, %to, "created readings partitions");
    }
    Ok(created)
}

/// What retention and compression do (`--retention-days`, `--retention-wait-for-archive`,
/// `--compress-after-days`).
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// 0 keeps everything.
    pub retention_days: u32,
    pub wait_for_archive: crate::config::ArchiveGate,
    /// 0 never compresses (TimescaleDB only).
    pub compress_after_days: u32,
}

/// Days one retention pass looks at; the rest waits for the next pass.
const RETENTION_DAYS_PER_PASS: i32 = 60;
/// Chunks one compression pass compresses.
const CHUNKS_PER_PASS: usize = 24;

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub dropped: usize,
    /// Days kept because the archive does not hold them (verified) yet.
    pub waiting_for_archive: usize,
}

/// Retention: removes whole UTC days older than `retention_days` — partitions and their rows in
/// readings_default (plain PostgreSQL) or chunks (TimescaleDB), one transaction per day
/// (`edge_mes_expire_day`), never a TimescaleDB policy. With the archive gate on, a day is
/// removed only once the archive holds it, verified.
#[instrument(skip(pool), err)]
pub async fn apply_retention(
    pool: &PgPool,
    lifecycle: Lifecycle,
) -> Result<RetentionOutcome, DbError> {
    let mut outcome = RetentionOutcome::default();
    if lifecycle.retention_days == 0 {
        return Ok(outcome);
    }
    let Some(cutoff) = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(lifecycle.retention_days.into()))
    else {
        return Ok(outcome);
    };
    let require_archive = match lifecycle.wait_for_archive {
        crate::config::ArchiveGate::Always => true,
        crate::config::ArchiveGate::Never => false,
        crate::config::ArchiveGate::Auto => {
            sqlx::query_scalar("SELECT edge_mes_archive_in_use()")
                .fetch_one(pool)
                .await?
        }
    };
    let days: Vec<chrono::NaiveDate> = sqlx::query_scalar("SELECT edge_mes_expired_days($1, $2)")
        .bind(cutoff)
        .bind(RETENTION_DAYS_PER_PASS)
        .fetch_all(pool)
        .await?;
    for day in days {
        let result: String = sqlx::query_scalar("SELECT edge_mes_expire_day($1, $2)")
            .bind(day)
            .bind(require_archive)
            .fetch_one(pool)
            .await?;
        match result.as_str() {
            "dropped" => outcome.dropped += 1,
            "not_archived" => outcome.waiting_for_archive += 1,
            _ => {}
        }
    }
    crate::metrics::retention_waiting(outcome.waiting_for_archive as u64);
    if outcome.dropped > 0 {
        info!(days = outcome.dropped, %cutoff, "retention removed expired days of readings");
    }
    if outcome.waiting_for_archive > 0 {
        warn!(
            days = outcome.waiting_for_archive, %cutoff,
            "retention keeps expired days the archive does not hold (verified) yet"
        );
    }
    Ok(outcome)
}

/// TimescaleDB: compresses chunks older than `compress_after_days`, one per statement, at most
/// [`CHUNKS_PER_PASS`]; returns how many. Nothing on plain PostgreSQL.
#[instrument(skip(pool), err)]
pub async fn compress(pool: &PgPool, compress_after_days: u32) -> Result<usize, DbError> {
    if compress_after_days == 0 {
        return Ok(0);
    }
    let before = Utc::now() - chrono::TimeDelta::days(compress_after_days.into());
    let mut compressed = 0;
    while compressed < CHUNKS_PER_PASS {
        let chunk: Option<String> = sqlx::query_scalar("SELECT edge_mes_compress_one($1)")
            .bind(before)
            .fetch_one(pool)
            .await?;
        let Some(chunk) = chunk else { break };
        info!(%chunk, "compressed readings chunk");
        compressed += 1;
    }
    Ok(compressed)
}

/// Ranges of rollups one pass recomputes (each at most a day).
const ROLLUP_RANGES_PER_PASS: i32 = 48;

/// Brings `readings_1m` / `readings_1h` up to date with what was loaded (migration 0023's
/// protocol: pending, apply, done): on plain PostgreSQL the function recomputes the range; on
/// TimescaleDB the continuous aggregates are refreshed here, each `CALL` on its own outside a
/// transaction block, as TimescaleDB requires. A range leaves the queue only after its refresh
/// committed. Returns the ranges refreshed.
#[instrument(skip(pool), err)]
pub async fn refresh_rollups(pool: &PgPool, retention_days: u32) -> Result<usize, DbError> {
    type Range = (DateTime<Utc>, DateTime<Utc>, Vec<i64>);
    // With the retention, so that on TimescaleDB a late row for a day retention already dropped
    // does not replace that day's rollups with its own (0023, edge_mes_rollup_pending).
    let pending: Vec<Range> =
        sqlx::query_as("SELECT from_ts, to_ts, queued FROM edge_mes_rollup_pending($1, $2)")
            .bind(ROLLUP_RANGES_PER_PASS)
            .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
            .fetch_all(pool)
            .await?;
    let mut refreshed = 0;
    for (from, to, queued) in pending {
        let applied: bool = sqlx::query_scalar("SELECT edge_mes_rollup_apply($1, $2)")
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?;
        if !applied {
            // Simple protocol, one statement each: the times are ours, formatted as literals.
            let (from_lit, to_lit) = (
                from.to_rfc3339_opts(SecondsFormat::Micros, true),
                to.to_rfc3339_opts(SecondsFormat::Micros, true),
            );
            for view in ["readings_1m", "readings_1h"] {
                let call = format!(
                    "CALL refresh_continuous_aggregate('{view}', \
                     '{from_lit}'::timestamptz, '{to_lit}'::timestamptz)"
                );
                sqlx::raw_sql(&call).execute(pool).await?;
            }
        }
        sqlx::query("SELECT edge_mes_rollup_done($1, $2, $3)")
            .bind(from)
            .bind(to)
            .bind(&queued)
            .execute(pool)
            .await?;
        refreshed += 1;
    }
    if refreshed > 0 {
        tracing::debug!(ranges = refreshed, "rollups refreshed");
    }
    crate::metrics::rollup_ranges(refreshed as u64);
    Ok(refreshed)
}

/// Merges adjacent ledger ranges; returns the number of sources compacted.
pub async fn compact_ledger(pool: &PgPool, max_sources: i32) -> Result<i32, DbError> {
    Ok(sqlx::query_scalar("SELECT edge_mes_compact_ledger($1)")
        .bind(max_sources)
        .fetch_one(pool)
        .await?)
}

/// Runs partition upkeep, retention, compression and ledger compaction until `shutdown`.
pub async fn maintenance_loop(
    pool: PgPool,
    days_back: u32,
    days_ahead: u32,
    lifecycle: Lifecycle,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut compact = tokio::time::interval(Duration::from_secs(30));
    let mut partitions = tokio::time::interval(Duration::from_secs(3600));
    compact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    partitions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = partitions.tick() => {
                if let Err(e) = ensure_partitions(&pool, days_back, days_ahead).await {
                    warn!(error = %e, "partition upkeep failed, will retry");
                }
                if let Err(e) = apply_retention(&pool, lifecycle).await {
                    warn!(error = %e, "retention failed, will retry");
                }
                if let Err(e) = compress(&pool, lifecycle.compress_after_days).await {
                    warn!(error = %e, "compression failed, will retry");
                }
            }
            _ = compact.tick() => {
                if let Err(e) = compact_ledger(&pool, 1000).await {
                    warn!(error = %e, "ledger compaction failed, will retry");
                }
                if let Err(e) = refresh_rollups(&pool, lifecycle.retention_days).await {
                    warn!(error = %e, "rollup refresh failed, will retry");
                }
            }
        }
    }
}
