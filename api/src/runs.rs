//! The run lifecycle endpoints: start, report, pause, resume, complete, active, by id.
//!
//! Request bodies are the seed's, plus optional fields; unknown fields are refused (a misspelt
//! `good_detla` must not silently count nothing). Each POST is one transaction: lock the run,
//! check the transition, write the change and its outbox event, store the Idempotency-Key answer.
//! A report without a key is a single statement, written together with the reports queued
//! meanwhile (see [`crate::report_batch`]).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use protocol::run_event::{CountDelta, RunEventType};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::extract::{parse_uuid, ApiJson};
use crate::idempotency::{self, IdempotencyKey};
use crate::run_schema::{
    AbortRun, ActiveRuns, CompleteRun, Downtime, PauseRun, ReportCounts, ResumeRun, Run, RunDetail,
    StartRun,
};
use crate::run_store::{self, DowntimeRow, NewRun, RunRow};
use crate::state::AppState;

/// Caller timestamps may be this far ahead of the server clock.
const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
const MAX_ID_BYTES: usize = 128;
/// Largest count one report may carry.
const MAX_DELTA: i64 = 1_000_000_000;

fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid(
            field,
            format!("longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn check_positive(field: &str, value: Option<f64>, allow_zero: bool) -> Result<(), ApiError> {
    let Some(v) = value else { return Ok(()) };
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 1e9 {
        let want = if allow_zero { ">= 0" } else { "> 0" };
        return Err(ApiError::invalid(
            field,
            format!("must be a finite number {want} and at most 1e9, got {v}"),
        ));
    }
    Ok(())
}

fn check_count(field: &str, value: i64) -> Result<(), ApiError> {
    if !(0..=MAX_DELTA).contains(&value) {
        return Err(ApiError::invalid(
            field,
            format!("must be between 0 and {MAX_DELTA}, got {value}"),
        ));
    }
    Ok(())
}

/// Now, at the database's precision (microseconds), so an answer shows what was stored.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A caller time (at microsecond precision), or now; refused when further ahead than the allowed
/// clock skew.
fn time_or_now(field: &str, value: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, ApiError> {
    let now = now();
    match value.map(|t| t.trunc_subsecs(6)) {
        None => Ok(now),
        Some(t) if t > now + MAX_CLOCK_SKEW => Err(ApiError::invalid(
            field,
            format!("{t} is in the future (server time {now})"),
        )),
        Some(t) => Ok(t),
    }
}

fn not_before(
    field: &str,
    t: DateTime<Utc>,
    bound: DateTime<Utc>,
    what: &str,
) -> Result<(), ApiError> {
    if t < bound {
        return Err(ApiError::invalid(
            field,
            format!("{t} is before {what} ({bound})"),
        ));
    }
    Ok(())
}

fn must_be_open(run: &RunRow) -> Result<(), ApiError> {
    if run.is_open() {
        Ok(())
    } else {
        Err(ApiError::Conflict {
            field: Some("op_run_id".to_owned()),
            detail: format!("op_run_id: run {} is {}", run.op_run_id, run.status),
        })
    }
}

async fn respond(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    key: &IdempotencyKey,
    status: StatusCode,
    body: &impl Serialize,
) -> Result<Response, ApiError> {
    let value = serde_json::to_value(body)
        .map_err(|e| ApiError::Internal(format!("cannot serialize answer: {e}")))?;
    idempotency::store(&mut tx, key, status, &value).await?;
    tx.commit().await?;
    state.outbox_signal.notify_one();
    Ok((status, Json(value)).into_response())
}

/// Start a run on a resource.
#[utoipa::path(post, path = "/op_run/start", tag = "runs", request_body = StartRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, 1-255 visible ASCII")),
    responses(
        (status = 201, description = "run started", body = Run),
        (status = 400, description = "malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the resource already has an overlapping run", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = Problem, content_type = "application/problem+json")))]
