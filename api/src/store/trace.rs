//! SQL of traceability: what happened on a resource during a run or a window — runs, counts,
//! downtime, reading statistics, the run active at an instant — and a run's readings as a stream.
//!
//! Readings are the high-volume table: every query here names the resource and bounds `ts`, so
//! it reads only the day partitions of the span and, in them, the series index
//! `readings_series_ts (resource_id, sensor, ts DESC)`. Runs and downtimes are found through
//! `op_run_resource_started` and `op_run_downtime_run`; no extra index is needed. Runs of one
//! resource never overlap (`op_run_no_overlap`), which two queries below rely on to stop after
//! one index probe.

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::runs::{DowntimeRow, RunRow, RUN_COLUMNS};
use super::StoreError;
use crate::domain::run::Run;

/// The count reports of one run, summed (over a window, where one is given).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CountTotals {
    pub op_run_id: Uuid,
    pub reports: i64,
    pub good_units: i64,
    pub scrap_units: i64,
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
}

/// Statistics of one sensor's readings over a span.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SensorStats {
    pub sensor: String,
    /// The smallest unit text of the span (a sensor normally keeps one).
    pub unit: Option<String>,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// `None` for one reading, or a deviation beyond a double.
    pub stddev: Option<f64>,
    pub first_ts: DateTime<Utc>,
    pub last_ts: DateTime<Utc>,
}

/// One row of `readings`, as exported.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReadingRow {
    pub ts: DateTime<Utc>,
    pub site: String,
    pub resource_id: String,
    pub sensor: String,
    pub value: f64,
    pub unit: Option<String>,
    pub work_order_id: Option<String>,
    pub operation_id: Option<String>,
}

/// Where a page of runs starts: after this run in `(started_at, op_run_id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPosition {
    pub started_at: DateTime<Utc>,
    pub op_run_id: Uuid,
}

/// A read-only transaction on one snapshot (`REPEATABLE READ`): the parts of one answer — runs,
/// their counts, downtimes and readings — are read at the same instant and agree.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub async fn work_order_exists<'e>(
    exec: impl PgExecutor<'e>,
    work_order_id: &str,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM work_orders WHERE work_order_id = $1)")
            .bind(work_order_id)
            .fetch_one(exec)
            .await?,
    )
}

/// Whether a run was ever started on the resource (which registers it).
pub async fn resource_registered<'e>(
    exec: impl PgExecutor<'e>,
    resource_id: &str,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM resources WHERE resource_id = $1)")
            .bind(resource_id)
            .fetch_one(exec)
            .await?,
    )
}

/// Count reports of each run with any, summed; only those at `[from, to)` when a window is given.
pub async fn count_totals<'e>(
    exec: impl PgExecutor<'e>,
    ids: &[Uuid],
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<Vec<CountTotals>, StoreError> {
    let (from, to) = window.unzip();
    Ok(sqlx::query_as(
        "SELECT op_run_id, count(*) AS reports, coalesce(sum(good_delta), 0)::int8 AS good_units,
                coalesce(sum(scrap_delta), 0)::int8 AS scrap_units, min(at) AS first_at,
                max(at) AS last_at
         FROM op_run_count
         WHERE op_run_id = ANY ($1)
           AND at >= coalesce($2, '-infinity'::timestamptz)
           AND at < coalesce($3, 'infinity'::timestamptz)
         GROUP BY op_run_id",
    )
    .bind(ids)
    .bind(from)
    .bind(to)
    .fetch_all(exec)
    .await?)
}

/// The aggregates of a [`SensorStats`] over readings `rd`.
const SENSOR_STATS: &str = "rd.sensor, min(rd.unit) AS unit, count(*) AS count,
    min(rd.value) AS min, max(rd.value) AS max,
    -- In numeric: float8 avg/stddev overflow (an error) on values near f64::MAX, which are valid
    -- readings; a result beyond float8 is reported as null.
    CASE WHEN abs(avg(rd.value::numeric)) <= 1.7976931348623157e308
         THEN avg(rd.value::numeric)::float8 END AS mean,
    CASE WHEN stddev_samp(rd.value::numeric) <= 1.7976931348623157e308
         THEN stddev_samp(rd.value::numeric)::float8 END AS stddev,
    min(rd.ts) AS first_ts, max(rd.ts) AS last_ts";

