use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::*;

fn seed_start(resource: &str) -> serde_json::Value {
    json!({"work_order_id":"WO123","operation_id":"OP10","resource_id":resource,
           "planned_seconds":14400,"ideal_cycle_time_s":1.5})
}

#[tokio::test]
async fn full_lifecycle_with_the_seed_bodies() {
    let t = db().await;
    let app = app(&t.pool);

    let started = post(&app, "/op_run/start", seed_start("SMT01")).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let id = started.body["op_run_id"].as_str().unwrap().to_owned();
    assert_eq!(started.body["status"], "running");
    assert_eq!(started.body["site_id"], "BKK");
    assert_eq!(started.body["ideal_cycle_time_s"], 1.5);
    assert_eq!(started.body["good_units"], 0);

    let active = get(&app, "/op_run/active").await;
    assert_eq!(active.status, StatusCode::OK);
    assert_eq!(active.body["runs"].as_array().unwrap().len(), 1);
    assert_eq!(active.body["runs"][0]["op_run_id"], id.as_str());

    let r = post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":10,"scrap_delta":1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (
            r.body["good_units"].as_i64(),
            r.body["scrap_units"].as_i64()
        ),
        (Some(10), Some(1))
    );

    let p = post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":id,"reason_code":"breakdown","note":"feeder jam"}),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["status"], "paused");
    assert_eq!(p.body["downtime"][0]["reason_code"], "breakdown");
    assert_eq!(p.body["downtime"][0]["planned"], false);
    assert_eq!(p.body["downtime"][0]["loss_bucket"], "availability");
    assert!(p.body["downtime"][0]["ended_at"].is_null());

    // Paused twice: conflict. Counts may still arrive while paused (buffered).
    post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":id,"reason_code":"breakdown"}),
    )
    .await
    .assert_problem(409, Some("op_run_id"), "pause a paused run");
    let r = post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":5,"scrap_delta":0}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let res = post(&app, "/op_run/resume", json!({"op_run_id":id})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.body["status"], "running");
    assert!(res.body["downtime"][0]["ended_at"].is_string());
    post(&app, "/op_run/resume", json!({"op_run_id":id}))
        .await
        .assert_problem(409, Some("op_run_id"), "resume a running run");

    // Final counters below the reported totals are refused; equal or above are adjustments.
    post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"good_units":14,"scrap_units":1}),
    )
    .await
    .assert_problem(409, Some("good_units"), "final below reported");
    let c = post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"good_units":780,"scrap_units":20}),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.body["status"], "completed");
    assert_eq!(
        (
            c.body["good_units"].as_i64(),
            c.body["scrap_units"].as_i64()
        ),
        (Some(780), Some(20))
    );
    assert!(c.body["ended_at"].is_string());

    // A completed run refuses reports and a second completion; unknown runs are 404.
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":1,"scrap_delta":0}),
    )
    .await
    .assert_problem(409, Some("op_run_id"), "report on completed run");
    post(&app, "/op_run/complete", json!({"op_run_id":id}))
        .await
        .assert_problem(409, Some("op_run_id"), "complete twice");
    let unknown = uuid::Uuid::now_v7().to_string();
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":unknown,"good_delta":1,"scrap_delta":0}),
    )
    .await
    .assert_problem(404, None, "report on unknown run");
    get(&app, &format!("/op_run/{unknown}"))
        .await
        .assert_problem(404, None, "get unknown run");

    let detail = get(&app, &format!("/op_run/{id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert_eq!(detail.body["status"], "completed");
    assert_eq!(detail.body["downtime"].as_array().unwrap().len(), 1);
    assert_eq!(get(&app, "/op_run/active").await.body["runs"], json!([]));

    // Counts are time-stamped rows; their sum is the run's total.
    let (rows, good, scrap): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(good_delta)::int8, sum(scrap_delta)::int8 FROM op_run_count",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((rows, good, scrap), (3, 780, 20));

    // One event per state change, in order, each a schema-versioned RunEvent.
    let events: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY id")
            .fetch_all(&t.pool)
            .await
            .unwrap();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "started",
            "reported",
            "paused",
            "reported",
            "resumed",
            "completed"
        ]
    );
    for (_, payload) in &events {
        let e: protocol::RunEvent = serde_json::from_value(payload.clone()).unwrap();
        assert_eq!(e.schema_version, 1);
        assert_eq!(e.op_run_id, id);
        assert_eq!(e.site_id, "BKK");
        assert_eq!(e.resource_id, "SMT01");
    }
    let completed: protocol::RunEvent = serde_json::from_value(events[5].1.clone()).unwrap();
    assert_eq!(completed.good_units, 780);
    assert_eq!(completed.delta.unwrap().good_delta, 765);
}

