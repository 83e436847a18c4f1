//! KPI, traceability and SPC endpoints.

use serde_json::{json, Value};

use crate::support::*;

#[track_caller]
fn close(v: &Value, expected: f64, what: &str) {
    let a = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is {v}, expected {expected}"));
    assert!((a - expected).abs() < 1e-6, "{what}: {a} != {expected}");
}

#[tokio::test]
async fn kpi_oee_lists_shifts_rolls_up_and_reports_mtbf() {
    let t = db().await;
    let app = app(&t.pool);
    // R1: 4 h in BKK's Day shift of 2025-01-06 (01:00Z-09:00Z) with a 15-minute breakdown.
    let r1 = start_run(&app, json!({"work_order_id":"WO-K","operation_id":"OP10","resource_id":"R1","ideal_cycle_time_s":1.5,"started_at":"2025-01-06T02:00:00Z"})).await;
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":r1,"good_delta":780,"scrap_delta":20,"at":"2025-01-06T05:00:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":r1,"reason_code":"breakdown","at":"2025-01-06T03:00:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/resume",
        json!({"op_run_id":r1,"at":"2025-01-06T03:15:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":r1,"ended_at":"2025-01-06T06:00:00Z"}),
    )
    .await;
    // R2: 2 h in the same shift, no downtime.
    let r2 = start_run(&app, json!({"work_order_id":"WO-K","operation_id":"OP20","resource_id":"R2","ideal_cycle_time_s":1.0,"started_at":"2025-01-06T03:00:00Z"})).await;
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":r2,"good_delta":6000,"scrap_delta":0,"at":"2025-01-06T04:00:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":r2,"ended_at":"2025-01-06T05:00:00Z"}),
    )
    .await;

    let a = get(
        &app,
        "/kpi/oee?from=2025-01-06T00:00:00Z&to=2025-01-06T12:00:00Z",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let shifts = a.body["shifts"].as_array().unwrap();
    assert_eq!(shifts.len(), 2);
    let s1 = &shifts[0];
    assert_eq!(
        (
            s1["resource_id"].as_str(),
            s1["shift_name"].as_str(),
            s1["shift_date"].as_str()
        ),
        (Some("R1"), Some("Day"), Some("2025-01-06"))
    );
    close(&s1["availability"], 13_500.0 / 14_400.0, "A");
    close(&s1["performance"], 1200.0 / 13_500.0, "E");
    close(&s1["quality"], 0.975, "QR");
    close(&s1["oee"], 1170.0 / 14_400.0, "OEE");
    // Total = Σ then ÷: PBT 14400 + 7200, APT 13500 + 7200, PRU·GQ 1170 + 6000.
    let total = &a.body["total"];
    close(&total["pbt_seconds"], 21_600.0, "total PBT");
    close(&total["availability"], 20_700.0 / 21_600.0, "total A");
    close(&total["oee"], 7170.0 / 21_600.0, "total OEE");
    close(&total["quality"], 6780.0 / 6800.0, "total QR");
    let rel = a.body["reliability"].as_array().unwrap();
    assert_eq!(rel[0]["resource_id"], "R1");
    assert_eq!(rel[0]["failure_events"], 1);
    close(&rel[0]["mtbf_seconds"], 13_500.0, "MTBF");
    close(&rel[0]["mttr_seconds"], 900.0, "MTTR");
    assert!(rel[1]["mtbf_seconds"].is_null());

    // Filters.
    let only = get(
        &app,
        "/kpi/oee?from=2025-01-06T00:00:00Z&to=2025-01-06T12:00:00Z&resource_id=R2",
    )
    .await;
    assert_eq!(only.body["shifts"].as_array().unwrap().len(), 1);
    close(&only.body["total"]["oee"], 1.0 * 6000.0 / 7200.0, "R2 OEE");
    let other_site = get(
        &app,
        "/kpi/oee?from=2025-01-06T00:00:00Z&to=2025-01-06T12:00:00Z&site_id=XYZ",
    )
    .await;
    assert_eq!(other_site.body["shifts"], json!([]));
    assert!(other_site.body["total"]["oee"].is_null());
    assert_eq!(
        other_site.body["total"]["oee_null_reason"],
        "no_planned_time"
    );
    // The same numbers as the MES view.
    let view_oee: f64 =
        sqlx::query_scalar("SELECT oee FROM v_oee_shift_real WHERE resource_id = 'R1'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    close(&s1["oee"], view_oee, "API = view");
}

#[tokio::test]
async fn work_order_trace_has_runs_counts_downtime_and_sensor_summaries() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(&app, json!({"work_order_id":"WO-T","operation_id":"OP10","resource_id":"SMT01","started_at":"2025-02-01T00:00:00Z"})).await;
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":10,"scrap_delta":1,"at":"2025-02-01T00:10:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":5,"scrap_delta":0,"at":"2025-02-01T00:20:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":id,"reason_code":"material_shortage","at":"2025-02-01T00:30:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/resume",
        json!({"op_run_id":id,"at":"2025-02-01T00:40:00Z"}),
    )
    .await;
    post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-02-01T01:00:00Z"}),
    )
    .await;
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value, unit) VALUES
         ('2025-02-01T00:05:00Z', 'BKK', 'SMT01', 'temp', 36.0, 'C'),
         ('2025-02-01T00:15:00Z', 'BKK', 'SMT01', 'temp', 38.0, 'C'),
         ('2025-02-01T00:25:00Z', 'BKK', 'SMT01', 'temp', 40.0, 'C'),
         ('2025-02-01T00:25:00Z', 'BKK', 'SMT01', 'speed', 120.0, 'cph'),
         ('2025-02-01T01:00:00Z', 'BKK', 'SMT01', 'temp', 99.0, 'C'),
         ('2025-02-01T00:25:00Z', 'BKK', 'OTHER', 'temp', 99.0, 'C')",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let a = get(&app, "/trace/work_order/WO-T").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["good_units"], 15);
    assert_eq!(a.body["scrap_units"], 1);
    close(&a.body["downtime_seconds"], 600.0, "downtime");
    let run = &a.body["runs"][0];
    assert_eq!(run["op_run_id"], id.as_str());
    assert_eq!(run["counts"]["reports"], 2);
    assert_eq!(run["downtime"][0]["reason_code"], "material_shortage");
    let sensors = run["sensors"].as_array().unwrap();
    assert_eq!(sensors.len(), 2);
    assert_eq!(sensors[1]["sensor"], "temp");
    assert_eq!(
        sensors[1]["count"], 3,
        "the reading at the run's end and other resources are outside"
    );
    close(&sensors[1]["mean"], 38.0, "mean");
    close(&sensors[1]["min"], 36.0, "min");
    close(&sensors[1]["stddev"], 2.0, "stddev");
    assert_eq!(sensors[1]["unit"], "C");
    get(&app, "/trace/work_order/NOPE")
        .await
        .assert_problem(404, None, "unknown work order");
}

