//! Run events for the MES: the JSON payload mes-api publishes on
//! `mes.op_run.<site>.<resource>.<event>` (stream `OP_RUN`).
//!
//! The schema is versioned by [`RUN_EVENT_SCHEMA_VERSION`]: fields are only ever added within a
//! version; a removal or a change of meaning bumps it. Every field is always present (absent
//! values are `null`), so consumers can rely on the shape.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the [`RunEvent`] payload.
pub const RUN_EVENT_SCHEMA_VERSION: u32 = 1;

/// What happened to a run; the last token of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEventType {
    Started,
    Reported,
    Paused,
    Resumed,
    Completed,
    Aborted,
}

impl RunEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEventType::Started => "started",
            RunEventType::Reported => "reported",
            RunEventType::Paused => "paused",
            RunEventType::Resumed => "resumed",
            RunEventType::Completed => "completed",
            RunEventType::Aborted => "aborted",
        }
    }
}

/// Counts carried by a `reported` event (and by `completed` when final counters adjusted them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountDelta {
    pub good_delta: i64,
    pub scrap_delta: i64,
}

/// The downtime a `paused` event opens or a `resumed` event closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeInfo {
    pub downtime_id: i64,
    pub reason_code: String,
    /// Planned (e.g. changeover) or unplanned (e.g. breakdown).
    pub planned: bool,
    /// `availability`, `performance` or `excluded` (from planned time).
    pub loss_bucket: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One state change of a production run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub schema_version: u32,
    /// Unique per event (UUID v7, time-ordered); consumers may deduplicate on it.
    pub event_id: String,
    pub event_type: RunEventType,
    /// When it happened on the shop floor (the request's `started_at`, `at` or `ended_at`).
    pub occurred_at: DateTime<Utc>,
    /// When mes-api committed it.
    pub recorded_at: DateTime<Utc>,
    pub op_run_id: String,
    pub work_order_id: String,
    pub operation_id: String,
    pub resource_id: String,
    pub site_id: String,
    /// Run status after the event: `running`, `paused`, `completed` or `aborted`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    /// Running totals after the event.
    pub good_units: i64,
    pub scrap_units: i64,
    pub delta: Option<CountDelta>,
    pub downtime: Option<DowntimeInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_the_subject_tokens() {
        let all = [
            RunEventType::Started,
            RunEventType::Reported,
            RunEventType::Paused,
            RunEventType::Resumed,
            RunEventType::Completed,
            RunEventType::Aborted,
        ];
        let names: Vec<&str> = all.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, crate::subject::OP_RUN_EVENTS);
        for t in all {
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }
}
