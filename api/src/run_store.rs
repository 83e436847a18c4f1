//! SQL of the run lifecycle. Every change locks its run row (`FOR UPDATE`), so reports, pauses
//! and the completion of one run serialize while different runs proceed in parallel; each change
//! writes its run event to the outbox in the same transaction.

use chrono::{DateTime, Utc};
use protocol::run_event::{
    CountDelta, DowntimeInfo, RunEvent, RunEventType, RUN_EVENT_SCHEMA_VERSION,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

const RUN_COLUMNS: &str = "op_run_id, work_order_id, operation_id, resource_id, site_id, status, \
    started_at, ended_at, planned_seconds, ideal_cycle_time_s, good_units, scrap_units";

/// One `op_run` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub op_run_id: Uuid,
    pub work_order_id: String,
    pub operation_id: String,
    pub resource_id: String,
    pub site_id: Option<String>,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    pub good_units: i64,
    pub scrap_units: i64,
}

impl RunRow {
    pub fn is_open(&self) -> bool {
        self.status == "running" || self.status == "paused"
    }
}

/// One `op_run_downtime` row with its reason's classification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DowntimeRow {
    pub id: i64,
    pub reason_code: String,
    pub planned: bool,
    pub loss_bucket: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

impl DowntimeRow {
    pub fn info(&self) -> DowntimeInfo {
        DowntimeInfo {
            downtime_id: self.id,
            reason_code: self.reason_code.clone(),
            planned: self.planned,
            loss_bucket: self.loss_bucket.clone(),
            started_at: self.started_at,
            ended_at: self.ended_at,
        }
    }
}

pub struct NewRun<'a> {
    pub op_run_id: Uuid,
    pub work_order_id: &'a str,
    pub operation_id: &'a str,
    pub resource_id: &'a str,
    pub site_id: Option<&'a str>,
    pub default_site: &'a str,
    pub started_at: DateTime<Utc>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
}

/// Registers the resource and work order if new and inserts the run.
pub async fn insert_run(tx: &mut PgConnection, new: &NewRun<'_>) -> Result<RunRow, ApiError> {
    // The resource's site wins when it has one; a request naming another site is refused.
    let site: Option<String> = sqlx::query_scalar(
        "INSERT INTO resources (resource_id, site_id) VALUES ($1, coalesce($2, $3))
         ON CONFLICT (resource_id) DO UPDATE SET site_id = coalesce(resources.site_id, excluded.site_id)
         RETURNING site_id",
    )
    .bind(new.resource_id)
    .bind(new.site_id)
    .bind(new.default_site)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => ApiError::invalid(
            "site_id",
            format!(
                "unknown site {:?} (add it to table sites with its time zone)",
                new.site_id.unwrap_or(new.default_site)
            ),
        ),
        _ => e.into(),
    })?;
    if let (Some(asked), Some(registered)) = (new.site_id, site.as_deref()) {
        if asked != registered {
            return Err(ApiError::Conflict {
                field: Some("site_id".to_owned()),
                detail: format!(
                    "site_id: resource {:?} belongs to site {registered:?}, not {asked:?}",
                    new.resource_id
                ),
            });
        }
    }
    sqlx::query("INSERT INTO work_orders (work_order_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(new.work_order_id)
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        "INSERT INTO op_run (op_run_id, work_order_id, operation_id, resource_id, site_id, status,
                             started_at, planned_seconds, ideal_cycle_time_s)
         VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8)
         RETURNING {RUN_COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(new.op_run_id)
        .bind(new.work_order_id)
        .bind(new.operation_id)
        .bind(new.resource_id)
        .bind(site)
        .bind(new.started_at)
        .bind(new.planned_seconds)
        .bind(new.ideal_cycle_time_s)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                ApiError::Conflict {
                    field: Some("op_run_id".to_owned()),
                    detail: format!("op_run_id: run {} already exists", new.op_run_id),
                }
            }
            _ => e.into(),
        })
}

/// The run, locked for the rest of the transaction; 404 if there is none.
pub async fn lock_run(tx: &mut PgConnection, id: Uuid) -> Result<RunRow, ApiError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM op_run WHERE op_run_id = $1 FOR UPDATE");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("op_run_id: no run {id}")))
}

pub async fn get_run<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<RunRow>, ApiError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM op_run WHERE op_run_id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(exec).await?)
}

pub async fn active_runs(pool: &sqlx::PgPool) -> Result<Vec<RunRow>, ApiError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM op_run WHERE status IN ('running', 'paused')
         ORDER BY started_at, op_run_id"
    );
    Ok(sqlx::query_as(&sql).fetch_all(pool).await?)
}

