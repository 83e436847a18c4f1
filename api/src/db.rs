//! Database setup: connect (creating the database if missing), migrate, and the default site.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use thiserror::Error;
use tracing::{info, instrument};

/// A pooled connection idle for longer than this is pinged before it is handed out; one used more
/// recently is handed out as it is. sqlx's default pings on every acquire: a round trip to the
/// server before every request's first statement, half the round trips of a report.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

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
///
/// A connection that was idle for more than [`PING_IF_IDLE_FOR`] is pinged before use (a broken
/// one is replaced); a busy pool's connections are not, so a request costs no extra round trip.
/// After a database restart, a connection that was in use within that second fails the one
/// request that gets it (an error answer; the connection is then dropped).
#[instrument(skip_all, err)]
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbError::InvalidUrl)?
        .application_name("mes-api")
        .log_statements(tracing::log::LevelFilter::Trace);
    let pool_options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
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
        // Another process won the race.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
        Err(source) => return Err(DbError::CreateDatabase { name, source }),
    }
    let _ = admin.close().await;
    Ok(())
}

/// Applies pending migrations (under sqlx's advisory lock). Migrations this binary does not know
/// (applied by a newer binary during a rolling upgrade) are tolerated.
#[instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut migrator = sqlx::migrate!("../db/migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Creates the default site with `time_zone` if it does not exist yet; an existing site keeps
/// its own zone. A site created here gets the seed's shift calendar (Night, Day, Evening).
#[instrument(skip(pool), err)]
pub async fn ensure_site(pool: &PgPool, site_id: &str, time_zone: &str) -> Result<(), DbError> {
    sqlx::query("SELECT edge_mes_ensure_site($1, $2)")
        .bind(site_id)
        .bind(time_zone)
        .execute(pool)
        .await?;
    Ok(())
}
