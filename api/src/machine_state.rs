//! Machine state from readings: the rules (`/machine_state/rules`, admin), the stops they find
//! (`GET /machine_stops`, viewer) and the operator's reason for a stop
//! (`POST /machine_stops/{stop_id}/reason`, operator), plus the detector that runs in every
//! mes-api replica ([`run_detector`]; a per-resource advisory lock lets one replica judge a
//! resource at a time).
//!
//! The rule and the stop model are the domain's ([`crate::domain::machine_state`]); docs/api.md,
//! "Machine state", states them for users.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use utoipa::ToSchema;

use crate::domain::machine_state::{parse_code, Rule, StopWhen, UNASSIGNED};
use crate::domain::{Ident, Note};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_ident, parse_timestamp, ApiJson, QueryParams};
use crate::idempotency::{self, Caller};
use crate::state::AppState;
use crate::store::machine_state::{self as store, PassWindow, RuleRow, StopQuery, StopRow};
use crate::store::runs as run_store;

/// Longest window `GET /machine_stops` answers for.
const MAX_WINDOW_DAYS: i64 = 31;
/// Most stops one answer lists.
pub const MAX_STOPS: i64 = 5000;
const DEFAULT_STOPS: i64 = 1000;

/// A reason's classification, as on a run's downtimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StopReason {
    pub code: String,
    pub planned: bool,
    /// `availability`, `performance` or `excluded` (from planned time).
    pub loss_bucket: String,
}

/// A stop detected from a machine's readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachineStop {
    pub stop_id: i64,
    /// The resource's site (empty when the resource has none).
    pub site_id: String,
    pub resource_id: String,
    pub started_at: DateTime<Utc>,
    /// `null` while the machine still stands.
    pub ended_at: Option<DateTime<Utc>>,
    /// Up to now for an open stop.
    pub duration_seconds: f64,
    /// `unassigned` until an operator assigns a reason (or the reason a state code maps to).
    pub reason: StopReason,
    /// The state code that started it (codes rules), else `null`.
    pub state_code: Option<i64>,
    /// Who assigned the reason; `null` while nobody has.
    pub assigned_by: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

impl From<StopRow> for MachineStop {
    fn from(r: StopRow) -> Self {
        Self {
            stop_id: r.stop_id,
            site_id: r.site_id,
            resource_id: r.resource_id,
            started_at: r.started_at,
            ended_at: r.ended_at,
            duration_seconds: r.duration_seconds,
            reason: StopReason {
                code: r.reason_code,
                planned: r.planned,
                loss_bucket: r.loss_bucket,
            },
            state_code: r.state_code,
            assigned_by: r.assigned_by,
            assigned_at: r.assigned_at,
            note: r.note,
        }
    }
}

/// `GET /machine_stops` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MachineStops {
    /// Oldest first.
    pub stops: Vec<MachineStop>,
    /// More stops match than `limit`: narrow the window.
    pub truncated: bool,
}

/// Stops detected from the machines' readings that overlap a window.
#[utoipa::path(get, path = "/machine_stops", tag = "machine_state",
    params(
        ("site_id" = Option<crate::domain::Ident>, Query, description = "only this site"),
        ("resource_id" = Option<crate::domain::Ident>, Query, description = "only this resource"),
        ("from" = Option<DateTime<Utc>>, Query, description = "window start (RFC 3339); default `to` - 24 h"),
        ("to" = Option<DateTime<Utc>>, Query, description = "window end (RFC 3339); default now"),
        ("unassigned" = Option<bool>, Query, description = "`true`: only stops whose reason nobody has assigned yet"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 5000, description = "most stops to list (default 1000)"),
    ),
    responses(crate::http::ServerFaults,
        (status = 200, description = "the stops", body = MachineStops),
        (status = 400, description = "a malformed parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`from` not before `to`, a window longer than 31 days, `limit` out of range, an unknown parameter", body = Problem, content_type = "application/problem+json")))]
pub async fn list_stops(
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<MachineStops>, ApiError> {
    let site = q.take_ident("site_id")?;
    let resource = q.take_ident("resource_id")?;
    let to = q
        .take_parsed("to", parse_timestamp)?
        .unwrap_or_else(Utc::now);
    let from = q
        .take_parsed("from", parse_timestamp)?
        .unwrap_or(to - TimeDelta::hours(24));
    let unassigned_only = q
        .take_parsed("unassigned", |v| {
            v.parse::<bool>()
                .map_err(|_| format!("expected true or false, got {v:?}"))
        })?
        .unwrap_or(false);
    let limit = q
        .take_parsed("limit", |v| {
            v.parse::<i64>()
                .map_err(|_| format!("expected an integer, got {v:?}"))
        })?
        .unwrap_or(DEFAULT_STOPS);
    q.finish()?;
    if !(1..=MAX_STOPS).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_STOPS}, got {limit}"),
        ));
    }
    if from >= to {
        return Err(ApiError::invalid(
            "from",
            format!("{from} is not before to ({to})"),
        ));
    }
    if to - from > TimeDelta::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid(
            "from",
            format!("window longer than {MAX_WINDOW_DAYS} days"),
        ));
    }
    let query = StopQuery {
        resource_id: resource.as_ref().map(Ident::as_str),
        site_id: site.as_ref().map(Ident::as_str),
        from,
        to,
        unassigned_only,
        limit: limit + 1,
    };
    let mut rows = store::stops(&state.pool, &query).await?;
    let truncated = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Json(MachineStops {
        stops: rows.into_iter().map(MachineStop::from).collect(),
        truncated,
    }))
}

