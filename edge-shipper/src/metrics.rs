//! Every metric the shipper exports, in one place. No per-file labels: a box may tail hundreds of
//! files.

use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Complete lines acknowledged by JetStream (an oversize line counts as one).
pub const LINES_TOTAL: &str = "edge_shipper_lines_total";
/// Source bytes acknowledged by JetStream (the ranges' lengths).
pub const BYTES_TOTAL: &str = "edge_shipper_bytes_total";
pub const MESSAGES_PUBLISHED_TOTAL: &str = "edge_shipper_messages_published_total";
pub const PUBLISH_RETRIES_TOTAL: &str = "edge_shipper_publish_retries_total";
pub const PUBLISH_LATENCY_SECONDS: &str = "edge_shipper_publish_latency_seconds";
pub const ACKS_IN_FLIGHT: &str = "edge_shipper_acks_in_flight";
/// Bytes in tracked files not yet acknowledged: unread, read but unsent, or in flight.
pub const BYTES_BEHIND: &str = "edge_shipper_bytes_behind";
pub const FILES_TRACKED: &str = "edge_shipper_files_tracked";
pub const TRUNCATIONS_TOTAL: &str = "edge_shipper_truncations_total";
pub const ROTATIONS_TOTAL: &str = "edge_shipper_rotations_total";
/// Bytes of a last line that never got its newline before its rotated file was closed.
pub const UNTERMINATED_TAIL_BYTES_TOTAL: &str = "edge_shipper_unterminated_tail_bytes_total";
pub const CHECKPOINT_WRITES_TOTAL: &str = "edge_shipper_checkpoint_writes_total";
pub const CHECKPOINT_ERRORS_TOTAL: &str = "edge_shipper_checkpoint_errors_total";

const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Serves `/metrics` on `addr` (Prometheus text format). Must run inside a Tokio runtime.
pub fn install_exporter(addr: SocketAddr) -> Result<(), BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(PUBLISH_LATENCY_SECONDS.to_owned()),
            &LATENCY_BUCKETS,
        )?
        .install()?;
    describe();
    Ok(())
}

fn describe() {
    describe_counter!(
        LINES_TOTAL,
        Unit::Count,
        "complete lines acknowledged by JetStream"
    );
    describe_counter!(
        BYTES_TOTAL,
        Unit::Bytes,
        "source bytes acknowledged by JetStream"
    );
    describe_counter!(
        MESSAGES_PUBLISHED_TOTAL,
        Unit::Count,
        "messages acknowledged by JetStream"
    );
    describe_counter!(
        PUBLISH_RETRIES_TOTAL,
        Unit::Count,
        "publish attempts that failed and were retried"
    );
    describe_histogram!(
        PUBLISH_LATENCY_SECONDS,
        Unit::Seconds,
        "time from first publish attempt to the JetStream ack"
    );
    describe_gauge!(
        ACKS_IN_FLIGHT,
        Unit::Count,
        "messages published and not yet acknowledged"
    );
    describe_gauge!(
        BYTES_BEHIND,
        Unit::Bytes,
        "bytes of tracked files not yet acknowledged"
    );
    describe_gauge!(FILES_TRACKED, Unit::Count, "open files being tailed");
    describe_counter!(
        TRUNCATIONS_TOTAL,
        Unit::Count,
        "files found truncated or rewritten"
    );
    describe_counter!(
        ROTATIONS_TOTAL,
        Unit::Count,
        "open files that stopped matching the glob (renamed or deleted)"
    );
    describe_counter!(
        UNTERMINATED_TAIL_BYTES_TOTAL,
        Unit::Bytes,
        "bytes of last lines without a newline dropped when their rotated file was closed"
    );
    describe_counter!(
        CHECKPOINT_WRITES_TOTAL,
        Unit::Count,
        "checkpoint files written"
    );
    describe_counter!(
        CHECKPOINT_ERRORS_TOTAL,
        Unit::Count,
        "failed checkpoint writes"
    );
}

/// Handles of the metrics updated for every message, looked up once.
#[derive(Clone)]
pub struct PublishMetrics {
    pub messages: Counter,
    pub lines: Counter,
    pub bytes: Counter,
    pub retries: Counter,
    pub latency: Histogram,
}

impl PublishMetrics {
    /// Must be called after [`install_exporter`] (handles taken before are no-ops).
    pub fn new() -> Self {
        Self {
            messages: metrics::counter!(MESSAGES_PUBLISHED_TOTAL),
            lines: metrics::counter!(LINES_TOTAL),
            bytes: metrics::counter!(BYTES_TOTAL),
            retries: metrics::counter!(PUBLISH_RETRIES_TOTAL),
            latency: metrics::histogram!(PUBLISH_LATENCY_SECONDS),
        }
    }
}

impl Default for PublishMetrics {
    fn default() -> Self {
        Self::new()
    }
}
