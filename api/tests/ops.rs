//! OpenAPI coverage, health/ready/metrics, the demo seed and the binary's SIGTERM handling.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::Method;
use mes_api::{AppState, Settings};
use serde_json::json;

use crate::support::*;

/// Every route the router serves. Adding a route without documenting it fails this test.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/op_run/start"),
    ("post", "/op_run/report"),
    ("post", "/op_run/pause"),
    ("post", "/op_run/resume"),
    ("post", "/op_run/complete"),
    ("post", "/op_run/abort"),
    ("get", "/op_run/active"),
    ("get", "/op_run/{op_run_id}"),
    ("get", "/kpi/oee"),
    ("get", "/trace/work_order/{work_order_id}"),
    ("get", "/trace/run/{op_run_id}"),
    ("get", "/trace/run/{op_run_id}/readings"),
    ("get", "/trace/resource/{resource_id}"),
    ("get", "/trace/reading"),
    ("get", "/spc"),
    ("post", "/spc/limits"),
    ("get", "/spc/limits"),
    ("get", "/board"),
    ("get", "/board/state"),
    ("get", "/board/events"),
    ("post", "/board/session"),
    ("get", "/machine_stops"),
    ("post", "/machine_stops/{stop_id}/reason"),
    ("get", "/machine_state/rules"),
    ("put", "/machine_state/rules/{resource_id}"),
    ("delete", "/machine_state/rules/{resource_id}"),
];

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let t = db().await;
    let app = app(&t.pool);
    let a = get(&app, "/openapi.json").await;
    assert_eq!(a.status, 200);
    assert!(a.body["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in a.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    // And every documented operation is really served (not the route-not-found fallback, not 405).
    for (method, path) in &documented {
        let uri = path
            .replace("{op_run_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{work_order_id}", "WO-X")
            .replace("{stop_id}", "1")
            .replace("{resource_id}", "R-X");
        // An event stream never ends: only its status is checked.
        if a.body["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]
            .is_object()
        {
            assert_eq!(status_only(&app, Method::GET, &uri).await, 200, "{uri}");
            continue;
        }
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = call(
            &app,
            method.clone(),
            &uri,
            (method == Method::POST || method == Method::PUT).then_some("{}"),
            &[],
        )
        .await;
        assert_ne!(r.status.as_u16(), 405, "{method} {uri}");
        assert_ne!(
            r.body["type"], "urn:edge-mes:problem:route-not-found",
            "{method} {uri}"
        );
    }
    // Problem responses are documented as application/problem+json.
    let report = &a.body["paths"]["/op_run/report"]["post"]["responses"];
    assert!(
        report["409"]["content"]["application/problem+json"].is_object(),
        "{report}"
    );
    assert!(a.body["components"]["schemas"]["StartRun"].is_object());
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let t = db().await;
    let app = app(&t.pool);
    let h = get(&app, "/health").await;
    assert_eq!((h.status.as_u16(), &h.body), (200, &json!({"status":"ok"})));
    // No NATS connection: not ready, and says which dependency is missing.
    let r = get(&app, "/ready").await;
    assert_eq!(r.status.as_u16(), 503);
    // postgresql here; timescaledb when the tests run against a TimescaleDB server.
    let engine: String = sqlx::query_scalar("SELECT engine FROM edge_mes_storage")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(
        r.body,
        json!({"status":"not_ready","database":true,"nats":false,
               "storage_engine":engine,"storage_problem":null})
    );
    let nats = testkit::NatsServer::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let ready_app = mes_api::app(AppState::new(
        t.pool.clone(),
        Some(client),
        Settings {
            default_site: "BKK".into(),
        },
    ));
    let r = get(&ready_app, "/ready").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready");

    // A database created with TimescaleDB, on a server without it: new connections are
    // refused, and readiness says why; KPIs are refused (503), never read half-visible. (Only
    // where the server lacks TimescaleDB: on one that has it, that database is simply usable.)
    if engine == "postgresql" {
        sqlx::query("UPDATE edge_mes_storage SET engine = 'timescaledb'")
            .execute(&t.pool)
            .await
            .unwrap();
        let strict = mes_api::db::connect(&t.url, 2).await;
        assert!(strict.is_err(), "a new pool cannot connect");
        let r = get(&ready_app, "/ready").await;
        assert_eq!(r.status.as_u16(), 503, "{}", r.body);
        assert_eq!(r.body["storage_engine"], "timescaledb");
        assert!(
            r.body["storage_problem"]
                .as_str()
                .is_some_and(|p| p.contains("shared_preload_libraries")),
            "{}",
            r.body
        );
        sqlx::query("UPDATE edge_mes_storage SET engine = $1")
            .bind(&engine)
            .execute(&t.pool)
            .await
            .unwrap();
        let back = mes_api::db::connect(&t.url, 2).await.unwrap();
        back.close().await;
        let r = get(&ready_app, "/ready").await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    }

    let m = call(&app, Method::GET, "/metrics", None, &[]).await;
    assert_eq!(m.status.as_u16(), 200);
    let text = m.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("mes_api_http_requests_total"), "{text}");
    assert!(
        text.contains(r#"route="/ready""#),
        "route templates label the metrics: {text}"
    );
}

#[tokio::test]
async fn demo_seed_gives_oee_data_at_once() {
    let t = db().await;
    let id = mes_api::seed::demo_run(&t.pool, "BKK").await.unwrap();
    let (pbt, apt, pq, gq): (f64, f64, i64, i64) = sqlx::query_as(
        "SELECT sum(pbt_seconds), sum(apt_seconds), sum(pq)::int8, sum(gq)::int8 FROM v_oee_shift_real",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((pbt, apt, pq, gq), (14_400.0, 13_500.0, 800, 780));
    let app = app(&t.pool);
    let run = get(&app, &format!("/op_run/{id}")).await;
    assert_eq!(run.body["status"], "completed");
    assert_eq!(run.body["work_order_id"], "WO123");
    assert_eq!(
        (
            run.body["good_units"].as_i64(),
            run.body["scrap_units"].as_i64()
        ),
        (Some(780), Some(20))
    );
}

/// A minimal HTTP/1.1 client for the binary test: (status, body).

#[tokio::test]
async fn binary_creates_its_database_serves_publishes_and_stops_on_sigterm() {
    let name = testkit::unique_name("api_bin");
    let db_url = pg().await.url(&name); // does not exist yet: the binary creates it
    let nats = testkit::NatsServer::start().await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mes-api"))
        .env("DATABASE_URL", &db_url)
        .env("NATS_URL", nats.url())
        .env("EDGE_NAMESPACE", &name)
        .env("API_LISTEN", format!("127.0.0.1:{port}"))
        .env("API_RELAY_POLL_MS", "50")
        .env("API_METRICS_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(
        "mes-api to answer /ready with 200",
        Duration::from_secs(60),
        || async {
            matches!(
                http_request(port, "GET", "/ready", None, None).await,
                Some((200, _))
            )
        },
    )
    .await;
    // Tokens are required by default: without one the write is refused; an operator token made
    // with the binary (in the database it created) is let through.
    let start = json!({"work_order_id":"WO123","operation_id":"OP10","resource_id":"SMT01","planned_seconds":14400,"ideal_cycle_time_s":1.5});
    let (status, _) = http_request(port, "POST", "/op_run/start", None, Some(&start))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_mes-api"))
        .args([
            "token", "create", "--role", "operator", "--name", "ops-test",
        ])
        .env("DATABASE_URL", &db_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim();
    let (status, body) = http_request(port, "POST", "/op_run/start", Some(token), Some(&start))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");

    // The started event reaches the stream.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let names = protocol::OpRunNames::isolated(&name);
    wait_until(
        "the started event on the stream",
        Duration::from_secs(20),
        || async {
            match js.get_stream(&names.stream).await {
                Ok(mut stream) => stream.info().await.unwrap().state.messages == 1,
                Err(_) => false,
            }
        },
    )
    .await;

    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("mes-api did not stop within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
