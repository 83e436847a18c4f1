//! edge-shipper: tails JSONL files on an edge box and ships their complete lines to NATS
//! JetStream, at least once.
//!
//! - [`tailer`]: finds files by glob, follows them through rotation and truncation, and cuts
//!   complete lines into chunks of exact byte ranges. No NATS types; plain blocking I/O.
//! - [`publisher`]: publishes a chunk with its protocol headers and `Nats-Msg-Id`, retrying the
//!   same message until JetStream acknowledges it.
//! - [`acked_offsets`]: per-source offset = end of the contiguous prefix of acknowledged ranges.
//! - [`checkpoint`]: the versioned `checkpoints.json`, written atomically.
//! - [`shipper`]: [`run`] wires them together with back-pressure and graceful shutdown.
//! - [`config`], [`metrics`]: the command line and the Prometheus metrics.
//!
//! The wire contract (subjects, headers, source names) lives in the `protocol` crate.

pub mod acked_offsets;
pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod publisher;
pub mod shipper;
pub mod tailer;

pub use config::{Config, LogFormat};
pub use shipper::{run, ShipperError};
