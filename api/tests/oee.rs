//! OEE fixtures computed by hand, written through the API, read from the MES views.
//! ISO 22400-2: A = APT/PBT, E = PRU·PQ/APT, QR = GQ/PQ, OEE = PRU·GQ/PBT.

use axum::http::StatusCode;
use axum::Router;
use chrono::NaiveDate;
use serde_json::json;
use sqlx::PgPool;

use crate::support::*;

#[derive(Debug, sqlx::FromRow)]
struct OeeRow {
    pbt_seconds: f64,
    apt_seconds: f64,
    pq: i64,
    gq: i64,
    availability: Option<f64>,
    performance: Option<f64>,
    quality: Option<f64>,
    oee: Option<f64>,
    performance_over_100: bool,
    availability_null_reason: Option<String>,
    performance_null_reason: Option<String>,
    quality_null_reason: Option<String>,
    oee_null_reason: Option<String>,
}

async fn oee_row(pool: &PgPool, resource: &str, shift: &str, date: &str) -> OeeRow {
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    sqlx::query_as(
        "SELECT pbt_seconds, apt_seconds, pq, gq, availability, performance, quality, oee,
                performance_over_100, availability_null_reason, performance_null_reason,
                quality_null_reason, oee_null_reason
         FROM v_oee_shift_real WHERE resource_id = $1 AND shift_name = $2 AND shift_date = $3",
    )
    .bind(resource)
    .bind(shift)
    .bind(date)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("no OEE row for {resource} {shift} {date}: {e}"))
}

#[track_caller]
fn close(actual: Option<f64>, expected: f64, what: &str) {
    let a = actual.unwrap_or_else(|| panic!("{what} is NULL, expected {expected}"));
    assert!((a - expected).abs() < 1e-6, "{what}: {a} != {expected}");
}

impl OeeRow {
    #[track_caller]
    fn assert_kpis(&self, a: f64, e: f64, q: f64, oee: f64) {
        close(self.availability, a, "availability");
        close(self.performance, e, "performance");
        close(self.quality, q, "quality");
        close(self.oee, oee, "oee");
        // OEE = A × E × QR holds exactly in this form.
        close(Some(a * e * q), oee, "A*E*QR");
    }
}

struct Run<'a> {
    app: &'a Router,
    id: String,
}

