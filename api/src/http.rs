//! The router: routes registered together with their OpenAPI operations (utoipa-axum), so the
//! document served at `/openapi.json` always matches what is served; problem+json fallbacks;
//! body limit, timeout, tracing and per-route metrics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::board::{self, Board};
use crate::error::ApiError;
use crate::state::AppState;
use crate::{health, kpi, runs, spc, trace};

/// Limits the router applies to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mes-api",
        description = "Production runs, run events and OEE/SPC/traceability queries of edge-mes. \
                       Errors are application/problem+json (RFC 9457). Every POST accepts an \
                       Idempotency-Key header."
    ),
    tags(
        (name = "runs", description = "Production run lifecycle"),
        (name = "kpi", description = "OEE, SPC and traceability"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "board", description = "The live shop-floor board: page, snapshot, server-sent events")
    ),
    components(schemas(crate::error::Problem))
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_json))
        .routes(routes!(runs::start))
        .routes(routes!(runs::report))
        .routes(routes!(runs::pause))
        .routes(routes!(runs::resume))
        .routes(routes!(runs::complete))
        .routes(routes!(runs::abort))
        .routes(routes!(runs::active))
        .routes(routes!(runs::get_run))
        .routes(routes!(kpi::oee))
        .routes(routes!(trace::work_order))
        .routes(routes!(spc::spc))
        .routes(routes!(board::board_page))
        .routes(routes!(board::board_state))
        .routes(routes!(board::board_events))
}

/// The OpenAPI document of every route [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

pub(crate) fn openapi_document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
        .clone()
}

/// The whole HTTP API with default limits.
pub fn app(state: AppState) -> Router {
    app_with_limits(state, Limits::default())
}

pub fn app_with_limits(state: AppState, limits: Limits) -> Router {
    let board = Board::detached(&state);
    app_with_board(state, limits, board)
}

/// The whole HTTP API with its shop-floor board (whose feeds and streams stop with the board's
/// shutdown token).
pub fn app_with_board(state: AppState, limits: Limits, board: Board) -> Router {
    let (router, _) = api_router().split_for_parts();
    router
        .layer(Extension(board))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn(record_metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound(format!("{} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await.into_response();
    crate::metrics::http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
