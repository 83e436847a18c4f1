//! What every edge-mes binary does the same way, so that it is done once and tested once:
//!
//! - [`nats`]: the NATS flags (`--nats-url`, `--nats-creds`, `--nats-user`, `--nats-password`,
//!   `--nats-token`) and the client options built from them, URL credentials included.
//! - [`telemetry`]: `tracing` set-up, human or JSON (`LOG_FORMAT=json`).
//! - [`shutdown`]: a cancellation token cancelled by SIGTERM or Ctrl-C.
//! - [`retry`]: waiting out a dependency that is not up yet.
//! - [`secrets`]: `X_FILE` for every secret variable `X` (Docker/Kubernetes secrets).
//! - [`db`] (feature `db`): connect to PostgreSQL, creating the database when missing, and apply
//!   the embedded migrations; [`storage`]: the storage engine check of every pooled connection.

#[cfg(feature = "db")]
pub mod db;
pub mod nats;
pub mod retry;
pub mod secrets;
pub mod shutdown;
#[cfg(feature = "db")]
pub mod storage;
pub mod telemetry;