pub async fn start(
    State(state): State<AppState>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<Response, ApiError> {
    check_id("work_order_id", &body.work_order_id)?;
    check_id("operation_id", &body.operation_id)?;
    check_id("resource_id", &body.resource_id)?;
    if let Some(site) = &body.site_id {
        check_id("site_id", site)?;
    }
    check_positive("planned_seconds", body.planned_seconds, true)?;
    check_positive("ideal_cycle_time_s", body.ideal_cycle_time_s, false)?;
    let started_at = time_or_now("started_at", body.started_at)?;
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &key, "/op_run/start", &body).await? {
        return Ok(replay.into_response());
    }
    let run = run_store::insert_run(
        &mut tx,
        &NewRun {
            op_run_id: body.op_run_id.unwrap_or_else(Uuid::now_v7),
            work_order_id: &body.work_order_id,
            operation_id: &body.operation_id,
            resource_id: &body.resource_id,
            site_id: body.site_id.as_deref(),
            default_site: &state.settings.default_site,
            started_at,
            planned_seconds: body.planned_seconds,
            ideal_cycle_time_s: body.ideal_cycle_time_s,
        },
    )
    .await?;
    let event = run_store::event(
        &run,
        &state.settings.default_site,
        RunEventType::Started,
        started_at,
        None,
        None,
    );
    run_store::insert_event(&mut tx, &event).await?;
    respond(&state, tx, &key, StatusCode::CREATED, &Run::from(run)).await
}

/// Report good and scrap units made since the previous report.
#[utoipa::path(post, path = "/op_run/report", tag = "runs", request_body = ReportCounts,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, 1-255 visible ASCII")),
    responses(
        (status = 200, description = "counted; the run with its new totals", body = Run),
        (status = 400, description = "malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the run is completed or aborted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = Problem, content_type = "application/problem+json")))]
pub async fn report(
    State(state): State<AppState>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<ReportCounts>,
) -> Result<Response, ApiError> {
    check_count("good_delta", body.good_delta)?;
    check_count("scrap_delta", body.scrap_delta)?;
    let at = time_or_now("at", body.at)?;
    let delta = CountDelta {
        good_delta: body.good_delta,
        scrap_delta: body.scrap_delta,
    };
    let site = &state.settings.default_site;
    if key.0.is_none() {
        // The hot path: one autocommit statement, shared with the reports queued meanwhile.
        let run = state.reports.report(body.op_run_id, delta, at).await?;
        return Ok((StatusCode::OK, Json(Run::from(run))).into_response());
    }
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &key, "/op_run/report", &body).await? {
        return Ok(replay.into_response());
    }
    let run = run_store::report(&mut tx, body.op_run_id, delta, at, site).await?;
    respond(&state, tx, &key, StatusCode::OK, &Run::from(run)).await
}

/// Pause a running run: opens a downtime with a reason code (planned or unplanned per reason).
#[utoipa::path(post, path = "/op_run/pause", tag = "runs", request_body = PauseRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, 1-255 visible ASCII")),
    responses(
        (status = 200, description = "paused; the run with its downtimes", body = RunDetail),
        (status = 400, description = "malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the run is not running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field (e.g. unknown reason_code)", body = Problem, content_type = "application/problem+json")))]
pub async fn pause(
    State(state): State<AppState>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<PauseRun>,
) -> Result<Response, ApiError> {
    check_id("reason_code", &body.reason_code)?;
    if body.note.as_ref().is_some_and(|n| n.len() > 1024) {
        return Err(ApiError::invalid("note", "longer than 1024 bytes"));
    }
    let at = time_or_now("at", body.at)?;
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &key, "/op_run/pause", &body).await? {
        return Ok(replay.into_response());
    }
    let mut run = run_store::lock_run(&mut tx, body.op_run_id).await?;
    must_be_open(&run)?;
    if run.status == "paused" {
        return Err(ApiError::Conflict {
            field: Some("op_run_id".to_owned()),
            detail: format!("op_run_id: run {} is already paused", run.op_run_id),
        });
    }
    if run_store::reason(&mut tx, &body.reason_code)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid(
            "reason_code",
            format!(
                "unknown reason code {:?} (see table downtime_reasons)",
                body.reason_code
            ),
        ));
    }
    not_before("at", at, run.started_at, "the run's start")?;
    if let Some(end) = run_store::last_downtime_end(&mut tx, run.op_run_id).await? {
        not_before("at", at, end, "the end of the run's previous downtime")?;
    }
    run_store::insert_downtime(
        &mut tx,
        run.op_run_id,
        &body.reason_code,
        at,
        body.note.as_deref(),
    )
    .await?;
    run.status = "paused".to_owned();
    run_store::update_run(&mut tx, &run).await?;
    let open = run_store::open_downtime(&mut tx, run.op_run_id).await?;
    let event = run_store::event(
        &run,
        &state.settings.default_site,
        RunEventType::Paused,
        at,
        None,
        open.as_ref().map(DowntimeRow::info),
    );
    run_store::insert_event(&mut tx, &event).await?;
    let downtime = run_store::downtimes(&mut *tx, run.op_run_id).await?;
    let detail = RunDetail {
        run: run.into(),
        downtime: downtime.into_iter().map(Downtime::from).collect(),
    };
    respond(&state, tx, &key, StatusCode::OK, &detail).await
}

