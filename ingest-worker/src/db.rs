//! Database setup and upkeep: connect (creating the database if missing), migrate, daily
//! partitions, retention and ledger compaction.

use std::time::Duration;

use chrono::{Days, Utc};
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

/// Retention: drops whole daily partitions (plain PostgreSQL) or sets a TimescaleDB retention
/// policy. Rows are never deleted one by one.
#[instrument(skip(pool), err)]
pub async fn apply_retention(pool: &PgPool, retention_days: u32) -> Result<(), DbError> {
    if retention_days == 0 {
        return Ok(());
    }
    let partitioned: bool = sqlx::query_scalar("SELECT edge_mes_readings_partitioned()")
        .fetch_one(pool)
        .await?;
    if partitioned {
        let cutoff = Utc::now()
            .date_naive()
            .checked_sub_days(Days::new(retention_days.into()));
        if let Some(cutoff) = cutoff {
            let dropped: i32 = sqlx::query_scalar("SELECT edge_mes_drop_partitions_before($1)")
                .bind(cutoff)
                .fetch_one(pool)
                .await?;
            if dropped > 0 {
                info!(dropped, %cutoff, "dropped expired readings partitions");
            }
        }
    } else {
        sqlx::query(
            "SELECT add_retention_policy('readings', make_interval(days => $1), if_not_exists => true)",
        )
        .bind(retention_days as i32)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Merges adjacent ledger ranges; returns the number of sources compacted.
pub async fn compact_ledger(pool: &PgPool, max_sources: i32) -> Result<i32, DbError> {
    Ok(sqlx::query_scalar("SELECT edge_mes_compact_ledger($1)")
        .bind(max_sources)
        .fetch_one(pool)
        .await?)
}

/// Runs partition upkeep, retention and compaction until `shutdown`.
pub async fn maintenance_loop(
    pool: PgPool,
    days_back: u32,
    days_ahead: u32,
    retention_days: u32,
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
                if let Err(e) = apply_retention(&pool, retention_days).await {
                    warn!(error = %e, "retention failed, will retry");
                }
            }
            _ = compact.tick() => {
                if let Err(e) = compact_ledger(&pool, 1000).await {
                    warn!(error = %e, "ledger compaction failed, will retry");
                }
            }
        }
    }
}
