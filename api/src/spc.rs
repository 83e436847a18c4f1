//! `GET /spc`: individuals control chart of one sensor of one resource over a window: mean, σ,
//! ±3σ limits, the points breaking Western Electric rules 1–4, and Cp/Cpk where specification
//! limits are configured (table `spc_spec_limits`).
//!
//! σ is the sample standard deviation of the window's points. Rules, on the points in time order
//! (a point is flagged when it completes the pattern and lies on the pattern's side):
//! 1. one point beyond ±3σ;
//! 2. two of three consecutive points beyond 2σ on the same side;
//! 3. four of five consecutive points beyond 1σ on the same side;
//! 4. eight consecutive points on the same side of the mean.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::extract::{parse_timestamp, QueryParams};
use crate::state::AppState;

const DEFAULT_WINDOW_SECONDS: i64 = 3600;
const MAX_WINDOW_SECONDS: i64 = 31 * 24 * 3600;
const DEFAULT_MAX_POINTS: i64 = 1000;
const MAX_POINTS: i64 = 10_000;

/// Summary statistics and control limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlLimits {
    pub mean: f64,
    /// Sample standard deviation; 0 when all points are equal or only one exists.
    pub sigma: f64,
    pub ucl: f64,
    pub lcl: f64,
}

/// A point breaking one or more rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    pub ts: DateTime<Utc>,
    pub value: f64,
    /// Western Electric rules broken (1-4).
    pub rules: Vec<u8>,
}

/// Process capability against the configured specification limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capability {
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    /// (USL − LSL) / 6σ; needs both limits and σ > 0.
    pub cp: Option<f64>,
    /// min(USL − x̄, x̄ − LSL) / 3σ over the limits that exist; needs σ > 0.
    pub cpk: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SpcReport {
    pub resource_id: String,
    pub sensor: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub points: usize,
    /// `null` when the window has no points.
    pub limits: Option<ControlLimits>,
    pub violations: Vec<Violation>,
    /// `null` when no specification limits are configured for the resource and sensor.
    pub capability: Option<Capability>,
}

/// Mean, sample σ and ±3σ limits; `None` for no points.
pub fn control_limits(values: &[f64]) -> Option<ControlLimits> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sigma = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some(ControlLimits {
        mean,
        sigma,
        ucl: mean + 3.0 * sigma,
        lcl: mean - 3.0 * sigma,
    })
}

/// Rules broken at each point (index-aligned with `values`).
pub fn western_electric(values: &[f64], limits: &ControlLimits) -> Vec<Vec<u8>> {
    let (m, s) = (limits.mean, limits.sigma);
    // Side of each point beyond k σ: +1 above, -1 below, 0 within.
    let beyond = |v: f64, k: f64| -> i8 {
        if s <= 0.0 {
            0
        } else if v > m + k * s {
            1
        } else if v < m - k * s {
            -1
        } else {
            0
        }
    };
    let side = |v: f64| -> i8 {
        if v > m {
            1
        } else if v < m {
            -1
        } else {
            0
        }
    };
    let mut out = vec![Vec::new(); values.len()];
    for i in 0..values.len() {
        if beyond(values[i], 3.0) != 0 {
            out[i].push(1);
        }
        for (rule, k, window, needed) in [(2u8, 2.0, 3usize, 2usize), (3, 1.0, 5, 4)] {
            let here = beyond(values[i], k);
            if here == 0 {
                continue;
            }
            // At the start of the window fewer points exist; the pattern may complete early.
            let count = values[(i + 1).saturating_sub(window)..=i]
                .iter()
                .filter(|&&v| beyond(v, k) == here)
                .count();
            if count >= needed {
                out[i].push(rule);
            }
        }
        if i >= 7 {
            let here = side(values[i]);
            if here != 0 && values[i - 7..=i].iter().all(|&v| side(v) == here) {
                out[i].push(4);
            }
        }
    }
    out
}

