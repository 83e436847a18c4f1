//! The router: routes registered together with their OpenAPI operations (utoipa-axum), so the
//! document served at `/openapi.json` always matches what is served; problem+json fallbacks;
//! body limit, timeout, tracing and per-route metrics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, StatusCode};
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
use crate::{health, kpi, machine_state, runs, spc, trace};

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
        .routes(routes!(trace::by_run::run_trace))
        .routes(routes!(trace::export::run_readings))
        .routes(routes!(trace::by_resource::resource_trace))
        .routes(routes!(trace::by_reading::reading_trace))
        .routes(routes!(machine_state::list_stops))
        .routes(routes!(machine_state::assign_reason))
        .routes(routes!(machine_state::list_rules))
        .routes(routes!(machine_state::put_rule, machine_state::delete_rule))
        .routes(routes!(spc::spc))
        .routes(routes!(spc::limits::set_limits, spc::limits::list_limits))
        .routes(routes!(board::board_page))
        .routes(routes!(board::board_state))
        .routes(routes!(board::board_events))
        .routes(routes!(crate::auth::session::board_session))
}

/// The OpenAPI document of every route [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().split_for_parts().1;
    // The timeout layer wraps every route, so every operation can answer 408 (without a body).
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("408".to_owned())
                .or_insert_with(|| {
                    utoipa::openapi::ResponseBuilder::new()
                        .description("slower than --request-timeout-ms; no body")
                        .build()
                        .into()
                });
        }
    }
    document_authentication(&mut doc);
    doc
}

/// The bearer scheme (`--auth tokens`, see [`crate::auth`]) on every operation that needs it,
/// with the role each needs (`x-edge-mes-role`) and its 401/403 answers.
fn document_authentication(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.bearer_format = Some("emt_<id>_<secret> API token, or JWT".to_owned());
    bearer.description = Some(
        "An API token (`mes-api token create`; `emt_…`) or, with --jwt-jwks, a JWT of the \
         plant's identity provider (RS256/ES256, its role in --jwt-role-claim); required when \
         mes-api runs with --auth tokens"
            .to_owned(),
    );
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(bearer));
    for (path, item) in doc.paths.paths.iter_mut() {
        let methods = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in methods {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let Some(role) = crate::auth::required_role(&method, path) else {
                continue;
            };
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .insert("x-edge-mes-role".to_owned(), role.as_str().into());
            let responses = &mut operation.responses.responses;
            responses.entry("401".to_owned()).or_insert_with(|| {
                problem_doc("no token, or an invalid one (with --auth tokens)").into()
            });
            responses.entry("403".to_owned()).or_insert_with(|| {
                problem_doc(&format!(
                    "the token's role is below {role} (with --auth tokens)"
                ))
                .into()
            });
            if method == Method::POST {
                responses.entry("429".to_owned()).or_insert_with(|| {
                    problem_doc(
                        "the token's writes are over --write-rate-per-token; see Retry-After",
                    )
                    .into()
                });
            }
        }
    }
}

/// A documented problem response: `application/problem+json` with the `Problem` schema.
pub(crate) fn problem_doc(description: &str) -> utoipa::openapi::response::Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            crate::error::PROBLEM_JSON,
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The OpenAPI responses of an operation that reads or writes the database: 503 when it is down
/// or overloaded (retry), 500 for what the server log explains.
pub struct ServerFaults;

impl utoipa::IntoResponses for ServerFaults {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        utoipa::openapi::ResponsesBuilder::new()
            .response(
                "500",
                problem_doc("internal error; the server log has the cause"),
            )
            .response(
                "503",
                problem_doc("the database is unreachable or overloaded; retry later"),
            )
            .build()
            .responses
    }
}

/// The served document: [`openapi`] as JSON, its links spelled as OpenAPI spells them.
pub(crate) fn openapi_document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
        camel_case_links(&mut doc);
        doc.to_string()
    })
    .clone()
}