#[tokio::test]
async fn caller_timestamps_are_kept_and_checked() {
    let t = db().await;
    let app = app(&t.pool);
    let mut body = seed_start("R-ts");
    body["started_at"] = json!("2025-03-01T00:00:00Z");
    let id = start_run(&app, body).await;
    let r = post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":3,"scrap_delta":0,"at":"2025-03-01T09:00:00+07:00"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":3,"scrap_delta":0,"at":"2025-02-28T23:00:00Z"}),
    )
    .await
    .assert_problem(422, Some("at"), "report before start");
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":3,"scrap_delta":0,"at":"2999-01-01T00:00:00Z"}),
    )
    .await
    .assert_problem(422, Some("at"), "report in the future");
    let p = post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":id,"reason_code":"changeover","at":"2025-03-01T02:00:00Z"}),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["downtime"][0]["planned"], true);
    post(
        &app,
        "/op_run/resume",
        json!({"op_run_id":id,"at":"2025-03-01T01:59:00Z"}),
    )
    .await
    .assert_problem(422, Some("at"), "resume before the pause");
    // Completing a paused run closes its downtime at the end time.
    post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-02-28T00:00:00Z"}),
    )
    .await
    .assert_problem(422, Some("ended_at"), "end before start");
    let c = post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-03-01T02:30:00Z"}),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    let d = get(&app, &format!("/op_run/{id}")).await;
    assert_eq!(d.body["started_at"], "2025-03-01T00:00:00Z");
    assert_eq!(d.body["ended_at"], "2025-03-01T02:30:00Z");
    assert_eq!(d.body["downtime"][0]["ended_at"], "2025-03-01T02:30:00Z");
    let at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT at FROM op_run_count")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(at.to_rfc3339(), "2025-03-01T02:00:00+00:00");
}

#[tokio::test]
async fn overlapping_runs_on_one_resource_are_refused_by_the_database() {
    let t = db().await;
    let app = app(&t.pool);
    let mut a = seed_start("R-ov");
    a["started_at"] = json!("2025-01-01T00:00:00Z");
    let id = start_run(&app, a.clone()).await;
    post(&app, "/op_run/start", seed_start("R-ov"))
        .await
        .assert_problem(409, Some("resource_id"), "second active run");
    start_run(&app, seed_start("R-other")).await;
    let c = post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-01-01T04:00:00Z"}),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK);
    let mut inside = seed_start("R-ov");
    inside["started_at"] = json!("2025-01-01T03:00:00Z");
    post(&app, "/op_run/start", inside).await.assert_problem(
        409,
        Some("resource_id"),
        "backdated into the previous run",
    );
    // Half-open: a run may start exactly when the previous one ended.
    let mut next = seed_start("R-ov");
    next["started_at"] = json!("2025-01-01T04:00:00Z");
    start_run(&app, next).await;
    // A resource belongs to one site.
    let mut other_site = seed_start("R-other2");
    other_site["site_id"] = json!("NOPE");
    post(&app, "/op_run/start", other_site)
        .await
        .assert_problem(422, Some("site_id"), "unknown site");
}

#[tokio::test]
async fn idempotent_retries_return_the_first_answer_and_change_nothing() {
    let t = db().await;
    let app = app(&t.pool);
    let first = post_with_key(&app, "/op_run/start", seed_start("R-idem"), "start-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = post_with_key(&app, "/op_run/start", seed_start("R-idem"), "start-1").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let id = first.body["op_run_id"].as_str().unwrap().to_owned();

    let report = json!({"op_run_id":id,"good_delta":7,"scrap_delta":2});
    let r1 = post_with_key(&app, "/op_run/report", report.clone(), "rep-1").await;
    // Same body with fields in another order and other spacing is the same request.
    let reordered = format!(r#"{{ "scrap_delta": 2, "good_delta": 7, "op_run_id": "{id}" }}"#);
    let r2 = call(
        &app,
        axum::http::Method::POST,
        "/op_run/report",
        Some(&reordered),
        &[("idempotency-key", "rep-1")],
    )
    .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert_eq!(r2.body, r1.body);
    assert_eq!(r1.body["good_units"], 7);

    // Same key, different body (or route): refused, nothing changes.
    post_with_key(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":8,"scrap_delta":2}),
        "rep-1",
    )
    .await
    .assert_problem(422, Some("Idempotency-Key"), "key reused with another body");
    post_with_key(&app, "/op_run/complete", json!({"op_run_id":id}), "rep-1")
        .await
        .assert_problem(422, Some("Idempotency-Key"), "key reused on another route");

    let c1 = post_with_key(&app, "/op_run/complete", json!({"op_run_id":id}), "done-1").await;
    assert_eq!(c1.status, StatusCode::OK);
    let c2 = post_with_key(&app, "/op_run/complete", json!({"op_run_id":id}), "done-1").await;
    assert_eq!((c2.status, &c2.body), (StatusCode::OK, &c1.body));
    // Without a key, a second completion is a conflict.
    post(&app, "/op_run/complete", json!({"op_run_id":id}))
        .await
        .assert_problem(409, Some("op_run_id"), "complete again without key");

    assert_eq!(scalar_i64(&t.pool, "SELECT count(*) FROM op_run").await, 1);
    assert_eq!(
        scalar_i64(&t.pool, "SELECT count(*) FROM op_run_count").await,
        1
    );
    assert_eq!(scalar_i64(&t.pool, "SELECT count(*) FROM outbox").await, 3);
    assert_eq!(
        scalar_i64(&t.pool, "SELECT good_units FROM op_run").await,
        7
    );
}

#[tokio::test]
async fn concurrent_retries_with_one_key_count_once() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(&app, seed_start("R-race")).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        let body = json!({"op_run_id":id,"good_delta":1,"scrap_delta":0});
        tasks.push(tokio::spawn(async move {
            post_with_key(&app, "/op_run/report", body, "same").await
        }));
    }
    for task in tasks {
        let a = task.await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["good_units"], 1);
    }
    assert_eq!(
        scalar_i64(&t.pool, "SELECT count(*) FROM op_run_count").await,
        1
    );
}

