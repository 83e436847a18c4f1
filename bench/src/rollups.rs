//! Part "rollups" (issue 16): a 30-day panel query on raw readings against the rollups
//! (`readings_1m`, `readings_1h`, migration 0023), and what keeping the rollups costs.
//!
//! `--rollup-days` whole UTC days up to yesterday of `--rollup-series` series (resource × sensor), one
//! reading every 10 s each, are inserted server-side into the daily partitions, one transaction
//! per day with its ledger entry, as the worker's loads write them (which queues the day for the
//! rollups). Then, timed:
//! - the refresh of the whole range (`edge_mes_refresh_rollups`, what the worker's upkeep calls);
//! - a live refresh: one more minute of every series loaded, then refreshed;
//! - the panel query, avg per hour of one series over the whole range as the live-sensors
//!   dashboard's mean panel runs it, from the raw readings, from `readings_1h` and from
//!   `readings_1m`: one warm-up and [`RUNS`] timed runs each (warm cache: the panel as a user
//!   reloads it), median and fastest.
//!
//! Checked: the rollups count every row exactly once (sum of n = rows), and the three queries
//! return the same hours with the same means (to 1e-9 relative).

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Days, NaiveDate, Utc};
use tracing::info;

use crate::report::Check;
use crate::stack::Bench;

/// Timed runs of each panel query (after one warm-up).
const RUNS: usize = 7;
/// Seconds between two readings of a series.
const STEP_S: i64 = 10;

/// One panel query's timings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PanelTiming {
    pub source: &'static str,
    /// Rows the query reads (raw readings or rollup buckets of the series in the range).
    pub rows_read: u64,
    pub median_ms: f64,
    pub fastest_ms: f64,
}

/// The rollups part's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollupsReport {
    pub days: u32,
    pub series: u32,
    pub rows: u64,
    pub load_secs: f64,
    /// `edge_mes_refresh_rollups` over the whole range.
    pub refresh_secs: f64,
    pub refresh_rows_per_sec: f64,
    /// One minute of every series loaded, then refreshed.
    pub live_refresh_ms: f64,
    pub rows_1m: u64,
    pub rows_1h: u64,
    pub panels: Vec<PanelTiming>,
}