/// Resume a paused run: closes its open downtime.
#[utoipa::path(post, path = "/op_run/resume", tag = "runs", request_body = ResumeRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, 1-255 visible ASCII")),
    responses(
        (status = 200, description = "resumed; the run with its downtimes", body = RunDetail),
        (status = 400, description = "malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the run is not paused", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = Problem, content_type = "application/problem+json")))]
pub async fn resume(
    State(state): State<AppState>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<ResumeRun>,
) -> Result<Response, ApiError> {
    let at = time_or_now("at", body.at)?;
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &key, "/op_run/resume", &body).await? {
        return Ok(replay.into_response());
    }
    let mut run = run_store::lock_run(&mut tx, body.op_run_id).await?;
    must_be_open(&run)?;
    let Some(mut open) = run_store::open_downtime(&mut tx, run.op_run_id).await? else {
        return Err(ApiError::Conflict {
            field: Some("op_run_id".to_owned()),
            detail: format!("op_run_id: run {} is not paused", run.op_run_id),
        });
    };
    not_before("at", at, open.started_at, "the start of the downtime")?;
    run_store::close_downtime(&mut tx, open.id, at).await?;
    open.ended_at = Some(at);
    run.status = "running".to_owned();
    run_store::update_run(&mut tx, &run).await?;
    let event = run_store::event(
        &run,
        &state.settings.default_site,
        RunEventType::Resumed,
        at,
        None,
        Some(open.info()),
    );
    run_store::insert_event(&mut tx, &event).await?;
    let downtime = run_store::downtimes(&mut *tx, run.op_run_id).await?;
    let detail = RunDetail {
        run: run.into(),
        downtime: downtime.into_iter().map(Downtime::from).collect(),
    };
    respond(&state, tx, &key, StatusCode::OK, &detail).await
}

/// Complete a run, optionally with final counters; closes an open downtime at the end time.
#[utoipa::path(post, path = "/op_run/complete", tag = "runs", request_body = CompleteRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, 1-255 visible ASCII")),
    responses(
        (status = 200, description = "completed", body = Run),
        (status = 400, description = "malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already completed, or final counters below the reported totals", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = Problem, content_type = "application/problem+json")))]
pub async fn complete(
    State(state): State<AppState>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<CompleteRun>,
) -> Result<Response, ApiError> {
    if let Some(g) = body.good_units {
        check_count("good_units", g)?;
    }
    if let Some(s) = body.scrap_units {
        check_count("scrap_units", s)?;
    }
    let finals = (body.good_units, body.scrap_units);
    end_run(
        &state,
        &key,
        "/op_run/complete",
        &body,
        body.op_run_id,
        body.ended_at,
        finals,
        RunEventType::Completed,
    )
    .await
}

/// Abort a run: it ends like a completion (its time stays planned busy time, its counts stay)
/// but with status `aborted`, for runs stopped without finishing the order.
#[utoipa::path(post, path = "/op_run/abort", tag = "runs", request_body = AbortRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key, 1-255 visible ASCII")),
    responses(
        (status = 200, description = "aborted", body = Run),
        (status = 400, description = "malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already completed or aborted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field", body = Problem, content_type = "application/problem+json")))]
pub async fn abort(
    State(state): State<AppState>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<AbortRun>,
) -> Result<Response, ApiError> {
    end_run(
        &state,
        &key,
        "/op_run/abort",
        &body,
        body.op_run_id,
        body.ended_at,
        (None, None),
        RunEventType::Aborted,
    )
    .await
}

