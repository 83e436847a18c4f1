//! edge-shipper: tails JSONL files on an edge box and ships their complete lines to NATS
//! JetStream, at least once.

pub mod metrics;
pub mod tailer;