impl<'a> Run<'a> {
    async fn start(
        app: &'a Router,
        resource: &str,
        site: &str,
        at: &str,
        ict: Option<f64>,
    ) -> Run<'a> {
        let mut body = json!({"work_order_id":"WO-OEE","operation_id":"OP10","resource_id":resource,
                              "site_id":site,"started_at":at,"planned_seconds":3600});
        if let Some(ict) = ict {
            body["ideal_cycle_time_s"] = json!(ict);
        }
        let id = start_run(app, body).await;
        Run { app, id }
    }

    async fn report(&self, at: &str, good: i64, scrap: i64) {
        let a = post(
            self.app,
            "/op_run/report",
            json!({"op_run_id":self.id,"good_delta":good,"scrap_delta":scrap,"at":at}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }

    async fn down(&self, reason: &str, from: &str, to: &str) {
        let a = post(
            self.app,
            "/op_run/pause",
            json!({"op_run_id":self.id,"reason_code":reason,"at":from}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let a = post(
            self.app,
            "/op_run/resume",
            json!({"op_run_id":self.id,"at":to}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }

    async fn complete(&self, at: &str) {
        let a = post(
            self.app,
            "/op_run/complete",
            json!({"op_run_id":self.id,"ended_at":at}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
}

async fn add_site(pool: &PgPool, site: &str, zone: &str) {
    mes_api::db::ensure_site(pool, site, zone).await.unwrap();
}

#[tokio::test]
async fn run_inside_one_shift() {
    let t = db().await;
    let app = app(&t.pool);
    // BKK Day shift of 2025-01-06 is 08:00-16:00 +07 = 01:00Z-09:00Z.
    let run = Run::start(&app, "R1", "BKK", "2025-01-06T02:00:00Z", Some(1.5)).await;
    run.report("2025-01-06T03:00:00Z", 400, 10).await;
    run.report("2025-01-06T05:30:00Z", 380, 10).await;
    run.complete("2025-01-06T06:00:00Z").await;
    let r = oee_row(&t.pool, "R1", "Day", "2025-01-06").await;
    assert_eq!(
        (r.pbt_seconds, r.apt_seconds, r.pq, r.gq),
        (14_400.0, 14_400.0, 800, 780)
    );
    // A = 14400/14400, E = 1.5·800/14400, QR = 780/800, OEE = 1.5·780/14400
    r.assert_kpis(1.0, 1200.0 / 14_400.0, 0.975, 1170.0 / 14_400.0);
    assert!(!r.performance_over_100);
    let shifts = scalar_i64(&t.pool, "SELECT count(*) FROM v_oee_shift_real").await;
    assert_eq!(shifts, 1, "a run inside one shift touches one shift");
}

#[tokio::test]
async fn run_across_two_shifts_is_split_by_time_and_counts_by_report_time() {
    let t = db().await;
    let app = app(&t.pool);
    // 06:00Z-11:00Z = 13:00-18:00 Bangkok: 3 h of Day (until 09:00Z), 2 h of Evening.
    let run = Run::start(&app, "R2", "BKK", "2025-01-06T06:00:00Z", Some(2.0)).await;
    run.report("2025-01-06T08:00:00Z", 5000, 0).await;
    run.report("2025-01-06T08:30:00Z", 0, 100).await;
    run.report("2025-01-06T10:00:00Z", 4000, 50).await;
    run.complete("2025-01-06T11:00:00Z").await;

    let day = oee_row(&t.pool, "R2", "Day", "2025-01-06").await;
    assert_eq!((day.pbt_seconds, day.pq, day.gq), (10_800.0, 5100, 5000));
    day.assert_kpis(
        1.0,
        2.0 * 5100.0 / 10_800.0,
        5000.0 / 5100.0,
        2.0 * 5000.0 / 10_800.0,
    );

    let evening = oee_row(&t.pool, "R2", "Evening", "2025-01-06").await;
    assert_eq!(
        (evening.pbt_seconds, evening.pq, evening.gq),
        (7_200.0, 4050, 4000)
    );
    // E = 2·4050/7200 = 1.125: flagged, not clamped.
    evening.assert_kpis(1.0, 1.125, 4000.0 / 4050.0, 8000.0 / 7_200.0);
    assert!(evening.performance_over_100);

    // The day roll-up sums the elements, then divides: ΣPRU·GQ/ΣPBT = 18000/18000 = 1, not the
    // mean of the two shifts' OEE (1.0185...).
    let (pbt, oee): (f64, Option<f64>) =
        sqlx::query_as("SELECT pbt_seconds, oee FROM v_oee_day_real WHERE resource_id = 'R2'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(pbt, 18_000.0);
    close(oee, 1.0, "day oee");
    let (site_pbt, site_oee): (f64, Option<f64>) =
        sqlx::query_as("SELECT pbt_seconds, oee FROM v_oee_site_day WHERE site_id = 'BKK'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(site_pbt, 18_000.0);
    close(site_oee, 1.0, "site oee");
}

#[tokio::test]
async fn downtime_lands_in_its_loss_bucket_and_breaks_leave_planned_time() {
    let t = db().await;
    let app = app(&t.pool);
    // A 30-minute planned break at 04:00 local in BKK's Night shift (21:00Z-21:30Z the day before).
    sqlx::query(
        "INSERT INTO shift_breaks (shift_definition_id, break_name, start_local, duration)
         SELECT id, 'meal', '04:00', interval '30 minutes' FROM shift_definitions
         WHERE site_id = 'BKK' AND shift_name = 'Night'",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    // Night of 2025-01-07 = 2025-01-06T17:00Z .. 2025-01-07T01:00Z; the run covers all of it.
    let run = Run::start(&app, "R3", "BKK", "2025-01-06T17:00:00Z", Some(1.0)).await;
    run.down("breakdown", "2025-01-06T18:00:00Z", "2025-01-06T18:30:00Z")
        .await; // availability, failure
    run.down(
        "planned_maintenance",
        "2025-01-06T20:00:00Z",
        "2025-01-06T21:00:00Z",
    )
    .await; // excluded
    run.down("minor_stop", "2025-01-06T22:00:00Z", "2025-01-06T22:10:00Z")
        .await; // performance
    run.report("2025-01-06T23:00:00Z", 20_000, 400).await;
    run.complete("2025-01-07T01:00:00Z").await;

    // PBT = 28800 − 3600 (excluded) − 1800 (break) = 23400; APT = 23400 − 1800 = 21600.
    let r = oee_row(&t.pool, "R3", "Night", "2025-01-07").await;
    assert_eq!((r.pbt_seconds, r.apt_seconds), (23_400.0, 21_600.0));
    r.assert_kpis(
        21_600.0 / 23_400.0,
        20_400.0 / 21_600.0,
        20_000.0 / 20_400.0,
        20_000.0 / 23_400.0,
    );

    let (brk, excl, avail_loss, perf_loss, planned, unplanned): (f64, f64, f64, f64, f64, f64) =
        sqlx::query_as(
            "SELECT planned_break_seconds, excluded_seconds, availability_loss_seconds,
                performance_loss_seconds, planned_downtime_seconds, unplanned_downtime_seconds
         FROM v_runtime_per_shift WHERE resource_id = 'R3'",
        )
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(
        (brk, excl, avail_loss, perf_loss),
        (1800.0, 3600.0, 1800.0, 600.0)
    );
    assert_eq!((planned, unplanned), (3600.0, 2400.0));

    // MTBF = APT / failures, MTTR = failure downtime / failures.
    let (fe, mtbf, mttr): (i32, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT failure_events, mtbf_seconds, mttr_seconds FROM v_mtbf_mttr_per_day WHERE resource_id = 'R3'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(fe, 1);
    close(mtbf, 21_600.0, "mtbf");
    close(mttr, 1_800.0, "mttr");

    // Reclassifying a reason (configurable bucket) changes the views at once: a breakdown that
    // counts as a performance loss stays in APT.
    sqlx::query(
        "UPDATE downtime_reasons SET loss_bucket = 'performance' WHERE reason_code = 'breakdown'",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let r = oee_row(&t.pool, "R3", "Night", "2025-01-07").await;
    assert_eq!((r.pbt_seconds, r.apt_seconds), (23_400.0, 23_400.0));
    r.assert_kpis(
        1.0,
        20_400.0 / 23_400.0,
        20_000.0 / 20_400.0,
        20_000.0 / 23_400.0,
    );
}

#[tokio::test]
async fn dst_nights_last_seven_or_nine_hours_in_berlin() {
    let t = db().await;
    let app = app(&t.pool);
    add_site(&t.pool, "BER", "Europe/Berlin").await;
    // 2024-03-31: 02:00 CET → 03:00 CEST. Night 00:00 (+01) .. 08:00 (+02) = 23:00Z .. 06:00Z.
    let spring = Run::start(&app, "BER-1", "BER", "2024-03-30T23:00:00Z", Some(1.0)).await;
    spring.report("2024-03-31T03:00:00Z", 12_600, 0).await;
    spring.complete("2024-03-31T06:00:00Z").await;
    let r = oee_row(&t.pool, "BER-1", "Night", "2024-03-31").await;
    assert_eq!(r.pbt_seconds, 7.0 * 3600.0, "the spring night lasts 7 h");
    r.assert_kpis(1.0, 0.5, 1.0, 0.5);
    // 2024-10-27: 03:00 CEST → 02:00 CET. Night 00:00 (+02) .. 08:00 (+01) = 22:00Z .. 07:00Z.
    let autumn = Run::start(&app, "BER-1", "BER", "2024-10-26T22:00:00Z", Some(1.0)).await;
    autumn.report("2024-10-27T03:00:00Z", 16_200, 0).await;
    autumn.complete("2024-10-27T07:00:00Z").await;
    let r = oee_row(&t.pool, "BER-1", "Night", "2024-10-27").await;
    assert_eq!(r.pbt_seconds, 9.0 * 3600.0, "the autumn night lasts 9 h");
    r.assert_kpis(1.0, 0.5, 1.0, 0.5);
    // Neighbouring shifts keep 8 h and meet without gap or overlap.
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT shift_name, starts_at, ends_at FROM edge_mes_shift_instances('2024-10-26', '2024-10-27', 'BER')
         ORDER BY starts_at",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    let hours: Vec<i64> = rows.iter().map(|(_, s, e)| (*e - *s).num_hours()).collect();
    assert_eq!(hours, [8, 8, 8, 9, 8, 8]);
    for pair in rows.windows(2) {
        assert_eq!(pair[0].2, pair[1].1, "shifts are contiguous");
    }
    // Local times that do not exist or occur twice (migration 0015): a skipped 02:30 is the
    // jump (03:00 CEST = 01:00Z); a repeated 02:30 is its first occurrence (02:30 CEST = 00:30Z).
    sqlx::query("INSERT INTO shift_definitions (site_id, shift_name, start_local, duration) VALUES ('BER', 'Odd', '02:30', '1 hour')")
        .execute(&t.pool)
        .await
        .unwrap();
    let odd: Vec<String> = sqlx::query_scalar(
        "SELECT to_char(starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || '/' ||
                to_char(ends_at AT TIME ZONE 'UTC', 'HH24:MI')
         FROM edge_mes_shift_instances('2024-03-31', '2024-10-27', 'BER')
         WHERE shift_name = 'Odd' AND shift_date IN ('2024-03-31', '2024-10-27') ORDER BY starts_at",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(odd, ["2024-03-31 01:00/01:30", "2024-10-27 00:30/02:30"]);
}

#[tokio::test]
async fn dst_nights_last_seven_or_nine_hours_in_chicago() {
    let t = db().await;
    let app = app(&t.pool);
    add_site(&t.pool, "CHI", "America/Chicago").await;
    // 2024-03-10: 02:00 CST → 03:00 CDT. Night 00:00 (−06) .. 08:00 (−05) = 06:00Z .. 13:00Z.
    let spring = Run::start(&app, "CHI-1", "CHI", "2024-03-10T06:00:00Z", Some(0.5)).await;
    spring.report("2024-03-10T12:59:00Z", 40_000, 1_000).await;
    spring.complete("2024-03-10T13:00:00Z").await;
    let r = oee_row(&t.pool, "CHI-1", "Night", "2024-03-10").await;
    assert_eq!(r.pbt_seconds, 25_200.0);
    r.assert_kpis(
        1.0,
        0.5 * 41_000.0 / 25_200.0,
        40_000.0 / 41_000.0,
        0.5 * 40_000.0 / 25_200.0,
    );
    // 2024-11-03: 02:00 CDT → 01:00 CST. Night 00:00 (−05) .. 08:00 (−06) = 05:00Z .. 14:00Z; the
    // run covers it, with a 2-hour breakdown across the change (01:00 CDT .. 02:00 CST).
    let autumn = Run::start(&app, "CHI-1", "CHI", "2024-11-03T05:00:00Z", Some(0.5)).await;
    autumn
        .down("breakdown", "2024-11-03T06:00:00Z", "2024-11-03T08:00:00Z")
        .await;
    autumn.report("2024-11-03T14:00:00Z", 30_000, 0).await;
    autumn.complete("2024-11-03T14:00:00Z").await;
    let r = oee_row(&t.pool, "CHI-1", "Night", "2024-11-03").await;
    assert_eq!((r.pbt_seconds, r.apt_seconds), (32_400.0, 25_200.0));
    // The count at the run's very end belongs to the shift the run ends in (Night, not Day).
    assert_eq!(r.pq, 30_000);
    r.assert_kpis(
        25_200.0 / 32_400.0,
        15_000.0 / 25_200.0,
        1.0,
        15_000.0 / 32_400.0,
    );
}

#[tokio::test]
async fn run_without_counts_gives_null_with_reasons_and_quality_from_readings() {
    let t = db().await;
    let app = app(&t.pool);
    let run = Run::start(&app, "R4", "BKK", "2025-01-06T02:00:00Z", Some(1.0)).await;
    run.complete("2025-01-06T04:00:00Z").await;
    let r = oee_row(&t.pool, "R4", "Day", "2025-01-06").await;
    close(r.availability, 1.0, "availability");
    assert_eq!((r.performance, r.quality, r.oee), (None, None, None));
    assert_eq!(r.availability_null_reason, None);
    assert_eq!(r.performance_null_reason.as_deref(), Some("no_counts"));
    assert_eq!(r.quality_null_reason.as_deref(), Some("no_counts"));
    assert_eq!(r.oee_null_reason.as_deref(), Some("no_counts"));

    // Without counts, quality comes from yield readings during the shift, as the seed does.
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES
         ('2025-01-06T02:10:00Z', 'BKK', 'R4', 'yield', 0.98),
         ('2025-01-06T02:20:00Z', 'BKK', 'R4', 'yield', 0.96),
         ('2025-01-06T02:20:00Z', 'BKK', 'R4', 'defect_rate', 0.5),
         ('2025-01-06T02:20:00Z', 'BKK', 'R5', 'yield', 0.10)",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let (q, source): (Option<f64>, Option<String>) = sqlx::query_as(
        "SELECT quality, quality_source FROM v_quality_per_shift WHERE resource_id = 'R4'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    close(q, 0.97, "quality from yield");
    assert_eq!(source.as_deref(), Some("yield_readings"));
    // The same quality in the OEE view and GET /kpi/oee (one rule, migration 0018); OEE still
    // needs counts.
    let r = oee_row(&t.pool, "R4", "Day", "2025-01-06").await;
    close(r.quality, 0.97, "v_oee_shift_real quality");
    assert_eq!(r.quality_null_reason, None);
    assert_eq!((r.performance, r.oee), (None, None));
    assert_eq!(r.oee_null_reason.as_deref(), Some("no_counts"));
    let a = get(
        &app,
        "/kpi/oee?resource_id=R4&from=2025-01-06T01:00:00Z&to=2025-01-06T09:00:00Z",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    close(
        a.body["shifts"][0]["quality"].as_f64(),
        0.97,
        "/kpi/oee shift",
    );
    assert_eq!(a.body["shifts"][0]["quality_source"], "yield_readings");
    close(a.body["total"]["quality"].as_f64(), 0.97, "/kpi/oee total");
}

#[tokio::test]
async fn quality_has_one_rule_counts_then_yield_then_defect_rate_readings() {
    let t = db().await;
    let app = app(&t.pool);
    // Four resources in the Day shift of 2025-01-07 (Bangkok 08:00-16:00 = 01:00Z-09:00Z):
    // counts only, counts and readings (counts win), yield and defect_rate readings (yield
    // wins; a percentage-looking 97.0 is not a ratio and is left out), defect_rate only.
    for (resource, good, scrap) in [("QC", 90, 10), ("QB", 45, 5), ("QY", 0, 0), ("QD", 0, 0)] {
        let run = Run::start(&app, resource, "BKK", "2025-01-07T02:00:00Z", Some(1.0)).await;
        if good + scrap > 0 {
            run.report("2025-01-07T03:00:00Z", good, scrap).await;
        }
        run.complete("2025-01-07T04:00:00Z").await;
    }
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES
         ('2025-01-07T02:10:00Z', 'BKK', 'QB', 'yield', 0.50),
         ('2025-01-07T02:10:00Z', 'BKK', 'QY', 'yield', 0.90),
         ('2025-01-07T02:20:00Z', 'BKK', 'QY', 'yield', 0.80),
         ('2025-01-07T02:30:00Z', 'BKK', 'QY', 'yield', 97.0),
         ('2025-01-07T02:30:00Z', 'BKK', 'QY', 'defect_rate', 0.50),
         ('2025-01-07T02:10:00Z', 'BKK', 'QD', 'defect_rate', 0.02),
         ('2025-01-07T02:20:00Z', 'BKK', 'QD', 'defect_rate', 0.04),
         ('2025-01-07T10:00:00Z', 'BKK', 'QD', 'defect_rate', 0.90)",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let expected = [
        ("QB", 0.9, "counts"),
        ("QC", 0.9, "counts"),
        ("QD", 0.97, "defect_rate_readings"),
        ("QY", 0.85, "yield_readings"),
    ];
    let a = get(
        &app,
        "/kpi/oee?from=2025-01-07T01:00:00Z&to=2025-01-07T09:00:00Z",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for (resource, q, source) in expected {
        let view: (Option<f64>, Option<String>, Option<f64>, Option<String>) = sqlx::query_as(
            "SELECT o.quality, o.quality_source, q.quality, q.quality_source
             FROM v_oee_shift_real o
             JOIN v_quality_per_shift q USING (resource_id, starts_at)
             WHERE resource_id = $1 AND o.shift_date = '2025-01-07'",
        )
        .bind(resource)
        .fetch_one(&t.pool)
        .await
        .unwrap();
        close(view.0, q, &format!("{resource} v_oee_shift_real"));
        close(view.2, q, &format!("{resource} v_quality_per_shift"));
        assert_eq!(view.1.as_deref(), Some(source), "{resource}");
        assert_eq!(view.3.as_deref(), Some(source), "{resource}");
        let shift = a.body["shifts"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["resource_id"] == resource))
            .unwrap_or_else(|| panic!("{resource} in {}", a.body));
        close(
            shift["quality"].as_f64(),
            q,
            &format!("{resource} /kpi/oee"),
        );
        assert_eq!(shift["quality_source"], source, "{resource}");
    }
    // The roll-up: counts of QB and QC win over the readings of the others (135 / 150 = 0.9).
    close(
        a.body["total"]["quality"].as_f64(),
        135.0 / 150.0,
        "roll-up with counts",
    );
    assert_eq!(a.body["total"]["quality_source"], "counts");
    // Without counts in the roll-up: the mean over all readings, not the mean of the shifts'
    // means (QY 0.9, 0.8 and QD 0.98, 0.96: 3.64 / 4 = 0.91), source `readings` as they mix.
    let (q, source): (Option<f64>, Option<String>) = sqlx::query_as(
        "SELECT quality, quality_source FROM v_oee_site_day s
         WHERE site_id = 'BKK' AND shift_date = '2025-01-07'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    close(q, 135.0 / 150.0, "site day with counts");
    assert_eq!(source.as_deref(), Some("counts"));
    let a = get(
        &app,
        "/kpi/oee?resource_id=QY&from=2025-01-07T01:00:00Z&to=2025-01-07T09:00:00Z",
    )
    .await;
    close(a.body["total"]["quality"].as_f64(), 0.85, "QY alone");
    let (q, source): (Option<f64>, Option<String>) = sqlx::query_as(
        "SELECT (edge_mes_oee_q(0, 0, 0, 0, 0, 0, false, sum(q_readings_sum),
                                sum(q_readings_n)::int8,
                                edge_mes_q_source(array_agg(q_readings_source)))).quality,
                edge_mes_q_source(array_agg(q_readings_source))
         FROM edge_mes_shift_elements_q('2025-01-07T01:00:00Z', '2025-01-07T09:00:00Z')
         WHERE resource_id IN ('QY', 'QD')",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    close(q, 3.64 / 4.0, "readings roll-up");
    assert_eq!(source.as_deref(), Some("readings"));
}

#[tokio::test]
async fn zero_planned_time_is_null_with_a_reason_and_active_runs_end_at_now() {
    let t = db().await;
    let app = app(&t.pool);
    let run = Run::start(&app, "R6", "BKK", "2025-01-06T02:00:00Z", Some(1.0)).await;
    run.down("no_order", "2025-01-06T02:00:00Z", "2025-01-06T03:00:00Z")
        .await;
    run.complete("2025-01-06T03:00:00Z").await;
    let r = oee_row(&t.pool, "R6", "Day", "2025-01-06").await;
    assert_eq!(r.pbt_seconds, 0.0);
    assert_eq!((r.availability, r.performance, r.oee), (None, None, None));
    assert_eq!(
        r.availability_null_reason.as_deref(),
        Some("no_planned_time")
    );
    assert_eq!(r.oee_null_reason.as_deref(), Some("no_planned_time"));

    // An active run is clipped at now().
    let started = chrono::Utc::now() - chrono::Duration::hours(1);
    Run::start(&app, "R7", "BKK", &started.to_rfc3339(), Some(1.0)).await;
    let busy: f64 = sqlx::query_scalar(
        "SELECT sum(busy_seconds) FROM v_runtime_per_shift WHERE resource_id = 'R7'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert!((3599.0..3700.0).contains(&busy), "busy {busy}");
}

/// A run left open for years and one started just before the window give the same figures for
/// every shift in the window: the calendar is expanded over the window only (0014), and the
/// shift that began before the window's start is still there.
#[tokio::test]
async fn a_run_open_for_years_gives_the_windows_shifts_only() {
    let t = db().await;
    let (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT date_trunc('hour', now()) - interval '53 hours', date_trunc('hour', now()) - interval '24 hours'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    for (resource, started) in [
        (
            "R-years",
            "2000-01-01T00:00:00Z"
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap(),
        ),
        ("R-recent", from - chrono::Duration::hours(12)),
    ] {
        sqlx::query("INSERT INTO resources (resource_id, site_id) VALUES ($1, 'BKK')")
            .bind(resource)
            .execute(&t.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO work_orders (work_order_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind("WO-years")
            .execute(&t.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO op_run (op_run_id, work_order_id, operation_id, resource_id, site_id,
                                 status, started_at, ideal_cycle_time_s)
             VALUES (gen_random_uuid(), 'WO-years', 'OP10', $1, 'BKK', 'running', $2, 1.0)",
        )
        .bind(resource)
        .bind(started)
        .execute(&t.pool)
        .await
        .unwrap();
    }
    let shifts = |resource: &'static str| {
        let pool = t.pool.clone();
        async move {
            let rows: Vec<(String, NaiveDate, f64, f64)> = sqlx::query_as(
                "SELECT shift_name, shift_date, busy_seconds, pbt_seconds
                 FROM edge_mes_shift_elements($1, $2, NULL, $3) ORDER BY starts_at",
            )
            .bind(from)
            .bind(to)
            .bind(resource)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows
        }
    };
    let years = shifts("R-years").await;
    let recent = shifts("R-recent").await;
    assert_eq!(years, recent);
    // 29 hours of the seed's 8-hour shifts, all ended (so an open run's figures do not move while
    // the test runs): four or five shifts meet the window, usually the first begun before it.
    assert!((4..=5).contains(&years.len()), "{years:?}");
    let overlapping: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM edge_mes_shift_instances(($1 AT TIME ZONE 'Asia/Bangkok')::date - 1,
                                                       ($2 AT TIME ZONE 'Asia/Bangkok')::date, 'BKK')
         WHERE tstzrange(starts_at, ends_at, '[)') && tstzrange($1, $2, '[)')",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(years.len() as i64, overlapping);
}

#[tokio::test]
async fn a_break_in_a_dst_gap_breaks_no_sites_figures() {
    let t = db().await;
    let app = app(&t.pool);
    add_site(&t.pool, "BER", "Europe/Berlin").await;
    // Legal calendar data: a break starting in the hour Berlin skips on 2024-03-31 (02:00 CET →
    // 03:00 CEST). Before migration 0015 it made an inverted range, and every site's OEE query
    // failed with 500.
    sqlx::query(
        "INSERT INTO shift_breaks (shift_definition_id, start_local, duration)
         SELECT id, '02:50', interval '30 minutes' FROM shift_definitions
         WHERE site_id = 'BER' AND shift_name = 'Night'",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let ber = Run::start(&app, "BER-1", "BER", "2024-03-30T23:00:00Z", Some(1.0)).await;
    ber.report("2024-03-31T05:00:00Z", 100, 0).await;
    ber.complete("2024-03-31T06:00:00Z").await;
    let bkk = Run::start(&app, "R9", "BKK", "2024-03-31T02:00:00Z", Some(1.0)).await;
    bkk.report("2024-03-31T03:00:00Z", 100, 0).await;
    bkk.complete("2024-03-31T04:00:00Z").await;
    for site in ["BKK", "BER"] {
        let a = get(
            &app,
            &format!("/kpi/oee?site_id={site}&from=2024-03-30T12:00:00Z&to=2024-04-01T00:00:00Z"),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{site}: {}", a.body);
        assert!(
            a.body["shifts"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty()),
            "{site}: {}",
            a.body
        );
    }
    // The break kept the 20 minutes after the jump (03:00–03:20 CEST): PBT 7 h − 20 min.
    let r = oee_row(&t.pool, "BER-1", "Night", "2024-03-31").await;
    assert_eq!(r.pbt_seconds, 7.0 * 3600.0 - 1200.0);
}
