//! The wire contract of edge-mes, in one place.
//!
//! Everything two processes must agree on lives here and nowhere else: the JSONL reading and
//! its validation rules ([`reading`]), how lines of one source file travel in a JetStream message
//! ([`framing`]), the subjects ([`subject`]), the streams and consumer ([`streams`]), and the run events mes-api publishes for the MES
//! ([`run_event`]).
//!
//! This crate is pure: no I/O, no async runtime, so every rule is unit-testable.

pub mod framing;
pub mod reading;
pub mod run_event;
pub mod source;
pub mod streams;
pub mod subject;

pub use framing::{BatchKind, BatchMeta, FramingError, LineRef};
pub use reading::{decode_line, Limits, Reading, RejectReason, Rejection};
pub use run_event::{DowntimeInfo, RunEvent, RunEventType};
pub use source::{ByteRange, Fingerprint, SourceKey};
pub use streams::{Names, OpRunNames};
