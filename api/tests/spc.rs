//! `GET /spc` as a quality engineer reads it: phase I (limits from the window, σ from MR̄/d2,
//! R̄/d2 or S̄/c4) against phase II (stored limits from a baseline), the MR chart, X̄-R and X̄-S on
//! a hand-computed subgroup example and on Montgomery's piston rings, the Nelson rules 5–8 each
//! triggered and narrowly missed, Cp/Cpk beside Pp/Ppk. Stored limits themselves (versions,
//! actors, roles, refusals): [`crate::spc_limits`].

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

/// Every reading of these tests is one second after the one before, from this instant on.
pub fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::seconds(seconds)
}

pub fn iso(seconds: i64) -> String {
    t(seconds).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Inserts `values` for the resource and sensor at `t(start)`, `t(start + 1)`, …
pub async fn readings(pool: &PgPool, resource: &str, sensor: &str, start: i64, values: &[f64]) {
    let times: Vec<DateTime<Utc>> = (0..values.len() as i64).map(|i| t(start + i)).collect();
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT ts, 'BKK', $3, $4, value FROM unnest($1::timestamptz[], $2::float8[]) AS r(ts, value)",
    )
    .bind(&times)
    .bind(values)
    .bind(resource)
    .bind(sensor)
    .execute(pool)
    .await
    .unwrap();
}

pub fn close(v: &Value, expected: f64, tolerance: f64, what: &str) {
    let a = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is {v}, expected {expected}"));
    assert!(
        (a - expected).abs() <= tolerance,
        "{what}: {a} is not {expected} ± {tolerance}"
    );
}

/// The in-control baseline of these tests: 10.1, 10.0, 9.9, 10.0, repeated 8 times (32
/// readings). x̄ = 10, every moving range 0.1, so MR̄ = 0.1, σ = 0.1/1.128 = 0.0886525,
/// limits 10 ± 0.2659574 (UCL 10.2659574, LCL 9.7340426), MR chart UCL 3.267·0.1 = 0.3267.
pub fn baseline_values() -> Vec<f64> {
    [10.1, 10.0, 9.9, 10.0].repeat(8)
}

pub const SIGMA: f64 = 0.1 / 1.128;

/// Sets i_mr limits for the resource and sensor from its readings in `[t(from), t(to))`.
pub async fn set_i_mr(
    app: &axum::Router,
    resource: &str,
    sensor: &str,
    from: i64,
    to: i64,
) -> Value {
    let a = post(
        app,
        "/spc/limits",
        json!({"resource_id": resource, "sensor": sensor, "chart": "i_mr",
               "baseline_from": iso(from), "baseline_to": iso(to)}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body
}

async fn chart(app: &axum::Router, resource: &str, from: i64, to: i64, extra: &str) -> Value {
    let uri = format!(
        "/spc?resource_id={resource}&sensor=temp&from={}&to={}{extra}",
        iso(from),
        iso(to)
    );
    let a = get(app, &uri).await;
    assert_eq!(a.status, 200, "{uri}: {}", a.body);
    a.body
}

fn rules_of(report: &Value, field: &str) -> Vec<Vec<u64>> {
    report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap())
                .collect()
        })
        .collect()
}

