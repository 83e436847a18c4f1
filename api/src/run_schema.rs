//! Request and response bodies of the run endpoints (the seed's fields plus optional ones), with
//! their OpenAPI schemas.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::values::{ID_PATTERN, MAX_COUNT, MAX_ID_BYTES, MAX_NOTE_BYTES, MAX_SECONDS};
use crate::domain::{self, Count, CycleTime, Ident, Note, RunStatus, Seconds};
use crate::store::runs::DowntimeRow;

/// `POST /op_run/start` body (the seed's fields plus optional `started_at`, `site_id`, `op_run_id`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    #[schema(inline, example = "WO123")]
    pub work_order_id: Ident,
    #[schema(inline, example = "OP10")]
    pub operation_id: Ident,
    #[schema(inline, example = "SMT01")]
    pub resource_id: Ident,
    /// Planned duration of the run in seconds (informational; OEE uses the real interval).
    pub planned_seconds: Option<Seconds>,
    /// Ideal cycle time per unit in seconds (ISO 22400-2 PRU); needed for performance and OEE.
    pub ideal_cycle_time_s: Option<CycleTime>,
    /// When the run started; default now. At most 5 minutes ahead of the server's clock.
    pub started_at: Option<DateTime<Utc>>,
    /// The site; default the resource's site, else the server's default site.
    pub site_id: Option<Ident>,
    /// A client-chosen run id (UUID); default a new UUID v7.
    pub op_run_id: Option<Uuid>,
}

/// `POST /op_run/report` body: counts since the previous report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportCounts {
    pub op_run_id: Uuid,
    #[schema(inline, example = 10)]
    pub good_delta: Count,
    #[schema(inline, example = 1)]
    pub scrap_delta: Count,
    /// When the units were made; default now. Counts belong to the shift of this time.
    pub at: Option<DateTime<Utc>>,
}

/// `POST /op_run/pause` body: opens a downtime with a reason code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRun {
    pub op_run_id: Uuid,
    /// A code from table `downtime_reasons` (e.g. `breakdown`, `changeover`, `minor_stop`).
    #[schema(inline, example = "breakdown")]
    pub reason_code: Ident,
    /// When the stop began; default now.
    pub at: Option<DateTime<Utc>>,
    /// Free text; line breaks and tabs allowed, no other control characters.
    pub note: Option<Note>,
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
    pub good_units: Option<Count>,
    pub scrap_units: Option<Count>,
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
    #[schema(value_type = RunStatusName)]
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    /// Totals of all count reports.
    pub good_units: i64,
    pub scrap_units: i64,
}

/// Where a run is in its lifecycle (the OpenAPI name of [`RunStatus`]'s values).
#[derive(Serialize, ToSchema)]
#[schema(as = RunStatus)]
#[serde(rename_all = "snake_case")]
pub enum RunStatusName {
    Running,
    Paused,
    Completed,
    Aborted,
}

impl From<domain::Run> for Run {
    fn from(r: domain::Run) -> Self {
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

impl StartRun {
    pub fn into_domain(self) -> domain::Start {
        domain::Start {
            op_run_id: self.op_run_id,
            work_order_id: self.work_order_id,
            operation_id: self.operation_id,
            resource_id: self.resource_id,
            site_id: self.site_id,
            started_at: self.started_at,
            planned_seconds: self.planned_seconds,
            ideal_cycle_time_s: self.ideal_cycle_time_s,
        }
    }
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

/// The OpenAPI schema of a domain value: the same limits the value's own check enforces.
macro_rules! value_schema {
    ($ty:ty, schema = $schema:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {}
    };
    ($ty:ty, $doc:expr, $builder:expr) => {
        value_schema!(
            $ty,
            schema = {
                let b: utoipa::openapi::ObjectBuilder = $builder;
                b.description(Some($doc)).into()
            }
        );
    };
}

fn string() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String)
}

fn integer() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
}

fn number() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Number)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Double,
        )))
}

/// Text limited to `max_bytes` bytes of UTF-8, as JSON Schema can say it (its `maxLength` counts
/// characters, which take 1 to 4 bytes): ASCII text (`ascii_pattern`) of up to `max_bytes`
/// characters, or any text (`pattern`) of up to `max_bytes / 4` characters. Every value the schema
/// admits fits; longer non-ASCII text within `max_bytes` is taken too, but not promised.
fn utf8_text(
    description: &str,
    min_length: Option<usize>,
    max_bytes: usize,
    ascii_pattern: &str,
    pattern: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::AnyOfBuilder::new()
        .item(
            string()
                .min_length(min_length)
                .max_length(Some(max_bytes))
                .pattern(Some(ascii_pattern)),
        )
        .item(
            string()
                .min_length(min_length)
                .max_length(Some(max_bytes / 4))
                .pattern(Some(pattern)),
        )
        .description(Some(description))
        .into()
}

/// An identifier in ASCII: printable, at least one character other than a space.
pub const ASCII_ID_PATTERN: &str = "^[ -~]*[!-~][ -~]*$";
/// A note in ASCII: printable, tabs and line breaks.
pub const ASCII_NOTE_PATTERN: &str = r"^[\t\n\r -~]*$";
/// A note in any script: no control characters but tabs and line breaks.
pub const NOTE_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";

value_schema!(
    Ident,
    schema = utf8_text(
        "An identifier: 1 to 128 bytes of UTF-8, not only white space, no control characters, no \
         bidirectional overrides. Stated as: up to 128 ASCII characters, or up to 32 characters \
         of any script.",
        Some(1),
        MAX_ID_BYTES,
        ASCII_ID_PATTERN,
        ID_PATTERN,
    )
);
value_schema!(
    Note,
    schema = utf8_text(
        "Free text of at most 1024 bytes of UTF-8; line breaks and tabs, no other control \
         characters. Stated as: up to 1024 ASCII characters, or up to 256 characters of any \
         script.",
        None,
        MAX_NOTE_BYTES,
        ASCII_NOTE_PATTERN,
        NOTE_PATTERN,
    )
);
value_schema!(
    Count,
    "A count of units, 0 to 10^9, written as a JSON integer (`10`; `10.0` and `1e1` are refused).",
    integer().minimum(Some(0)).maximum(Some(MAX_COUNT))
);
value_schema!(
    Seconds,
    "A duration in seconds, 0 to 10^9.",
    number().minimum(Some(0)).maximum(Some(MAX_SECONDS))
);
value_schema!(
    CycleTime,
    "A cycle time in seconds, above 0 and at most 10^9.",
    number()
        .exclusive_minimum(Some(0))
        .maximum(Some(MAX_SECONDS))
);
