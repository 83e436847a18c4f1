//! The archiver's errors.

use thiserror::Error;

use crate::parquet_file::ParquetFileError;
use crate::store::StoreError;
use crate::verify::VerifyError;

#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The database failed a query; retried at the next pass.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    DbSetup(#[from] service::db::DbSetupError),
    /// The archive's storage failed; retried at the next pass.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parquet(#[from] ParquetFileError),
    /// The local spill files (disk full, permissions).
    #[error(transparent)]
    Spill(#[from] crate::spill::SpillError),
    /// A part does not verify: the archive is damaged or was changed.
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
    /// The archive's state is not what this release can continue from.
    #[error("archive state: {0}")]
    State(String),
    /// The `/metrics` listener could not start.
    #[error("cannot serve metrics on {addr}: {detail}")]
    Metrics {
        addr: std::net::SocketAddr,
        detail: String,
    },
    /// Replay refused a day (its rows are live in the database, or the archive differs from
    /// what was replayed).
    #[error("replay refused: {0}")]
    Refused(String),
}