/// A shift of +0.3 after the baseline (10.4, 10.3, 10.2, 10.3, repeated 5 times). Judged by the
/// stored limits (UCL 10.266), every 10.4 and 10.3 is beyond 3σ (15 of 20) and every point breaks
/// a rule; judged by limits from the same window (x̄ = 10.3, the same MR̄ = 0.1), nothing does:
/// the limits moved with the shift.
#[tokio::test]
async fn stored_limits_flag_a_shift_that_window_limits_follow() {
    let t0 = db().await;
    let app = app(&t0.pool);
    readings(&t0.pool, "R-shift", "temp", 0, &baseline_values()).await;
    let shifted = [10.4, 10.3, 10.2, 10.3].repeat(5);
    readings(&t0.pool, "R-shift", "temp", 100, &shifted).await;
    let stored = set_i_mr(&app, "R-shift", "temp", 0, 32).await;
    close(&stored["center_line"], 10.0, 1e-9, "baseline CL");
    close(&stored["sigma_within"], SIGMA, 1e-9, "baseline σ");
    close(&stored["ucl"], 10.265_957_447, 1e-9, "baseline UCL");
    close(&stored["lcl"], 9.734_042_553, 1e-9, "baseline LCL");

    // Phase II (the default once limits are stored).
    let phase2 = chart(&app, "R-shift", 100, 120, "").await;
    assert_eq!(phase2["limits_source"], "stored");
    assert_eq!(phase2["stored_limits"]["version"], 1);
    assert_eq!(phase2["stored_limits"]["set_by"], "tests");
    assert_eq!(
        phase2["stored_limits"]["baseline_from"],
        "2025-03-01T00:00:00Z"
    );
    assert_eq!(
        phase2["stored_limits"]["baseline_to"],
        "2025-03-01T00:00:32Z"
    );
    close(&phase2["limits"]["mean"], 10.0, 1e-9, "stored CL");
    close(&phase2["limits"]["ucl"], 10.265_957_447, 1e-9, "stored UCL");
    let nelson = rules_of(&phase2, "nelson_rules");
    assert_eq!(nelson.len(), 20, "every point breaks a rule: {phase2}");
    assert_eq!(nelson.iter().filter(|r| r.contains(&1)).count(), 15);
    // Nine on one side from the ninth point on.
    assert_eq!(nelson.iter().filter(|r| r.contains(&2)).count(), 12);
    let western = rules_of(&phase2, "rules");
    assert_eq!(western.iter().filter(|r| r.contains(&1)).count(), 15);

    // Phase I over the same window: the shift sets its own center line.
    let phase1 = chart(&app, "R-shift", 100, 120, "&limits_source=window").await;
    assert_eq!(phase1["limits_source"], "window");
    assert!(phase1["stored_limits"].is_null());
    close(&phase1["limits"]["mean"], 10.3, 1e-9, "window CL");
    close(&phase1["limits"]["sigma"], SIGMA, 1e-9, "window σ: MR̄/d2");
    assert_eq!(phase1["violations"], json!([]), "{phase1}");

    // The baseline itself is in control under its limits.
    let calm = chart(&app, "R-shift", 0, 32, "").await;
    assert_eq!(calm["violations"], json!([]), "{calm}");
    assert_eq!(calm["dispersion_violations"], json!([]));
    // Explicitly stored, and the chart that has none.
    assert_eq!(
        chart(&app, "R-shift", 100, 120, "&limits_source=stored").await["limits_source"],
        "stored"
    );
    get(
        &app,
        &format!(
            "/spc?resource_id=R-shift&sensor=temp&from={}&to={}&chart=xbar_r&limits_source=stored",
            iso(100),
            iso(120)
        ),
    )
    .await
    .assert_problem(404, None, "no stored xbar_r limits");
}

