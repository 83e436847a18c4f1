//! `GET /trace/work_order/{id}`: traceability of a work order — its runs, their counts and
//! downtime, and per-sensor summaries of the readings its resources produced during its runs.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::extract::parse_ident;
use crate::run_schema::{Downtime, Run};
use crate::state::AppState;
use crate::store::runs::{self as run_store, DowntimeRow};

/// Readings of one sensor during one run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct SensorSummary {
    pub sensor: String,
    pub unit: Option<String>,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Sample standard deviation; `null` for a single reading.
    pub stddev: Option<f64>,
    pub first_ts: DateTime<Utc>,
    pub last_ts: DateTime<Utc>,
}

/// Count reports of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct CountSummary {
    pub reports: i64,
    pub good_units: i64,
    pub scrap_units: i64,
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TracedRun {
    #[serde(flatten)]
    pub run: Run,
    pub counts: CountSummary,
    pub downtime: Vec<Downtime>,
    /// Readings of the run's resource between its start and its end (or now).
    pub sensors: Vec<SensorSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkOrderTrace {
    pub work_order_id: String,
    pub runs: Vec<TracedRun>,
    pub good_units: i64,
    pub scrap_units: i64,
    pub downtime_seconds: f64,
}

/// Runs, counts, downtime and sensor summaries of a work order.
#[utoipa::path(get, path = "/trace/work_order/{work_order_id}", tag = "kpi",
    params(("work_order_id" = crate::domain::Ident, Path, description = "work order id")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "traceability record", body = WorkOrderTrace),
        (status = 400, description = "not an identifier (empty, control characters, longer than 128 bytes)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown work order", body = Problem, content_type = "application/problem+json")))]
pub async fn work_order(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkOrderTrace>, ApiError> {
    let Path(work_order_id) =
        path.map_err(|e| ApiError::malformed("work_order_id", e.body_text()))?;
    let work_order_id = String::from(parse_ident("work_order_id", &work_order_id)?);
    let mut tx = state.pool.begin().await?;
    let runs = run_store::runs_of_work_order(&mut tx, &work_order_id).await?;
    if runs.is_empty() {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM work_orders WHERE work_order_id = $1)",
        )
        .bind(&work_order_id)
        .fetch_one(&mut *tx)
        .await?;
        if !known {
            return Err(ApiError::NotFound(format!(
                "work_order_id: no work order {work_order_id:?}"
            )));
        }
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| r.op_run_id).collect();
    #[derive(sqlx::FromRow)]
    struct CountRow {
        op_run_id: Uuid,
        #[sqlx(flatten)]
        summary: CountSummary,
    }
    let counts: Vec<CountRow> = sqlx::query_as(
        "SELECT op_run_id, count(*) AS reports, coalesce(sum(good_delta), 0)::int8 AS good_units,
                coalesce(sum(scrap_delta), 0)::int8 AS scrap_units, min(at) AS first_at,
                max(at) AS last_at
         FROM op_run_count WHERE op_run_id = ANY ($1) GROUP BY op_run_id",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let downtime: Vec<(Uuid, DowntimeRow)> = run_store::downtimes_of_runs(&mut tx, &ids).await?;
    #[derive(sqlx::FromRow)]
    struct SensorRow {
        op_run_id: Uuid,
        #[sqlx(flatten)]
        summary: SensorSummary,
    }
    let sensors: Vec<SensorRow> = sqlx::query_as(
        "SELECT r.op_run_id, rd.sensor, min(rd.unit) AS unit, count(*) AS count,
                min(rd.value) AS min, max(rd.value) AS max,
                -- In numeric: float8 avg/stddev overflow (an error) on values near f64::MAX,
                -- which are valid readings; a result beyond float8 is reported as null.
                CASE WHEN abs(avg(rd.value::numeric)) <= 1.7976931348623157e308
                     THEN avg(rd.value::numeric)::float8 END AS mean,
                CASE WHEN stddev_samp(rd.value::numeric) <= 1.7976931348623157e308
                     THEN stddev_samp(rd.value::numeric)::float8 END AS stddev,
                min(rd.ts) AS first_ts, max(rd.ts) AS last_ts
         FROM op_run r
         JOIN readings rd ON rd.resource_id = r.resource_id
                         AND rd.ts >= r.started_at AND rd.ts < coalesce(r.ended_at, now())
         WHERE r.op_run_id = ANY ($1)
         GROUP BY r.op_run_id, rd.sensor ORDER BY r.op_run_id, rd.sensor",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut total_down = 0.0;
    let now = Utc::now();
    let traced: Vec<TracedRun> = runs
        .into_iter()
        .map(|run| {
            let id = run.op_run_id;
            let end = run.ended_at.unwrap_or(now);
            let counts = counts
                .iter()
                .find(|c| c.op_run_id == id)
                .map(|c| c.summary.clone())
                .unwrap_or(CountSummary {
                    reports: 0,
                    good_units: 0,
                    scrap_units: 0,
                    first_at: None,
                    last_at: None,
                });
            let downtime: Vec<Downtime> = downtime
                .iter()
                .filter(|(r, _)| *r == id)
                .map(|(_, d)| {
                    let stop = d.ended_at.unwrap_or(end);
                    total_down += (stop - d.started_at).num_milliseconds().max(0) as f64 / 1000.0;
                    Downtime::from(d.clone())
                })
                .collect();
            let sensors = sensors
                .iter()
                .filter(|s| s.op_run_id == id)
                .map(|s| s.summary.clone())
                .collect();
            TracedRun {
                run: run.into(),
                counts,
                downtime,
                sensors,
            }
        })
        .collect();
    Ok(Json(WorkOrderTrace {
        good_units: traced.iter().map(|r| r.run.good_units).sum(),
        scrap_units: traced.iter().map(|r| r.run.scrap_units).sum(),
        downtime_seconds: total_down,
        work_order_id,
        runs: traced,
    }))
}
