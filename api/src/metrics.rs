//! Prometheus metrics of mes-api, rendered by `GET /metrics` from the process-wide recorder.
//! Names carry their unit; labels are bounded (route templates, methods, status codes, event
//! types), never raw URIs or ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "mes_api_http_requests_total";
pub const HTTP_SECONDS: &str = "mes_api_http_request_duration_seconds";
pub const OUTBOX_BACKLOG: &str = "mes_api_outbox_backlog_events";
pub const OUTBOX_PUBLISHED: &str = "mes_api_outbox_published_total";
pub const RELAY_ERRORS: &str = "mes_api_relay_errors_total";
pub const RELAY_LAG_SECONDS: &str = "mes_api_relay_lag_seconds";
pub const IDEMPOTENT_REPLAYS: &str = "mes_api_idempotent_replays_total";

/// The process-wide Prometheus handle, installing the recorder on first use. When another
/// recorder is already installed (a test harness), a detached handle is returned: it renders
/// nothing but keeps `/metrics` working.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(HTTP_SECONDS, "HTTP request duration, by route and method");
    describe_gauge!(
        OUTBOX_BACKLOG,
        "run events in the outbox not yet acknowledged by JetStream"
    );
    describe_counter!(
        OUTBOX_PUBLISHED,
        "run events published and acknowledged, by event type"
    );
    describe_counter!(RELAY_ERRORS, "outbox relay failures, by kind");
    describe_gauge!(RELAY_LAG_SECONDS, "age of the oldest unsent run event");
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "POSTs answered from a stored Idempotency-Key answer"
    );
}

pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_SECONDS, "route" => route.to_owned(), "method" => method.to_owned())
        .record(elapsed.as_secs_f64());
}

pub fn outbox_backlog(events: i64, oldest_age_seconds: f64) {
    gauge!(OUTBOX_BACKLOG).set(events as f64);
    gauge!(RELAY_LAG_SECONDS).set(oldest_age_seconds);
}

pub fn published(event_type: &str, n: u64) {
    counter!(OUTBOX_PUBLISHED, "event" => event_type.to_owned()).increment(n);
}

pub fn relay_error(kind: &'static str) {
    counter!(RELAY_ERRORS, "kind" => kind).increment(1);
}

pub fn idempotent_replay() {
    counter!(IDEMPOTENT_REPLAYS).increment(1);
}
