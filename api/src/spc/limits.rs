//! `POST /spc/limits` (admin): control limits computed from a baseline window of one sensor's
//! readings (phase I) and stored as the next version for the resource, sensor, chart and
//! subgroup size, with who set them and when; `GET /spc` applies the version in force from then
//! on (phase II). `GET /spc/limits` (viewer): the versions, newest first.
//!
//! A baseline is refused (422, naming the field) when `baseline_from` is not before
//! `baseline_to`, the window is longer than 31 days or ends more than 5 minutes in the future,
//! it holds more than [`MAX_BASELINE_READINGS`] readings, fewer than 20 readings (i_mr) or 20
//! complete subgroups (xbar_r, xbar_s), readings that do not vary, or readings too large for
//! limits; `subgroup_size` goes with xbar_r and xbar_s only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DispersionLimits, MAX_WINDOW_SECONDS};
use crate::domain::run::MAX_CLOCK_SKEW;
use crate::domain::spc::{self as chart, Chart, ChartSpec, SubgroupSize};
use crate::domain::Ident;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, QueryParams};
use crate::idempotency::{self, Caller};
use crate::state::AppState;
use crate::store::spc::{self as store, NewLimits, StoredLimits, Take};

/// Most readings a baseline may hold.
pub const MAX_BASELINE_READINGS: usize = 100_000;
/// Most versions `GET /spc/limits` lists.
const MAX_VERSIONS: i64 = 1000;
const ROUTE: &str = "/spc/limits";

/// `POST /spc/limits` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetControlLimits {
    #[schema(inline, example = "SMT01")]
    pub resource_id: Ident,
    #[schema(inline, example = "temp")]
    pub sensor: Ident,
    #[schema(inline)]
    pub chart: Chart,
    /// Readings per subgroup (2 … 25): required for xbar_r and xbar_s, refused for i_mr.
    #[schema(inline)]
    pub subgroup_size: Option<SubgroupSize>,
    /// Start of the baseline window (inclusive).
    pub baseline_from: DateTime<Utc>,
    /// End of the baseline window (exclusive): after `baseline_from`, at most 31 days later, at
    /// most 5 minutes ahead of the server's clock.
    pub baseline_to: DateTime<Utc>,
}

/// One version of stored control limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlLimitsVersion {
    pub resource_id: String,
    pub sensor: String,
    #[schema(inline)]
    pub chart: Chart,
    /// Readings per plotted point: 1 for i_mr.
    pub subgroup_size: u8,
    /// 1, 2, … per resource, sensor, chart and subgroup size.
    pub version: i32,
    /// The highest version of its resource, sensor, chart and subgroup size: the one applied.
    pub in_force: bool,
    /// x̄ of the baseline's readings, or x̿ of its subgroup means.
    pub center_line: f64,
    pub ucl: f64,
    pub lcl: f64,
    pub dispersion: DispersionLimits,
    /// σ of individual readings: MR̄/d2(2), R̄/d2(n) or S̄/c4(n).
    pub sigma_within: f64,
    pub baseline_from: DateTime<Utc>,
    pub baseline_to: DateTime<Utc>,
    /// Readings the limits come from (an incomplete last subgroup left out).
    pub baseline_points: i32,
    /// Plotted points of the baseline: readings, or complete subgroups.
    pub baseline_subgroups: i32,
    /// Who set them: the API token's name or the JWT's subject; `null` without authentication.
    pub set_by: Option<String>,
    pub set_at: DateTime<Utc>,
}

impl From<StoredLimits> for ControlLimitsVersion {
    fn from(s: StoredLimits) -> Self {
        let l = &s.limits;
        Self {
            chart: l.spec.chart(),
            subgroup_size: l.spec.subgroup_size(),
            version: s.version,
            in_force: s.in_force,
            center_line: l.location.center,
            ucl: l.location.ucl,
            lcl: l.location.lcl,
            dispersion: DispersionLimits::from(l),
            sigma_within: l.sigma_within,
            resource_id: s.resource_id,
            sensor: s.sensor,
            baseline_from: s.baseline_from,
            baseline_to: s.baseline_to,
            baseline_points: s.baseline_points,
            baseline_subgroups: s.baseline_subgroups,
            set_by: s.set_by,
            set_at: s.set_at,
        }
    }
}

/// `GET /spc/limits` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ControlLimitsHistory {
    pub resource_id: String,
    pub sensor: String,
    /// Newest first (at most 1000).
    pub versions: Vec<ControlLimitsVersion>,
}

/// The baseline window at the database's precision, checked.
fn baseline_window(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let (from, to) = (from.trunc_subsecs(6), to.trunc_subsecs(6));
    if from >= to {
        return Err(ApiError::invalid(
            "baseline_from",
            format!("{from} is not before baseline_to ({to})"),
        ));
    }
    if (to - from).num_seconds() > MAX_WINDOW_SECONDS {
        return Err(ApiError::invalid(
            "baseline_from",
            format!("window longer than {MAX_WINDOW_SECONDS} s"),
        ));
    }
    if to > now + MAX_CLOCK_SKEW {
        return Err(ApiError::invalid(
            "baseline_to",
            format!("{to} is in the future (server time {now})"),
        ));
    }
    Ok((from, to))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Set control limits from a baseline window (phase I); `GET /spc` applies them from now on.
#[utoipa::path(post, path = "/spc/limits", tag = "kpi", request_body = SetControlLimits,
    params(crate::idempotency::IdempotencyKey),
    responses(crate::extract::JsonBodyRefusals, crate::http::ServerFaults,
        (status = 201, description = "stored as the next version, now in force (a retry with its Idempotency-Key gets the same answer)", body = ControlLimitsVersion),
        (status = 422, description = "invalid field: `baseline_from` not before `baseline_to`, a window longer than 31 days, fewer than 20 readings (i_mr) or 20 complete subgroups (xbar_r, xbar_s) in it, readings that do not vary or are too large for limits; more than 100000 readings, or `baseline_to` more than 5 minutes ahead (`baseline_to`); `subgroup_size` missing for xbar_r/xbar_s or given for i_mr; an Idempotency-Key used for another request", body = Problem, content_type = "application/problem+json")))]