const DOWNTIME_SELECT: &str =
    "SELECT d.id, d.reason_code, r.planned, r.loss_bucket, d.started_at, \
    d.ended_at, d.note FROM op_run_downtime d JOIN downtime_reasons r USING (reason_code)";

pub async fn downtimes<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> Result<Vec<DowntimeRow>, ApiError> {
    let sql = format!("{DOWNTIME_SELECT} WHERE d.op_run_id = $1 ORDER BY d.started_at");
    Ok(sqlx::query_as(&sql).bind(id).fetch_all(exec).await?)
}

pub async fn runs_of_work_order(
    tx: &mut PgConnection,
    work_order_id: &str,
) -> Result<Vec<RunRow>, ApiError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM op_run WHERE work_order_id = $1 ORDER BY started_at, op_run_id"
    );
    Ok(sqlx::query_as(&sql)
        .bind(work_order_id)
        .fetch_all(&mut *tx)
        .await?)
}

/// Downtimes of several runs, with the run each belongs to.
pub async fn downtimes_of_runs(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, DowntimeRow)>, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        op_run_id: Uuid,
        #[sqlx(flatten)]
        downtime: DowntimeRow,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.op_run_id, d.id, d.reason_code, r.planned, r.loss_bucket, d.started_at,
                d.ended_at, d.note
         FROM op_run_downtime d JOIN downtime_reasons r USING (reason_code)
         WHERE d.op_run_id = ANY ($1) ORDER BY d.started_at",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.op_run_id, r.downtime))
        .collect())
}

pub async fn open_downtime(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<DowntimeRow>, ApiError> {
    let sql = format!("{DOWNTIME_SELECT} WHERE d.op_run_id = $1 AND d.ended_at IS NULL");
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?)
}

