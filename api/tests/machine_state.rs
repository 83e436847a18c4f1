//! Availability from the machine's own signals: rules set through the API, readings written as
//! the worker writes them, the detector's pass, the OEE every screen reads, and the operator's
//! reason for a stop (with its run event). Expectations computed by hand; BKK's shifts are
//! Night 17:00Z-01:00Z, Day 01:00Z-09:00Z, Evening 09:00Z-17:00Z.

use axum::http::{Method, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Readings of one sensor every `step` seconds over `[from, to)`: `stopped` inside the given
/// spans, `running` elsewhere.
async fn readings(
    pool: &PgPool,
    resource: &str,
    sensor: &str,
    (from, to, step): (&str, &str, i64),
    (running, stopped): (f64, f64),
    stopped_spans: &[(&str, &str)],
) {
    let spans: Vec<String> = stopped_spans
        .iter()
        .map(|(a, b)| format!("[{a},{b})"))
        .collect();
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT ts, 'BKK', $1, $2,
                CASE WHEN ts <@ ANY (SELECT s::tstzrange FROM unnest($7::text[]) s) THEN $6 ELSE $5 END
         FROM generate_series($3::timestamptz, $4::timestamptz - interval '1 microsecond',
                              make_interval(secs => $8)) ts",
    )
    .bind(resource)
    .bind(sensor)
    .bind(at(from))
    .bind(at(to))
    .bind(running)
    .bind(stopped)
    .bind(&spans)
    .bind(step as f64)
    .execute(pool)
    .await
    .unwrap();
}

async fn pass(pool: &PgPool, now: &str) -> mes_api::store::machine_state::PassOutcome {
    let window = mes_api::store::machine_state::PassWindow {
        horizon: chrono::TimeDelta::days(3650),
        max_lookback: chrono::TimeDelta::days(3650),
        max_readings: 1_000_000,
    };
    mes_api::machine_state::detect_all(pool, window, at(now), &CancellationToken::new())
        .await
        .unwrap()
}

async fn put(app: &Router, uri: &str, body: Value) -> Answer {
    call(app, Method::PUT, uri, Some(&body.to_string()), &[]).await
}

#[derive(Debug, sqlx::FromRow)]
struct Shift {
    pbt_seconds: f64,
    apt_seconds: f64,
    availability: Option<f64>,
    oee: Option<f64>,
}

async fn shift(pool: &PgPool, resource: &str, name: &str) -> Shift {
    sqlx::query_as(
        "SELECT pbt_seconds, apt_seconds, availability, oee FROM v_oee_shift_real
         WHERE resource_id = $1 AND shift_name = $2",
    )
    .bind(resource)
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("no {name} shift for {resource}: {e}"))
}