/// `POST /machine_stops/{stop_id}/reason` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignReason {
    /// A reason of table downtime_reasons other than `unassigned`.
    #[schema(inline, example = "material_shortage")]
    pub reason_code: Ident,
    /// Replaces the stop's note when given; line breaks and tabs allowed, no other control
    /// characters.
    pub note: Option<Note>,
}

fn parse_stop_id(raw: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::malformed("stop_id", e.body_text()))?;
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::malformed("stop_id", format!("not a stop id: {raw:?}")))
}

/// Assign the reason of a detected stop: the OEE figures of every shift it touches follow (also
/// after the shift closed), and each run it overlaps gets a `classified` event.
#[utoipa::path(post, path = "/machine_stops/{stop_id}/reason", tag = "machine_state",
    request_body = AssignReason,
    params(("stop_id" = i64, Path, minimum = 1, description = "the stop's id"),
        crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "the stop with its new reason (a retry with its Idempotency-Key gets the same answer)", body = MachineStop),
        (status = 400, description = "`stop_id` is not a positive integer, or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown stop", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: an unknown `reason_code` or `unassigned`; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn assign_reason(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
    caller: Caller,
    ApiJson(body): ApiJson<AssignReason>,
) -> Result<Response, ApiError> {
    let id = parse_stop_id(raw)?;
    let route = "/machine_stops/{stop_id}/reason";
    let request = (id, &body);
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &caller.key, route, &request).await? {
        return Ok(replay.into_response());
    }
    if !store::lock_stop(&mut tx, id).await? {
        return Err(ApiError::NotFound(format!("stop_id: no stop {id}")));
    }
    let code = body.reason_code.as_str();
    if code == UNASSIGNED {
        return Err(ApiError::invalid(
            "reason_code",
            "assign a reason: `unassigned` is what a stop has until one is assigned",
        ));
    }
    let Some(reason) = run_store::reason(&mut tx, code).await? else {
        return Err(ApiError::invalid(
            "reason_code",
            format!("unknown reason code {code:?} (see table downtime_reasons)"),
        ));
    };
    let actor = caller.actor.as_deref();
    let note = body.note.as_ref().map(Note::as_str);
    store::assign_reason(&mut tx, id, code, note, actor).await?;
    let stop = store::stop(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("stop {id} vanished in its transaction")))?;
    let runs =
        store::runs_during(&mut tx, &stop.resource_id, stop.started_at, stop.ended_at).await?;
    for run_id in &runs {
        let Some(run) = run_store::get_run(&mut *tx, *run_id).await? else {
            continue;
        };
        let draft = crate::domain::EventDraft {
            event_type: protocol::RunEventType::Classified,
            occurred_at: stop.started_at,
            delta: None,
            downtime: None,
        };
        let mut event = crate::domain::event(
            &run,
            &draft,
            &state.settings.default_site,
            Utc::now(),
            actor,
        );
        event.downtime = Some(protocol::DowntimeInfo {
            downtime_id: id,
            reason_code: reason.code.clone(),
            planned: reason.planned,
            loss_bucket: reason.loss_bucket.clone(),
            started_at: stop.started_at,
            ended_at: stop.ended_at,
            detected: true,
        });
        run_store::insert_event(&mut tx, &event).await?;
    }
    info!(
        stop_id = id, resource_id = %stop.resource_id, reason_code = code, runs = runs.len(),
        assigned_by = ?actor, "machine stop reason assigned"
    );
    let answer = serde_json::to_value(MachineStop::from(stop))
        .map_err(|e| ApiError::Internal(format!("cannot serialize answer: {e}")))?;
    idempotency::store(&mut tx, &caller.key, StatusCode::OK, &answer).await?;
    tx.commit().await?;
    state.outbox_signal.notify_one();
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// How a rule judges its sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Stopped while the value is at or below `stopped_at_or_below`.
    Threshold,
    /// Stopped while the value is one of `stop_codes`.
    Codes,
}

