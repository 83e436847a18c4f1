//! PostgreSQL side of the run domain: reads a run's state under its lock, writes what
//! [`crate::domain::run::decide`] decided (rows, the run, its event in the outbox) in the same
//! transaction. Errors are [`StoreError`]; only the HTTP layer turns them into problem documents.

pub mod machine_state;
pub mod reports;
pub mod runs;
pub mod spc;
pub mod tokens;
pub mod trace;

use uuid::Uuid;

use crate::domain::run::UnknownStatus;
use crate::domain::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("op_run_id: no run {0}")]
    RunNotFound(Uuid),
    #[error("op_run_id: run {0} already exists")]
    RunExists(Uuid),
    #[error(
        "resource_id: the resource has another run overlapping this time range (one run per \
         resource at a time)"
    )]
    RunOverlap,
    #[error("site_id: resource {resource:?} belongs to site {registered:?}, not {asked:?}")]
    SiteMismatch {
        resource: String,
        registered: String,
        asked: String,
    },
    #[error("site_id: unknown site {0:?} (add it to table sites with its time zone)")]
    UnknownSite(String),
    #[error("at: overlaps an earlier downtime of this run")]
    DowntimeOverlap,
    /// A command refused on the state read under the run's lock (reports decide there).
    #[error(transparent)]
    Refused(#[from] DomainError),
    #[error("run {op_run_id} in the database: {source}")]
    Corrupt {
        op_run_id: Uuid,
        #[source]
        source: UnknownStatus,
    },
    /// Other writers changed the run every time its reports were about to be written.
    #[error("run {0} changed under every attempt to write its reports")]
    Contended(Uuid),
    /// Down, overloaded or a serialization failure: the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            // serialization_failure, deadlock_detected, lock_not_available, too_many_connections,
            // admin/crash shutdown, cannot_connect_now
            sqlx::Error::Database(db) => matches!(
                db.code().as_deref(),
                Some("40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03")
            ),
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
            _ => false,
        };
        if transient {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}