/// The MR chart: from x = 10, 12, 11, 13, 12 (phase I) its lines are MR̄ = 1.5, UCL = 3.267·1.5 =
/// 4.9005, LCL 0, beside individuals limits 11.6 ± 3·1.5/1.128 (15.5893617 / 7.6106383). Under
/// the baseline's stored limits (MR chart UCL 0.3267) a jump of 0.5 and the return from it are
/// the moving ranges beyond.
#[tokio::test]
async fn the_moving_range_chart_by_hand_and_under_stored_limits() {
    let t0 = db().await;
    let app = app(&t0.pool);
    readings(&t0.pool, "R-mr", "temp", 0, &[10.0, 12.0, 11.0, 13.0, 12.0]).await;
    let r = chart(&app, "R-mr", 0, 5, "").await;
    assert_eq!(
        (r["chart"].as_str(), r["subgroup_size"].as_u64()),
        (Some("i_mr"), Some(1))
    );
    assert_eq!(
        (r["points"].as_u64(), r["subgroups"].as_u64()),
        (Some(5), Some(5))
    );
    close(&r["limits"]["mean"], 11.6, 1e-9, "x̄");
    close(&r["limits"]["sigma"], 1.329_787_234, 1e-9, "σ");
    close(&r["limits"]["ucl"], 15.589_361_702, 1e-9, "UCL");
    close(&r["limits"]["lcl"], 7.610_638_298, 1e-9, "LCL");
    assert_eq!(r["dispersion"]["statistic"], "mr");
    close(&r["dispersion"]["center_line"], 1.5, 1e-9, "MR̄");
    close(&r["dispersion"]["ucl"], 4.9005, 1e-9, "MR UCL");
    close(&r["dispersion"]["lcl"], 0.0, 0.0, "MR LCL");

    readings(&t0.pool, "R-mr2", "temp", 0, &baseline_values()).await;
    set_i_mr(&app, "R-mr2", "temp", 0, 32).await;
    let jump = [10.0, 10.1, 10.0, 10.5, 10.0, 9.9, 10.0, 10.1];
    readings(&t0.pool, "R-mr2", "temp", 200, &jump).await;
    let r = chart(&app, "R-mr2", 200, 208, "").await;
    close(&r["dispersion"]["ucl"], 0.3267, 1e-9, "stored MR UCL");
    let beyond = r["dispersion_violations"].as_array().unwrap();
    assert_eq!(beyond.len(), 2, "{r}");
    assert_eq!(beyond[0]["ts"], iso(203));
    assert_eq!(beyond[1]["ts"], iso(204));
    close(&beyond[0]["value"], 0.5, 1e-9, "MR into the jump");
    close(&beyond[1]["value"], 0.5, 1e-9, "MR out of it");
    // The jump itself is beyond the individuals UCL.
    let flagged = r["violations"].as_array().unwrap();
    assert_eq!(flagged.len(), 1, "{r}");
    assert_eq!(flagged[0]["ts"], iso(203));
    assert_eq!(flagged[0]["nelson_rules"], json!([1]));
    assert_eq!(flagged[0]["rules"], json!([1]));
}

/// Subgroups of 3 from 1, 2, 3 | 2, 4, 6 | 3, 3, 6 | 7, 8 (incomplete, dropped): x̿ = 10/3,
/// R̄ = 3, S̄ = (3 + √3)/3 = 1.5773503. X̄-R: 3.3333333 ± 1.023·3 = 6.4023333 / 0.2643333, R chart
/// UCL 2.574·3 = 7.722, σ = 3/1.693 = 1.7720024. X̄-S: 3.3333333 ± 1.954·1.5773503 = 6.4154758 /
/// 0.2511909, S chart UCL 2.568·1.5773503 = 4.0506355, σ = 1.5773503/0.8862 = 1.7799033.
#[tokio::test]
async fn xbar_r_and_xbar_s_by_hand() {
    let t0 = db().await;
    let app = app(&t0.pool);
    let values = [1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 3.0, 3.0, 6.0, 7.0, 8.0];
    readings(&t0.pool, "R-sub", "temp", 0, &values).await;
    let r = chart(&app, "R-sub", 0, 11, "&chart=xbar_r&subgroup_size=3").await;
    assert_eq!(r["chart"], "xbar_r");
    assert_eq!(
        (
            r["subgroup_size"].as_u64(),
            r["points"].as_u64(),
            r["subgroups"].as_u64()
        ),
        (Some(3), Some(11), Some(3))
    );
    assert_eq!(r["dropped_points"], 2);
    close(&r["limits"]["mean"], 10.0 / 3.0, 1e-9, "x̿");
    close(&r["limits"]["ucl"], 6.402_333_333, 1e-9, "X̄ UCL");
    close(&r["limits"]["lcl"], 0.264_333_333, 1e-9, "X̄ LCL");
    close(&r["limits"]["sigma"], 1.772_002_363, 1e-9, "R̄/d2");
    assert_eq!(r["dispersion"]["statistic"], "r");
    close(&r["dispersion"]["center_line"], 3.0, 1e-9, "R̄");
    close(&r["dispersion"]["ucl"], 7.722, 1e-9, "R UCL");
    close(&r["dispersion"]["lcl"], 0.0, 0.0, "R LCL");

    let s = chart(&app, "R-sub", 0, 11, "&chart=xbar_s&subgroup_size=3").await;
    assert_eq!(s["dispersion"]["statistic"], "s");
    close(&s["limits"]["ucl"], 6.415_475_759, 1e-9, "X̄ UCL");
    close(&s["limits"]["lcl"], 0.251_190_907, 1e-9, "X̄ LCL");
    close(&s["limits"]["sigma"], 1.779_903_260, 1e-9, "S̄/c4");
    close(&s["dispersion"]["center_line"], 1.577_350_269, 1e-9, "S̄");
    close(&s["dispersion"]["ucl"], 4.050_635_491, 1e-9, "S UCL");

    // A subgroup chart asked without a size takes 5: two subgroups, one reading left.
    let five = chart(&app, "R-sub", 0, 11, "&chart=xbar_r").await;
    assert_eq!(
        (five["subgroups"].as_u64(), five["dropped_points"].as_u64()),
        (Some(2), Some(1))
    );
}

