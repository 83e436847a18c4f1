//! The storage engine check every pooled connection makes when it opens.
//!
//! A database created with TimescaleDB holds `readings` as a hypertable. Opened on a server
//! that runs without the TimescaleDB preload, the table still accepts a COPY — into the
//! hypertable's parent, where the rows are invisible once the preload is back — and a count
//! reads only the uncompressed chunks. So a connection to such a database is refused when it
//! opens: the worker waits and retries (nothing is acknowledged, so nothing is lost), mes-api
//! answers 503 and `/ready` says why. A database created on plain PostgreSQL keeps working on a
//! server that has TimescaleDB; that is said once, with how to convert.
//!
//! The engine a database was created with is recorded by migration 0022 (`edge_mes_storage`).
//! The last check's result is kept process-wide ([`status`]) for readiness answers, and exported
//! as the gauges `edge_mes_storage_engine{engine}` and `edge_mes_storage_usable`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::PgConnection;
use tracing::{error, info, warn};

/// The engine `readings` was created on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Native daily partitions.
    PostgreSql,
    /// A TimescaleDB hypertable.
    TimescaleDb,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::PostgreSql => "postgresql",
            Engine::TimescaleDb => "timescaledb",
        }
    }
}

/// What the last connection check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStatus {
    pub engine: Engine,
    /// The server runs with TimescaleDB preloaded.
    pub timescaledb_loaded: bool,
    /// Why connections are refused; `None` when they are not.
    pub problem: Option<String>,
}

/// The refusal a connection check returns.
#[derive(Debug, thiserror::Error)]
#[error(
    "this database was created with TimescaleDB, but the server runs without it \
     (shared_preload_libraries lacks timescaledb): rows written now would be invisible and \
     counts would miss compressed data, so connections are refused until the server is \
     restarted with shared_preload_libraries = 'timescaledb' (docs/operations.md, \
     \"Storage engine\")"
)]
pub struct TimescaleDbNotLoaded;

/// Per database (a process normally has one; tests have many).
static STATUS: Mutex<Option<HashMap<String, StorageStatus>>> = Mutex::new(None);
static ANNOUNCED: AtomicBool = AtomicBool::new(false);
static CONVERSION_HINTED: AtomicBool = AtomicBool::new(false);
/// When the refusal was last logged (seconds since the epoch): the pool retries connecting every
/// few milliseconds, the log says it every [`REFUSAL_LOG_EVERY_SECS`].
static REFUSAL_LOGGED_AT: AtomicU64 = AtomicU64::new(0);
const REFUSAL_LOG_EVERY_SECS: u64 = 30;

/// The last check's result for `database`; `None` before a migrated database was reached.
pub fn status(database: &str) -> Option<StorageStatus> {
    STATUS
        .lock()
        .ok()
        .and_then(|s| s.as_ref().and_then(|m| m.get(database).cloned()))
}

/// Reads the recorded engine and whether TimescaleDB is loaded, and refuses the connection when
/// the database needs TimescaleDB that the server lacks. A database not migrated yet (no
/// `edge_mes_storage_state`) passes: the migration decides its engine.
pub async fn check(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let row: Result<(String, bool, String), sqlx::Error> = sqlx::query_as(
        "SELECT engine, timescaledb_loaded, current_database()::text FROM edge_mes_storage_state()",
    )
    .fetch_one(&mut *conn)
    .await;
    let (engine, loaded, database) = match row {
        Ok(row) => row,
        // undefined_function / undefined_table: the schema is older than migration 0022.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42883" | "42P01")) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let engine = if engine == "timescaledb" {
        Engine::TimescaleDb
    } else {
        Engine::PostgreSql
    };
    let refused = engine == Engine::TimescaleDb && !loaded;
    record(
        database,
        StorageStatus {
            engine,
            timescaledb_loaded: loaded,
            problem: refused.then(|| TimescaleDbNotLoaded.to_string()),
        },
    );
    if refused {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = REFUSAL_LOGGED_AT.load(Ordering::Relaxed);
        if now >= last + REFUSAL_LOG_EVERY_SECS
            && REFUSAL_LOGGED_AT
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            error!(engine = engine.as_str(), "{TimescaleDbNotLoaded}");
        }
        return Err(sqlx::Error::Configuration(Box::new(TimescaleDbNotLoaded)));
    }
    if !ANNOUNCED.swap(true, Ordering::Relaxed) {
        info!(
            engine = engine.as_str(),
            timescaledb_loaded = loaded,
            "storage engine"
        );
    }
    if engine == Engine::PostgreSql && loaded && !CONVERSION_HINTED.swap(true, Ordering::Relaxed) {
        warn!(
            "TimescaleDB is loaded, but this database was created on plain PostgreSQL: it keeps \
             working with daily partitions; to use TimescaleDB, convert it as \
             docs/operations.md (\"Storage engine\") describes"
        );
    }
    Ok(())
}

fn record(database: String, status: StorageStatus) {
    for engine in [Engine::PostgreSql, Engine::TimescaleDb] {
        metrics::gauge!("edge_mes_storage_engine", "engine" => engine.as_str())
            .set(if engine == status.engine { 1.0 } else { 0.0 });
    }
    metrics::gauge!("edge_mes_storage_usable").set(if status.problem.is_none() {
        1.0
    } else {
        0.0
    });
    if let Ok(mut s) = STATUS.lock() {
        s.get_or_insert_with(HashMap::new).insert(database, status);
    }
}
