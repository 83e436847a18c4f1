//! PostgreSQL set-up shared by ingest-worker and mes-api: both own the schema in
//! `db/migrations`, either may start first, and several replicas may start at once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use thiserror::Error;
use tracing::{info, instrument};

/// The migrations in `db/migrations`, embedded at build time (tests compare against it).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../db/migrations");

#[derive(Debug, Error)]
pub enum DbSetupError {
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
}

/// Pool settings of a binary.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: &'static str,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// `None`: sqlx's default, a ping before every acquire. `Some(d)`: ping only a connection
    /// idle for longer than `d` — a busy pool then costs no extra round trip per use, and a
    /// connection broken by a database restart within `d` fails the one use that gets it.
    pub ping_if_idle_for: Option<Duration>,
}

/// Opens a pool, creating the database first if the server says it does not exist.
#[instrument(skip_all, fields(app = settings.application_name), err)]
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, DbSetupError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbSetupError::InvalidUrl)?
        .application_name(settings.application_name)
        .log_statements(tracing::log::LevelFilter::Trace);
    let mut pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout);
    if let Some(idle) = settings.ping_if_idle_for {
        pool_options = pool_options
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > idle {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
    }
    match pool_options.clone().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(e) if is_missing_database(&e) => {
            create_database(&options).await?;
            pool_options
                .connect_with(options)
                .await
                .map_err(DbSetupError::Connect)
        }
        Err(e) => Err(DbSetupError::Connect(e)),
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

async fn create_database(options: &PgConnectOptions) -> Result<(), DbSetupError> {
    let name = options.get_database().unwrap_or("edge_mes").to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbSetupError::Connect)?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&sql).execute(&mut admin).await {
        Ok(_) => info!(database = %name, "created database"),
        // Another replica won the race.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
        Err(source) => return Err(DbSetupError::CreateDatabase { name, source }),
    }
    let _ = admin.close().await;
    Ok(())
}

/// Applies pending migrations of `db/migrations` (embedded at build time). sqlx holds an
/// advisory lock meanwhile, so replicas starting together apply them once. Migrations this
/// binary does not know (applied by a newer binary during a rolling upgrade) are tolerated.
#[instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool) -> Result<(), DbSetupError> {
    let mut migrator = sqlx::migrate!("../db/migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}
