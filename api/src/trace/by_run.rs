//! `GET /trace/run/{op_run_id}`: one run as `GET /op_run/{op_run_id}` shows it, its counts, the
//! reading summaries of its resource during it, and per sensor the SPC rule breaks during it.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::control_chart::{self, ChartLimits, RuleBreak};
use super::{counts_of, SensorSummary, TracedRun};
use crate::domain::spc::Chart;
use crate::error::{ApiError, Problem};
use crate::extract::parse_uuid;
use crate::run_schema::Downtime;
use crate::state::AppState;
use crate::store::runs as run_store;
use crate::store::spc as spc_store;
use crate::store::trace as store;

/// Readings of one sensor judged per run: the latest this many (as `GET /spc` at most).
pub const MAX_POINTS_PER_SENSOR: i64 = 10_000;
/// Rule breaks listed per sensor (the earliest).
pub const MAX_BREAKS_PER_SENSOR: usize = 100;
/// Sensors judged per run (the first in name order).
pub const MAX_SPC_SENSORS: usize = 50;

/// SPC of one sensor's readings during the run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SensorSpc {
    pub sensor: String,
    /// Readings judged: the run's readings of the sensor, the latest 10 000 when it has more.
    pub points: usize,
    /// The run has more readings of the sensor than were judged (the earliest were left out).
    pub points_truncated: bool,
    /// The stored I-MR limits in force (phase II), else limits from the points judged (phase I);
    /// `null` when they are beyond a double.
    pub limits: Option<ChartLimits>,
    /// The earliest readings breaking a rule (or with a moving range out), at most 100.
    pub violations: Vec<RuleBreak>,
    /// Readings breaking a rule among the points judged.
    pub violations_total: usize,
    /// More breaks than listed.
    pub truncated: bool,
}

/// SPC during the run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSpc {
    /// The chart: `i_mr`, individuals with σ from the average moving range (MR̄/d2), judged
    /// against the I-MR limits stored for the resource and sensor (phase II, `POST /spc/limits`)
    /// or, without them, limits from the run's own readings (phase I); each sensor's `limits`
    /// says which. See `GET /spc` for the rules.
    pub chart: String,
    /// Per sensor in name order, the first 50.
    pub sensors: Vec<SensorSpc>,
    /// More sensors had readings than were judged.
    pub sensors_truncated: bool,
}

/// A run with everything that happened on its resource during it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunTrace {
    #[serde(flatten)]
    pub trace: TracedRun,
    pub spc: RunSpc,
}

/// A run, its counts, downtime, reading summaries and SPC rule breaks.
#[utoipa::path(get, path = "/trace/run/{op_run_id}", tag = "kpi",
    params(("op_run_id" = Uuid, Path, description = "run id")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "the run with its counts, downtime, the summaries of its resource's readings from its start to its end (or now) and per sensor the SPC rule breaks among them (at most 50 sensors, the latest 10 000 readings and the earliest 100 breaks of each)", body = RunTrace),
        (status = 400, description = "not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json")))]
pub async fn run_trace(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
) -> Result<Json<RunTrace>, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::malformed("op_run_id", e.body_text()))?;
    let id = parse_uuid("op_run_id", &raw)?;
    let now = Utc::now().trunc_subsecs(6);
    let mut tx = store::snapshot(&state.pool).await?;
    let run = run_store::get_run(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("op_run_id: no run {id}")))?;
    let span = (
        run.started_at,
        run.ended_at.unwrap_or(now).max(run.started_at),
    );
    let downtime = run_store::downtimes(&mut *tx, id).await?;
    let counts = store::count_totals(&mut *tx, &[id], None).await?;
    let sensors = store::sensor_stats(&mut *tx, &run.resource_id, span.0, span.1).await?;
    let mut judged = Vec::new();
    for s in sensors.iter().take(MAX_SPC_SENSORS) {
        let points = store::series(
            &mut *tx,
            &run.resource_id,
            &s.sensor,
            span,
            MAX_POINTS_PER_SENSOR,
        )
        .await?;
        let stored = spc_store::in_force(
            &mut *tx,
            &run.resource_id,
            &s.sensor,
            Some(Chart::IMr),
            Some(1),
        )
        .await?;
        let stored = stored.as_ref().map(|l| control_chart::Stored {
            version: l.version,
            limits: &l.limits,
        });
        judged.push(sensor_spc(&s.sensor, s.count, &points, stored));
    }
    tx.commit().await?;
    Ok(Json(RunTrace {
        spc: RunSpc {
            chart: control_chart::CHART.to_owned(),
            sensors: judged,
            sensors_truncated: sensors.len() > MAX_SPC_SENSORS,
        },
        trace: TracedRun {
            counts: counts_of(&counts, id),
            downtime: downtime.into_iter().map(Downtime::from).collect(),
            sensors: sensors.into_iter().map(SensorSummary::from).collect(),
            run: run.into(),
        },
    }))
}

fn sensor_spc(
    sensor: &str,
    readings: i64,
    points: &[(DateTime<Utc>, f64)],
    stored: Option<control_chart::Stored<'_>>,
) -> SensorSpc {
    let j = control_chart::judge(points, MAX_BREAKS_PER_SENSOR, stored);
    SensorSpc {
        sensor: sensor.to_owned(),
        points: points.len(),
        points_truncated: readings > points.len() as i64,
        limits: j.limits,
        truncated: j.breaks_total > j.breaks.len(),
        violations: j.breaks,
        violations_total: j.breaks_total,
    }
}