/// Montgomery, *Introduction to Statistical Quality Control*, Table 6.3 (piston ring inside
/// diameters, 25 samples of 5), stored as X̄-R and X̄-S limits through the API. Published:
/// x̿ = 74.001, R̄ = 0.023, s̄ = 0.0094; x̄ chart 74.014 / 73.988 (both charts); R chart UCL 0.049;
/// s chart UCL 0.0196 (the book rounds x̿, R̄ and s̄ before the limits).
#[tokio::test]
async fn montgomerys_piston_rings_through_the_api() {
    let t0 = db().await;
    let app = app(&t0.pool);
    let rings: Vec<f64> = piston_rings();
    readings(&t0.pool, "R-ring", "diameter", 0, &rings).await;
    let set = |chart: &'static str| {
        post(
            &app,
            "/spc/limits",
            json!({"resource_id": "R-ring", "sensor": "diameter", "chart": chart,
                   "subgroup_size": 5, "baseline_from": iso(0), "baseline_to": iso(125)}),
        )
    };
    let r = set("xbar_r").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = r.body;
    assert_eq!(
        (r["chart"].as_str(), r["subgroup_size"].as_u64()),
        (Some("xbar_r"), Some(5))
    );
    assert_eq!(
        (
            r["baseline_points"].as_u64(),
            r["baseline_subgroups"].as_u64()
        ),
        (Some(125), Some(25))
    );
    close(&r["center_line"], 74.001, 5e-4, "x̿");
    close(&r["dispersion"]["center_line"], 0.023, 5e-4, "R̄");
    close(&r["ucl"], 74.014, 1e-3, "UCL");
    close(&r["lcl"], 73.988, 1e-3, "LCL");
    close(&r["dispersion"]["ucl"], 0.049, 5e-4, "R UCL");
    let s = set("xbar_s").await;
    assert_eq!(s.status, 201, "{}", s.body);
    let s = s.body;
    assert_eq!(s["version"], 1, "its own key");
    close(&s["dispersion"]["center_line"], 0.0094, 5e-5, "s̄");
    close(&s["ucl"], 74.014, 1e-3, "UCL");
    close(&s["lcl"], 73.988, 1e-3, "LCL");
    close(&s["dispersion"]["ucl"], 0.0196, 5e-5, "s UCL");
    close(&s["sigma_within"], 0.01, 5e-5, "σ = s̄/c4");
    // GET /spc without a chart takes the one set last, and the book's process is in control.
    let uri = format!(
        "/spc?resource_id=R-ring&sensor=diameter&from={}&to={}",
        iso(0),
        iso(125)
    );
    let report = get(&app, &uri).await.body;
    assert_eq!(report["chart"], "xbar_s", "{report}");
    assert_eq!(report["limits_source"], "stored");
    assert_eq!(report["subgroups"], 25);
    let beyond: Vec<&Value> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["nelson_rules"].as_array().unwrap().contains(&json!(1)))
        .collect();
    assert!(beyond.is_empty(), "{report}");
    assert_eq!(report["dispersion_violations"], json!([]));
}