/// Ends an open run as completed or aborted: the end time (default: now, taken under the run's
/// lock so it follows every report committed before), final-counter adjustments, the open
/// downtime closed at the end, the event.
#[allow(clippy::too_many_arguments)]
async fn end_run(
    state: &AppState,
    key: &IdempotencyKey,
    route: &str,
    request: &impl Serialize,
    id: Uuid,
    asked_end: Option<DateTime<Utc>>,
    finals: (Option<i64>, Option<i64>),
    event_type: RunEventType,
) -> Result<Response, ApiError> {
    let asked_end = match asked_end {
        Some(t) => Some(time_or_now("ended_at", Some(t))?),
        None => None,
    };
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, key, route, request).await? {
        return Ok(replay.into_response());
    }
    let mut run = run_store::lock_run(&mut tx, id).await?;
    must_be_open(&run)?;
    let last_report = run_store::last_report_at(&mut tx, run.op_run_id).await?;
    let ended_at = asked_end.unwrap_or_else(|| last_report.map_or(now(), |last| last.max(now())));
    not_before("ended_at", ended_at, run.started_at, "the run's start")?;
    if let Some(last) = last_report {
        not_before("ended_at", ended_at, last, "the run's latest count report")?;
    }
    let delta = CountDelta {
        good_delta: final_delta("good_units", finals.0, run.good_units)?,
        scrap_delta: final_delta("scrap_units", finals.1, run.scrap_units)?,
    };
    let mut closed = None;
    if let Some(mut open) = run_store::open_downtime(&mut tx, run.op_run_id).await? {
        not_before(
            "ended_at",
            ended_at,
            open.started_at,
            "the start of the open downtime",
        )?;
        run_store::close_downtime(&mut tx, open.id, ended_at).await?;
        open.ended_at = Some(ended_at);
        closed = Some(open.info());
    }
    if delta.good_delta > 0 || delta.scrap_delta > 0 {
        run_store::insert_final_count(&mut tx, run.op_run_id, ended_at, delta).await?;
    }
    run.good_units += delta.good_delta;
    run.scrap_units += delta.scrap_delta;
    run.status = match event_type {
        RunEventType::Aborted => "aborted",
        _ => "completed",
    }
    .to_owned();
    run.ended_at = Some(ended_at);
    run_store::update_run(&mut tx, &run).await?;
    let event = run_store::event(
        &run,
        &state.settings.default_site,
        event_type,
        ended_at,
        Some(delta),
        closed,
    );
    run_store::insert_event(&mut tx, &event).await?;
    respond(state, tx, key, StatusCode::OK, &Run::from(run)).await
}

/// Final total minus the reported total; a final total below it is a conflict.
fn final_delta(field: &str, final_total: Option<i64>, reported: i64) -> Result<i64, ApiError> {
    match final_total {
        None => Ok(0),
        Some(f) if f >= reported => Ok(f - reported),
        Some(f) => Err(ApiError::Conflict {
            field: Some(field.to_owned()),
            detail: format!("{field}: final total {f} is below the {reported} already reported"),
        }),
    }
}

/// Runs that are running or paused.
#[utoipa::path(get, path = "/op_run/active", tag = "runs",
    responses((status = 200, description = "active runs, oldest first", body = ActiveRuns)))]
pub async fn active(State(state): State<AppState>) -> Result<Json<ActiveRuns>, ApiError> {
    let runs = run_store::active_runs(&state.pool).await?;
    Ok(Json(ActiveRuns {
        runs: runs.into_iter().map(Run::from).collect(),
    }))
}

/// One run with its downtimes.
#[utoipa::path(get, path = "/op_run/{op_run_id}", tag = "runs",
    params(("op_run_id" = String, Path, description = "run id (UUID)")),
    responses(
        (status = 200, description = "the run", body = RunDetail),
        (status = 400, description = "not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json")))]
pub async fn get_run(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::malformed("op_run_id", e.body_text()))?;
    let id = parse_uuid("op_run_id", &raw)?;
    let run = run_store::get_run(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("op_run_id: no run {id}")))?;
    let downtime = run_store::downtimes(&state.pool, id).await?;
    Ok(Json(RunDetail {
        run: run.into(),
        downtime: downtime.into_iter().map(Downtime::from).collect(),
    }))
}
