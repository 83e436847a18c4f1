//! Database setup and upkeep: connect (creating the database if missing), migrate, daily
//! partitions, retention and ledger compaction.

use std::str::FromStr;
use std::time::Duration;

use chrono::{Days, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use thiserror::Error;
use tracing::{info, instrument, warn};

/// The migrations in `db/migrations`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../db/migrations");

#[derive(Debug, Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create database {name}: {source}")]
    CreateDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// Opens a pool, creating the database first if the server says it does not exist.
#[instrument(skip_all, err)]
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbError::InvalidUrl)?
        .application_name("ingest-worker")
        .log_statements(tracing::log::LevelFilter::Trace);
    let pool_options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10));
    match pool_options.clone().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(e) if is_missing_database(&e) => {
            create_database(&options).await?;
            pool_options
                .connect_with(options)
                .await
                .map_err(DbError::Connect)
        }
        Err(e) => Err(DbError::Connect(e)),
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

async fn create_database(options: &PgConnectOptions) -> Result<(), DbError> {
    let name = options.get_database().unwrap_or("edge_mes").to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbError::Connect)?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&sql).execute(&mut admin).await {
        Ok(_) => info!(database = %name, "created database"),
        // Another worker won the race.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
        Err(source) => return Err(DbError::CreateDatabase { name, source }),
    }
    let _ = admin.close().await;
    Ok(())
}

/// Applies pending migrations. sqlx holds an advisory lock meanwhile, so workers starting
/// together apply them once. Migrations this binary does not know (applied by a newer worker or
/// mes-api during a rolling upgrade) are tolerated, not an error.
#[instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut migrator = sqlx::migrate!("../db/migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
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