/// Per run and sensor: the readings of the run's resource from its start to its end (or now).
pub async fn sensor_stats_of_runs<'e>(
    exec: impl PgExecutor<'e>,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, SensorStats)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        op_run_id: Uuid,
        #[sqlx(flatten)]
        stats: SensorStats,
    }
    let sql = format!(
        "SELECT r.op_run_id, {SENSOR_STATS}
         FROM op_run r
         JOIN readings rd ON rd.resource_id = r.resource_id
                         AND rd.ts >= r.started_at AND rd.ts < coalesce(r.ended_at, now())
         WHERE r.op_run_id = ANY ($1)
         GROUP BY r.op_run_id, rd.sensor ORDER BY r.op_run_id, rd.sensor"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql).bind(ids).fetch_all(exec).await?;
    Ok(rows.into_iter().map(|r| (r.op_run_id, r.stats)).collect())
}

/// Per sensor, in sensor order: the readings of the resource at `[from, to)`.
pub async fn sensor_stats<'e>(
    exec: impl PgExecutor<'e>,
    resource_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SensorStats>, StoreError> {
    let sql = format!(
        "SELECT {SENSOR_STATS} FROM readings rd
         WHERE rd.resource_id = $1 AND rd.ts >= $2 AND rd.ts < $3
         GROUP BY rd.sensor ORDER BY rd.sensor"
    );
    Ok(sqlx::query_as(&sql)
        .bind(resource_id)
        .bind(from)
        .bind(to)
        .fetch_all(exec)
        .await?)
}

/// The sensors with readings of the resource at `[from, to)`, in order. A skip scan of the
/// series index (one probe per sensor and day partition), not a read of every reading.
pub async fn sensors<'e>(
    exec: impl PgExecutor<'e>,
    resource_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE s (sensor) AS (
             (SELECT sensor FROM readings
              WHERE resource_id = $1 AND ts >= $2 AND ts < $3 ORDER BY sensor LIMIT 1)
             UNION ALL
             SELECT (SELECT r.sensor FROM readings r
                     WHERE r.resource_id = $1 AND r.sensor > s.sensor AND r.ts >= $2 AND r.ts < $3
                     ORDER BY r.sensor LIMIT 1)
             FROM s WHERE s.sensor IS NOT NULL
         )
         SELECT sensor FROM s WHERE sensor IS NOT NULL",
    )
    .bind(resource_id)
    .bind(from)
    .bind(to)
    .fetch_all(exec)
    .await?)
}

/// The latest `max_points` readings of one sensor of the resource at `[from, to)`, oldest first.
pub async fn series<'e>(
    exec: impl PgExecutor<'e>,
    resource_id: &str,
    sensor: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    max_points: i64,
) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
    let mut rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT ts, value FROM readings
         WHERE resource_id = $1 AND sensor = $2 AND ts >= $3 AND ts < $4
         ORDER BY ts DESC LIMIT $5",
    )
    .bind(resource_id)
    .bind(sensor)
    .bind(from)
    .bind(to)
    .bind(max_points)
    .fetch_all(exec)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// One sensor's readings of the resource at `[from, to)` in time order, as the database sends
/// them (nothing is collected): a backward range scan of the series index, no sort.
pub fn readings_of_sensor<'c>(
    conn: &'c mut PgConnection,
    resource_id: String,
    sensor: String,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoxStream<'c, Result<ReadingRow, StoreError>> {
    sqlx::query_as(
        "SELECT ts, site, resource_id, sensor, value, unit, work_order_id, operation_id
         FROM readings
         WHERE resource_id = $1 AND sensor = $2 AND ts >= $3 AND ts < $4
         ORDER BY ts",
    )
    .bind(resource_id)
    .bind(sensor)
    .bind(from)
    .bind(to)
    .fetch(conn)
    .map(|row| row.map_err(StoreError::from))
    .boxed()
}