/// `PUT /machine_state/rules/{resource_id}` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMachineStateRule {
    /// The sensor whose readings tell the machine's state (e.g. `speed`, `state`).
    #[schema(inline, example = "speed")]
    pub sensor: Ident,
    pub kind: RuleKind,
    /// threshold rules: stopped while the value is at or below this.
    #[schema(minimum = -1e15, maximum = 1e15)]
    pub stopped_at_or_below: Option<f64>,
    /// codes rules: state code (an integer, as the key) → reason code, or `unassigned` when the
    /// code does not say why. 1 to 256 codes.
    #[schema(value_type = Option<BTreeMap<String, Ident>>, example = json!({"0": "unassigned", "3": "breakdown"}))]
    pub stop_codes: Option<BTreeMap<String, Ident>>,
    /// Stops shorter than this are not recorded (0 to 86400; default 60).
    #[schema(minimum = 0, maximum = 86400)]
    pub min_stop_seconds: Option<f64>,
}

/// A resource's machine-state rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachineStateRule {
    pub resource_id: String,
    pub sensor: String,
    pub kind: RuleKind,
    pub stopped_at_or_below: Option<f64>,
    pub stop_codes: Option<BTreeMap<String, String>>,
    pub min_stop_seconds: f64,
    pub updated_at: DateTime<Utc>,
    /// Who set it; `null` when set in SQL or without authentication.
    pub updated_by: Option<String>,
}

impl From<RuleRow> for MachineStateRule {
    fn from(r: RuleRow) -> Self {
        Self {
            kind: if r.kind == "codes" {
                RuleKind::Codes
            } else {
                RuleKind::Threshold
            },
            stop_codes: r.stop_codes.map(|c| {
                c.0.into_iter()
                    .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            }),
            resource_id: r.resource_id,
            sensor: r.sensor,
            stopped_at_or_below: r.stopped_at_or_below,
            min_stop_seconds: r.min_stop_seconds,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

/// `GET /machine_state/rules` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MachineStateRules {
    pub rules: Vec<MachineStateRule>,
}

/// Every resource's machine-state rule.
#[utoipa::path(get, path = "/machine_state/rules", tag = "machine_state",
    responses(crate::http::ServerFaults,
        (status = 200, description = "the rules, by resource", body = MachineStateRules)))]
pub async fn list_rules(
    State(state): State<AppState>,
) -> Result<Json<MachineStateRules>, ApiError> {
    let rules = store::rules(&state.pool).await?;
    Ok(Json(MachineStateRules {
        rules: rules.into_iter().map(MachineStateRule::from).collect(),
    }))
}

fn parse_resource(raw: Result<Path<String>, PathRejection>) -> Result<Ident, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::malformed("resource_id", e.body_text()))?;
    parse_ident("resource_id", &raw)
}

/// Set (or replace) the machine-state rule of a resource; the detector applies it from its next
/// pass, to the readings of its horizon.
#[utoipa::path(put, path = "/machine_state/rules/{resource_id}", tag = "machine_state",
    request_body = SetMachineStateRule,
    params(("resource_id" = crate::domain::Ident, Path, description = "the resource")),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "the rule as stored", body = MachineStateRule),
        (status = 422, description = "invalid field: `stopped_at_or_below` missing for threshold or given for codes; `stop_codes` missing for codes, given for threshold, empty, more than 256, a key that is not an integer, an unknown reason; `min_stop_seconds` outside 0 to 86400; a threshold that is not finite", body = Problem, content_type = "application/problem+json")))]