/// Latest end of a closed downtime of the run.
pub async fn last_downtime_end(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    Ok(
        sqlx::query_scalar("SELECT max(ended_at) FROM op_run_downtime WHERE op_run_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// Time of the run's latest count report.
pub async fn last_report_at(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    Ok(
        sqlx::query_scalar("SELECT max(at) FROM op_run_count WHERE op_run_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// `(planned, loss_bucket)` of a reason code, if it exists.
pub async fn reason(tx: &mut PgConnection, code: &str) -> Result<Option<(bool, String)>, ApiError> {
    Ok(
        sqlx::query_as("SELECT planned, loss_bucket FROM downtime_reasons WHERE reason_code = $1")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?,
    )
}

/// The report hot path: one statement (one round trip, autocommit without an Idempotency-Key)
/// adds the counts to the run's totals under its row lock, inserts the time-stamped count row and
/// the `reported` event, and returns the run. The event JSON is built here in SQL; tests decode
/// every outbox payload as `protocol::RunEvent`, so it cannot drift from the schema. A report
/// that changes nothing (unknown run, run not open, `at` before the start) returns no row; only
/// then does a second query find out why.
const REPORT_SQL: &str = "
WITH upd AS (
    UPDATE op_run SET good_units = good_units + $2, scrap_units = scrap_units + $3,
                      updated_at = now()
    WHERE op_run_id = $1 AND status IN ('running', 'paused') AND started_at <= $4
    RETURNING op_run_id, work_order_id, operation_id, resource_id, site_id, status, started_at,
              ended_at, planned_seconds, ideal_cycle_time_s, good_units, scrap_units
), report AS (
    INSERT INTO op_run_count (op_run_id, at, good_delta, scrap_delta, kind)
    SELECT op_run_id, $4, $2, $3, 'report' FROM upd
), event AS (
    INSERT INTO outbox (op_run_id, event_type, site_id, resource_id, payload)
    SELECT op_run_id, 'reported', coalesce(site_id, $5), resource_id,
           jsonb_build_object(
               'schema_version', $7::int, 'event_id', $6::text, 'event_type', 'reported',
               'occurred_at', $4::timestamptz, 'recorded_at', clock_timestamp(),
               'op_run_id', op_run_id, 'work_order_id', work_order_id,
               'operation_id', operation_id, 'resource_id', resource_id,
               'site_id', coalesce(site_id, $5), 'status', status, 'started_at', started_at,
               'ended_at', ended_at, 'planned_seconds', planned_seconds,
               'ideal_cycle_time_s', ideal_cycle_time_s, 'good_units', good_units,
               'scrap_units', scrap_units,
               'delta', jsonb_build_object('good_delta', $2::int8, 'scrap_delta', $3::int8),
               'downtime', NULL::jsonb)
    FROM upd
)
SELECT op_run_id, work_order_id, operation_id, resource_id, site_id, status, started_at,
       ended_at, planned_seconds, ideal_cycle_time_s, good_units, scrap_units
FROM upd";

/// Counts `delta` at `at` on run `id`; the run with its new totals. 404 for an unknown run, 409
/// for a run that is not open (also one completed concurrently), 422 for `at` before its start.
pub async fn report(
    conn: &mut PgConnection,
    id: Uuid,
    delta: CountDelta,
    at: DateTime<Utc>,
    default_site: &str,
) -> Result<RunRow, ApiError> {
    let counted: Option<RunRow> = sqlx::query_as(REPORT_SQL)
        .bind(id)
        .bind(delta.good_delta)
        .bind(delta.scrap_delta)
        .bind(at)
        .bind(default_site)
        .bind(Uuid::now_v7().to_string())
        .bind(RUN_EVENT_SCHEMA_VERSION as i32)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(run) = counted {
        return Ok(run);
    }
    // Nothing was written; say why. Runs never reopen, so the state read now explains the refusal.
    let prior: Option<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT status, started_at FROM op_run WHERE op_run_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Err(match prior {
        None => ApiError::NotFound(format!("op_run_id: no run {id}")),
        Some((_, start)) if at < start => {
            ApiError::invalid("at", format!("{at} is before the run's start ({start})"))
        }
        Some((status, _)) => ApiError::Conflict {
            field: Some("op_run_id".to_owned()),
            detail: format!(
                "op_run_id: run {id} is {}",
                match status.as_str() {
                    "running" | "paused" => "no longer open",
                    other => other,
                }
            ),
        },
    })
}

pub async fn insert_downtime(
    tx: &mut PgConnection,
    id: Uuid,
    reason_code: &str,
    at: DateTime<Utc>,
    note: Option<&str>,
) -> Result<i64, ApiError> {
    sqlx::query_scalar(
        "INSERT INTO op_run_downtime (op_run_id, reason_code, started_at, note)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id)
    .bind(reason_code)
    .bind(at)
    .bind(note)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23P01") => ApiError::Conflict {
            field: Some("at".to_owned()),
            detail: "at: overlaps an earlier downtime of this run".to_owned(),
        },
        _ => e.into(),
    })
}

pub async fn close_downtime(
    tx: &mut PgConnection,
    downtime_id: i64,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query("UPDATE op_run_downtime SET ended_at = $2 WHERE id = $1")
        .bind(downtime_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Writes the run's new status, end and totals.
pub async fn update_run(tx: &mut PgConnection, run: &RunRow) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE op_run SET status = $2, ended_at = $3, good_units = $4, scrap_units = $5,
                           updated_at = now()
         WHERE op_run_id = $1",
    )
    .bind(run.op_run_id)
    .bind(&run.status)
    .bind(run.ended_at)
    .bind(run.good_units)
    .bind(run.scrap_units)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The final-counter adjustment of a completion, as a count row at the run's end.
pub async fn insert_final_count(
    tx: &mut PgConnection,
    id: Uuid,
    at: DateTime<Utc>,
    delta: CountDelta,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO op_run_count (op_run_id, at, good_delta, scrap_delta, kind)
         VALUES ($1, $2, $3, $4, 'final')",
    )
    .bind(id)
    .bind(at)
    .bind(delta.good_delta)
    .bind(delta.scrap_delta)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn insert_event(tx: &mut PgConnection, event: &RunEvent) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO outbox (op_run_id, event_type, site_id, resource_id, payload)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(
        Uuid::parse_str(&event.op_run_id)
            .map_err(|e| ApiError::Internal(format!("bad run id in event: {e}")))?,
    )
    .bind(event.event_type.as_str())
    .bind(&event.site_id)
    .bind(&event.resource_id)
    .bind(sqlx::types::Json(event))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The event describing `run` after a change.
pub fn event(
    run: &RunRow,
    default_site: &str,
    event_type: RunEventType,
    occurred_at: DateTime<Utc>,
    delta: Option<CountDelta>,
    downtime: Option<DowntimeInfo>,
) -> RunEvent {
    RunEvent {
        schema_version: RUN_EVENT_SCHEMA_VERSION,
        event_id: Uuid::now_v7().to_string(),
        event_type,
        occurred_at,
        recorded_at: Utc::now(),
        op_run_id: run.op_run_id.to_string(),
        work_order_id: run.work_order_id.clone(),
        operation_id: run.operation_id.clone(),
        resource_id: run.resource_id.clone(),
        site_id: run
            .site_id
            .clone()
            .unwrap_or_else(|| default_site.to_owned()),
        status: run.status.clone(),
        started_at: run.started_at,
        ended_at: run.ended_at,
        planned_seconds: run.planned_seconds,
        ideal_cycle_time_s: run.ideal_cycle_time_s,
        good_units: run.good_units,
        scrap_units: run.scrap_units,
        delta,
        downtime,
    }
}
