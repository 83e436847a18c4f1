//! Prometheus metrics of mes-api, rendered by `GET /metrics` from the process-wide recorder: on
//! the main port (behind a viewer token with `--auth tokens`) and on the metrics listener
//! (`--metrics-listen`, without authentication; [`serve`]). Names carry their unit; labels are
//! bounded (route templates, methods, status codes, event types), never raw URIs or ids.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "mes_api_http_requests_total";
pub const HTTP_SECONDS: &str = "mes_api_http_request_duration_seconds";
pub const OUTBOX_BACKLOG: &str = "mes_api_outbox_backlog_events";
pub const OUTBOX_PUBLISHED: &str = "mes_api_outbox_published_total";
pub const RELAY_ERRORS: &str = "mes_api_relay_errors_total";
pub const RELAY_LAG_SECONDS: &str = "mes_api_relay_lag_seconds";
pub const IDEMPOTENT_REPLAYS: &str = "mes_api_idempotent_replays_total";
pub const JWKS_KEYS: &str = "mes_api_jwks_keys";
pub const JWKS_REFRESH_ERRORS: &str = "mes_api_jwks_refresh_errors_total";

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

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
    describe_gauge!(
        JWKS_KEYS,
        "usable signing keys of the identity provider's JWKS (--jwt-jwks)"
    );
    describe_counter!(
        JWKS_REFRESH_ERRORS,
        "failed reads of the JWKS (the keys read before stay in use)"
    );
}

/// The metrics listener's whole API: `GET /metrics`, no authentication; anything else 404.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()).into_response() }
        }),
    )
}

/// Serves [`router`] on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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

pub fn jwks_keys(n: usize) {
    gauge!(JWKS_KEYS).set(n as f64);
}

pub fn jwks_refresh_failed() {
    counter!(JWKS_REFRESH_ERRORS).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_listener_serves_only_metrics_without_a_token_and_stops_with_shutdown() {
        let handle = handle();
        idempotent_replay();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(listener, handle, shutdown.clone()));
        let answer = get(addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(CONTENT_TYPE), "{answer}");
        assert!(answer.contains(IDEMPOTENT_REPLAYS), "{answer}");
        for other in ["/", "/op_run/active", "/health"] {
            assert!(
                get(addr, other).await.starts_with("HTTP/1.1 404"),
                "{other}"
            );
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the metrics listener stops at shutdown")
            .unwrap()
            .unwrap();
    }
}