/// utoipa 5.5 writes a Link object's fields in snake case (`operation_id`, fixed in utoipa 6);
/// OpenAPI and the tools that follow links read `operationId`, `operationRef`, `requestBody`.
fn camel_case_links(doc: &mut serde_json::Value) {
    let operations = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    let links = operations
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links"))
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|links| links.values_mut())
        .filter_map(serde_json::Value::as_object_mut);
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
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
    let router = router
        .layer(Extension(board))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));
    // Before routing: an unknown route answers 401 to whoever has no token.
    let router = if state.auth_required {
        router.layer(middleware::from_fn_with_state(
            state.auth.clone(),
            crate::auth::middleware::authenticate,
        ))
    } else {
        router
    };
    router
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Ident, Note};
    use serde_json::Value;

    fn document() -> Value {
        serde_json::from_str(&openapi_document_json()).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                out.push((format!("{method} {path}"), operation));
            }
        }
        out
    }

    #[test]
    fn operations_state_the_refusals_of_the_layers_they_pass() {
        let doc = document();
        for (name, operation) in operations(&doc) {
            let responses = &operation["responses"];
            assert!(responses["408"].is_object(), "{name}: the timeout layer");
            if operation["tags"][0] == "runs" && operation["requestBody"].is_object() {
                for status in ["400", "413", "415", "422", "503"] {
                    let problem = &responses[status]["content"]["application/problem+json"];
                    assert!(problem.is_object(), "{name}: {status}");
                }
                let key = operation["parameters"]
                    .as_array()
                    .and_then(|p| p.iter().find(|p| p["name"] == "Idempotency-Key"))
                    .unwrap_or_else(|| panic!("{name}: Idempotency-Key"));
                assert_eq!(key["in"], "header");
                assert_eq!(key["schema"]["maxLength"], 255);
                assert_eq!(key["schema"]["pattern"], crate::idempotency::KEY_PATTERN);
            }
        }
    }

    #[test]
    fn the_bearer_scheme_names_both_kinds_of_token() {
        let doc = document();
        let bearer = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(bearer["type"], "http");
        assert_eq!(bearer["scheme"], "bearer");
        let format = bearer["bearerFormat"].as_str().unwrap();
        assert!(
            format.contains("emt_") && format.contains("JWT"),
            "{format}"
        );
        assert_eq!(
            doc["paths"]["/op_run/start"]["post"]["security"][0]["bearer"],
            serde_json::json!([])
        );
    }

    #[test]
    fn a_started_run_links_to_the_operations_that_take_its_id() {
        let doc = document();
        let links = &doc["paths"]["/op_run/start"]["post"]["responses"]["201"]["links"];
        let ids: Vec<&str> = operations(&doc)
            .iter()
            .filter_map(|(_, o)| o["operationId"].as_str())
            .collect();
        for (name, link) in links.as_object().unwrap() {
            let target = link["operationId"].as_str().unwrap_or_default();
            assert!(ids.contains(&target), "{name} links to {target:?}");
            assert!(
                link.get("operation_id").is_none(),
                "OpenAPI spells it operationId"
            );
            let id = if target == "get_run" {
                &link["parameters"]["op_run_id"]
            } else {
                &link["requestBody"]["op_run_id"]
            };
            assert_eq!(id, "$response.body#/op_run_id", "{name}");
        }
        let mut names: Vec<&String> = links.as_object().unwrap().keys().collect();
        names.sort();
        let expected = ["abort", "complete", "get_run", "pause", "report", "resume"];
        assert_eq!(names, expected);
    }

    /// Each branch of a text schema admits only values the type takes: the ASCII branch by its
    /// pattern (checked against the type's rule on every ASCII character), the other by a length
    /// whose characters fit in the type's bytes even at 4 bytes each.
    #[test]
    fn text_schemas_admit_only_what_fits_in_the_bytes() {
        let doc = document();
        type Takes = fn(&str) -> bool;
        let cases: [(&str, usize, Takes); 2] = [
            ("Ident", crate::domain::values::MAX_ID_BYTES, |s| {
                Ident::parse(s).is_ok()
            }),
            ("Note", crate::domain::values::MAX_NOTE_BYTES, |s| {
                Note::parse(s).is_ok()
            }),
        ];
        for (name, max_bytes, takes) in cases {
            let branches = doc["components"]["schemas"][name]["anyOf"]
                .as_array()
                .unwrap();
            let (ascii, any) = (&branches[0], &branches[1]);
            assert_eq!(ascii["maxLength"], max_bytes, "{name}");
            assert!(
                any["maxLength"].as_u64().unwrap() * 4 <= max_bytes as u64,
                "{name}"
            );
            let pattern = regex::Regex::new(ascii["pattern"].as_str().unwrap()).unwrap();
            for c in (0u8..=0x7f).map(char::from) {
                for value in [format!("a{c}"), c.to_string()] {
                    assert_eq!(pattern.is_match(&value), takes(&value), "{name} {value:?}");
                }
            }
            assert!(!pattern.is_match("aü"), "{name}: the ASCII branch is ASCII");
            assert!(takes(&"ü".repeat(max_bytes / 2)) && !takes(&"ü".repeat(max_bytes / 2 + 1)));
        }
    }
}
