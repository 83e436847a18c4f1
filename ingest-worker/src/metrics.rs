//! Prometheus metrics of the worker. Names carry their unit; labels are bounded (reason codes,
//! outcome kinds), never per source or per message.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;
use protocol::RejectReason;

pub const ROWS: &str = "ingest_rows_total";
pub const REJECTED: &str = "ingest_rejected_total";
pub const SKIPPED_LINES: &str = "ingest_skipped_lines_total";
pub const MESSAGES: &str = "ingest_messages_total";
pub const BATCHES: &str = "ingest_batches_total";
pub const BATCH_SECONDS: &str = "ingest_batch_duration_seconds";
pub const COPY_SECONDS: &str = "ingest_copy_duration_seconds";
pub const DECODE_SECONDS: &str = "ingest_decode_duration_seconds";
pub const RETRIES: &str = "ingest_retries_total";
pub const DEAD_LETTERS: &str = "ingest_dead_letters_total";
pub const CONSUMER_PENDING: &str = "ingest_consumer_pending_messages";
pub const STREAM_MESSAGES: &str = "ingest_stream_messages";
pub const STREAM_BYTES: &str = "ingest_stream_bytes";
pub const STREAM_MAX_BYTES: &str = "ingest_stream_max_bytes";
pub const STREAM_OLDEST_AGE: &str = "ingest_stream_oldest_message_age_seconds";
pub const STREAM_MAX_AGE: &str = "ingest_stream_max_age_seconds";
pub const RETENTION_WAITING: &str = "ingest_retention_days_waiting_for_archive";
pub const ROLLUP_RANGES: &str = "ingest_rollup_ranges_refreshed_total";

/// Starts the `/metrics` listener and describes every metric.
pub fn install(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    describe_counter!(ROWS, "readings rows committed");
    describe_counter!(REJECTED, "lines rejected, by reason");
    describe_counter!(
        SKIPPED_LINES,
        "lines skipped because the ledger already had them"
    );
    describe_counter!(MESSAGES, "messages acknowledged, by outcome");
    describe_counter!(BATCHES, "batches committed");
    describe_histogram!(BATCH_SECONDS, "time from batch assembled to commit");
    describe_histogram!(COPY_SECONDS, "time spent in COPY per batch");
    describe_histogram!(DECODE_SECONDS, "time to validate and encode a batch");
    describe_counter!(RETRIES, "batch retries, by kind");
    describe_counter!(DEAD_LETTERS, "messages sent to the dead-letter stream");
    describe_gauge!(CONSUMER_PENDING, "messages waiting in the durable consumer");
    describe_gauge!(
        STREAM_MESSAGES,
        "messages in READINGS not yet acknowledged (loaded)"
    );
    describe_gauge!(
        STREAM_BYTES,
        "bytes in READINGS not yet acknowledged (loaded)"
    );
    describe_gauge!(
        STREAM_MAX_BYTES,
        "size limit of READINGS (shippers wait when it is reached); -1: none"
    );
    describe_gauge!(
        STREAM_OLDEST_AGE,
        "age of the oldest READINGS message not yet acknowledged; lost unloaded at max_age"
    );
    describe_gauge!(STREAM_MAX_AGE, "age limit of READINGS; 0: none");
    describe_gauge!(
        RETENTION_WAITING,
        "expired days of readings kept until the archive has archived and verified them"
    );
    describe_counter!(
        ROLLUP_RANGES,
        "time ranges of the readings_1m/readings_1h rollups recomputed"
    );
    Ok(())
}

pub fn retention_waiting(days: u64) {
    gauge!(RETENTION_WAITING).set(days as f64);
}

pub fn rollup_ranges(n: u64) {
    counter!(ROLLUP_RANGES).increment(n);
}

pub fn rows(n: u64) {
    counter!(ROWS).increment(n);
}

pub fn rejected(reason: RejectReason) {
    counter!(REJECTED, "reason" => reason.as_str()).increment(1);
}

pub fn skipped(n: u64) {
    counter!(SKIPPED_LINES).increment(n);
}

pub fn messages(outcome: &'static str, n: u64) {
    counter!(MESSAGES, "outcome" => outcome).increment(n);
}

pub fn batch(elapsed: Duration) {
    counter!(BATCHES).increment(1);
    histogram!(BATCH_SECONDS).record(elapsed.as_secs_f64());
}

pub fn copy_duration(elapsed: Duration) {
    histogram!(COPY_SECONDS).record(elapsed.as_secs_f64());
}

pub fn decode_duration(elapsed: Duration) {
    histogram!(DECODE_SECONDS).record(elapsed.as_secs_f64());
}

pub fn retry(kind: &'static str) {
    counter!(RETRIES, "kind" => kind).increment(1);
}

pub fn backlog(b: &crate::backlog::Backlog) {
    gauge!(STREAM_MESSAGES).set(b.messages as f64);
    gauge!(STREAM_BYTES).set(b.bytes as f64);
    gauge!(STREAM_MAX_BYTES).set(b.max_bytes as f64);
    gauge!(STREAM_OLDEST_AGE).set(b.oldest_age.as_secs_f64());
    gauge!(STREAM_MAX_AGE).set(b.max_age.as_secs_f64());
}

pub fn dead_letter() {
    counter!(DEAD_LETTERS).increment(1);
}

pub fn consumer_pending(n: u64) {
    gauge!(CONSUMER_PENDING).set(n as f64);
}
