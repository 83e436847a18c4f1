//! Database setup: connect (creating the database if missing), migrate, and the default site.

use std::time::Duration;

use sqlx::PgPool;
use thiserror::Error;
use tracing::instrument;

/// A pooled connection idle for longer than this is pinged before it is handed out; one used more
/// recently is handed out as it is. sqlx's default pings on every acquire: a round trip to the
/// server before every request's first statement, half the round trips of a report.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum DbError {
    #[error(transparent)]
    Setup(#[from] service::db::DbSetupError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// Opens the API's pool, creating the database if it is missing (see [`PING_IF_IDLE_FOR`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let settings = service::db::PoolSettings {
        application_name: "mes-api",
        max_connections,
        acquire_timeout: Duration::from_secs(5),
        ping_if_idle_for: Some(PING_IF_IDLE_FOR),
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

/// Creates the default site with `time_zone` if it does not exist yet; an existing site keeps
/// its own zone and calendar. A site created here gets the seed's shift calendar (Night, Day,
/// Evening). No migration creates a site (sites are plant data), so this is how a fresh database
/// gets its first one.
#[instrument(skip(pool), err)]
pub async fn ensure_site(pool: &PgPool, site_id: &str, time_zone: &str) -> Result<(), DbError> {
    sqlx::query("SELECT edge_mes_ensure_site($1, $2)")
        .bind(site_id)
        .bind(time_zone)
        .execute(pool)
        .await?;
    Ok(())
}
