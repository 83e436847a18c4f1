//! The run lifecycle endpoints: start, report, pause, resume, complete, abort, active, by id.
//!
//! Thin by design: the body arrives as typed values (its extractor refuses what the domain cannot
//! take, naming the field), the domain ([`crate::domain::run`]) decides, the store
//! ([`crate::store`]) reads and writes, and this file only wires them and answers. Each POST is
//! one transaction: claim the `Idempotency-Key`, lock the run, decide, write the change and its
//! event, store the answer. A report without a key goes through the report lanes
//! ([`crate::report_batch`]).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{self, Command, Ending};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_uuid, ApiJson};
use crate::idempotency::{self, Caller, IdempotencyKey};
use crate::run_schema::{
    AbortRun, ActiveRuns, CompleteRun, Downtime, PauseRun, ReportCounts, ResumeRun, Run, RunDetail,
    StartRun,
};
use crate::state::AppState;
use crate::store::reports::{self, ReportJob};
use crate::store::runs as store;

/// Now, at the database's precision (microseconds), so an answer shows what was stored.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A caller's time at the database's precision.
fn micros(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(|t| t.trunc_subsecs(6))
}

/// What a lifecycle change answers with.
enum Answer {
    Run,
    /// The run with its downtimes.
    Detail,
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

/// One change of an existing run: claim the key, lock the run, decide, write, answer.
async fn change(
    state: &AppState,
    caller: &Caller,
    route: &str,
    request: &impl Serialize,
    id: Uuid,
    mut command: Command,
    answer: Answer,
) -> Result<Response, ApiError> {
    let now = now();
    let mut tx = state.pool.begin().await?;
    let key = &caller.key;
    if let Some(replay) = idempotency::claim(&mut tx, key, route, request).await? {
        return Ok(replay.into_response());
    }
    let run = store::lock(&mut tx, id).await?;
    if let Command::Pause {
        reason_code,
        reason,
        ..
    } = &mut command
    {
        *reason = store::reason(&mut tx, reason_code.as_str()).await?;
    }
    let transition = domain::decide(&run, command, now)?;
    let actor = caller.actor.as_deref();
    let run = store::write(&mut tx, transition, &state.settings.default_site, actor).await?;
    match answer {
        Answer::Run => respond(state, tx, key, StatusCode::OK, &Run::from(run)).await,
        Answer::Detail => {
            let downtime = store::downtimes(&mut *tx, id).await?;
            let detail = RunDetail {
                run: run.into(),
                downtime: downtime.into_iter().map(Downtime::from).collect(),
            };
            respond(state, tx, key, StatusCode::OK, &detail).await
        }
    }
}

/// Start a run on a resource.
#[utoipa::path(post, path = "/op_run/start", tag = "runs", request_body = StartRun,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 201, description = "run started (a retry with its Idempotency-Key gets the same answer)", body = Run,
            links(
                ("report" = (operation_id = "report", request_body = json!({"op_run_id": "$response.body#/op_run_id"}),
                    description = "count units of the started run")),
                ("pause" = (operation_id = "pause", request_body = json!({"op_run_id": "$response.body#/op_run_id"}),
                    description = "pause the started run")),
                ("resume" = (operation_id = "resume", request_body = json!({"op_run_id": "$response.body#/op_run_id"}),
                    description = "resume the started run once paused")),
                ("complete" = (operation_id = "complete", request_body = json!({"op_run_id": "$response.body#/op_run_id"}),
                    description = "complete the started run")),
                ("abort" = (operation_id = "abort", request_body = json!({"op_run_id": "$response.body#/op_run_id"}),
                    description = "abort the started run")),
                ("get_run" = (operation_id = "get_run", parameters(("op_run_id" = "$response.body#/op_run_id")),
                    description = "read the started run with its downtimes")))),
        (status = 409, description = "the resource has an overlapping run, belongs to another site, or op_run_id exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: a time before 2000 or more than 5 minutes ahead, an unknown site_id, an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<Response, ApiError> {
    let mut request = body.clone().into_domain();
    request.started_at = micros(request.started_at);
    let transition = domain::start(&request, now())?;
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &caller.key, "/op_run/start", &body).await? {
        return Ok(replay.into_response());
    }
    let actor = caller.actor.as_deref();
    let run = store::write_start(&mut tx, transition, &state.settings.default_site, actor).await?;
    respond(
        &state,
        tx,
        &caller.key,
        StatusCode::CREATED,
        &Run::from(run),
    )
    .await
}