/// `ts` as Grafana writes it into a query: an RFC 3339 literal.
fn literal(ts: DateTime<Utc>) -> String {
    format!(
        "'{}'",
        ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The panel query over `source`: avg per `bucket_s` of one series in `[from, to]`, as the
/// dashboard's branches (with literals, as Grafana sends it).
fn panel_sql(source: &str, bucket_s: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let (from, to) = (literal(from), literal(to));
    let (ts, mean, table) = match source {
        "readings" => ("ts", "avg(value::numeric)::float8", "readings"),
        rollup => (
            "bucket",
            "(sum(mean::numeric * n) / sum(n))::float8",
            rollup,
        ),
    };
    format!(
        "SELECT (floor(extract(epoch FROM {ts}) / {bucket_s}) * {bucket_s})::float8 AS \"time\",
                resource_id AS metric,
                {mean} AS value
         FROM {table}
         WHERE {ts} BETWEEN {from} AND {to}
           AND resource_id IN ('R0') AND sensor IN ('s0') AND site IN ('S1')
         GROUP BY 1, 2
         ORDER BY 1"
    )
}

/// Runs the part.
pub async fn run(bench: &Bench) -> anyhow::Result<(RollupsReport, Vec<Check>)> {
    let days = bench.config.rollup_days();
    let series = bench.config.rollup_series();
    let dep = bench.deploy("rollups").await?;
    let today = Utc::now().date_naive();
    let first = today
        .checked_sub_days(Days::new(u64::from(days)))
        .context("first day")?;
    sqlx::query("SELECT edge_mes_ensure_partitions($1, $2)")
        .bind(first)
        .bind(today)
        .execute(&dep.pool)
        .await?;
    sqlx::query("SELECT setseed(0.25)")
        .execute(&dep.pool)
        .await?;

    let started = Instant::now();
    let per_day = 86_400 / STEP_S;
    for (i, day) in first.iter_days().take(days as usize).enumerate() {
        load_day(&dep.pool, day, i, series, per_day).await?;
    }
    sqlx::query("VACUUM ANALYZE readings")
        .execute(&dep.pool)
        .await?;
    let load_secs = started.elapsed().as_secs_f64();
    let rows = count(&dep.pool, "SELECT count(*) FROM readings").await?;
    info!(rows, days, series, secs = load_secs, "readings loaded");

    bench.servers.checkpoint().await?;
    let t0 = Instant::now();
    let mut ranges = 0;
    loop {
        let done: i32 = sqlx::query_scalar("SELECT edge_mes_refresh_rollups(1000)")
            .fetch_one(&dep.pool)
            .await
            .context("refresh the rollups")?;
        ranges += done;
        if done == 0 {
            break;
        }
    }
    let refresh_secs = t0.elapsed().as_secs_f64();
    info!(ranges, secs = refresh_secs, "rollups refreshed");
    sqlx::query("VACUUM ANALYZE readings_1m, readings_1h")
        .execute(&dep.pool)
        .await?;

    // The upkeep's usual cycle: the newest minute of every series, then a refresh.
    sqlx::query(
        "WITH rows AS (
             INSERT INTO readings (ts, site, resource_id, sensor, value)
             SELECT date_trunc('minute', now()) + make_interval(secs => k * $2),
                    'S1', 'R' || (s / 2), 's' || (s % 2), round((random() * 100)::numeric, 2)
             FROM generate_series(0, $1 - 1) AS s, generate_series(0, 60 / $2 - 1) AS k
             RETURNING ts)
         INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded,
                                    rejected, min_ts, max_ts)
         SELECT 'bench/rollups/live', int8range(0, count(*)), 'S1', 'b0', '/bench', count(*),
                count(*), 0, min(ts), max(ts)
         FROM rows",
    )
    .bind(i64::from(series))
    .bind(STEP_S)
    .execute(&dep.pool)
    .await?;
    let t1 = Instant::now();
    sqlx::query("SELECT edge_mes_refresh_rollups(1000)")
        .execute(&dep.pool)
        .await?;
    let live_refresh_ms = t1.elapsed().as_secs_f64() * 1e3;
    let rows = count(&dep.pool, "SELECT count(*) FROM readings").await?;

    let from = first.and_hms_opt(0, 0, 0).context("midnight")?.and_utc();
    // The whole days loaded (the last second included), so every bucket is whole on both sides.
    let to =
        today.and_hms_opt(0, 0, 0).context("midnight")?.and_utc() - chrono::Duration::seconds(1);
    let mut panels: Vec<PanelTiming> = Vec::new();
    let mut results = Vec::new();
    for source in ["readings", "readings_1h", "readings_1m"] {
        let sql = panel_sql(source, 3600, from, to);
        let (mut timing, result) = time_panel(&dep.pool, source, &sql).await?;
        timing.rows_read = rows_read(&dep.pool, source, from, to).await?;
        info!(source, median_ms = timing.median_ms, "panel query timed");
        panels.push(timing);
        results.push(result);
    }

    // The dashboard's own query as Grafana sends it: at a 1 h interval (readings_1h) and at the
    // 30 min Grafana picks for 30 days at 1000 points (readings_1m).
    let mut dashboard_checks = Vec::new();
    for (interval_s, table) in [(3600, "readings_1h"), (1800, "readings_1m")] {
        let sql = dashboard_panel_sql(interval_s, from, to)?;
        let wrapped = format!("SELECT \"time\"::float8, metric, value FROM ({sql}) q");
        let source = if interval_s == 3600 {
            "dashboard query, 1 h interval"
        } else {
            "dashboard query, 30 min interval"
        };
        let (mut timing, result) = time_panel(&dep.pool, source, &wrapped).await?;
        timing.rows_read = panels
            .iter()
            .find(|p| p.source == table)
            .map_or(0, |p| p.rows_read);
        let raw = if interval_s == 3600 {
            results[0].clone()
        } else {
            let sql = panel_sql("readings", 1800, from, to);
            time_panel(&dep.pool, "readings", &sql).await?.1
        };
        dashboard_checks.push(Check::equal(
            format!("rollups: {source}: hours that differ from raw"),
            0,
            differing(&raw, &result),
        ));
        let scanned = scanned_tables(&dep.pool, &sql).await?;
        dashboard_checks.push(Check::equal(
            format!("rollups: {source}: tables scanned other than {table} ({scanned:?})"),
            0,
            scanned.iter().filter(|t| *t != table).count() as u64,
        ));
        panels.push(timing);
    }

    let rollup_n = |table: &str| format!("SELECT coalesce(sum(n), 0)::int8 FROM {table}");
    let mut checks = vec![
        Check::equal(
            "rollups: sum of n in readings_1m = readings",
            rows,
            count(&dep.pool, &rollup_n("readings_1m")).await?,
        ),
        Check::equal(
            "rollups: sum of n in readings_1h = readings",
            rows,
            count(&dep.pool, &rollup_n("readings_1h")).await?,
        ),
        Check::equal(
            "rollups: panel hours from readings_1h that differ from raw",
            0,
            differing(&results[0], &results[1]),
        ),
        Check::equal(
            "rollups: panel hours from readings_1m that differ from raw",
            0,
            differing(&results[0], &results[2]),
        ),
    ];
    checks.extend(dashboard_checks);
    let report = RollupsReport {
        days,
        series,
        rows,
        load_secs,
        refresh_secs,
        refresh_rows_per_sec: rows as f64 / refresh_secs.max(1e-9),
        live_refresh_ms,
        rows_1m: count(&dep.pool, "SELECT count(*) FROM readings_1m").await?,
        rows_1h: count(&dep.pool, "SELECT count(*) FROM readings_1h").await?,
        panels,
    };
    let last = today.pred_opt().context("yesterday")?;
    println!("{}", render(&report, first, last));
    bench.retire(dep).await?;
    Ok((report, checks))
}

