//! Run events for the MES: the JSON payload mes-api publishes on
//! `mes.op_run.<site>.<resource>.<event>` (stream `OP_RUN`).
//!
//! The schema is versioned by [`RUN_EVENT_SCHEMA_VERSION`]: fields are only ever added within a
//! version; a removal or a change of meaning bumps it. Every field is always present (absent
//! values are `null`), so consumers can rely on the shape.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the [`RunEvent`] payload.
pub const RUN_EVENT_SCHEMA_VERSION: u32 = 1;

/// What happened to a run; the last token of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunEventType {
    Started,
    Reported,
    Paused,
    Resumed,
    Completed,
    Aborted,
    /// An operator assigned the reason of a stop detected from the machine's readings
    /// (`downtime` carries it, `detected` true); sent to every run the stop overlaps.
    Classified,
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
            RunEventType::Classified => "classified",
        }
    }
}

/// Counts carried by a `reported` event (and by `completed` when final counters adjusted them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CountDelta {
    pub good_delta: i64,
    pub scrap_delta: i64,
}

/// The downtime a `paused` event opens or a `resumed` event closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DowntimeInfo {
    pub downtime_id: i64,
    pub reason_code: String,
    /// Planned (e.g. changeover) or unplanned (e.g. breakdown).
    pub planned: bool,
    /// `availability`, `performance` or `excluded` (from planned time).
    pub loss_bucket: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// A stop detected from the machine's readings (`downtime_id` is its stop id in
    /// `GET /machine_stops`), not a pause an operator opened.
    #[serde(default)]
    pub detected: bool,
}

/// One state change of a production run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunEvent {
    pub schema_version: u32,
    /// Unique per event (UUID v7, time-ordered); consumers may deduplicate on it.
    #[schemars(extend("format" = "uuid"))]
    pub event_id: String,
    pub event_type: RunEventType,
    /// When it happened on the shop floor (the request's `started_at`, `at` or `ended_at`).
    pub occurred_at: DateTime<Utc>,
    /// When mes-api committed it.
    pub recorded_at: DateTime<Utc>,
    #[schemars(extend("format" = "uuid"))]
    pub op_run_id: String,
    pub work_order_id: String,
    pub operation_id: String,
    pub resource_id: String,
    pub site_id: String,
    /// Run status after the event: `running`, `paused`, `completed` or `aborted`.
    #[schemars(extend("enum" = ["running", "paused", "completed", "aborted"]))]
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
    /// Who made the change: the name of the API token (or the identity provider's subject) the
    /// request carried; `null` when mes-api runs without authentication.
    #[serde(default)]
    pub actor: Option<String>,
}

/// The committed JSON Schema of [`RunEvent`] (`nats/run-event.schema.json`), generated from the
/// type by [`run_event_schema`]; a test keeps the two equal.
pub const RUN_EVENT_SCHEMA_PATH: &str = "nats/run-event.schema.json";

/// The JSON Schema (2020-12) of [`RunEvent`], for the MES side: generated from the type, with
/// every property required (the payload always carries every field; absent values are `null`).
/// Additional properties are allowed: fields are added within a schema version.
pub fn run_event_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RunEvent).to_value();
    require_every_property(&mut schema);
    if let Some(root) = schema.as_object_mut() {
        root.insert(
            "$id".into(),
            format!("urn:edge-mes:run-event:v{RUN_EVENT_SCHEMA_VERSION}").into(),
        );
        root.insert(
            "description".into(),
            "A production-run event of edge-mes, published on \
             mes.op_run.<site>.<resource>.<event_type> (stream OP_RUN). Generated from \
             protocol::RunEvent; do not edit."
                .into(),
        );
    }
    schema
}

fn require_every_property(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                let names: Vec<serde_json::Value> =
                    props.keys().cloned().map(serde_json::Value::from).collect();
                map.insert("required".into(), names.into());
            }
            map.values_mut().for_each(require_every_property);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(require_every_property),
        _ => {}
    }
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
            RunEventType::Classified,
        ];
        let names: Vec<&str> = all.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, crate::subject::OP_RUN_EVENTS);
        for t in all {
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }

    /// The committed schema is the generated one. After changing [`RunEvent`], regenerate it:
    /// `EDGE_MES_WRITE_SCHEMA=1 cargo test -p edge-mes-protocol run_event_schema`.
    #[test]
    fn the_committed_run_event_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(RUN_EVENT_SCHEMA_PATH);
        let generated = serde_json::to_string_pretty(&run_event_schema()).unwrap() + "\n";
        if std::env::var_os("EDGE_MES_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} differs from protocol::RunEvent; regenerate it with \
             EDGE_MES_WRITE_SCHEMA=1 cargo test -p edge-mes-protocol run_event_schema",
            path.display()
        );
        let schema = run_event_schema();
        let required = schema["required"].as_array().unwrap();
        assert_eq!(required.len(), 20, "every field of RunEvent is required");
    }
}
