//! Traceability by run, resource and window, and reading; the streamed export of a run's
//! readings. Expectations are worked out by hand from the fixture below.
//!
//! Resource PRESS-1 (site BKK), 2025-03-03, times UTC:
//!
//! | run | work order / op | span | counts | downtime |
//! | --- | --- | --- | --- | --- |
//! | A | WO-A / OP10 | 01:00 – 02:00 | 01:20 +10 good +1 scrap, 01:50 +5 good | breakdown 01:30 – 01:45 |
//! | B | WO-B / OP20 | 02:00 – 03:00 | 02:10 +7 good +2 scrap | material_shortage 02:30 – 02:40 |
//!
//! Readings of PRESS-1: `temp` (C) 99 at 00:59:59 (before A), 20 at 01:00 (A's first instant),
//! 22 at 01:30, 24 at 01:59:59.999999, 30 at 02:00 (B's first instant, not A's), 32 at 02:30, 99
//! at 03:00 (after B); `p, "q"` (unit `bar,abs`) 1.5 at 01:10, 2.5 at 02:10. PRESS-2 has a
//! `temp` of 77 at 01:30, which no trace of PRESS-1 may show.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;

use crate::support::*;

const P_SENSOR: &str = "p, \"q\"";

#[track_caller]
fn close(v: &Value, expected: f64, what: &str) {
    let a = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is {v}, expected {expected}"));
    assert!((a - expected).abs() < 1e-9, "{what}: {a} != {expected}");
}

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn ok(app: &Router, uri: &str) -> Value {
    let a = get(app, uri).await;
    assert_eq!(a.status, 200, "GET {uri}: {}", a.body);
    a.body
}

async fn post_ok(app: &Router, uri: &str, body: Value) {
    let a = post(app, uri, body).await;
    assert!(a.status.is_success(), "POST {uri}: {}", a.body);
}