pub async fn set_limits(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SetControlLimits>,
) -> Result<Response, ApiError> {
    let spec = ChartSpec::new(body.chart, body.subgroup_size)
        .map_err(|e| ApiError::invalid("subgroup_size", e.to_string()))?;
    let window = baseline_window(body.baseline_from, body.baseline_to, Utc::now())?;
    let (resource_id, sensor) = (body.resource_id.as_str(), body.sensor.as_str());
    let mut tx = state.pool.begin().await?;
    if let Some(replay) = idempotency::claim(&mut tx, &caller.key, ROUTE, &body).await? {
        return Ok(replay.into_response());
    }
    let take = Take::Oldest(MAX_BASELINE_READINGS as i64 + 1);
    let rows = store::readings(&mut *tx, resource_id, sensor, window, take).await?;
    if rows.len() > MAX_BASELINE_READINGS {
        return Err(ApiError::invalid(
            "baseline_to",
            format!(
                "the baseline holds more than {MAX_BASELINE_READINGS} readings; end it earlier"
            ),
        ));
    }
    let values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let (limits, plot) = chart::baseline(spec, &values)
        .map_err(|e| ApiError::invalid("baseline_from", e.to_string()))?;
    let new = NewLimits {
        resource_id,
        sensor,
        limits,
        baseline_from: window.0,
        baseline_to: window.1,
        baseline_points: count(values.len() - plot.dropped),
        baseline_subgroups: count(plot.points.len()),
        set_by: caller.actor.as_deref(),
    };
    let stored = store::insert(&mut tx, &new).await?;
    tracing::info!(
        resource_id, sensor, chart = %spec.chart(), subgroup_size = spec.subgroup_size(),
        version = stored.version, set_by = ?stored.set_by, "spc control limits set"
    );
    let answer = serde_json::to_value(ControlLimitsVersion::from(stored))
        .map_err(|e| ApiError::Internal(format!("cannot serialize answer: {e}")))?;
    idempotency::store(&mut tx, &caller.key, StatusCode::CREATED, &answer).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Versions of the stored control limits of one sensor of one resource, newest first.
#[utoipa::path(get, path = "/spc/limits", tag = "kpi",
    params(
        ("resource_id" = crate::domain::Ident, Query, description = "resource"),
        ("sensor" = crate::domain::Ident, Query, description = "sensor name, e.g. temp"),
        ("chart" = Option<String>, Query, pattern = "^(i_mr|xbar_r|xbar_s)$", description = "only this chart's versions; empty or absent: every chart's")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "versions, newest first (at most 1000); none stored: an empty list", body = ControlLimitsHistory),
        (status = 400, description = "a query parameter is malformed, unknown, repeated or missing", body = Problem, content_type = "application/problem+json")))]
pub async fn list_limits(
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<ControlLimitsHistory>, ApiError> {
    let resource_id = String::from(q.require_ident("resource_id")?);
    let sensor = String::from(q.require_ident("sensor")?);
    let chart = q.take_parsed("chart", |raw| {
        raw.parse::<Chart>().map_err(|e| e.to_string())
    })?;
    q.finish()?;
    let versions = store::versions(&state.pool, &resource_id, &sensor, chart, MAX_VERSIONS)
        .await?
        .into_iter()
        .map(ControlLimitsVersion::from)
        .collect();
    Ok(Json(ControlLimitsHistory {
        resource_id,
        sensor,
        versions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
    }

    fn field(e: ApiError) -> Option<String> {
        e.problem().field
    }

    #[test]
    fn baseline_windows_are_bounded() {
        let now = t(0);
        assert_eq!(baseline_window(t(-60), t(0), now).unwrap(), (t(-60), t(0)));
        let bad = [
            (t(0), t(0), "baseline_from"),
            (t(10), t(0), "baseline_from"),
            (t(-MAX_WINDOW_SECONDS - 1), t(0), "baseline_from"),
            (t(0), t(301), "baseline_to"),
        ];
        for (from, to, expected) in bad {
            let e = baseline_window(from, to, now).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(field(e).as_deref(), Some(expected), "{from} {to}");
        }
        // Equal at the database's precision is not before.
        let a = t(0) + chrono::Duration::nanoseconds(100);
        let b = t(0) + chrono::Duration::nanoseconds(900);
        assert!(baseline_window(a, b, now).is_err());
        assert!(baseline_window(t(-MAX_WINDOW_SECONDS), t(300), now).is_err());
        assert!(baseline_window(t(-MAX_WINDOW_SECONDS + 300), t(300), now).is_ok());
    }
}
