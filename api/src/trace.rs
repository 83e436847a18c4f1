//! Traceability: what was made where, when, and what the machine measured meanwhile.
//!
//! - `GET /trace/work_order/{id}` (here): a work order's runs, their counts, downtime and reading
//!   summaries.
//! - [`by_run`]: `GET /trace/run/{op_run_id}` — one run, its counts, downtime, reading summaries
//!   and SPC rule breaks during it.
//! - [`by_resource`]: `GET /trace/resource/{resource_id}` — the runs of a resource in a time
//!   window, a page at a time ([`cursor`]), with the window's reading summaries.
//! - [`by_reading`]: `GET /trace/reading` — the run, work order and operation active on a
//!   resource at an instant, and whether it was paused.
//! - [`export`]: `GET /trace/run/{op_run_id}/readings` — every reading of a run, streamed as
//!   NDJSON or CSV.
//!
//! Handlers parse and answer; the SQL is in [`crate::store::trace`]; SPC is judged through
//! [`control_chart`], the one place that calls the control chart ([`crate::domain::spc`]).

pub mod by_reading;
pub mod by_resource;
pub mod by_run;
pub mod control_chart;
pub mod cursor;
pub mod export;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::run::earliest_time;
use crate::error::{ApiError, Problem};
use crate::extract::parse_ident;
use crate::run_schema::{Downtime, Run};
use crate::state::AppState;
use crate::store::runs::{self as run_store, DowntimeRow};
use crate::store::trace::{self as store, CountTotals, SensorStats};

/// Readings of one sensor during one run (or window).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

impl From<SensorStats> for SensorSummary {
    fn from(s: SensorStats) -> Self {
        Self {
            sensor: s.sensor,
            unit: s.unit,
            count: s.count,
            min: s.min,
            max: s.max,
            mean: s.mean,
            stddev: s.stddev,
            first_ts: s.first_ts,
            last_ts: s.last_ts,
        }
    }
}

/// Count reports of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CountSummary {
    pub reports: i64,
    pub good_units: i64,
    pub scrap_units: i64,
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
}

impl From<CountTotals> for CountSummary {
    fn from(c: CountTotals) -> Self {
        Self {
            reports: c.reports,
            good_units: c.good_units,
            scrap_units: c.scrap_units,
            first_at: c.first_at,
            last_at: c.last_at,
        }
    }
}

/// The counts of run `id` among `totals` (none reported: zeros).
fn counts_of(totals: &[CountTotals], id: Uuid) -> CountSummary {
    totals
        .iter()
        .find(|c| c.op_run_id == id)
        .cloned()
        .map(CountSummary::from)
        .unwrap_or_default()
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

/// Seconds of `[start, end)` inside `[from, to)`; 0 when they do not overlap.
pub fn overlap_seconds(
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> f64 {
    let (start, end) = (start.max(from), end.min(to));
    (end - start).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
}

/// A time of a trace query: refused (422) before 2000-01-01, like every time the API takes (no
/// run can have been active then).
pub fn since_2000(field: &'static str, t: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if t < earliest_time() {
        return Err(ApiError::invalid(
            field,
            format!("{t} is before {}", earliest_time()),
        ));
    }
    Ok(t)
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
    if runs.is_empty() && !store::work_order_exists(&mut *tx, &work_order_id).await? {
        return Err(ApiError::NotFound(format!(
            "work_order_id: no work order {work_order_id:?}"
        )));
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| r.op_run_id).collect();
    let counts = store::count_totals(&mut *tx, &ids, None).await?;
    let downtime: Vec<(Uuid, DowntimeRow)> = run_store::downtimes_of_runs(&mut tx, &ids).await?;
    let sensors = store::sensor_stats_of_runs(&mut *tx, &ids).await?;
    tx.commit().await?;

    let mut total_down = 0.0;
    let now = Utc::now();
    let traced: Vec<TracedRun> = runs
        .into_iter()
        .map(|run| {
            let id = run.op_run_id;
            let end = run.ended_at.unwrap_or(now);
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
                .filter(|(r, _)| *r == id)
                .map(|(_, s)| SensorSummary::from(s.clone()))
                .collect();
            TracedRun {
                run: run.into(),
                counts: counts_of(&counts, id),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_is_cut_to_the_window() {
        let window = (t("2025-01-01T01:00:00Z"), t("2025-01-01T02:00:00Z"));
        let inside = (t("2025-01-01T01:10:00Z"), t("2025-01-01T01:20:00Z"));
        assert_eq!(overlap_seconds(inside, window), 600.0);
        let across_start = (t("2025-01-01T00:50:00Z"), t("2025-01-01T01:05:00Z"));
        assert_eq!(overlap_seconds(across_start, window), 300.0);
        let across_end = (t("2025-01-01T01:59:59.5Z"), t("2025-01-01T03:00:00Z"));
        assert_eq!(overlap_seconds(across_end, window), 0.5);
        let before = (t("2025-01-01T00:00:00Z"), t("2025-01-01T01:00:00Z"));
        assert_eq!(overlap_seconds(before, window), 0.0);
    }

    #[test]
    fn times_before_2000_are_refused() {
        assert!(since_2000("ts", t("2000-01-01T00:00:00Z")).is_ok());
        let e = since_2000("ts", t("1999-12-31T23:59:59Z")).unwrap_err();
        let p = e.problem();
        assert_eq!((p.status, p.field.as_deref()), (422, Some("ts")));
        assert!(p.detail.contains(" is before "), "{}", p.detail);
    }
}