/// The two runs of the module's fixture; their ids (A, B).
async fn two_runs(app: &Router, pool: &PgPool) -> (String, String) {
    let a = start_run(app, json!({"work_order_id":"WO-A","operation_id":"OP10","resource_id":"PRESS-1","started_at":"2025-03-03T01:00:00Z"})).await;
    post_ok(
        app,
        "/op_run/report",
        json!({"op_run_id":a,"good_delta":10,"scrap_delta":1,"at":"2025-03-03T01:20:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/pause",
        json!({"op_run_id":a,"reason_code":"breakdown","at":"2025-03-03T01:30:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/resume",
        json!({"op_run_id":a,"at":"2025-03-03T01:45:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/report",
        json!({"op_run_id":a,"good_delta":5,"scrap_delta":0,"at":"2025-03-03T01:50:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/complete",
        json!({"op_run_id":a,"ended_at":"2025-03-03T02:00:00Z"}),
    )
    .await;
    let b = start_run(app, json!({"work_order_id":"WO-B","operation_id":"OP20","resource_id":"PRESS-1","started_at":"2025-03-03T02:00:00Z"})).await;
    post_ok(
        app,
        "/op_run/report",
        json!({"op_run_id":b,"good_delta":7,"scrap_delta":2,"at":"2025-03-03T02:10:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/pause",
        json!({"op_run_id":b,"reason_code":"material_shortage","at":"2025-03-03T02:30:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/resume",
        json!({"op_run_id":b,"at":"2025-03-03T02:40:00Z"}),
    )
    .await;
    post_ok(
        app,
        "/op_run/complete",
        json!({"op_run_id":b,"ended_at":"2025-03-03T03:00:00Z"}),
    )
    .await;
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value, unit) VALUES
         ('2025-03-03T00:59:59Z', 'BKK', 'PRESS-1', 'temp', 99, 'C'),
         ('2025-03-03T01:00:00Z', 'BKK', 'PRESS-1', 'temp', 20, 'C'),
         ('2025-03-03T01:30:00Z', 'BKK', 'PRESS-1', 'temp', 22, 'C'),
         ('2025-03-03T01:59:59.999999Z', 'BKK', 'PRESS-1', 'temp', 24, 'C'),
         ('2025-03-03T02:00:00Z', 'BKK', 'PRESS-1', 'temp', 30, 'C'),
         ('2025-03-03T02:30:00Z', 'BKK', 'PRESS-1', 'temp', 32, 'C'),
         ('2025-03-03T03:00:00Z', 'BKK', 'PRESS-1', 'temp', 99, 'C'),
         ('2025-03-03T01:10:00Z', 'BKK', 'PRESS-1', $1, 1.5, 'bar,abs'),
         ('2025-03-03T02:10:00Z', 'BKK', 'PRESS-1', $1, 2.5, 'bar,abs'),
         ('2025-03-03T01:30:00Z', 'BKK', 'PRESS-2', 'temp', 77, 'C')",
    )
    .bind(P_SENSOR)
    .execute(pool)
    .await
    .unwrap();
    (a, b)
}

fn sensor<'a>(sensors: &'a Value, name: &str) -> &'a Value {
    sensors
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sensor"] == name)
        .unwrap_or_else(|| panic!("no sensor {name:?} in {sensors}"))
}

#[tokio::test]
async fn run_trace_has_the_run_counts_downtime_summaries_and_spc_of_its_span() {
    let t = db().await;
    let app = app(&t.pool);
    let (a, b) = two_runs(&app, &t.pool).await;

    let run = ok(&app, &format!("/trace/run/{a}")).await;
    // The run as GET /op_run/{id} shows it.
    let detail = ok(&app, &format!("/op_run/{a}")).await;
    for field in [
        "op_run_id",
        "work_order_id",
        "operation_id",
        "resource_id",
        "status",
        "started_at",
        "ended_at",
        "good_units",
        "scrap_units",
        "downtime",
    ] {
        assert_eq!(run[field], detail[field], "{field}");
    }
    assert_eq!(run["work_order_id"], "WO-A");
    assert_eq!(
        (run["good_units"].as_i64(), run["scrap_units"].as_i64()),
        (Some(15), Some(1))
    );
    assert_eq!(run["counts"]["reports"], 2);
    assert_eq!(run["counts"]["first_at"], "2025-03-03T01:20:00Z");
    assert_eq!(run["counts"]["last_at"], "2025-03-03T01:50:00Z");
    let downtime = run["downtime"].as_array().unwrap();
    assert_eq!(downtime.len(), 1);
    assert_eq!(downtime[0]["reason_code"], "breakdown");
    assert_eq!(downtime[0]["ended_at"], "2025-03-03T01:45:00Z");

    // [01:00, 02:00): the reading at the start is in, the one at the end is B's.
    let sensors = &run["sensors"];
    assert_eq!(sensors.as_array().unwrap().len(), 2);
    let temp = sensor(sensors, "temp");
    assert_eq!(temp["count"], 3);
    close(&temp["min"], 20.0, "min");
    close(&temp["max"], 24.0, "max");
    close(&temp["mean"], 22.0, "mean");
    close(&temp["stddev"], 2.0, "stddev");
    assert_eq!(temp["first_ts"], "2025-03-03T01:00:00Z");
    assert_eq!(temp["last_ts"], "2025-03-03T01:59:59.999999Z");
    let p = sensor(sensors, P_SENSOR);
    assert_eq!(
        (p["count"].as_i64(), p["unit"].as_str()),
        (Some(1), Some("bar,abs"))
    );
    assert!(p["stddev"].is_null());

    // I-MR of 20, 22, 24: x̄ 22, MR̄ 2, σ 2/1.128 = 1.773; 20 and 24 lie 1.128σ out, on
    // opposite sides: no rule broken.
    let spc = &run["spc"];
    assert_eq!(spc["chart"], "i_mr");
    assert_eq!(spc["sensors_truncated"], false);
    let temp_spc = sensor(&spc["sensors"], "temp");
    assert_eq!(temp_spc["points"], 3);
    assert_eq!(temp_spc["points_truncated"], false);
    close(&temp_spc["limits"]["sigma"], 2.0 / 1.128, "σ");
    close(&temp_spc["limits"]["ucl"], 22.0 + 6.0 / 1.128, "UCL");
    close(&temp_spc["limits"]["lcl"], 22.0 - 6.0 / 1.128, "LCL");
    assert_eq!(temp_spc["violations"], json!([]));
    assert_eq!(
        (
            temp_spc["violations_total"].as_u64(),
            temp_spc["truncated"].as_bool()
        ),
        (Some(0), Some(false))
    );

    // B: [02:00, 03:00) — 30 and 32 (03:00 is after it), 2.5.
    let run = ok(&app, &format!("/trace/run/{b}")).await;
    assert_eq!(run["counts"]["good_units"], 7);
    assert_eq!(run["counts"]["scrap_units"], 2);
    assert_eq!(run["downtime"][0]["reason_code"], "material_shortage");
    let temp = sensor(&run["sensors"], "temp");
    assert_eq!(temp["count"], 2);
    close(&temp["mean"], 31.0, "mean");
    close(&sensor(&run["sensors"], P_SENSOR)["mean"], 2.5, "p mean");

    get(&app, &format!("/trace/run/{}", uuid::Uuid::now_v7()))
        .await
        .assert_problem(404, None, "unknown run");
    get(&app, "/trace/run/not-a-uuid")
        .await
        .assert_problem(400, Some("op_run_id"), "not a UUID");
}

#[tokio::test]
async fn run_trace_lists_the_earliest_rule_breaks_and_says_when_there_are_more() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(&app, json!({"work_order_id":"WO-S","operation_id":"OP10","resource_id":"OVEN","started_at":"2025-03-04T00:00:00Z"})).await;
    post_ok(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-03-04T01:00:00Z"}),
    )
    .await;
    // `shift`: 150 readings of 0 then 150 of 1, one a second. Its moving ranges are 0 but one:
    // MR̄ = 1/299, σ = MR̄/1.128 = 0.003, so every reading lies beyond 3σ of x̄ = 0.5 (a σ
    // from the sample deviation, 0.5, would have hidden the shift): 300 breaks, the first at the
    // first reading (WE 1, Nelson 1). `spike`: 10.1, 9.9, … (20 readings), then 12. x̄ 10.0952,
    // MR̄ (19·0.2 + 2.1)/20 = 0.295, σ 0.2615, UCL 10.880: 12 alone breaks rule 1 (and its moving
    // range 2.1 is above D4·MR̄ = 0.964); Nelson 4 (14 alternating) breaks at the 14th to the
    // 21st reading: 8 breaks, the first at 00:00:13.
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT '2025-03-04T00:00:00Z'::timestamptz + i * interval '1 s', 'BKK', 'OVEN', 'shift',
                CASE WHEN i < 150 THEN 0 ELSE 1 END
         FROM generate_series(0, 299) i
         UNION ALL
         SELECT '2025-03-04T00:00:00Z'::timestamptz + i * interval '1 s', 'BKK', 'OVEN', 'spike',
                CASE WHEN i = 20 THEN 12 WHEN i % 2 = 0 THEN 10.1 ELSE 9.9 END
         FROM generate_series(0, 20) i",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let run = ok(&app, &format!("/trace/run/{id}")).await;
    let shift = sensor(&run["spc"]["sensors"], "shift");
    assert_eq!(shift["points"], 300);
    close(&shift["limits"]["sigma"], 1.0 / 299.0 / 1.128, "σ from MR̄");
    assert_eq!(shift["violations_total"], 300);
    assert_eq!(shift["truncated"], true);
    let listed = shift["violations"].as_array().unwrap();
    assert_eq!(listed.len(), 100, "at most 100 per sensor");
    assert_eq!(
        listed[0]["ts"], "2025-03-04T00:00:00Z",
        "the earliest first"
    );
    assert_eq!(
        (
            listed[0]["rules"].clone(),
            listed[0]["nelson_rules"].clone()
        ),
        (json!([1]), json!([1]))
    );
    assert_eq!(listed[99]["ts"], "2025-03-04T00:01:39Z");
    let spike = sensor(&run["spc"]["sensors"], "spike");
    close(
        &spike["limits"]["ucl"],
        212.0 / 21.0 + 3.0 * 0.295 / 1.128,
        "UCL",
    );
    assert_eq!(spike["violations_total"], 8);
    assert_eq!(spike["truncated"], false);
    let listed = spike["violations"].as_array().unwrap();
    assert_eq!(listed[0]["ts"], "2025-03-04T00:00:13Z");
    assert_eq!(
        (
            listed[0]["rules"].clone(),
            listed[0]["nelson_rules"].clone()
        ),
        (json!([]), json!([4]))
    );
    let outlier = &listed[7];
    assert_eq!(outlier["ts"], "2025-03-04T00:00:20Z");
    close(&outlier["value"], 12.0, "outlier");
    assert_eq!(outlier["rules"], json!([1]));
    assert_eq!(outlier["nelson_rules"], json!([1, 4]));
    assert_eq!(outlier["moving_range_out"], true);
}

#[tokio::test]
async fn run_trace_judges_against_the_stored_limits_in_force() {
    let t = db().await;
    let app = app(&t.pool);
    // Baseline (2025-03-05 00:00, 30 readings a second apart): 10, 11, 10, 11, … x̄ 10.5,
    // MR̄ 1, σ 1/1.128, UCL 10.5 + 3/1.128 = 13.1596. Stored as version 1 of i_mr.
    // The run (01:00-02:00) drifts: 13.5, 13.6, … 14.4 (10 readings 0.1 apart). Against limits
    // from its own readings (x̄ 13.95, MR̄ 0.1, σ 0.0887: 13.684 … 14.216) the drift centres
    // itself and only its two ends break rule 1 (4 readings, the first two *below* the centre);
    // against the stored UCL all 10 readings are out.
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT '2025-03-05T00:00:00Z'::timestamptz + i * interval '1 s', 'BKK', 'KILN', 'temp',
                10 + i % 2
         FROM generate_series(0, 29) i
         UNION ALL
         SELECT '2025-03-05T01:00:00Z'::timestamptz + i * interval '1 s', 'BKK', 'KILN', 'temp',
                13.5 + i * 0.1
         FROM generate_series(0, 9) i",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let id = start_run(&app, json!({"work_order_id":"WO-K","operation_id":"OP10","resource_id":"KILN","started_at":"2025-03-05T01:00:00Z"})).await;
    post_ok(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-03-05T02:00:00Z"}),
    )
    .await;
    let before = ok(&app, &format!("/trace/run/{id}")).await;
    let own = sensor(&before["spc"]["sensors"], "temp");
    assert_eq!(own["limits"]["source"], "window");
    assert_eq!(own["limits"]["version"], Value::Null);
    let own_breaks = own["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["rules"].as_array().unwrap().contains(&json!(1)))
        .count();
    close(&own["limits"]["mean"], 13.95, "the drift's own centre");
    assert_eq!(own_breaks, 4, "the drift widened its own limits: {own}");

    post_ok(
        &app,
        "/spc/limits",
        json!({"resource_id":"KILN","sensor":"temp","chart":"i_mr",
               "baseline_from":"2025-03-05T00:00:00Z","baseline_to":"2025-03-05T00:00:30Z"}),
    )
    .await;
    let after = ok(&app, &format!("/trace/run/{id}")).await;
    let judged = sensor(&after["spc"]["sensors"], "temp");
    assert_eq!(judged["limits"]["source"], "stored");
    assert_eq!(judged["limits"]["version"], 1);
    close(&judged["limits"]["mean"], 10.5, "stored center line");
    close(&judged["limits"]["ucl"], 10.5 + 3.0 / 1.128, "stored UCL");
    let beyond: Vec<&Value> = judged["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["rules"].as_array().unwrap().contains(&json!(1)))
        .collect();
    assert_eq!(
        beyond.len(),
        10,
        "every reading above the stored UCL: {judged}"
    );
    assert_eq!(beyond[0]["ts"], "2025-03-05T01:00:00Z");
}

#[tokio::test]
async fn reading_trace_finds_the_run_active_at_an_instant() {
    let t = db().await;
    let app = app(&t.pool);
    let (a, b) = two_runs(&app, &t.pool).await;
    let at = |instant: &str| {
        format!(
            "/trace/reading?resource_id=PRESS-1&ts={}",
            instant.replace('+', "%2B")
        )
    };
    // (instant, run, paused, downtime reason)
    let cases = [
        ("2025-03-03T01:00:00Z", &a, false, None),
        ("2025-03-03T08:00:00+07:00", &a, false, None),
        ("2025-03-03T01:30:00Z", &a, true, Some("breakdown")),
        ("2025-03-03T01:44:59.999999Z", &a, true, Some("breakdown")),
        ("2025-03-03T01:45:00Z", &a, false, None),
        ("2025-03-03T01:59:59.999999Z", &a, false, None),
        ("2025-03-03T02:00:00Z", &b, false, None),
        ("2025-03-03T02:35:00Z", &b, true, Some("material_shortage")),
        ("2025-03-03T02:59:59Z", &b, false, None),
    ];
    for (instant, run, paused, reason) in cases {
        let body = ok(&app, &at(instant)).await;
        assert_eq!(body["run"]["op_run_id"], run.as_str(), "{instant}");
        assert_eq!(body["paused"], paused, "{instant}");
        assert_eq!(
            body["downtime"]["reason_code"].as_str(),
            reason,
            "{instant}"
        );
        assert_eq!(body["resource_id"], "PRESS-1");
        assert_eq!(ts(body["ts"].as_str().unwrap()), ts(instant));
    }
    let body = ok(&app, &at("2025-03-03T01:10:00Z")).await;
    assert_eq!(
        (
            body["run"]["work_order_id"].as_str(),
            body["run"]["operation_id"].as_str()
        ),
        (Some("WO-A"), Some("OP10"))
    );
    let body = ok(&app, &at("2025-03-03T02:10:00Z")).await;
    assert_eq!(
        (
            body["run"]["work_order_id"].as_str(),
            body["run"]["operation_id"].as_str()
        ),
        (Some("WO-B"), Some("OP20"))
    );

    // B's end is not B's; nothing ran before A.
    for instant in ["2025-03-03T03:00:00Z", "2025-03-03T00:59:59.999999Z"] {
        get(&app, &at(instant))
            .await
            .assert_problem(404, None, instant);
    }
    get(
        &app,
        "/trace/reading?resource_id=NOPE&ts=2025-03-03T01:30:00Z",
    )
    .await
    .assert_problem(404, None, "unknown resource");
    let refusals = [
        (
            "/trace/reading?resource_id=PRESS-1&ts=1999-12-31T23:59:59Z",
            422,
            "ts",
        ),
        ("/trace/reading?resource_id=PRESS-1", 400, "ts"),
        ("/trace/reading?resource_id=PRESS-1&ts=yesterday", 400, "ts"),
        ("/trace/reading?ts=2025-03-03T01:30:00Z", 400, "resource_id"),
        (
            "/trace/reading?resource_id=%00&ts=2025-03-03T01:30:00Z",
            400,
            "resource_id",
        ),
        (
            "/trace/reading?resource_id=PRESS-1&ts=2025-03-03T01:30:00Z&sensor=temp",
            400,
            "sensor",
        ),
    ];
    for (uri, status, field) in refusals {
        get(&app, uri)
            .await
            .assert_problem(status, Some(field), uri);
    }
}

#[tokio::test]
async fn resource_trace_lists_the_runs_of_a_window_with_what_happened_in_it() {
    let t = db().await;
    let app = app(&t.pool);
    let (a, b) = two_runs(&app, &t.pool).await;
    let body = ok(
        &app,
        "/trace/resource/PRESS-1?from=2025-03-03T01:30:00Z&to=2025-03-03T02:30:00Z",
    )
    .await;
    assert_eq!(body["resource_id"], "PRESS-1");
    assert!(body["next_cursor"].is_null());
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "A (started before the window) and B");
    let (ra, rb) = (&runs[0], &runs[1]);
    assert_eq!(ra["op_run_id"], a.as_str());
    assert_eq!(
        (
            ra["work_order_id"].as_str(),
            ra["operation_id"].as_str(),
            ra["status"].as_str()
        ),
        (Some("WO-A"), Some("OP10"), Some("completed"))
    );
    // Totals of the run, counts of the window: only the 01:50 report.
    assert_eq!(ra["good_units"], 15);
    assert_eq!(
        (
            ra["counts"]["reports"].as_i64(),
            ra["counts"]["good_units"].as_i64(),
            ra["counts"]["scrap_units"].as_i64()
        ),
        (Some(1), Some(5), Some(0))
    );
    assert_eq!(ra["downtime"][0]["reason_code"], "breakdown");
    close(
        &ra["downtime_seconds"],
        900.0,
        "A's breakdown, all in the window",
    );
    assert_eq!(rb["op_run_id"], b.as_str());
    assert_eq!(
        (
            rb["counts"]["good_units"].as_i64(),
            rb["counts"]["scrap_units"].as_i64()
        ),
        (Some(7), Some(2))
    );
    assert_eq!(
        rb["downtime"],
        json!([]),
        "B's stop begins at the window's end"
    );
    close(&rb["downtime_seconds"], 0.0, "B");
    // [01:30, 02:30): 22, 24 and 30; 32 at 02:30 is out; 2.5 of p.
    let temp = sensor(&body["sensors"], "temp");
    assert_eq!(temp["count"], 3);
    close(&temp["mean"], 76.0 / 3.0, "mean");
    close(&temp["max"], 30.0, "max");
    assert_eq!(sensor(&body["sensors"], P_SENSOR)["count"], 1);

    // A window across B's stop: 02:35 – 03:30 holds 5 of its 10 minutes; A is not in it.
    let body = ok(
        &app,
        "/trace/resource/PRESS-1?from=2025-03-03T02:35:00Z&to=2025-03-03T03:30:00Z",
    )
    .await;
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["op_run_id"], b.as_str());
    close(&runs[0]["downtime_seconds"], 300.0, "half of B's stop");
    assert_eq!(runs[0]["counts"]["reports"], 0);
    // The window's end is exclusive: one ending at A's start holds nothing of A.
    let body = ok(
        &app,
        "/trace/resource/PRESS-1?from=2025-03-03T00:00:00Z&to=2025-03-03T01:00:00Z",
    )
    .await;
    assert_eq!(body["runs"], json!([]));
    assert_eq!(
        sensor(&body["sensors"], "temp")["count"],
        1,
        "the 00:59:59 reading"
    );
    // A registered resource with nothing in the window: an empty answer; an unknown one: 404.
    let body = ok(
        &app,
        "/trace/resource/PRESS-1?from=2025-04-01T00:00:00Z&to=2025-04-02T00:00:00Z",
    )
    .await;
    assert_eq!(
        (body["runs"].clone(), body["sensors"].clone()),
        (json!([]), json!([]))
    );
    get(
        &app,
        "/trace/resource/NOPE?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z",
    )
    .await
    .assert_problem(404, None, "unknown resource");
    // PRESS-2 has no run, but readings: it is known.
    let body = ok(
        &app,
        "/trace/resource/PRESS-2?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z",
    )
    .await;
    assert_eq!(sensor(&body["sensors"], "temp")["count"], 1);

    let refusals = [
        (
            "/trace/resource/PRESS-1?from=2025-03-03T02:00:00Z&to=2025-03-03T02:00:00Z",
            422,
            "from",
        ),
        (
            "/trace/resource/PRESS-1?from=2025-03-01T00:00:00Z&to=2025-04-01T00:00:01Z",
            422,
            "from",
        ),
        (
            "/trace/resource/PRESS-1?from=1999-12-31T00:00:00Z&to=2000-01-01T01:00:00Z",
            422,
            "from",
        ),
        (
            "/trace/resource/PRESS-1?to=2025-03-03T02:00:00Z",
            400,
            "from",
        ),
        (
            "/trace/resource/PRESS-1?from=2025-03-03T02:00:00Z",
            400,
            "to",
        ),
        (
            "/trace/resource/PRESS-1?from=2025-03-03&to=2025-03-04",
            400,
            "from",
        ),
        (
            "/trace/resource/PRESS-1?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z&limit=0",
            400,
            "limit",
        ),
        (
            "/trace/resource/PRESS-1?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z&limit=201",
            400,
            "limit",
        ),
        (
            "/trace/resource/PRESS-1?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z&page=2",
            400,
            "page",
        ),
        (
            "/trace/resource/%01?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z",
            400,
            "resource_id",
        ),
    ];
    for (uri, status, field) in refusals {
        get(&app, uri)
            .await
            .assert_problem(status, Some(field), uri);
    }
}

#[tokio::test]
async fn resource_trace_pages_through_runs_with_a_cursor_bound_to_its_query() {
    let t = db().await;
    let app = app(&t.pool);
    // Five 10-minute runs on LINE-P, 01:00 to 01:50.
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = start_run(&app, json!({"work_order_id":format!("WO-{i}"),"operation_id":"OP10","resource_id":"LINE-P","started_at":format!("2025-03-05T01:{i}0:00Z")})).await;
        post_ok(
            &app,
            "/op_run/complete",
            json!({"op_run_id":id,"ended_at":format!("2025-03-05T01:{i}9:59Z")}),
        )
        .await;
        ids.push(id);
    }
    let base = "/trace/resource/LINE-P?from=2025-03-05T00:00:00Z&to=2025-03-05T12:00:00Z";
    let first = ok(&app, &format!("{base}&limit=2")).await;
    assert!(first["sensors"].is_array(), "summaries on the first page");
    let cursor1 = first["next_cursor"].as_str().unwrap().to_owned();
    let second = ok(&app, &format!("{base}&limit=2&cursor={cursor1}")).await;
    assert!(second["sensors"].is_null(), "not again on later pages");
    let cursor2 = second["next_cursor"].as_str().unwrap().to_owned();
    let third = ok(&app, &format!("{base}&limit=2&cursor={cursor2}")).await;
    assert!(third["next_cursor"].is_null(), "the last page");
    let pages: Vec<Vec<&str>> = [&first, &second, &third]
        .iter()
        .map(|p| {
            p["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["op_run_id"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        pages,
        [
            vec![&ids[0], &ids[1]],
            vec![&ids[2], &ids[3]],
            vec![&ids[4]]
        ]
    );
    // The limit may change between pages; the query may not.
    let rest = ok(&app, &format!("{base}&limit=200&cursor={cursor1}")).await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 3);
    // A window whose page count is exact ends without a cursor.
    let exact = ok(&app, &format!("{base}&limit=5")).await;
    assert!(exact["next_cursor"].is_null());

    let other_to = "/trace/resource/LINE-P?from=2025-03-05T00:00:00Z&to=2025-03-05T12:00:01Z";
    let other_resource =
        "/trace/resource/PRESS-1?from=2025-03-05T00:00:00Z&to=2025-03-05T12:00:00Z";
    let mut flipped = cursor1.clone();
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(flipped.len() - 1.., last);
    for uri in [
        format!("{other_to}&cursor={cursor1}"),
        format!("{other_resource}&cursor={cursor1}"),
        format!("{base}&cursor={flipped}"),
        format!("{base}&cursor=zz"),
        format!("{base}&cursor={}", &cursor1[2..]),
        format!("{base}&cursor=%00"),
        format!("{base}&cursor={cursor1}&cursor={cursor2}"),
    ] {
        get(&app, &uri)
            .await
            .assert_problem(400, Some("cursor"), &uri);
    }
    let a = get(&app, &format!("{other_to}&cursor={cursor1}")).await;
    assert!(
        a.body["detail"].as_str().unwrap().contains("another query"),
        "{}",
        a.body
    );
}

/// The whole body of a GET, and the sizes of the data frames it came in.
async fn read_frames(
    app: &Router,
    uri: &str,
    accept: Option<&str>,
) -> (u16, String, String, Vec<usize>) {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header("authorization", format!("Bearer {}", test_token()));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(60),
        app.clone().oneshot(request.body(Body::empty()).unwrap()),
    )
    .await
    .expect("answered")
    .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the body ends without an error").into_data() {
            frames.push(data.len());
            bytes.extend_from_slice(&data);
        }
    }
    (
        status,
        content_type,
        String::from_utf8(bytes).unwrap(),
        frames,
    )
}

#[tokio::test]
async fn run_export_streams_ndjson_or_csv_with_quoting() {
    let t = db().await;
    let app = app(&t.pool);
    let (a, _) = two_runs(&app, &t.pool).await;
    let uri = format!("/trace/run/{a}/readings");

    // NDJSON by default: sensor by sensor, each in time order.
    let (status, content_type, body, _) = read_frames(&app, &uri, None).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{body}");
    let seen: Vec<(&str, f64)> = lines
        .iter()
        .map(|l| (l["sensor"].as_str().unwrap(), l["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            (P_SENSOR, 1.5),
            ("temp", 20.0),
            ("temp", 22.0),
            ("temp", 24.0)
        ]
    );
    assert_eq!(
        lines[1],
        json!({"ts":"2025-03-03T01:00:00Z","site":"BKK","resource_id":"PRESS-1","sensor":"temp","value":20.0,"unit":"C","work_order_id":null,"operation_id":null})
    );
    assert_eq!(
        read_frames(&app, &uri, Some("application/x-ndjson"))
            .await
            .2,
        body
    );

    // CSV: a header row; the sensor and unit with commas and quotes quoted, quotes doubled.
    let (status, content_type, csv, _) = read_frames(&app, &uri, Some("text/csv")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert_eq!(
        csv,
        "ts,site,resource_id,sensor,value,unit,work_order_id,operation_id\r\n\
         2025-03-03T01:10:00Z,BKK,PRESS-1,\"p, \"\"q\"\"\",1.5,\"bar,abs\",,\r\n\
         2025-03-03T01:00:00Z,BKK,PRESS-1,temp,20.0,C,,\r\n\
         2025-03-03T01:30:00Z,BKK,PRESS-1,temp,22.0,C,,\r\n\
         2025-03-03T01:59:59.999999Z,BKK,PRESS-1,temp,24.0,C,,\r\n"
    );
    let weighted = read_frames(&app, &uri, Some("application/x-ndjson;q=0.5, text/csv")).await;
    assert_eq!(weighted.2, csv);

    // One sensor.
    let (_, _, only, _) = read_frames(&app, &format!("{uri}?sensor=temp"), None).await;
    assert_eq!(only.lines().count(), 3);
    let encoded = format!("{uri}?sensor=p%2C%20%22q%22");
    let (_, _, only, _) = read_frames(&app, &encoded, Some("text/csv")).await;
    assert_eq!(only.lines().count(), 2, "header and one row");
    let (_, _, none, _) = read_frames(&app, &format!("{uri}?sensor=none"), None).await;
    assert_eq!(none, "");

    let a406 = call(
        &app,
        Method::GET,
        &uri,
        None,
        &[("accept", "application/json")],
    )
    .await;
    a406.assert_problem(406, Some("Accept"), "JSON is not offered");
    let disposition = call(&app, Method::GET, &uri, None, &[("accept", "text/csv")]).await;
    assert_eq!(
        disposition.headers["content-disposition"],
        format!("attachment; filename=\"run-{a}-readings.csv\"").as_str()
    );
    get(
        &app,
        &format!("/trace/run/{}/readings", uuid::Uuid::now_v7()),
    )
    .await
    .assert_problem(404, None, "unknown run");
    get(&app, "/trace/run/x/readings")
        .await
        .assert_problem(400, Some("op_run_id"), "not a UUID");
    get(&app, &format!("{uri}?sensor=%00"))
        .await
        .assert_problem(400, Some("sensor"), "NUL");
}

/// Value of reading `i` of `sensor` in the large run.
fn large_value(sensor: &str, i: i64) -> f64 {
    (i % 1000) as f64 * 0.25 + if sensor == "speed" { 0.0 } else { 1000.0 }
}

#[tokio::test]
async fn run_export_of_50000_readings_is_complete_and_exact() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(&app, json!({"work_order_id":"WO-L","operation_id":"OP10","resource_id":"LINE-L","started_at":"2025-03-06T00:00:00Z"})).await;
    post_ok(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-03-06T07:00:00Z"}),
    )
    .await;
    // 25 000 readings a sensor, one a second from the start, plus one just before and one at
    // the end, which are not the run's.
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value, unit)
         SELECT '2025-03-06T00:00:00Z'::timestamptz + i * interval '1 s', 'BKK', 'LINE-L', s,
                (i % 1000) * 0.25 + CASE WHEN s = 'speed' THEN 0 ELSE 1000 END, 'u, \"v\"'
         FROM generate_series(0, 24999) i, unnest(ARRAY['speed', 'temp, \"zone 1\"']) s
         UNION ALL
         VALUES ('2025-03-05T23:59:59.999999Z'::timestamptz, 'BKK', 'LINE-L', 'speed', -1, 'u'),
                ('2025-03-06T07:00:00Z', 'BKK', 'LINE-L', 'speed', -1, 'u')",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let start = ts("2025-03-06T00:00:00Z");
    let expected_sum: f64 = ["speed", "temp, \"zone 1\""]
        .iter()
        .flat_map(|s| (0..25_000).map(move |i| large_value(s, i)))
        .sum();
    let uri = format!("/trace/run/{id}/readings");
    let chunk = mes_api::trace::export::CHUNK_BYTES;

    let (status, _, body, frames) = read_frames(&app, &uri, None).await;
    assert_eq!(status, 200);
    let mut seen = HashSet::new();
    let mut sum = 0.0;
    for line in body.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let sensor = r["sensor"].as_str().unwrap().to_owned();
        let i = (ts(r["ts"].as_str().unwrap()) - start).num_seconds();
        let value = r["value"].as_f64().unwrap();
        assert_eq!(value, large_value(&sensor, i), "{line}");
        assert!(seen.insert((sensor, i)), "twice: {line}");
        sum += value;
    }
    assert_eq!(seen.len(), 50_000);
    assert_eq!(sum, expected_sum);
    // Streamed in chunks, not built whole: many frames, none much larger than a chunk.
    assert!(
        frames.len() >= body.len() / (2 * chunk),
        "{} frames",
        frames.len()
    );
    assert!(frames.iter().all(|&f| f < chunk + 1024), "{frames:?}");

    let (status, _, csv, frames) = read_frames(&app, &uri, Some("text/csv")).await;
    assert_eq!(status, 200);
    let mut rows = csv.split_terminator("\r\n");
    assert_eq!(
        rows.next(),
        Some(mes_api::trace::export::CSV_HEADER.trim_end())
    );
    let mut seen = HashSet::new();
    let mut sum = 0.0;
    for row in rows {
        // ts,site,resource_id,"sensor",value,"u, ""v""",,
        let (ts_text, rest) = row.split_once(",BKK,LINE-L,").unwrap();
        let (sensor, rest) = if let Some(quoted) = rest.strip_prefix("\"temp, \"\"zone 1\"\"\",") {
            ("temp, \"zone 1\"", quoted)
        } else {
            ("speed", rest.strip_prefix("speed,").unwrap())
        };
        let (value, unit) = rest.split_once(',').unwrap();
        assert_eq!(unit, "\"u, \"\"v\"\"\",,", "{row}");
        let i = (ts(ts_text) - start).num_seconds();
        let value: f64 = value.parse().unwrap();
        assert_eq!(value, large_value(sensor, i), "{row}");
        assert!(seen.insert((sensor, i)), "twice: {row}");
        sum += value;
    }
    assert_eq!(seen.len(), 50_000);
    assert_eq!(sum, expected_sum);
    assert!(
        frames.len() >= csv.len() / (2 * chunk),
        "{} frames",
        frames.len()
    );

    // The run's trace judges the latest 10 000 of each sensor's 25 000 readings.
    let run = ok(&app, &format!("/trace/run/{id}")).await;
    let speed = sensor(&run["spc"]["sensors"], "speed");
    assert_eq!(
        (
            speed["points"].as_u64(),
            speed["points_truncated"].as_bool()
        ),
        (Some(10_000), Some(true))
    );
    assert_eq!(sensor(&run["sensors"], "speed")["count"], 25_000);
}

#[tokio::test]
async fn trace_routes_need_a_token_and_a_viewer_may_read_them() {
    let t = db().await;
    let app = app(&t.pool);
    let (a, _) = two_runs(&app, &t.pool).await;
    let (viewer, stored) = mes_api::auth::token::generate();
    sqlx::query("INSERT INTO api_tokens (id, name, role, salt, secret_hash) VALUES ($1, 'kiosk', 'viewer', $2, $3)")
        .bind(&stored.id)
        .bind(&stored.salt)
        .bind(&stored.hash)
        .execute(&t.pool)
        .await
        .unwrap();
    let unknown = uuid::Uuid::now_v7();
    let uris = [
        format!("/trace/run/{a}"),
        format!("/trace/run/{a}/readings"),
        "/trace/resource/PRESS-1?from=2025-03-03T00:00:00Z&to=2025-03-04T00:00:00Z".to_owned(),
        "/trace/reading?resource_id=PRESS-1&ts=2025-03-03T01:30:00Z".to_owned(),
    ];
    for uri in &uris {
        let a = call(&app, Method::GET, uri, None, &[("authorization", "")]).await;
        a.assert_problem(401, None, uri);
        let auth = format!("Bearer {viewer}");
        let a = call(&app, Method::GET, uri, None, &[("authorization", &auth)]).await;
        assert_eq!(a.status, 200, "{uri} as a viewer: {}", a.body);
    }
    // Nothing to enumerate: an unknown run answers as a known one does without a token.
    for uri in [
        format!("/trace/run/{unknown}"),
        format!("/trace/run/{unknown}/readings"),
    ] {
        call(&app, Method::GET, &uri, None, &[("authorization", "")])
            .await
            .assert_problem(401, None, &uri);
    }
}
