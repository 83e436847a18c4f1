//! Liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` when both dependencies answer, else `not_ready`.
    pub status: String,
    pub database: bool,
    pub nats: bool,
    /// The storage engine the database was created with (`postgresql` or `timescaledb`);
    /// `null` before a connection reached a migrated database.
    pub storage_engine: Option<String>,
    /// Why connections to the database are refused (a database created with TimescaleDB on a
    /// server running without it); `null` when they are not.
    pub storage_problem: Option<String>,
}

/// Liveness: the process serves HTTP (dependencies are not checked; see `/ready`).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the database answers a query and the NATS connection is up.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "database and NATS reachable", body = Readiness),
        (status = 503, description = "a dependency is unreachable", body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let nats = state
        .nats
        .as_ref()
        .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
    let storage = state
        .pool
        .connect_options()
        .get_database()
        .and_then(service::storage::status);
    let storage_problem = storage.as_ref().and_then(|s| s.problem.clone());
    let ok = database && nats && storage_problem.is_none();
    let body = Readiness {
        status: if ok { "ready" } else { "not_ready" }.to_owned(),
        database: database && storage_problem.is_none(),
        nats,
        storage_engine: storage.map(|s| s.engine.as_str().to_owned()),
        storage_problem,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics in the text exposition format (also served without authentication on
/// `--metrics-listen`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::http::openapi_document_json(),
    )
        .into_response()
}