/// Runs of the resource active at some instant of `[from, to)` — started in it, or started
/// before and not ended by `from` — after `after`, in `(started_at, op_run_id)` order, at most
/// `limit`.
pub async fn runs_in_window<'e>(
    exec: impl PgExecutor<'e>,
    resource_id: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    after: Option<RunPosition>,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    // Of the runs started before `from`, only the last that is not empty can still be active at
    // `from` (runs of a resource never overlap), so the scan starts there and not at the
    // resource's first run.
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM op_run
         WHERE resource_id = $1
           AND started_at >= coalesce(
                 (SELECT max(started_at) FROM op_run p
                  WHERE p.resource_id = $1 AND p.started_at < $2
                    AND (p.ended_at IS NULL OR p.ended_at > p.started_at)),
                 $2)
           AND started_at < $3
           AND (started_at >= $2 OR ended_at IS NULL OR ended_at > $2)
           AND ($4::timestamptz IS NULL OR (started_at, op_run_id) > ($4, $5))
         ORDER BY started_at, op_run_id
         LIMIT $6"
    );
    let rows: Vec<RunRow> = sqlx::query_as(&sql)
        .bind(resource_id)
        .bind(from)
        .bind(to)
        .bind(after.map(|a| a.started_at))
        .bind(after.map(|a| a.op_run_id))
        .bind(limit)
        .fetch_all(exec)
        .await?;
    rows.into_iter().map(Run::try_from).collect()
}

/// The run of the resource whose `[started_at, ended_at)` contains `ts` (an open run: up to now
/// and beyond).
pub async fn run_at<'e>(
    exec: impl PgExecutor<'e>,
    resource_id: &str,
    ts: DateTime<Utc>,
) -> Result<Option<Run>, StoreError> {
    // Only the last run started at or before `ts` can contain it (runs of a resource never
    // overlap; an empty run contains no instant).
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM (
             SELECT {RUN_COLUMNS} FROM op_run
             WHERE resource_id = $1 AND started_at <= $2
               AND (ended_at IS NULL OR ended_at > started_at)
             ORDER BY started_at DESC LIMIT 1
         ) r
         WHERE ended_at IS NULL OR ended_at > $2"
    );
    let row: Option<RunRow> = sqlx::query_as(&sql)
        .bind(resource_id)
        .bind(ts)
        .fetch_optional(exec)
        .await?;
    row.map(Run::try_from).transpose()
}

const DOWNTIME_COLUMNS: &str = "d.op_run_id, d.id, d.reason_code, r.planned, r.loss_bucket, \
    d.started_at, d.ended_at, d.note";

#[derive(sqlx::FromRow)]
struct RunDowntime {
    op_run_id: Uuid,
    #[sqlx(flatten)]
    downtime: DowntimeRow,
}

/// The downtime of the run open at `ts` (`[started_at, ended_at)` contains it).
pub async fn downtime_at<'e>(
    exec: impl PgExecutor<'e>,
    op_run_id: Uuid,
    ts: DateTime<Utc>,
) -> Result<Option<DowntimeRow>, StoreError> {
    let sql = format!(
        "SELECT {DOWNTIME_COLUMNS}
         FROM op_run_downtime d JOIN downtime_reasons r USING (reason_code)
         WHERE d.op_run_id = $1 AND d.started_at <= $2 AND (d.ended_at IS NULL OR d.ended_at > $2)
         ORDER BY d.started_at DESC LIMIT 1"
    );
    let row: Option<RunDowntime> = sqlx::query_as(&sql)
        .bind(op_run_id)
        .bind(ts)
        .fetch_optional(exec)
        .await?;
    Ok(row.map(|r| r.downtime))
}

/// Downtimes of the runs that overlap `[from, to)` (as stored, not cut to the window), with the
/// run each belongs to, in start order.
pub async fn downtimes_in_window<'e>(
    exec: impl PgExecutor<'e>,
    ids: &[Uuid],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<(Uuid, DowntimeRow)>, StoreError> {
    let sql = format!(
        "SELECT {DOWNTIME_COLUMNS}
         FROM op_run_downtime d JOIN downtime_reasons r USING (reason_code)
         WHERE d.op_run_id = ANY ($1) AND d.started_at < $3
           AND (d.ended_at IS NULL OR d.ended_at > $2 OR d.started_at >= $2)
         ORDER BY d.started_at, d.id"
    );
    let rows: Vec<RunDowntime> = sqlx::query_as(&sql)
        .bind(ids)
        .bind(from)
        .bind(to)
        .fetch_all(exec)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.op_run_id, r.downtime))
        .collect())
}