#[tokio::test]
async fn concurrent_reports_all_count_and_complete_is_atomic_with_them() {
    let t = db().await;
    let app = Arc::new(app(&t.pool));
    let id = start_run(&app, seed_start("R-conc")).await;
    let mut tasks = Vec::new();
    for task in 0..50 {
        let app = app.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let body =
                    json!({"op_run_id":id,"good_delta":1 + (task + i) % 3,"scrap_delta":(i % 2)});
                let a = post(&app, "/op_run/report", body).await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected_good: i64 = (0..50)
        .flat_map(|t| (0..100).map(move |i| 1 + (t + i) % 3))
        .sum();
    let detail = get(&app, &format!("/op_run/{id}")).await;
    assert_eq!(detail.body["good_units"].as_i64(), Some(expected_good));
    assert_eq!(detail.body["scrap_units"].as_i64(), Some(50 * 50));
    assert_eq!(
        scalar_i64(&t.pool, "SELECT count(*) FROM op_run_count").await,
        5000
    );
    assert_eq!(
        scalar_i64(
            &t.pool,
            "SELECT count(*) FROM outbox WHERE event_type = 'reported'"
        )
        .await,
        5000
    );

    // Complete while reports keep coming: every accepted report is in the final total, every
    // refused one (409) is not.
    let id2 = start_run(&app, seed_start("R-conc2")).await;
    let accepted = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        let id2 = id2.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let a = post(
                    &app,
                    "/op_run/report",
                    json!({"op_run_id":id2,"good_delta":1,"scrap_delta":0}),
                )
                .await;
                match a.status {
                    StatusCode::OK => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    StatusCode::CONFLICT => {}
                    other => panic!("unexpected {other}: {}", a.body),
                }
            }
        }));
    }
    wait_until(
        "20 reports accepted before the completion",
        Duration::from_secs(30),
        || async { accepted.load(Ordering::SeqCst) >= 20 },
    )
    .await;
    let done = post(&app, "/op_run/complete", json!({"op_run_id":id2})).await;
    assert_eq!(done.status, StatusCode::OK);
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = accepted.load(Ordering::SeqCst);
    let final_good = done.body["good_units"].as_i64().unwrap();
    assert_eq!(
        final_good, accepted,
        "completion total equals the accepted reports"
    );
    let rows = scalar_i64(
        &t.pool,
        &format!(
            "SELECT coalesce(sum(good_delta), 0)::int8 FROM op_run_count WHERE op_run_id = '{id2}'"
        ),
    )
    .await;
    assert_eq!(rows, accepted);
}

#[tokio::test]
async fn abort_ends_the_run_closes_its_downtime_and_emits_aborted() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(&app, seed_start("R-abort")).await;
    let r = post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":4,"scrap_delta":1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let p = post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":id,"reason_code":"material_shortage"}),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    let a = post(&app, "/op_run/abort", json!({"op_run_id":id})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["status"], "aborted");
    assert_eq!(a.body["good_units"], 4);
    let d = get(&app, &format!("/op_run/{id}")).await;
    assert_eq!(d.body["downtime"][0]["ended_at"], a.body["ended_at"]);
    for route in ["/op_run/abort", "/op_run/complete", "/op_run/pause"] {
        post(
            &app,
            route,
            json!({"op_run_id":id,"reason_code":"breakdown"})
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    if route != "/op_run/pause" {
                        o.remove("reason_code");
                    }
                    serde_json::Value::Object(o)
                })
                .unwrap(),
        )
        .await
        .assert_problem(409, Some("op_run_id"), route);
    }
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":1,"scrap_delta":0}),
    )
    .await
    .assert_problem(409, Some("op_run_id"), "report on aborted run");
    // The resource is free again.
    start_run(&app, seed_start("R-abort")).await;
    let types: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT event_type FROM outbox WHERE op_run_id = '{id}' ORDER BY id"
    ))
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(types, ["started", "reported", "paused", "aborted"]);
    let last: serde_json::Value = sqlx::query_scalar(&format!(
        "SELECT payload FROM outbox WHERE op_run_id = '{id}' ORDER BY id DESC LIMIT 1"
    ))
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let e: protocol::RunEvent = serde_json::from_value(last).unwrap();
    assert_eq!(e.status, "aborted");
    assert_eq!(e.downtime.unwrap().reason_code, "material_shortage");
}