/// Nelson rules 5–8 through the API, each on a crafted series under the baseline's stored
/// limits (x̄ = 10, σ = 0.1/1.128), values 10 + k·σ, and not on its near miss.
#[tokio::test]
async fn nelson_rules_5_to_8_fire_on_their_patterns_and_not_on_near_misses() {
    let t0 = db().await;
    let app = app(&t0.pool);
    readings(&t0.pool, "R-rules", "temp", 0, &baseline_values()).await;
    set_i_mr(&app, "R-rules", "temp", 0, 32).await;
    let alternating = |k: f64, n: usize| -> Vec<f64> {
        (0..n).map(|i| if i % 2 == 0 { k } else { -k }).collect()
    };
    let mut hugging: Vec<f64> = [0.5, 0.5, -0.5, -0.5].repeat(4);
    hugging.truncate(15);
    let mut escaping = hugging.clone();
    escaping[7] = 1.2;
    let mut entering = alternating(1.5, 8);
    entering[4] = 0.9;
    let cases: Vec<(u64, Vec<f64>, Option<usize>)> = vec![
        // 5: two of three beyond 2σ on one side; the near miss spreads them over four.
        (5, vec![2.1, 0.0, 2.2, 0.0], Some(2)),
        (5, vec![2.1, 0.0, 0.0, 2.2], None),
        // 6: four of five beyond 1σ on one side; the near miss has three.
        (6, vec![1.1, 1.2, 0.0, 1.5, 1.3], Some(4)),
        (6, vec![1.1, 1.2, 0.0, 1.5, 0.5], None),
        // 7: fifteen within 1σ; the near miss leaves it once.
        (7, hugging, Some(14)),
        (7, escaping, None),
        // 8: eight beyond 1σ on either side; the near miss enters once.
        (8, alternating(1.5, 8), Some(7)),
        (8, entering, None),
    ];
    for (i, (rule, ks, flagged)) in cases.into_iter().enumerate() {
        let start = 1000 * (i as i64 + 1);
        let values: Vec<f64> = ks.iter().map(|k| 10.0 + k * SIGMA).collect();
        readings(&t0.pool, "R-rules", "temp", start, &values).await;
        let r = chart(&app, "R-rules", start, start + values.len() as i64, "").await;
        assert_eq!(r["limits_source"], "stored");
        let with_rule: Vec<String> = r["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["nelson_rules"].as_array().unwrap().contains(&json!(rule)))
            .map(|v| v["ts"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = flagged.map(|k| iso(start + k as i64)).into_iter().collect();
        assert_eq!(with_rule, expected, "rule {rule}, series {ks:?}: {r}");
    }
}

/// A steady drift 1, 2, …, 20 against LSL 0 and USL 21: every moving range is 1, so σ within =
/// 1/1.128 = 0.8865248 and Cp = Cpk = 21/(6·0.8865248) = 3.948; σ overall = √35 = 5.9160798, so
/// Pp = Ppk = 21/(6·5.9160798) = 0.5916080. Capable in the short term, not over the window.
#[tokio::test]
async fn cp_cpk_from_sigma_within_beside_pp_ppk_from_sigma_overall() {
    let t0 = db().await;
    let app = app(&t0.pool);
    let drift: Vec<f64> = (1..=20).map(f64::from).collect();
    readings(&t0.pool, "R-cap", "temp", 0, &drift).await;
    sqlx::query("INSERT INTO spc_spec_limits (resource_id, sensor, lsl, usl) VALUES ('R-cap', 'temp', 0, 21)")
        .execute(&t0.pool)
        .await
        .unwrap();
    let r = chart(&app, "R-cap", 0, 20, "").await;
    let c = &r["capability"];
    close(&c["mean"], 10.5, 1e-12, "x̄");
    close(&c["sigma_within"], 1.0 / 1.128, 1e-12, "σ within");
    close(&c["sigma_overall"], 35f64.sqrt(), 1e-12, "σ overall");
    close(&c["cp"], 3.948, 1e-9, "Cp");
    close(&c["cpk"], 3.948, 1e-9, "Cpk");
    close(&c["pp"], 0.591_607_978, 1e-9, "Pp");
    close(&c["ppk"], 0.591_607_978, 1e-9, "Ppk");
    close(&c["lsl"], 0.0, 0.0, "LSL");
    // The drift is what the run rules see: six increasing from the sixth point on.
    let trend = rules_of(&r, "nelson_rules")
        .iter()
        .filter(|rules| rules.contains(&3))
        .count();
    assert_eq!(trend, 15, "{r}");
}

/// Montgomery, *Introduction to Statistical Quality Control*, Table 6.3: inside diameters (mm)
/// of forged piston rings, 25 samples of 5, in sample order.
fn piston_rings() -> Vec<f64> {
    include_str!("fixtures/piston-rings.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|v| v.parse::<f64>().expect("a number"))
        })
        .collect()
}
