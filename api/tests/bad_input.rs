//! Table-driven bad input for every endpoint: status, problem+json, the field named.

use axum::http::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn bad_run_bodies_are_problems_naming_the_field() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(
        &app,
        json!({"work_order_id":"WO1","operation_id":"OP1","resource_id":"R-bad"}),
    )
    .await;
    let done = start_run(
        &app,
        json!({"work_order_id":"WO1","operation_id":"OP1","resource_id":"R-bad-done"}),
    )
    .await;
    let c = post(&app, "/op_run/complete", json!({"op_run_id":done})).await;
    assert_eq!(c.status.as_u16(), 200);
    let unknown = uuid::Uuid::now_v7();
    let long = "x".repeat(129);

    // (route, raw body, status, field)
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("/op_run/start", "".into(), 400, Some("body")),
        ("/op_run/start", "{".into(), 400, Some("body")),
        ("/op_run/start", "[]".into(), 422, Some("body")),
        ("/op_run/start", "null".into(), 422, Some("body")),
        ("/op_run/start", r#"{"operation_id":"OP","resource_id":"R"}"#.into(), 422, Some("work_order_id")),
        ("/op_run/start", r#"{"work_order_id":"W","resource_id":"R"}"#.into(), 422, Some("operation_id")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP"}"#.into(), 422, Some("resource_id")),
        ("/op_run/start", r#"{"work_order_id":"","operation_id":"OP","resource_id":"R"}"#.into(), 422, Some("work_order_id")),
        ("/op_run/start", r#"{"work_order_id":"  ","operation_id":"OP","resource_id":"R"}"#.into(), 422, Some("work_order_id")),
        ("/op_run/start", format!(r#"{{"work_order_id":"W","operation_id":"{long}","resource_id":"R"}}"#), 422, Some("operation_id")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R\u0000"}"#.into(), 422, Some("resource_id")),
        ("/op_run/start", r#"{"work_order_id":7,"operation_id":"OP","resource_id":"R"}"#.into(), 422, Some("work_order_id")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","planned_seconds":-1}"#.into(), 422, Some("planned_seconds")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","planned_seconds":1e400}"#.into(), 400, Some("body")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","planned_seconds":NaN}"#.into(), 400, Some("body")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","planned_seconds":"10"}"#.into(), 422, Some("planned_seconds")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","ideal_cycle_time_s":0}"#.into(), 422, Some("ideal_cycle_time_s")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","ideal_cycle_time_s":-1.5}"#.into(), 422, Some("ideal_cycle_time_s")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","started_at":"yesterday"}"#.into(), 422, Some("started_at")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","started_at":"2025-01-01T00:00:00"}"#.into(), 422, Some("started_at")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","started_at":"2999-01-01T00:00:00Z"}"#.into(), 422, Some("started_at")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","site_id":"NOPE"}"#.into(), 422, Some("site_id")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","op_run_id":"nope"}"#.into(), 422, Some("op_run_id")),
        ("/op_run/start", r#"{"work_order_id":"W","operation_id":"OP","resource_id":"R","colour":"red"}"#.into(), 422, Some("colour")),
        ("/op_run/start", format!(r#"{{"work_order_id":"W","operation_id":"OP","resource_id":"R-x","op_run_id":"{id}"}}"#), 409, Some("op_run_id")),
        ("/op_run/report", "".into(), 400, Some("body")),
        ("/op_run/report", r#"{"good_delta":1,"scrap_delta":0}"#.into(), 422, Some("op_run_id")),
        ("/op_run/report", r#"{"op_run_id":"not-a-uuid","good_delta":1,"scrap_delta":0}"#.into(), 422, Some("op_run_id")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","scrap_delta":0}}"#), 422, Some("good_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1}}"#), 422, Some("scrap_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":-1,"scrap_delta":0}}"#), 422, Some("good_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":-5}}"#), 422, Some("scrap_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1.5,"scrap_delta":0}}"#), 422, Some("good_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1e3,"scrap_delta":0}}"#), 422, Some("good_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":99999999999999999999,"scrap_delta":0}}"#), 422, Some("good_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":2000000000,"scrap_delta":0}}"#), 422, Some("good_delta")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":0,"good_detla":1}}"#), 422, Some("good_detla")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":0,"at":"2000-01-01T00:00:00Z"}}"#), 422, Some("at")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":0,"at":12}}"#), 422, Some("at")),
        ("/op_run/report", format!(r#"{{"op_run_id":"{unknown}","good_delta":1,"scrap_delta":0}}"#), 404, None),
        ("/op_run/report", format!(r#"{{"op_run_id":"{done}","good_delta":1,"scrap_delta":0}}"#), 409, Some("op_run_id")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{id}"}}"#), 422, Some("reason_code")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{id}","reason_code":"coffee"}}"#), 422, Some("reason_code")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{id}","reason_code":""}}"#), 422, Some("reason_code")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{id}","reason_code":"breakdown","planned":true}}"#), 422, Some("planned")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{id}","reason_code":"breakdown","at":"2999-01-01T00:00:00Z"}}"#), 422, Some("at")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{id}","reason_code":"breakdown","note":"{}"}}"#, "n".repeat(1100)), 422, Some("note")),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{unknown}","reason_code":"breakdown"}}"#), 404, None),
        ("/op_run/pause", format!(r#"{{"op_run_id":"{done}","reason_code":"breakdown"}}"#), 409, Some("op_run_id")),
        ("/op_run/resume", "{}".into(), 422, Some("op_run_id")),
        ("/op_run/resume", format!(r#"{{"op_run_id":"{id}"}}"#), 409, Some("op_run_id")),
        ("/op_run/resume", format!(r#"{{"op_run_id":"{unknown}"}}"#), 404, None),
        ("/op_run/resume", format!(r#"{{"op_run_id":"{id}","at":"soon"}}"#), 422, Some("at")),
        ("/op_run/resume", format!(r#"{{"op_run_id":"{done}"}}"#), 409, Some("op_run_id")),
        ("/op_run/complete", "{}".into(), 422, Some("op_run_id")),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{id}","good_units":-1}}"#), 422, Some("good_units")),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{id}","scrap_units":"many"}}"#), 422, Some("scrap_units")),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{id}","ended_at":"2000-01-01T00:00:00Z"}}"#), 422, Some("ended_at")),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{id}","ended_at":"2999-01-01T00:00:00Z"}}"#), 422, Some("ended_at")),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{id}","final":true}}"#), 422, Some("final")),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{unknown}"}}"#), 404, None),
        ("/op_run/complete", format!(r#"{{"op_run_id":"{done}"}}"#), 409, Some("op_run_id")),
        ("/op_run/abort", "{}".into(), 422, Some("op_run_id")),
        ("/op_run/abort", format!(r#"{{"op_run_id":"{id}","good_units":1}}"#), 422, Some("good_units")),
        ("/op_run/abort", format!(r#"{{"op_run_id":"{id}","ended_at":"2000-01-01T00:00:00Z"}}"#), 422, Some("ended_at")),
        ("/op_run/abort", format!(r#"{{"op_run_id":"{id}","ended_at":"2999-01-01T00:00:00Z"}}"#), 422, Some("ended_at")),
        ("/op_run/abort", format!(r#"{{"op_run_id":"{unknown}"}}"#), 404, None),
        ("/op_run/abort", format!(r#"{{"op_run_id":"{done}"}}"#), 409, Some("op_run_id")),
    ];
    for (route, body, status, field) in &cases {
        let a = call(&app, Method::POST, route, Some(body), &[]).await;
        a.assert_problem(*status, *field, &format!("POST {route} {body}"));
    }

    // Transport-level refusals, for every POST route.
    for route in [
        "/op_run/start",
        "/op_run/report",
        "/op_run/pause",
        "/op_run/resume",
        "/op_run/complete",
        "/op_run/abort",
    ] {
        let ctx = format!("POST {route}");
        call(
            &app,
            Method::POST,
            route,
            None,
            &[("content-type", "text/plain")],
        )
        .await
        .assert_problem(415, None, &ctx);
        call(
            &app,
            Method::POST,
            route,
            Some("{}"),
            &[("content-type", "text/plain")],
        )
        .await
        .assert_problem(415, None, &ctx);
        let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024));
        call(&app, Method::POST, route, Some(&huge), &[])
            .await
            .assert_problem(413, Some("body"), &ctx);
        call(
            &app,
            Method::POST,
            route,
            Some("{}"),
            &[("idempotency-key", "")],
        )
        .await
        .assert_problem(400, Some("Idempotency-Key"), &ctx);
        call(
            &app,
            Method::POST,
            route,
            Some("{}"),
            &[("idempotency-key", &"k".repeat(256))],
        )
        .await
        .assert_problem(400, Some("Idempotency-Key"), &ctx);
        call(&app, Method::GET, route, None, &[])
            .await
            .assert_problem(405, None, &ctx);
    }

    // Nothing above changed anything.
    assert_eq!(scalar_i64(&t.pool, "SELECT count(*) FROM op_run").await, 2);
    assert_eq!(
        scalar_i64(&t.pool, "SELECT count(*) FROM op_run_count").await,
        0
    );
    assert_eq!(
        scalar_i64(&t.pool, "SELECT count(*) FROM op_run_downtime").await,
        0
    );
}

#[tokio::test]
async fn bad_paths_and_unknown_routes_are_problems() {
    let t = db().await;
    let app = app(&t.pool);
    get(&app, "/op_run/not-a-uuid")
        .await
        .assert_problem(400, Some("op_run_id"), "bad run id");
    get(&app, &format!("/op_run/{}", uuid::Uuid::now_v7()))
        .await
        .assert_problem(404, None, "unknown run id");
    get(&app, "/nope")
        .await
        .assert_problem(404, None, "unknown route");
    call(&app, Method::DELETE, "/op_run/active", None, &[])
        .await
        .assert_problem(405, None, "wrong method");
}

/// An empty optional query parameter (what an HTML form sends for an empty field) is the same as
/// leaving it out; a required one is still missing, and a repeated one still refused.
#[tokio::test]
async fn empty_optional_query_parameters_are_absent_ones() {
    let t = db().await;
    let app = app(&t.pool);
    for uri in [
        "/kpi/oee?site_id=&resource_id=&from=&to=",
        "/spc?resource_id=R1&sensor=temp&from=&to=&window_seconds=&max_points=",
        "/spc?resource_id=R1&sensor=temp&from=&window_seconds=60",
        "/board/state?site=",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status.as_u16(), 200, "GET {uri}: {}", a.body);
    }
    let window = get(&app, "/kpi/oee?from=").await.body;
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default()).unwrap()
    };
    assert_eq!(
        time(&window["to"]) - time(&window["from"]),
        chrono::Duration::hours(24),
        "the default window: {window}"
    );
    get(&app, "/spc?resource_id=&sensor=temp")
        .await
        .assert_problem(400, Some("resource_id"), "empty required parameter");
    get(&app, "/kpi/oee?site_id=&site_id=BKK")
        .await
        .assert_problem(400, Some("site_id"), "repeated parameter");
}