#[tokio::test]
async fn trace_survives_readings_at_the_edge_of_the_double_range() {
    let t = db().await;
    let app = app(&t.pool);
    let id = start_run(&app, json!({"work_order_id":"WO-X","operation_id":"OP10","resource_id":"SMT01","started_at":"2025-02-01T00:00:00Z"})).await;
    post(
        &app,
        "/op_run/complete",
        json!({"op_run_id":id,"ended_at":"2025-02-01T01:00:00Z"}),
    )
    .await;
    // Valid readings (finite doubles) whose float8 average or deviation overflows.
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES
         ('2025-02-01T00:05:00Z', 'BKK', 'SMT01', 'x', 1.7976931348623157e308),
         ('2025-02-01T00:06:00Z', 'BKK', 'SMT01', 'x', 1.7976931348623157e308),
         ('2025-02-01T00:07:00Z', 'BKK', 'SMT01', 'x', -1.7976931348623157e308)",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let a = get(&app, "/trace/work_order/WO-X").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let sensor = &a.body["runs"][0]["sensors"][0];
    assert_eq!(sensor["count"], 3);
    let mean = sensor["mean"].as_f64().expect("mean is a number");
    assert!((mean / (f64::MAX / 3.0) - 1.0).abs() < 1e-9, "mean {mean}");
    assert!(
        sensor["stddev"].is_null(),
        "a deviation beyond a double is null"
    );
}

