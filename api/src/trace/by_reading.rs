//! `GET /trace/reading?resource_id=&ts=`: which run — so which work order and operation — was
//! active on a resource at an instant (a reading's `resource_id` and `ts`), and whether it was
//! paused then.
//!
//! A reading names its resource and time; the resource fixes the site (resource ids are unique
//! across sites) and one resource has one run at a time, so the sensor does not change the
//! answer and is not asked for (`readings` has no box column).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::since_2000;
use crate::error::{ApiError, Problem};
use crate::extract::{parse_timestamp, QueryParams};
use crate::run_schema::{Downtime, Run};
use crate::state::AppState;
use crate::store::trace as store;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadingTrace {
    pub resource_id: String,
    pub ts: DateTime<Utc>,
    /// The run whose `[started_at, ended_at)` contains `ts` (as it is now: its status and totals
    /// are today's).
    pub run: Run,
    /// A downtime of the run was open at `ts`.
    pub paused: bool,
    /// That downtime, with its reason.
    pub downtime: Option<Downtime>,
}

/// The run, work order and operation active on a resource at an instant.
#[utoipa::path(get, path = "/trace/reading", tag = "kpi",
    params(
        ("resource_id" = crate::domain::Ident, Query, description = "the reading's resource"),
        ("ts" = DateTime<Utc>, Query, description = "the reading's time (RFC 3339 with offset); not before 2000-01-01. A run contains its start instant and not its end instant")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "the run active at `ts`, and the downtime open then if any", body = ReadingTrace),
        (status = 400, description = "a query parameter is malformed, unknown, repeated or missing", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no run was active on the resource at `ts`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`ts` before 2000", body = Problem, content_type = "application/problem+json")))]
pub async fn reading_trace(
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<ReadingTrace>, ApiError> {
    let resource_id = String::from(q.require_ident("resource_id")?);
    let ts = q
        .take_parsed("ts", parse_timestamp)?
        .ok_or_else(|| ApiError::malformed("ts", "required query parameter is missing"))?;
    q.finish()?;
    since_2000("ts", ts)?;
    let mut tx = store::snapshot(&state.pool).await?;
    let run = store::run_at(&mut *tx, &resource_id, ts)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "ts: no run was active on resource {resource_id:?} at {ts}"
            ))
        })?;
    let downtime = store::downtime_at(&mut *tx, run.op_run_id, ts).await?;
    tx.commit().await?;
    Ok(Json(ReadingTrace {
        resource_id,
        ts,
        run: run.into(),
        paused: downtime.is_some(),
        downtime: downtime.map(Downtime::from),
    }))
}