/// Report good and scrap units made since the previous report.
#[utoipa::path(post, path = "/op_run/report", tag = "runs", request_body = ReportCounts,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "counted; the run with its new totals", body = Run),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the run is completed or aborted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: `at` before the run's start, before 2000 or more than 5 minutes ahead; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ReportCounts>,
) -> Result<Response, ApiError> {
    let job = ReportJob {
        op_run_id: body.op_run_id,
        good_delta: body.good_delta,
        scrap_delta: body.scrap_delta,
        at: micros(body.at),
        received: now(),
        actor: caller.actor.clone(),
    };
    if caller.key.0.is_none() {
        let run = state.reports.report(job).await?;
        return Ok((StatusCode::OK, Json(Run::from(run))).into_response());
    }
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &caller.key, "/op_run/report", &body).await? {
        return Ok(replay.into_response());
    }
    let answer = reports::write(&mut tx, &[job], &state.settings.default_site)
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("no answer for the report".into()))?;
    respond(&state, tx, &caller.key, StatusCode::OK, &Run::from(answer?)).await
}

/// Pause a running run: opens a downtime with a reason code (planned or unplanned per reason).
#[utoipa::path(post, path = "/op_run/pause", tag = "runs", request_body = PauseRun,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "paused; the run with its downtimes", body = RunDetail),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the run is not running, or `at` overlaps a downtime", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: an unknown reason_code; `at` before the run's start or the previous downtime's end, before 2000 or more than 5 minutes ahead; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PauseRun>,
) -> Result<Response, ApiError> {
    let command = Command::Pause {
        reason_code: body.reason_code.clone(),
        reason: None,
        at: micros(body.at),
        note: body.note.clone(),
    };
    let (id, route) = (body.op_run_id, "/op_run/pause");
    change(&state, &caller, route, &body, id, command, Answer::Detail).await
}

/// Resume a paused run: closes its open downtime.
#[utoipa::path(post, path = "/op_run/resume", tag = "runs", request_body = ResumeRun,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "resumed; the run with its downtimes", body = RunDetail),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the run is not paused", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: `at` before the pause, before 2000 or more than 5 minutes ahead; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ResumeRun>,
) -> Result<Response, ApiError> {
    let command = Command::Resume {
        at: micros(body.at),
    };
    let (id, route) = (body.op_run_id, "/op_run/resume");
    change(&state, &caller, route, &body, id, command, Answer::Detail).await
}

/// Complete a run, optionally with final counters; closes an open downtime at the end time.
#[utoipa::path(post, path = "/op_run/complete", tag = "runs", request_body = CompleteRun,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "completed", body = Run),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already completed or aborted, or final counters below the reported totals", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: `ended_at` before the run's start, its latest report or downtime, before 2000 or more than 5 minutes ahead; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CompleteRun>,
) -> Result<Response, ApiError> {
    let command = Command::End {
        ending: Ending::Complete {
            good_units: body.good_units,
            scrap_units: body.scrap_units,
        },
        at: micros(body.ended_at),
    };
    let (id, route) = (body.op_run_id, "/op_run/complete");
    change(&state, &caller, route, &body, id, command, Answer::Run).await
}

/// Abort a run: it ends like a completion (its time stays planned busy time, its counts stay)
/// but with status `aborted`, for runs stopped without finishing the order.
#[utoipa::path(post, path = "/op_run/abort", tag = "runs", request_body = AbortRun,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 200, description = "aborted", body = Run),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already completed or aborted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid field: `ended_at` before the run's start, its latest report or downtime, before 2000 or more than 5 minutes ahead; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn abort(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AbortRun>,
) -> Result<Response, ApiError> {
    let command = Command::End {
        ending: Ending::Abort,
        at: micros(body.ended_at),
    };
    let (id, route) = (body.op_run_id, "/op_run/abort");
    change(&state, &caller, route, &body, id, command, Answer::Run).await
}

/// Runs that are running or paused.
#[utoipa::path(get, path = "/op_run/active", tag = "runs",
    responses(crate::http::ServerFaults,
        (status = 200, description = "active runs, oldest first", body = ActiveRuns)))]
pub async fn active(State(state): State<AppState>) -> Result<Json<ActiveRuns>, ApiError> {
    let runs = store::active_runs(&state.pool).await?;
    Ok(Json(ActiveRuns {
        runs: runs.into_iter().map(Run::from).collect(),
    }))
}

/// One run with its downtimes.
#[utoipa::path(get, path = "/op_run/{op_run_id}", tag = "runs",
    params(("op_run_id" = Uuid, Path, description = "run id")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "the run", body = RunDetail),
        (status = 400, description = "not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json")))]
pub async fn get_run(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::malformed("op_run_id", e.body_text()))?;
    let id = parse_uuid("op_run_id", &raw)?;
    let run = store::get_run(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("op_run_id: no run {id}")))?;
    let downtime = store::downtimes(&state.pool, id).await?;
    Ok(Json(RunDetail {
        run: run.into(),
        downtime: downtime.into_iter().map(Downtime::from).collect(),
    }))
}