#[tokio::test]
async fn spc_reports_limits_rule_breaks_and_capability() {
    let t = db().await;
    let app = app(&t.pool);
    // 20 points alternating 10 ± 0.1, then an outlier at 12.
    let mut values: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 0 { 10.1 } else { 9.9 })
        .collect();
    values.push(12.0);
    for (i, v) in values.iter().enumerate() {
        sqlx::query("INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES ($1, 'BKK', 'SMT01', 'temp', $2)")
            .bind(chrono::DateTime::parse_from_rfc3339("2025-02-01T00:00:00Z").unwrap() + chrono::Duration::seconds(i as i64))
            .bind(v)
            .execute(&t.pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO spc_spec_limits (resource_id, sensor, lsl, usl) VALUES ('*', 'temp', 9.0, 13.0)")
        .execute(&t.pool)
        .await
        .unwrap();
    let a = get(
        &app,
        "/spc?resource_id=SMT01&sensor=temp&from=2025-02-01T00:00:00Z&to=2025-02-01T01:00:00Z",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["points"], 21);
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    // An individuals chart: σ from the average moving range, MR̄/d2 with d2 = 1.128 (issue 14.3),
    // not the sample σ; Cp/Cpk from that σ within.
    let mr_bar = values.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (n - 1.0);
    let sigma = mr_bar / 1.128;
    close(&a.body["limits"]["mean"], mean, "mean");
    close(&a.body["limits"]["sigma"], sigma, "sigma");
    close(&a.body["limits"]["ucl"], mean + 3.0 * sigma, "ucl");
    close(&a.body["limits"]["lcl"], mean - 3.0 * sigma, "lcl");
    let violations = a.body["violations"].as_array().unwrap();
    let last = violations.last().unwrap();
    close(&last["value"], 12.0, "outlier");
    assert!(
        last["rules"].as_array().unwrap().contains(&json!(1)),
        "{last}"
    );
    close(&a.body["capability"]["cp"], 4.0 / (6.0 * sigma), "cp");
    close(
        &a.body["capability"]["cpk"],
        (mean - 9.0).min(13.0 - mean) / (3.0 * sigma),
        "cpk",
    );

    // A window without points; a sensor without limits.
    let empty = get(
        &app,
        "/spc?resource_id=SMT01&sensor=temp&window_seconds=60&to=2026-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["points"], 0);
    assert!(empty.body["limits"].is_null());
    assert!(empty.body["capability"].is_null());
}

#[tokio::test]
async fn bad_queries_are_problems_naming_the_parameter() {
    let t = db().await;
    let app = app(&t.pool);
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/kpi/oee?from=yesterday", 400, Some("from")),
        ("/kpi/oee?to=2026-01-01", 400, Some("to")),
        (
            "/kpi/oee?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            Some("from"),
        ),
        (
            "/kpi/oee?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            Some("from"),
        ),
        ("/kpi/oee?resource=R1", 400, Some("resource")),
        ("/kpi/oee?site_id=A&site_id=B", 400, Some("site_id")),
        ("/spc", 400, Some("resource_id")),
        ("/spc?resource_id=R1", 400, Some("sensor")),
        (
            "/spc?resource_id=R1&sensor=temp&window_seconds=0",
            400,
            Some("window_seconds"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&window_seconds=abc",
            400,
            Some("window_seconds"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&window_seconds=60&from=2026-01-01T00:00:00Z",
            400,
            Some("window_seconds"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            Some("from"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            Some("from"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&max_points=1",
            400,
            Some("max_points"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&max_points=100000",
            400,
            Some("max_points"),
        ),
        (
            "/spc?resource_id=R1&sensor=temp&colour=red",
            400,
            Some("colour"),
        ),
        ("/trace/work_order/NOPE", 404, None),
        ("/op_run/xyz", 400, Some("op_run_id")),
        ("/op_run/%FF", 400, Some("op_run_id")),
        ("/trace/work_order/%FF%FE", 400, Some("work_order_id")),
    ];
    for (uri, status, field) in cases {
        get(&app, uri)
            .await
            .assert_problem(*status, *field, &format!("GET {uri}"));
    }
    for uri in [
        "/kpi/oee",
        "/spc",
        "/trace/work_order/W",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    ] {
        call(&app, axum::http::Method::POST, uri, Some("{}"), &[])
            .await
            .assert_problem(405, None, &format!("POST {uri}"));
    }
}