/// One day of every series, with its ledger entry, in one transaction.
async fn load_day(
    pool: &sqlx::PgPool,
    day: NaiveDate,
    index: usize,
    series: u32,
    per_day: i64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value, unit)
         SELECT $1::date::timestamp AT TIME ZONE 'UTC' + make_interval(secs => k * $4),
                'S1', 'R' || (s / 2), 's' || (s % 2),
                round((50 + 10 * sin(k / 500.0) + random() * 5)::numeric, 2), 'C'
         FROM generate_series(0, $2 - 1) AS s, generate_series(0, $3 - 1) AS k",
    )
    .bind(day)
    .bind(i64::from(series))
    .bind(per_day)
    .bind(STEP_S)
    .execute(&mut *tx)
    .await
    .with_context(|| format!("insert the readings of {day}"))?;
    let lines = i64::from(series) * per_day;
    let start = i64::try_from(index)? * lines;
    sqlx::query(
        "INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded,
                                    rejected, min_ts, max_ts)
         VALUES ('bench/rollups', int8range($1, $1 + $2), 'S1', 'b0', '/bench', $2, $2, 0,
                 $3::date::timestamp AT TIME ZONE 'UTC',
                 $3::date::timestamp AT TIME ZONE 'UTC' + make_interval(secs => ($4 - 1) * $5))",
    )
    .bind(start)
    .bind(lines)
    .bind(day)
    .bind(per_day)
    .bind(STEP_S)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The live-sensors dashboard's mean panel (id 4) as Grafana sends it for `[from, to]` at