pub fn capability(limits: &ControlLimits, lsl: Option<f64>, usl: Option<f64>) -> Capability {
    let s = limits.sigma;
    let cp = match (lsl, usl) {
        (Some(l), Some(u)) if s > 0.0 => Some((u - l) / (6.0 * s)),
        _ => None,
    };
    let sides: Vec<f64> = [usl.map(|u| u - limits.mean), lsl.map(|l| limits.mean - l)]
        .into_iter()
        .flatten()
        .collect();
    let cpk = if s > 0.0 && !sides.is_empty() {
        Some(sides.iter().copied().fold(f64::INFINITY, f64::min) / (3.0 * s))
    } else {
        None
    };
    Capability { lsl, usl, cp, cpk }
}

/// Query window: `from`/`to` (RFC 3339), else the last `window_seconds` before `to` (default now).
pub fn window(q: &mut QueryParams) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let from = q.take_parsed("from", parse_timestamp)?;
    let to = q.take_parsed("to", parse_timestamp)?;
    let seconds = q.take_parsed("window_seconds", |raw| {
        raw.parse::<i64>()
            .ok()
            .filter(|s| (1..=MAX_WINDOW_SECONDS).contains(s))
            .ok_or_else(|| {
                format!("expected whole seconds between 1 and {MAX_WINDOW_SECONDS}, got {raw:?}")
            })
    })?;
    let to = to.unwrap_or_else(Utc::now);
    let from = match (from, seconds) {
        (Some(_), Some(_)) => {
            return Err(ApiError::malformed(
                "window_seconds",
                "give either from or window_seconds, not both",
            ))
        }
        (Some(f), None) => f,
        (None, s) => to - Duration::seconds(s.unwrap_or(DEFAULT_WINDOW_SECONDS)),
    };
    if from >= to {
        return Err(ApiError::invalid(
            "from",
            format!("{from} is not before to ({to})"),
        ));
    }
    if (to - from).num_seconds() > MAX_WINDOW_SECONDS {
        return Err(ApiError::invalid(
            "from",
            format!("window longer than {MAX_WINDOW_SECONDS} s"),
        ));
    }
    Ok((from, to))
}

