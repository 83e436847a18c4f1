//! Prometheus metrics of `run` (`--metrics-addr`). Names carry their unit; no per-day or per-file
//! labels.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

pub const DAYS: &str = "archive_days_total";
pub const ROWS: &str = "archive_rows_total";
pub const BYTES: &str = "archive_parquet_bytes_total";
pub const FAILURES: &str = "archive_failures_total";
pub const DAY_SECONDS: &str = "archive_day_duration_seconds";
pub const PENDING_DAYS: &str = "archive_pending_days";
pub const LAST_PASS: &str = "archive_last_pass_timestamp_seconds";

/// Starts the `/metrics` listener and describes every metric.
pub fn install(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    describe_counter!(DAYS, "day parts written (first archive or rewrite)");
    describe_counter!(
        ROWS,
        "rows written to Parquet (a rewritten part counts again)"
    );
    describe_counter!(BYTES, "bytes of Parquet written");
    describe_counter!(
        FAILURES,
        "days whose archiving failed (retried at the next pass)"
    );
    describe_histogram!(DAY_SECONDS, "time to archive one day, snapshot to verified");
    describe_gauge!(
        PENDING_DAYS,
        "closed days waiting to be archived at the last pass"
    );
    describe_gauge!(LAST_PASS, "Unix time of the end of the last pass");
    Ok(())
}

pub fn day_archived(rows: u64, bytes: u64, took: Duration) {
    counter!(DAYS).increment(1);
    counter!(ROWS).increment(rows);
    counter!(BYTES).increment(bytes);
    histogram!(DAY_SECONDS).record(took.as_secs_f64());
}

pub fn day_failed() {
    counter!(FAILURES).increment(1);
}

pub fn pass_done(pending: usize, unix_secs: i64) {
    gauge!(PENDING_DAYS).set(pending as f64);
    gauge!(LAST_PASS).set(unix_secs as f64);
}