/// `interval_s`: interval, range, time filter and time groups put in (the plain PostgreSQL form
/// of the macros), the series R0/s0 of site S1 selected.
fn dashboard_panel_sql(
    interval_s: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<String> {
    let path = testkit::bins::workspace_root().join("grafana/dashboards/live-sensors.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let sql = dashboard["panels"]
        .as_array()
        .and_then(|panels| panels.iter().find(|p| p["id"] == 4))
        .and_then(|p| p["targets"][0]["rawSql"].as_str())
        .context("live-sensors.json: no panel 4 with a rawSql target")?;
    let group = |col: &str| {
        format!("floor(extract(epoch from {col})/{interval_s})*{interval_s} AS \"time\"")
    };
    let filter = |col: &str| format!("{col} BETWEEN {} AND {}", literal(from), literal(to));
    let mut sql = sql.to_owned();
    for (name, value) in [
        ("$__timeGroupAlias(ts, $__interval)", group("ts")),
        ("$__timeGroupAlias(bucket, $__interval)", group("bucket")),
        ("$__timeFilter(ts)", filter("ts")),
        ("$__timeFilter(bucket)", filter("bucket")),
        ("$__interval_ms", (interval_s * 1000).to_string()),
        ("$__range_ms", (to - from).num_milliseconds().to_string()),
        ("($resource)", "('R0')".to_owned()),
        ("($sensor)", "('s0')".to_owned()),
        ("($site)", "('S1')".to_owned()),
    ] {
        sql = sql.replace(name, &value);
    }
    if sql.contains('$') {
        anyhow::bail!("live-sensors.json panel 4: a macro or variable left in {sql}");
    }
    Ok(sql)
}

/// The tables (or partitions) `sql` actually scans: the relations in its executed plan.
async fn scanned_tables(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<Vec<String>> {
    let plan: serde_json::Value =
        sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
            .fetch_one(pool)
            .await?;
    fn walk(node: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(name) = node["Relation Name"].as_str() {
            if node["Actual Loops"].as_u64().unwrap_or(0) > 0 {
                out.push(name.to_owned());
            }
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(&plan[0]["Plan"], &mut out);
    out.sort();
    out.dedup();
    Ok(out)
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

type PanelRows = Vec<(f64, f64)>;

async fn time_panel(
    pool: &sqlx::PgPool,
    source: &'static str,
    sql: &str,
) -> anyhow::Result<(PanelTiming, PanelRows)> {
    let mut times = Vec::new();
    let mut result = Vec::new();
    for run in 0..=RUNS {
        let t = Instant::now();
        // Not prepared: planned with its literals every time, as Grafana's queries are.
        let rows: Vec<(f64, String, f64)> = sqlx::query_as(sql)
            .persistent(false)
            .fetch_all(pool)
            .await
            .with_context(|| format!("panel query on {source}"))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if run > 0 {
            times.push(ms);
        }
        result = rows.into_iter().map(|(t, _, v)| (t, v)).collect();
    }
    times.sort_by(f64::total_cmp);
    Ok((
        PanelTiming {
            source,
            rows_read: 0,
            median_ms: times[(times.len() - 1) / 2],
            fastest_ms: times[0],
        },
        result,
    ))
}

/// Rows of series R0/s0 in `[from, to]` in `source` (raw readings or rollup buckets).
async fn rows_read(
    pool: &sqlx::PgPool,
    source: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let ts = if source == "readings" { "ts" } else { "bucket" };
    count(
        pool,
        &format!(
            "SELECT count(*) FROM {source} WHERE {ts} BETWEEN {} AND {}
             AND resource_id = 'R0' AND sensor = 's0' AND site = 'S1'",
            literal(from),
            literal(to)
        ),
    )
    .await
}

/// Hours missing on either side or whose means differ by more than 1e-9 relative.
fn differing(raw: &PanelRows, rollup: &PanelRows) -> u64 {
    let mut differing = raw.len().abs_diff(rollup.len()) as u64;
    for ((t1, v1), (t2, v2)) in raw.iter().zip(rollup) {
        if t1 != t2 || (v1 - v2).abs() > 1e-9 * v1.abs().max(1.0) {
            differing += 1;
        }
    }
    differing
}

/// The part's table (Markdown, as BENCHMARKS.md shows it).
pub fn render(r: &RollupsReport, first: NaiveDate, last: NaiveDate) -> String {
    let mut out = format!(
        "#### Rollups ({} days, {first} to {last}; {} series, one reading per {STEP_S} s)\n\n\
         | rows | load s | refresh s (rows/s) | live refresh ms (1 min × {} series) | \
         readings_1m rows | readings_1h rows |\n\
         |---|---|---|---|---|---|\n\
         | {} | {:.1} | {:.1} ({:.0}) | {:.1} | {} | {} |\n\n\
         Panel query: avg per hour of one series over the {} days ({} runs after a warm-up)\n\n\
         | source | rows read | median ms | fastest ms | median vs raw |\n\
         |---|---|---|---|---|\n",
        r.days,
        r.series,
        r.series,
        r.rows,
        r.load_secs,
        r.refresh_secs,
        r.refresh_rows_per_sec,
        r.live_refresh_ms,
        r.rows_1m,
        r.rows_1h,
        r.days,
        RUNS,
    );
    let raw = r.panels.first().map_or(f64::NAN, |p| p.median_ms);
    for p in &r.panels {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.0}× faster |\n",
            p.source,
            p.rows_read,
            p.median_ms,
            p.fastest_ms,
            raw / p.median_ms.max(1e-9),
        ));
    }
    out
}
