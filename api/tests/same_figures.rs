//! One shift, three screens: the board (`GET /board/state`), the Grafana OEE dashboard (its
//! committed SQL, run as Grafana runs it) and `GET /kpi/oee` show the same A, E, Q and OEE.
//!
//! The shift is the current one (the board shows no other), with runs that ended before the
//! screens are read, so nothing moves between the reads: one resource with counts, an
//! operator's pause in the performance bucket and a stop detected from its readings (unassigned,
//! availability); one that sends only `yield` readings (quality from readings, E and OEE NULL).
//! How Grafana expands `$__timeFrom()`, `$site` and the rest is proven against the whole
//! dashboard set in ops-tests (dashboards.rs); here the expansion is the plain one those macros
//! reduce to for one site, two resources and a fixed range.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::{json, Value};
use sqlx::{Column, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const RESOURCES: [&str; 2] = ["SF-COUNTS", "SF-READINGS"];

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// The current BKK shift, once at least `min_age` of it has passed (a shift that began a moment
/// ago leaves no room for runs that already ended).
async fn current_shift(pool: &PgPool, min_age: Duration) -> (DateTime<Utc>, DateTime<Utc>) {
    wait_for("a current shift old enough", Duration::from_secs(30), || async {
        let (s, e): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "SELECT starts_at, ends_at FROM edge_mes_shift_instances(current_date - 2, current_date + 1, 'BKK')
             WHERE now() >= starts_at AND now() < ends_at",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (Utc::now() - s >= chrono::TimeDelta::from_std(min_age).unwrap()).then_some((s, e))
    })
    .await
}

/// The dashboard's SQL of one panel target, as committed.
fn dashboard_sql(title: &str) -> String {
    let path = testkit::bins::workspace_root().join("grafana/dashboards/oee.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?} in oee.json"))["targets"][0]["rawSql"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn expand(sql: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let resources: Vec<String> = RESOURCES.iter().map(|r| format!("'{r}'")).collect();
    sql.replace("$__timeFrom()", &format!("'{}'", rfc(from)))
        .replace("$__timeTo()", &format!("'{}'", rfc(to)))
        .replace("$site", "'BKK'")
        .replace("$resource", &resources.join(","))
}

/// Per resource: (A, E, Q, OEE) of the rows of `sql`, keyed by the column `key`.
async fn dashboard_kpis(pool: &PgPool, sql: &str, key: &str) -> Vec<(String, [Option<f64>; 4])> {
    let rows = sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    let mut out = Vec::new();
    for r in rows {
        let names: Vec<&str> = r.columns().iter().map(|c| c.name()).collect();
        assert!(names.contains(&"availability"), "{names:?}");
        let get = |c: &str| r.get::<Option<f64>, _>(c);
        out.push((
            r.get::<String, _>(key),
            [
                get("availability"),
                get("performance"),
                get("quality"),
                get("oee"),
            ],
        ));
    }
    out
}

fn kpis(v: &Value) -> [Option<f64>; 4] {
    ["availability", "performance", "quality", "oee"].map(|k| v[k].as_f64())
}

#[tokio::test]
async fn board_dashboard_and_kpi_api_show_the_same_figures_for_a_shift() {
    let t = db().await;
    let app = app(&t.pool);
    let (shift_start, shift_end) = current_shift(&t.pool, Duration::from_secs(20)).await;
    // Runs from the shift's start to 2 s ago, so every element is fixed before the reads.
    let end = Utc::now() - chrono::TimeDelta::seconds(2);
    let span = end - shift_start;
    let at =
        |fraction: f64| (shift_start + span * ((fraction * 1000.0) as i32) / 1000).trunc_subsecs(6);
    let rule = put_rule(&app).await;
    assert_eq!(rule, StatusCode::OK);

    let counted = start_run(
        &app,
        json!({"work_order_id":"WO-SF","operation_id":"OP10","resource_id":RESOURCES[0],
               "site_id":"BKK","ideal_cycle_time_s":0.001,"started_at":rfc(shift_start)}),
    )
    .await;
    let read = start_run(
        &app,
        json!({"work_order_id":"WO-SF","operation_id":"OP20","resource_id":RESOURCES[1],
               "site_id":"BKK","ideal_cycle_time_s":0.001,"started_at":rfc(shift_start)}),
    )
    .await;
    for (path, body) in [
        (
            "/op_run/report",
            json!({"op_run_id":counted,"good_delta":900,"scrap_delta":100,"at":rfc(at(0.6))}),
        ),
        (
            "/op_run/pause",
            json!({"op_run_id":counted,"reason_code":"minor_stop","at":rfc(at(0.7))}),
        ),
        (
            "/op_run/resume",
            json!({"op_run_id":counted,"at":rfc(at(0.8))}),
        ),
        (
            "/op_run/complete",
            json!({"op_run_id":counted,"ended_at":rfc(end)}),
        ),
        (
            "/op_run/complete",
            json!({"op_run_id":read,"ended_at":rfc(end)}),
        ),
    ] {
        let a = post(&app, path, body).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    // The counted resource stood still from 20 % to 40 % of the run (speed 0), the other sent
    // yields of 0.9 and 0.8.
    for (resource, sensor, value, fraction) in [
        (RESOURCES[0], "speed", 10.0, 0.0),
        (RESOURCES[0], "speed", 0.0, 0.2),
        (RESOURCES[0], "speed", 10.0, 0.4),
        (RESOURCES[1], "yield", 0.9, 0.3),
        (RESOURCES[1], "yield", 0.8, 0.5),
    ] {
        sqlx::query(
            "INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES ($1, 'BKK', $2, $3, $4)",
        )
        .bind(at(fraction))
        .bind(resource)
        .bind(sensor)
        .bind(value)
        .execute(&t.pool)
        .await
        .unwrap();
    }
    let window = mes_api::store::machine_state::PassWindow {
        horizon: chrono::TimeDelta::days(1),
        max_lookback: chrono::TimeDelta::days(1),
        max_readings: 10_000,
    };
    let o =
        mes_api::machine_state::detect_all(&t.pool, window, Utc::now(), &CancellationToken::new())
            .await
            .unwrap();
    assert_eq!(o.inserted, 1, "the stop");

    // GET /kpi/oee for the shift.
    let kpi = get(
        &app,
        &format!(
            "/kpi/oee?site_id=BKK&from={}&to={}",
            urlencode(&rfc(shift_start)),
            urlencode(&rfc(shift_end))
        ),
    )
    .await;
    assert_eq!(kpi.status, StatusCode::OK, "{}", kpi.body);
    let api: Vec<(String, [Option<f64>; 4])> = kpi.body["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["resource_id"].as_str().unwrap().to_owned(), kpis(s)))
        .collect();
    assert_eq!(api.len(), 2, "{}", kpi.body);
    // The counted resource: A < 1 (the stop), E < 1 (the pause and the ideal cycle), Q = 0.9;
    // the other: Q = mean yield 0.85, E and OEE NULL (no counts).
    let counted_kpis = api.iter().find(|(r, _)| r == RESOURCES[0]).unwrap().1;
    let a = counted_kpis[0].unwrap();
    assert!(
        (0.75..0.85).contains(&a),
        "A = {a}: 20 % of the run stood still"
    );
    assert!((counted_kpis[2].unwrap() - 0.9).abs() < 1e-12);
    let read_kpis = api.iter().find(|(r, _)| r == RESOURCES[1]).unwrap().1;
    assert!(
        (read_kpis[2].unwrap() - 0.85).abs() < 1e-12,
        "{read_kpis:?}"
    );
    assert_eq!((read_kpis[1], read_kpis[3]), (None, None));

    // The board's current shift.
    let board = get(&app, "/board/state?site=BKK").await;
    assert_eq!(board.status, StatusCode::OK, "{}", board.body);
    for (resource, expected) in &api {
        let r = board.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource_id"] == json!(resource))
            .unwrap_or_else(|| panic!("{resource} not on the board: {}", board.body));
        assert_eq!(
            r["oee"]["starts_at"]
                .as_str()
                .map(|s| s.parse::<DateTime<Utc>>().unwrap()),
            Some(shift_start),
            "{r}"
        );
        assert_eq!(
            &kpis(&r["oee"]),
            expected,
            "board vs GET /kpi/oee for {resource}"
        );
    }

    // The dashboard: its shift table and its gauges, for the shift's range.
    let table = expand(
        &dashboard_sql("Shifts: elements and KPIs"),
        shift_start,
        shift_end,
    );
    let mut rows = dashboard_kpis(&t.pool, &table, "resource").await;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rows, api, "dashboard shift table vs GET /kpi/oee");
    let gauges = expand(&dashboard_sql("OEE"), shift_start, shift_end);
    let per_resource: Vec<_> = dashboard_kpis(&t.pool, &gauges, "resource")
        .await
        .into_iter()
        .filter(|(r, _)| r != "all selected")
        .collect();
    assert_eq!(per_resource, api, "dashboard gauges vs GET /kpi/oee");

    // Its loss Pareto counts the same downtime: the detected stop and the operator's pause.
    let pareto = expand(
        &dashboard_sql("Downtime Pareto by reason"),
        shift_start,
        shift_end,
    );
    let rows: Vec<(String, f64, i64)> = sqlx::query_as(&pareto).fetch_all(&t.pool).await.unwrap();
    let minutes = |a: f64, b: f64| (at(b) - at(a)).num_microseconds().unwrap() as f64 / 60e6;
    let expected = [
        ("unassigned (availability)", minutes(0.2, 0.4)),
        ("minor_stop (performance)", minutes(0.7, 0.8)),
    ];
    assert_eq!(rows.len(), 2, "{rows:?}");
    for ((reason, m, stops), (want_reason, want_m)) in rows.iter().zip(expected) {
        assert_eq!((reason.as_str(), *stops), (want_reason, 1), "{rows:?}");
        assert!(
            (m - want_m).abs() < 1e-9,
            "{reason}: {m} min, expected {want_m}"
        );
    }
}

async fn put_rule(app: &axum::Router) -> StatusCode {
    call(
        app,
        axum::http::Method::PUT,
        &format!("/machine_state/rules/{}", RESOURCES[0]),
        Some(
            r#"{"sensor":"speed","kind":"threshold","stopped_at_or_below":0,"min_stop_seconds":0}"#,
        ),
        &[],
    )
    .await
    .status
}
