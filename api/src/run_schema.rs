//! Request and response bodies of the run endpoints (the seed's fields plus optional ones), with
//! their OpenAPI schemas.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::run_store::{DowntimeRow, RunRow};

/// `POST /op_run/start` body (the seed's fields plus optional `started_at`, `site_id`, `op_run_id`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    #[schema(example = "WO123")]
    pub work_order_id: String,
    #[schema(example = "OP10")]
    pub operation_id: String,
    #[schema(example = "SMT01")]
    pub resource_id: String,
    /// Planned duration of the run in seconds (informational; OEE uses the real interval).
    #[schema(example = 14400)]
    pub planned_seconds: Option<f64>,
    /// Ideal cycle time per unit in seconds (ISO 22400-2 PRU); needed for performance and OEE.
    #[schema(example = 1.5)]
    pub ideal_cycle_time_s: Option<f64>,
    /// When the run started; default now.
    pub started_at: Option<DateTime<Utc>>,
    /// The site; default the resource's site, else the server's default site.
    pub site_id: Option<String>,
    /// A client-chosen run id (UUID); default a new UUID v7.
    pub op_run_id: Option<Uuid>,
}

/// `POST /op_run/report` body: counts since the previous report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportCounts {
    pub op_run_id: Uuid,
    #[schema(example = 10, minimum = 0)]
    pub good_delta: i64,
    #[schema(example = 1, minimum = 0)]
    pub scrap_delta: i64,
    /// When the units were made; default now. Counts belong to the shift of this time.
    pub at: Option<DateTime<Utc>>,
}

/// `POST /op_run/pause` body: opens a downtime with a reason code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRun {
    pub op_run_id: Uuid,
    /// A code from table `downtime_reasons` (e.g. `breakdown`, `changeover`, `minor_stop`).
    #[schema(example = "breakdown")]
    pub reason_code: String,
    /// When the stop began; default now.
    pub at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

/// `POST /op_run/resume` body: closes the open downtime.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRun {
    pub op_run_id: Uuid,
    /// When production resumed; default now.
    pub at: Option<DateTime<Utc>>,
}

/// `POST /op_run/complete` body: optional final counters (totals for the whole run).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRun {
    pub op_run_id: Uuid,
    /// Final good total; must not be below what was reported. The difference is recorded as a
    /// count at `ended_at`.
    #[schema(example = 780)]
    pub good_units: Option<i64>,
    #[schema(example = 20)]
    pub scrap_units: Option<i64>,
    /// When the run ended; default now.
    pub ended_at: Option<DateTime<Utc>>,
}

/// `POST /op_run/abort` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortRun {
    pub op_run_id: Uuid,
    /// When the run stopped; default now.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A production run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub op_run_id: Uuid,
    pub work_order_id: String,
    pub operation_id: String,
    pub resource_id: String,
    pub site_id: Option<String>,
    /// `running`, `paused`, `completed` or `aborted`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    /// Totals of all count reports.
    pub good_units: i64,
    pub scrap_units: i64,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Self {
            op_run_id: r.op_run_id,
            work_order_id: r.work_order_id,
            operation_id: r.operation_id,
            resource_id: r.resource_id,
            site_id: r.site_id,
            status: r.status,
            started_at: r.started_at,
            ended_at: r.ended_at,
            planned_seconds: r.planned_seconds,
            ideal_cycle_time_s: r.ideal_cycle_time_s,
            good_units: r.good_units,
            scrap_units: r.scrap_units,
        }
    }
}

/// A downtime of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Downtime {
    pub downtime_id: i64,
    pub reason_code: String,
    pub planned: bool,
    /// `availability`, `performance` or `excluded`.
    pub loss_bucket: String,
    pub started_at: DateTime<Utc>,
    /// `null` while the run is paused.
    pub ended_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

impl From<DowntimeRow> for Downtime {
    fn from(d: DowntimeRow) -> Self {
        Self {
            downtime_id: d.id,
            reason_code: d.reason_code,
            planned: d.planned,
            loss_bucket: d.loss_bucket,
            started_at: d.started_at,
            ended_at: d.ended_at,
            note: d.note,
        }
    }
}

/// A run with its downtimes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub downtime: Vec<Downtime>,
}

/// Active (running or paused) runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActiveRuns {
    pub runs: Vec<Run>,
}