async fn failures(pool: &PgPool, resource: &str, name: &str) -> i32 {
    sqlx::query_scalar(
        "SELECT failure_events FROM edge_mes_shift_elements('-infinity', 'infinity', NULL, $1)
         WHERE shift_name = $2",
    )
    .bind(resource)
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[track_caller]
fn close(actual: Option<f64>, expected: f64, what: &str) {
    let a = actual.unwrap_or_else(|| panic!("{what} is NULL, expected {expected}"));
    assert!((a - expected).abs() < 1e-9, "{what}: {a} != {expected}");
}

async fn stops(app: &Router, resource: &str) -> Vec<Value> {
    let a = get(
        app,
        &format!("/machine_stops?resource_id={resource}&from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["truncated"], json!(false));
    a.body["stops"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_client_of_the_seeds_endpoints_gets_availability_from_the_machine() {
    let t = db().await;
    let app = app(&t.pool);
    let rule = put(
        &app,
        "/machine_state/rules/R1",
        json!({"sensor":"speed","kind":"threshold","stopped_at_or_below":0.5,"min_stop_seconds":60}),
    )
    .await;
    assert_eq!(rule.status, StatusCode::OK, "{}", rule.body);
    assert_eq!(rule.body["updated_by"], json!("tests"));
    // Only the seed's calls: start, report, complete. 02:00Z-06:00Z lies in BKK's Day shift.
    let run = start_run(
        &app,
        json!({"work_order_id":"WO1","operation_id":"OP10","resource_id":"R1","site_id":"BKK",
               "planned_seconds":14400,"ideal_cycle_time_s":1.0,"started_at":"2025-01-06T02:00:00Z"}),
    )
    .await;
    let a = post(
        &app,
        "/op_run/report",
        json!({"op_run_id":run,"good_delta":10000,"scrap_delta":200,"at":"2025-01-06T05:00:00Z"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":run,"ended_at":"2025-01-06T06:00:00Z"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // Speed every 10 s; stopped 03:00-03:30 (a stop) and 04:00:00-04:00:20 (a 20 s blip).
    readings(
        &t.pool,
        "R1",
        "speed",
        ("2025-01-06T01:50:00Z", "2025-01-06T06:10:00Z", 10),
        (12.0, 0.0),
        &[
            ("2025-01-06T03:00:00Z", "2025-01-06T03:30:00Z"),
            ("2025-01-06T04:00:00Z", "2025-01-06T04:00:20Z"),
        ],
    )
    .await;
    let before = shift(&t.pool, "R1", "Day").await;
    close(before.availability, 1.0, "A before detection");

    let o = pass(&t.pool, "2025-01-06T07:00:00Z").await;
    assert_eq!((o.inserted, o.updated, o.deleted), (1, 0, 0));
    let found = stops(&app, "R1").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["started_at"], json!("2025-01-06T03:00:00Z"));
    assert_eq!(found[0]["ended_at"], json!("2025-01-06T03:30:00Z"));
    assert_eq!(found[0]["duration_seconds"], json!(1800.0));
    assert_eq!(found[0]["reason"]["code"], json!("unassigned"));
    assert_eq!(found[0]["reason"]["loss_bucket"], json!("availability"));
    assert_eq!(found[0]["site_id"], json!("BKK"));

    // PBT 14400 s, the unassigned stop is availability loss: APT 12600, A = 0.875;
    // OEE = PRU·GQ/PBT = 10000/14400.
    let s = shift(&t.pool, "R1", "Day").await;
    assert_eq!((s.pbt_seconds, s.apt_seconds), (14_400.0, 12_600.0));
    close(s.availability, 0.875, "A with the stop");
    close(s.oee, 10_000.0 / 14_400.0, "OEE with the stop");
    let kpi = get(
        &app,
        "/kpi/oee?resource_id=R1&from=2025-01-06T00:00:00Z&to=2025-01-07T00:00:00Z",
    )
    .await;
    assert_eq!(kpi.status, StatusCode::OK, "{}", kpi.body);
    let day = kpi.body["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shift_name"] == json!("Day"))
        .unwrap_or_else(|| panic!("no Day shift in {}", kpi.body));
    close(
        day["availability"].as_f64(),
        0.875,
        "GET /kpi/oee availability",
    );

    // A second pass over the same readings changes nothing.
    let o = pass(&t.pool, "2025-01-06T07:30:00Z").await;
    assert_eq!((o.inserted, o.updated, o.deleted), (0, 0, 0));

    // The operator says it was planned maintenance (excluded from planned time): PBT and APT
    // both 12600, A = 1; the run gets a classified event naming the stop.
    let id = found[0]["stop_id"].as_i64().unwrap();
    let a = post(
        &app,
        &format!("/machine_stops/{id}/reason"),
        json!({"reason_code":"planned_maintenance","note":"PM moved up"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["reason"]["code"], json!("planned_maintenance"));
    assert_eq!(a.body["assigned_by"], json!("tests"));
    assert_eq!(a.body["note"], json!("PM moved up"));
    let s = shift(&t.pool, "R1", "Day").await;
    assert_eq!((s.pbt_seconds, s.apt_seconds), (12_600.0, 12_600.0));
    close(s.availability, 1.0, "A after the reason");
    close(s.oee, 10_000.0 / 12_600.0, "OEE after the reason");
    let (event_type, payload): (String, Value) =
        sqlx::query_as("SELECT event_type, payload FROM outbox ORDER BY id DESC LIMIT 1")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(event_type, "classified");
    assert_eq!(payload["op_run_id"], json!(run));
    assert_eq!(payload["actor"], json!("tests"));
    assert_eq!(payload["downtime"]["downtime_id"], json!(id));
    assert_eq!(payload["downtime"]["detected"], json!(true));
    assert_eq!(
        payload["downtime"]["reason_code"],
        json!("planned_maintenance")
    );
    assert_eq!(payload["downtime"]["loss_bucket"], json!("excluded"));
    // The detector keeps the operator's reason.
    let o = pass(&t.pool, "2025-01-06T08:00:00Z").await;
    assert_eq!((o.inserted, o.updated, o.deleted), (0, 0, 0));
    assert_eq!(
        stops(&app, "R1").await[0]["reason"]["code"],
        json!("planned_maintenance")
    );
}

#[tokio::test]
async fn a_stop_across_a_shift_boundary_is_split_and_follows_its_reason_after_the_shift() {
    let t = db().await;
    let app = app(&t.pool);
    let rule = put(
        &app,
        "/machine_state/rules/R2",
        json!({"sensor":"state","kind":"codes","stop_codes":{"2":"unassigned","3":"breakdown"},
               "min_stop_seconds":0}),
    )
    .await;
    assert_eq!(rule.status, StatusCode::OK, "{}", rule.body);
    // 06:00Z-11:00Z: 3 h of Day (until 09:00Z), 2 h of Evening. An operator also paused the
    // run 09:30Z-10:00Z (material shortage): the pause wins over the stop where both cover.
    let run = start_run(
        &app,
        json!({"work_order_id":"WO2","operation_id":"OP10","resource_id":"R2","site_id":"BKK",
               "ideal_cycle_time_s":1.0,"started_at":"2025-01-06T06:00:00Z"}),
    )
    .await;
    for (path, body) in [
        (
            "/op_run/pause",
            json!({"op_run_id":run,"reason_code":"material_shortage","at":"2025-01-06T09:30:00Z"}),
        ),
        (
            "/op_run/resume",
            json!({"op_run_id":run,"at":"2025-01-06T10:00:00Z"}),
        ),
        (
            "/op_run/complete",
            json!({"op_run_id":run,"ended_at":"2025-01-06T11:00:00Z"}),
        ),
    ] {
        let a = post(&app, path, body).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    // State 1 (running) every 30 s, code 2 from 08:30Z to 09:45Z.
    readings(
        &t.pool,
        "R2",
        "state",
        ("2025-01-06T05:00:00Z", "2025-01-06T12:00:00Z", 30),
        (1.0, 2.0),
        &[("2025-01-06T08:30:00Z", "2025-01-06T09:45:00Z")],
    )
    .await;
    let o = pass(&t.pool, "2025-01-06T12:00:00Z").await;
    assert_eq!(o.inserted, 1);
    let found = stops(&app, "R2").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["state_code"], json!(2));

    // Day: 30 min of the stop (08:30-09:00). Evening: the stop's 09:00-09:30 plus the pause's
    // 09:30-10:00 (the stop's 09:30-09:45 is under the pause).
    let day = shift(&t.pool, "R2", "Day").await;
    assert_eq!((day.pbt_seconds, day.apt_seconds), (10_800.0, 9_000.0));
    let evening = shift(&t.pool, "R2", "Evening").await;
    assert_eq!(
        (evening.pbt_seconds, evening.apt_seconds),
        (7_200.0, 3_600.0)
    );
    assert_eq!(failures(&t.pool, "R2", "Day").await, 0);

    // Long after both shifts closed, the stop turns out to be a breakdown: a failure event in
    // the shift it started in, availability unchanged.
    let id = found[0]["stop_id"].as_i64().unwrap();
    let a = post(
        &app,
        &format!("/machine_stops/{id}/reason"),
        json!({"reason_code":"breakdown"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(failures(&t.pool, "R2", "Day").await, 1);
    assert_eq!(failures(&t.pool, "R2", "Evening").await, 0);
    assert_eq!(shift(&t.pool, "R2", "Day").await.apt_seconds, 9_000.0);
    // Then planned maintenance: the stop leaves planned time in both shifts; the pause stays.
    let a = post(
        &app,
        &format!("/machine_stops/{id}/reason"),
        json!({"reason_code":"planned_maintenance"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let day = shift(&t.pool, "R2", "Day").await;
    assert_eq!((day.pbt_seconds, day.apt_seconds), (9_000.0, 9_000.0));
    let evening = shift(&t.pool, "R2", "Evening").await;
    assert_eq!(
        (evening.pbt_seconds, evening.apt_seconds),
        (5_400.0, 3_600.0)
    );
}

#[tokio::test]
async fn late_readings_reshape_stops_and_keep_the_operators_reason() {
    let t = db().await;
    let app = app(&t.pool);
    let rule = put(
        &app,
        "/machine_state/rules/R3",
        json!({"sensor":"speed","kind":"threshold","stopped_at_or_below":0.0}),
    )
    .await;
    assert_eq!(
        rule.body["min_stop_seconds"],
        json!(60.0),
        "the default minimum"
    );
    readings(
        &t.pool,
        "R3",
        "speed",
        ("2025-01-06T02:00:00Z", "2025-01-06T04:00:00Z", 10),
        (5.0, 0.0),
        &[("2025-01-06T03:00:00Z", "2025-01-06T03:30:00Z")],
    )
    .await;
    assert_eq!(pass(&t.pool, "2025-01-06T05:00:00Z").await.inserted, 1);
    let id = stops(&app, "R3").await[0]["stop_id"].as_i64().unwrap();
    let a = post(
        &app,
        &format!("/machine_stops/{id}/reason"),
        json!({"reason_code":"material_shortage"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // A box's late reading shows the machine ran at 03:10:05: two stops now. The first keeps
    // its id and the operator's reason; the second is new and unassigned.
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         VALUES ('2025-01-06T03:10:05Z', 'BKK', 'R3', 'speed', 7)",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let o = pass(&t.pool, "2025-01-06T05:01:00Z").await;
    assert_eq!((o.inserted, o.updated, o.deleted), (1, 1, 0));
    let found = stops(&app, "R3").await;
    let spans: Vec<(Value, Value, Value, Value)> = found
        .iter()
        .map(|s| {
            (
                s["stop_id"].clone(),
                s["started_at"].clone(),
                s["ended_at"].clone(),
                s["reason"]["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        vec![
            (
                json!(id),
                json!("2025-01-06T03:00:00Z"),
                json!("2025-01-06T03:10:05Z"),
                json!("material_shortage")
            ),
            (
                spans[1].0.clone(),
                json!("2025-01-06T03:10:10Z"),
                json!("2025-01-06T03:30:00Z"),
                json!("unassigned")
            ),
        ]
    );
    let unassigned = get(
        &app,
        "/machine_stops?resource_id=R3&unassigned=true&from=2025-01-06T00:00:00Z&to=2025-01-07T00:00:00Z",
    )
    .await;
    assert_eq!(unassigned.body["stops"].as_array().unwrap().len(), 1);
    // The rule removed: the stops stay, the detector leaves them alone.
    let a = call(&app, Method::DELETE, "/machine_state/rules/R3", None, &[]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = call(&app, Method::DELETE, "/machine_state/rules/R3", None, &[]).await;
    a.assert_problem(404, None, "rule already removed");
    assert_eq!(pass(&t.pool, "2025-01-06T06:00:00Z").await.readings, 0);
    assert_eq!(stops(&app, "R3").await.len(), 2);
}

#[tokio::test]
async fn bad_rules_and_reasons_are_refused_naming_the_field() {
    let t = db().await;
    let app = app(&t.pool);
    let cases = [
        (
            json!({"sensor":"speed","kind":"threshold"}),
            "stopped_at_or_below",
        ),
        (
            json!({"sensor":"speed","kind":"threshold","stopped_at_or_below":1,"stop_codes":{"1":"breakdown"}}),
            "stop_codes",
        ),
        (json!({"sensor":"state","kind":"codes"}), "stop_codes"),
        (
            json!({"sensor":"state","kind":"codes","stopped_at_or_below":1}),
            "stopped_at_or_below",
        ),
        (
            json!({"sensor":"state","kind":"codes","stop_codes":{}}),
            "stop_codes",
        ),
        (
            json!({"sensor":"state","kind":"codes","stop_codes":{"x":"breakdown"}}),
            "stop_codes",
        ),
        (
            json!({"sensor":"state","kind":"codes","stop_codes":{"1":"no_such_reason"}}),
            "stop_codes",
        ),
        (
            json!({"sensor":"state","kind":"codes","stop_codes":{"1":"breakdown","01":"breakdown"}}),
            "stop_codes",
        ),
        (
            json!({"sensor":"speed","kind":"threshold","stopped_at_or_below":1e300}),
            "stopped_at_or_below",
        ),
        (
            json!({"sensor":"speed","kind":"threshold","stopped_at_or_below":1,"min_stop_seconds":-1}),
            "min_stop_seconds",
        ),
        (
            json!({"sensor":"speed","kind":"threshold","stopped_at_or_below":1,"min_stop_seconds":86401}),
            "min_stop_seconds",
        ),
    ];
    for (body, field) in cases {
        put(&app, "/machine_state/rules/R9", body.clone())
            .await
            .assert_problem(422, Some(field), &body.to_string());
    }
    let a = get(&app, "/machine_state/rules").await;
    assert_eq!(a.body["rules"], json!([]), "nothing stored");

    post(
        &app,
        "/machine_stops/42/reason",
        json!({"reason_code":"breakdown"}),
    )
    .await
    .assert_problem(404, None, "unknown stop");
    post(
        &app,
        "/machine_stops/abc/reason",
        json!({"reason_code":"breakdown"}),
    )
    .await
    .assert_problem(400, Some("stop_id"), "not an id");
    post(
        &app,
        "/machine_stops/0/reason",
        json!({"reason_code":"breakdown"}),
    )
    .await
    .assert_problem(400, Some("stop_id"), "not an id");
    sqlx::query(
        "INSERT INTO machine_stops (id, resource_id, started_at, ended_at)
         VALUES (7, 'R9', '2025-01-06T03:00:00Z', '2025-01-06T03:10:00Z')",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    post(
        &app,
        "/machine_stops/7/reason",
        json!({"reason_code":"unassigned"}),
    )
    .await
    .assert_problem(422, Some("reason_code"), "unassigned is not a reason");
    post(
        &app,
        "/machine_stops/7/reason",
        json!({"reason_code":"tea"}),
    )
    .await
    .assert_problem(422, Some("reason_code"), "unknown reason");
    for q in [
        "from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
        "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z",
    ] {
        get(&app, &format!("/machine_stops?{q}"))
            .await
            .assert_problem(422, Some("from"), q);
    }
    get(&app, "/machine_stops?limit=0")
        .await
        .assert_problem(422, Some("limit"), "limit 0");
    get(&app, "/machine_stops?unassigned=maybe")
        .await
        .assert_problem(400, Some("unassigned"), "not a boolean");
}
