//! `GET /trace/resource/{resource_id}?from=&to=`: the runs of a resource active in a window of at
//! most 31 days, a page at a time in start order, each with its counts and downtime in the
//! window; the first page also summarises the window's readings per sensor.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::cursor::{self, QueryFingerprint};
use super::{counts_of, overlap_seconds, since_2000, CountSummary, SensorSummary};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_ident, parse_timestamp, QueryParams};
use crate::run_schema::{Downtime, Run};
use crate::state::AppState;
use crate::store::trace::{self as store, RunPosition};

pub const MAX_WINDOW_DAYS: i64 = 31;
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// A run active in the window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowRun {
    /// The run with its totals (of all its reports, also those outside the window).
    #[serde(flatten)]
    pub run: Run,
    /// Its count reports at `[from, to)`.
    pub counts: CountSummary,
    /// Its downtimes overlapping the window, as recorded (not cut to it).
    pub downtime: Vec<Downtime>,
    /// Seconds of those downtimes inside the window (an open one up to the run's end, or now).
    pub downtime_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceTrace {
    pub resource_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// This page's runs, in start order.
    pub runs: Vec<WindowRun>,
    /// Pass as `cursor` (with the same resource, `from` and `to`) for the next page; `null` on
    /// the last page.
    pub next_cursor: Option<String>,
    /// The resource's readings at `[from, to)` per sensor; on the first page only (`null` on the
    /// pages a cursor asks for).
    pub sensors: Option<Vec<SensorSummary>>,
}

/// The runs of a resource in a time window, with counts, downtime and reading summaries.
#[utoipa::path(get, path = "/trace/resource/{resource_id}", tag = "kpi",
    params(
        ("resource_id" = crate::domain::Ident, Path, description = "resource"),
        ("from" = DateTime<Utc>, Query, description = "window start (RFC 3339 with offset), inclusive; not before 2000-01-01; before `to`, at most 31 days before it"),
        ("to" = DateTime<Utc>, Query, description = "window end (RFC 3339 with offset), exclusive"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "runs per page; empty or absent: 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, with the same resource, `from` and `to`; empty or absent: the first page")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "a page of the runs active in the window", body = ResourceTrace),
        (status = 400, description = "a query parameter or the path is malformed, unknown, repeated or missing, or the cursor is not one of this query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no run was ever started on the resource and it has no readings in the window", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`from` before 2000, `from` not before `to`, or the window longer than 31 days", body = Problem, content_type = "application/problem+json")))]
pub async fn resource_trace(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    mut q: QueryParams,
) -> Result<Json<ResourceTrace>, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::malformed("resource_id", e.body_text()))?;
    let resource_id = String::from(parse_ident("resource_id", &raw)?);
    let from = q
        .take_parsed("from", parse_timestamp)?
        .ok_or_else(|| ApiError::malformed("from", "required query parameter is missing"))?;
    let to = q
        .take_parsed("to", parse_timestamp)?
        .ok_or_else(|| ApiError::malformed("to", "required query parameter is missing"))?;
    let limit = q
        .take_parsed("limit", |raw| {
            raw.parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    format!("expected a whole number between 1 and {MAX_LIMIT}, got {raw:?}")
                })
        })?
        .unwrap_or(DEFAULT_LIMIT);
    let raw_cursor = q.take("cursor")?;
    q.finish()?;
    let window = window(from, to)?;
    let query = QueryFingerprint::of(&resource_id, from, to);
    let after = raw_cursor
        .map(|raw| cursor::decode(&raw, query))
        .transpose()
        .map_err(|e| ApiError::malformed("cursor", e.to_string()))?;

    let now = Utc::now().trunc_subsecs(6);
    let mut tx = store::snapshot(&state.pool).await?;
    let mut runs = store::runs_in_window(&mut *tx, &resource_id, window, after, limit + 1).await?;
    let next_cursor = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(|r| {
            let position = RunPosition {
                started_at: r.started_at,
                op_run_id: r.op_run_id,
            };
            cursor::encode(position, query)
        })
    } else {
        None
    };
    let sensors = match after {
        Some(_) => None,
        None => Some(store::sensor_stats(&mut *tx, &resource_id, window.0, window.1).await?),
    };
    if after.is_none()
        && runs.is_empty()
        && sensors.as_ref().is_some_and(Vec::is_empty)
        && !store::resource_registered(&mut *tx, &resource_id).await?
    {
        return Err(ApiError::NotFound(format!(
            "resource_id: no resource {resource_id:?} (no run was ever started on it and it has no readings in the window)"
        )));
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| r.op_run_id).collect();
    let counts = store::count_totals(&mut *tx, &ids, Some(window)).await?;
    let downtime = store::downtimes_in_window(&mut *tx, &ids, window).await?;
    tx.commit().await?;

    let runs = runs
        .into_iter()
        .map(|run| {
            let id = run.op_run_id;
            let run_end = run.ended_at.unwrap_or(now);
            let mine: Vec<_> = downtime.iter().filter(|(r, _)| *r == id).collect();
            let downtime_seconds = mine
                .iter()
                .map(|(_, d)| {
                    overlap_seconds((d.started_at, d.ended_at.unwrap_or(run_end)), window)
                })
                .sum();
            WindowRun {
                counts: counts_of(&counts, id),
                downtime: mine
                    .into_iter()
                    .map(|(_, d)| Downtime::from(d.clone()))
                    .collect(),
                downtime_seconds,
                run: run.into(),
            }
        })
        .collect();
    Ok(Json(ResourceTrace {
        resource_id,
        from,
        to,
        runs,
        next_cursor,
        sensors: sensors.map(|s| s.into_iter().map(SensorSummary::from).collect()),
    }))
}

/// `[from, to)`: from 2000 on, `from` before `to`, at most [`MAX_WINDOW_DAYS`] long. The wording
/// of the refusals is that of the other windows (`GET /kpi/oee`, `GET /spc`).
fn window(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    since_2000("from", from)?;
    if from >= to {
        return Err(ApiError::invalid(
            "from",
            format!("{from} is not before to ({to})"),
        ));
    }
    if to - from > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid(
            "from",
            format!("window longer than {MAX_WINDOW_DAYS} days"),
        ));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn refusal(from: &str, to: &str) -> (u16, String) {
        let p = window(t(from), t(to)).unwrap_err().problem();
        assert_eq!(p.field.as_deref(), Some("from"));
        (p.status, p.detail)
    }

    #[test]
    fn windows_are_bounded() {
        assert!(window(t("2025-01-01T00:00:00Z"), t("2025-02-01T00:00:00Z")).is_ok());
        let (status, detail) = refusal("2025-01-01T00:00:00Z", "2025-02-01T00:00:00.000001Z");
        assert_eq!(status, 422);
        assert!(detail.contains("window longer than"), "{detail}");
        let (status, detail) = refusal("2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z");
        assert_eq!(status, 422);
        assert!(detail.contains("is not before to"), "{detail}");
        let (status, detail) = refusal("1999-12-31T23:00:00Z", "2000-01-01T01:00:00Z");
        assert_eq!(status, 422);
        assert!(detail.contains(" is before "), "{detail}");
    }
}