pub async fn put_rule(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
    caller: Caller,
    ApiJson(body): ApiJson<SetMachineStateRule>,
) -> Result<Json<MachineStateRule>, ApiError> {
    let resource = parse_resource(raw)?;
    let mut tx = state.pool.begin().await?;
    let stop_when = match (body.kind, body.stopped_at_or_below, &body.stop_codes) {
        (RuleKind::Threshold, Some(t), None) => StopWhen::AtOrBelow(t),
        (RuleKind::Threshold, None, _) => {
            return Err(ApiError::invalid(
                "stopped_at_or_below",
                "required for kind threshold",
            ))
        }
        (RuleKind::Threshold, Some(_), Some(_)) => {
            return Err(ApiError::invalid("stop_codes", "not for kind threshold"))
        }
        (RuleKind::Codes, Some(_), _) => {
            return Err(ApiError::invalid(
                "stopped_at_or_below",
                "not for kind codes",
            ))
        }
        (RuleKind::Codes, None, None) => {
            return Err(ApiError::invalid("stop_codes", "required for kind codes"))
        }
        (RuleKind::Codes, None, Some(codes)) => {
            let known = store::reason_codes(&mut *tx).await?;
            let mut map = BTreeMap::new();
            for (k, reason) in codes {
                let code =
                    parse_code(k).map_err(|e| ApiError::invalid("stop_codes", e.to_string()))?;
                if !known.contains(reason.as_str()) {
                    return Err(ApiError::invalid(
                        "stop_codes",
                        format!(
                            "code {k}: unknown reason code {:?} (see table downtime_reasons)",
                            reason.as_str()
                        ),
                    ));
                }
                if map.insert(code, reason.as_str().to_owned()).is_some() {
                    return Err(ApiError::invalid(
                        "stop_codes",
                        format!("code {code} given twice"),
                    ));
                }
            }
            StopWhen::Codes(map)
        }
    };
    let field = match stop_when {
        StopWhen::AtOrBelow(_) => "stopped_at_or_below",
        StopWhen::Codes(_) => "stop_codes",
    };
    let min_stop = body.min_stop_seconds.unwrap_or(60.0);
    let rule = Rule::new(body.sensor.as_str().to_owned(), stop_when, min_stop).map_err(|e| {
        let field = match e {
            crate::domain::machine_state::RuleError::MinStop(_) => "min_stop_seconds",
            _ => field,
        };
        ApiError::invalid(field, e.to_string())
    })?;
    let row = store::put_rule(&mut tx, resource.as_str(), &rule, caller.actor.as_deref()).await?;
    tx.commit().await?;
    info!(
        resource_id = %resource, sensor = %rule.sensor, kind = %row.kind,
        set_by = ?caller.actor, "machine-state rule set"
    );
    Ok(Json(row.into()))
}

/// Remove the machine-state rule of a resource (the stops it found stay).
#[utoipa::path(delete, path = "/machine_state/rules/{resource_id}", tag = "machine_state",
    params(("resource_id" = crate::domain::Ident, Path, description = "the resource")),
    responses(crate::http::ServerFaults,
        (status = 204, description = "removed"),
        (status = 400, description = "a malformed resource id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "the resource has no rule", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_rule(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let resource = parse_resource(raw)?;
    let mut conn = state.pool.acquire().await?;
    if !store::delete_rule(&mut conn, resource.as_str()).await? {
        return Err(ApiError::NotFound(format!(
            "resource_id: {resource:?} has no machine-state rule"
        )));
    }
    info!(resource_id = %resource, removed_by = ?caller.actor, "machine-state rule removed");
    Ok(StatusCode::NO_CONTENT)
}

/// How the detector runs.
#[derive(Debug, Clone, Copy)]
pub struct DetectorSettings {
    pub interval: Duration,
    pub window: PassWindow,
}

/// Judges every resource that has a rule, every `interval`, until `shutdown`. A failing pass is
/// logged and retried at the next tick; it never stops the API.
pub async fn run_detector(
    pool: sqlx::PgPool,
    settings: DetectorSettings,
    shutdown: CancellationToken,
) {
    info!(
        interval_s = settings.interval.as_secs_f64(),
        horizon_s = settings.window.horizon.num_seconds(),
        "machine-state detector running"
    );
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = detect_all(&pool, settings.window, Utc::now(), &shutdown).await {
            warn!(error = %e, "machine-state pass failed; retrying at the next tick");
        }
    }
    info!("machine-state detector stopped");
}

/// One pass over every rule, judging the readings up to `now`; what each resource's pass did is
/// counted and logged.
pub async fn detect_all(
    pool: &sqlx::PgPool,
    window: PassWindow,
    now: DateTime<Utc>,
    shutdown: &CancellationToken,
) -> Result<store::PassOutcome, crate::store::StoreError> {
    let mut total = store::PassOutcome::default();
    for row in store::rules(pool).await? {
        if shutdown.is_cancelled() {
            break;
        }
        let Some(rule) = row.rule() else {
            warn!(resource_id = %row.resource_id, "machine-state rule cannot be read; skipped (fix it in machine_state_rules)");
            continue;
        };
        let started = std::time::Instant::now();
        match store::detect_pass(pool, &row.resource_id, &rule, window, now).await {
            Ok(o) if o.skipped => debug!(resource_id = %row.resource_id, "held by another replica"),
            Ok(o) => {
                total.readings += o.readings;
                total.inserted += o.inserted;
                total.updated += o.updated;
                total.deleted += o.deleted;
                metrics::counter!("edge_mes_machine_stops_inserted_total")
                    .increment(o.inserted as u64);
                metrics::histogram!("edge_mes_machine_state_pass_seconds")
                    .record(started.elapsed().as_secs_f64());
                if o.inserted + o.updated + o.deleted > 0 {
                    info!(
                        resource_id = %row.resource_id, readings = o.readings,
                        inserted = o.inserted, updated = o.updated, deleted = o.deleted,
                        "machine stops updated"
                    );
                }
            }
            Err(e) => {
                warn!(resource_id = %row.resource_id, error = %e, "machine-state pass failed")
            }
        }
    }
    Ok(total)
}