/// Control chart of one sensor of one resource.
#[utoipa::path(get, path = "/spc", tag = "kpi",
    params(
        ("resource_id" = crate::domain::Ident, Query, description = "resource"),
        ("sensor" = crate::domain::Ident, Query, description = "sensor name, e.g. temp"),
        ("from" = Option<DateTime<Utc>>, Query, description = "window start (RFC 3339 with offset); not together with `window_seconds`. Before `to`, at most 31 days before it"),
        ("to" = Option<DateTime<Utc>>, Query, description = "window end (RFC 3339 with offset); empty or absent: now"),
        ("window_seconds" = Option<i64>, Query, minimum = 1, maximum = 2678400, description = "window length before `to` when `from` is absent; empty or absent: 3600"),
        ("max_points" = Option<i64>, Query, minimum = 2, maximum = 10000, description = "latest points used; empty or absent: 1000")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "control chart", body = SpcReport),
        (status = 400, description = "a query parameter is malformed, unknown, repeated or missing, or `from` and `window_seconds` are both given", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`from` is not before `to`, or the window is longer than 31 days", body = Problem, content_type = "application/problem+json")))]
pub async fn spc(
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<SpcReport>, ApiError> {
    let resource_id = String::from(q.require_ident("resource_id")?);
    let sensor = String::from(q.require_ident("sensor")?);
    let (from, to) = window(&mut q)?;
    let max_points = q
        .take_parsed("max_points", |raw| {
            raw.parse::<i64>()
                .ok()
                .filter(|n| (2..=MAX_POINTS).contains(n))
                .ok_or_else(|| {
                    format!("expected a whole number between 2 and {MAX_POINTS}, got {raw:?}")
                })
        })?
        .unwrap_or(DEFAULT_MAX_POINTS);
    q.finish()?;
    let mut rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT ts, value FROM readings
         WHERE resource_id = $1 AND sensor = $2 AND ts >= $3 AND ts < $4
         ORDER BY ts DESC LIMIT $5",
    )
    .bind(&resource_id)
    .bind(&sensor)
    .bind(from)
    .bind(to)
    .bind(max_points)
    .fetch_all(&state.pool)
    .await?;
    rows.reverse();
    let values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let limits = control_limits(&values);
    let violations = match &limits {
        Some(l) => western_electric(&values, l)
            .into_iter()
            .zip(&rows)
            .filter(|(rules, _)| !rules.is_empty())
            .map(|(rules, (ts, value))| Violation {
                ts: *ts,
                value: *value,
                rules,
            })
            .collect(),
        None => Vec::new(),
    };
    let spec: Option<(Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT lsl, usl FROM spc_spec_limits
         WHERE sensor = $2 AND resource_id IN ($1, '*')
         ORDER BY resource_id = '*' LIMIT 1",
    )
    .bind(&resource_id)
    .bind(&sensor)
    .fetch_optional(&state.pool)
    .await?;
    let capability = match (&limits, spec) {
        (Some(l), Some((lsl, usl))) => Some(capability(l, lsl, usl)),
        _ => None,
    };
    Ok(Json(SpcReport {
        resource_id,
        sensor,
        from,
        to,
        points: values.len(),
        limits,
        violations,
        capability,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(mean: f64, sigma: f64) -> ControlLimits {
        ControlLimits {
            mean,
            sigma,
            ucl: mean + 3.0 * sigma,
            lcl: mean - 3.0 * sigma,
        }
    }

    fn flagged(values: &[f64], rule: u8) -> Vec<usize> {
        western_electric(values, &limits(0.0, 1.0))
            .iter()
            .enumerate()
            .filter(|(_, r)| r.contains(&rule))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn mean_and_sample_sigma() {
        let l = control_limits(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert!((l.mean - 5.0).abs() < 1e-12);
        assert!((l.sigma - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((l.ucl - (5.0 + 3.0 * l.sigma)).abs() < 1e-12);
        assert_eq!(control_limits(&[]), None);
        assert_eq!(control_limits(&[3.0]).unwrap().sigma, 0.0);
    }

    #[test]
    fn rule_1_one_point_beyond_three_sigma() {
        assert_eq!(flagged(&[0.0, 3.1, 0.0, -3.5, 2.9], 1), [1, 3]);
    }

    #[test]
    fn rule_2_two_of_three_beyond_two_sigma_same_side() {
        assert_eq!(flagged(&[2.1, 0.0, 2.2, 0.0], 2), [2]);
        // Opposite sides do not count together.
        assert_eq!(flagged(&[2.1, 0.0, -2.2, 0.0], 2), Vec::<usize>::new());
        assert_eq!(flagged(&[-2.5, -2.1, 0.0], 2), [1]);
    }

    #[test]
    fn rule_3_four_of_five_beyond_one_sigma_same_side() {
        assert_eq!(flagged(&[1.1, 1.2, 0.0, 1.5, 1.3], 3), [4]);
        assert_eq!(flagged(&[1.1, 1.2, 0.0, 1.5, 0.5], 3), Vec::<usize>::new());
    }

    #[test]
    fn rule_4_eight_in_a_row_on_one_side() {
        let v = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2, 0.4, -0.1];
        assert_eq!(flagged(&v, 4), [7, 8]);
        assert_eq!(flagged(&v[..7], 4), Vec::<usize>::new());
    }

    #[test]
    fn capability_with_one_or_two_limits() {
        let l = limits(10.0, 0.5);
        let c = capability(&l, Some(8.0), Some(13.0));
        assert!((c.cp.unwrap() - 5.0 / 3.0).abs() < 1e-12);
        assert!((c.cpk.unwrap() - 2.0 / 1.5).abs() < 1e-12);
        let c = capability(&l, None, Some(11.0));
        assert_eq!(c.cp, None);
        assert!((c.cpk.unwrap() - 1.0 / 1.5).abs() < 1e-12);
        assert_eq!(
            capability(&limits(1.0, 0.0), Some(0.0), Some(2.0)).cpk,
            None
        );
    }
}
