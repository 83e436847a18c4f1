//! `GET /spc`: the control chart of one sensor of one resource over a window — individuals with
//! moving ranges (I-MR), or subgroup means with ranges (X̄-R) or standard deviations (X̄-S) — its
//! limits, the points that break the Nelson rules 1–8 and the Western Electric rules 1–4, the
//! dispersion chart's points beyond its limits, and Cp/Cpk beside Pp/Ppk where specification
//! limits are configured (table `spc_spec_limits`). [`limits`]: `POST`/`GET /spc/limits`, the
//! stored limits.
//!
//! Phase II where limits are stored for the resource and sensor (the version in force is
//! applied, and the answer says which: `limits_source: "stored"`, `stored_limits`); phase I
//! otherwise (`limits_source: "window"`: limits from the window's own points, σ from MR̄/d2,
//! R̄/d2 or S̄/c4 — never the sample σ, which a drift inflates). The arithmetic is
//! [`crate::domain::spc`]'s; this file reads, delegates and answers.

pub mod limits;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::spc::{self as chart, Chart, ChartLimits, ChartSpec, Dispersion, SubgroupSize};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_timestamp, QueryParams};
use crate::state::AppState;
use crate::store::spc::{self as store, StoredLimits, Take};
use limits::ControlLimitsVersion;

const DEFAULT_WINDOW_SECONDS: i64 = 3600;
/// The longest window a chart or a baseline may span: 31 days.
pub const MAX_WINDOW_SECONDS: i64 = 31 * 24 * 3600;
const DEFAULT_MAX_POINTS: i64 = 1000;
const MAX_POINTS: i64 = 10_000;
/// Subgroup size of an X̄ chart asked without one and without stored limits.
const DEFAULT_SUBGROUP_SIZE: u8 = 5;

/// Center line, σ and control limits of the plotted points (individuals or subgroup means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControlLimits {
    /// Center line: x̄ of the individuals, or x̿ of the subgroup means.
    pub mean: f64,
    /// σ of the individual readings behind the limits (σ within): MR̄/d2(2) for i_mr, R̄/d2(n)
    /// for xbar_r, S̄/c4(n) for xbar_s; 0 when a single reading has no moving range.
    pub sigma: f64,
    /// Upper control limit: x̄ + 3·MR̄/d2, x̿ + A2·R̄ or x̿ + A3·S̄.
    pub ucl: f64,
    /// Lower control limit: x̄ − 3·MR̄/d2, x̿ − A2·R̄ or x̿ − A3·S̄.
    pub lcl: f64,
}

impl From<&ChartLimits> for ControlLimits {
    fn from(l: &ChartLimits) -> Self {
        Self {
            mean: l.location.center,
            sigma: l.sigma_within,
            ucl: l.location.ucl,
            lcl: l.location.lcl,
        }
    }
}

/// The chart of the dispersion: moving ranges (i_mr), subgroup ranges (xbar_r) or subgroup
/// standard deviations (xbar_s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DispersionLimits {
    #[schema(inline)]
    pub statistic: Dispersion,
    /// MR̄, R̄ or S̄.
    pub center_line: f64,
    /// D4·MR̄, D4·R̄ or B4·S̄.
    pub ucl: f64,
    /// D3·MR̄ (0), D3·R̄ or B3·S̄ (0 for small subgroups).
    pub lcl: f64,
}

impl From<&ChartLimits> for DispersionLimits {
    fn from(l: &ChartLimits) -> Self {
        Self {
            statistic: l.spec.chart().dispersion(),
            center_line: l.dispersion.center,
            ucl: l.dispersion.ucl,
            lcl: l.dispersion.lcl,
        }
    }
}

/// A plotted point breaking one or more run rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    /// Time of the reading, or of a subgroup's last reading.
    pub ts: DateTime<Utc>,
    /// The reading, or the subgroup's mean.
    pub value: f64,
    /// Western Electric rules broken (1–4; numbered as `GET /spc` always has).
    pub rules: Vec<u8>,
    /// Nelson rules broken (1–8).
    pub nelson_rules: Vec<u8>,
}

/// A moving range, subgroup range or subgroup standard deviation beyond its chart's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DispersionViolation {
    /// Time of the reading (its moving range with the one before), or of the subgroup's last.
    pub ts: DateTime<Utc>,
    /// The MR, R or S.
    pub value: f64,
}

/// Process capability of the window's readings against the configured specification limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capability {
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    /// (USL − LSL) / 6σ_within; needs both limits and σ_within > 0.
    pub cp: Option<f64>,
    /// min(USL − x̄, x̄ − LSL) / 3σ_within over the limits that exist; needs σ_within > 0.
    pub cpk: Option<f64>,
    /// (USL − LSL) / 6σ_overall.
    pub pp: Option<f64>,
    /// min(USL − x̄, x̄ − LSL) / 3σ_overall.
    pub ppk: Option<f64>,
    /// x̄ of the readings charted.
    pub mean: f64,
    /// σ within from the window's own points (MR̄/d2, R̄/d2 or S̄/c4), also when stored limits
    /// judge the chart.
    pub sigma_within: f64,
    /// Sample standard deviation of the readings charted.
    pub sigma_overall: f64,
}

impl From<chart::Capability> for Capability {
    fn from(c: chart::Capability) -> Self {
        Self {
            lsl: c.lsl,
            usl: c.usl,
            cp: c.cp,
            cpk: c.cpk,
            pp: c.pp,
            ppk: c.ppk,
            mean: c.mean,
            sigma_within: c.sigma_within,
            sigma_overall: c.sigma_overall,
        }
    }
}

/// Where the limits of an answer come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitsSource {
    /// Phase II: the stored version in force (`stored_limits`).
    Stored,
    /// Phase I: computed from the window's own points.
    Window,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SpcReport {
    pub resource_id: String,
    pub sensor: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Readings in the window (the newest `max_points`).
    pub points: usize,
    #[schema(inline)]
    pub chart: Chart,
    /// Readings per plotted point: 1 for i_mr.
    pub subgroup_size: u8,
    /// Plotted points: readings (i_mr) or complete subgroups.
    pub subgroups: usize,
    /// Readings of the incomplete last subgroup, not plotted (0 for i_mr).
    pub dropped_points: usize,
    pub limits_source: LimitsSource,
    /// The stored version applied; `null` with `limits_source` `window`.
    pub stored_limits: Option<ControlLimitsVersion>,
    /// `null` when nothing can be plotted (no readings, or no complete subgroup) and no limits
    /// are stored.
    pub limits: Option<ControlLimits>,
    /// The MR, R or S chart's lines; `null` with `limits`.
    pub dispersion: Option<DispersionLimits>,
    /// Plotted points breaking a Nelson or Western Electric rule, in time order.
    pub violations: Vec<Violation>,
    /// Points of the MR, R or S chart above its UCL (or below an LCL above 0), in time order.
    pub dispersion_violations: Vec<DispersionViolation>,
    /// `null` when no specification limits are configured for the resource and sensor, or
    /// nothing is plotted.
    pub capability: Option<Capability>,
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

/// Which limits `limits_source` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Stored if there are, else the window's.
    Auto,
    Stored,
    Window,
}

/// The chart asked for: `chart` and `subgroup_size`, each optional.
struct Asked {
    chart: Option<Chart>,
    size: Option<SubgroupSize>,
    wanted: Wanted,
}

fn asked(q: &mut QueryParams) -> Result<Asked, ApiError> {
    let chart = q.take_parsed("chart", |raw| {
        raw.parse::<Chart>().map_err(|e| e.to_string())
    })?;
    let size = q.take_parsed("subgroup_size", |raw| {
        raw.parse::<u8>()
            .ok()
            .and_then(|n| SubgroupSize::new(n).ok())
            .ok_or_else(|| format!("expected a whole number between 2 and 25, got {raw:?}"))
    })?;
    if size.is_some() && !matches!(chart, Some(Chart::XbarR | Chart::XbarS)) {
        return Err(ApiError::malformed(
            "subgroup_size",
            "only with chart=xbar_r or chart=xbar_s",
        ));
    }
    let wanted = q
        .take_parsed("limits_source", |raw| match raw {
            "auto" => Ok(Wanted::Auto),
            "stored" => Ok(Wanted::Stored),
            "window" => Ok(Wanted::Window),
            _ => Err(format!("expected auto, stored or window, got {raw:?}")),
        })?
        .unwrap_or(Wanted::Auto);
    Ok(Asked {
        chart,
        size,
        wanted,
    })
}

impl Asked {
    /// The chart when no stored limits decide it: individuals unless a subgroup chart is asked.
    fn spec(&self) -> ChartSpec {
        let n = self.size.unwrap_or_else(|| {
            SubgroupSize::new(DEFAULT_SUBGROUP_SIZE).unwrap_or_else(|_| unreachable!())
        });
        match self.chart {
            None | Some(Chart::IMr) => ChartSpec::IMr,
            Some(Chart::XbarR) => ChartSpec::XbarR(n),
            Some(Chart::XbarS) => ChartSpec::XbarS(n),
        }
    }
}

/// Control chart of one sensor of one resource.
#[utoipa::path(get, path = "/spc", tag = "kpi",
    params(
        ("resource_id" = crate::domain::Ident, Query, description = "resource"),
        ("sensor" = crate::domain::Ident, Query, description = "sensor name, e.g. temp"),
        ("from" = Option<DateTime<Utc>>, Query, description = "window start (RFC 3339 with offset); not together with `window_seconds`. Before `to`, at most 31 days before it"),
        ("to" = Option<DateTime<Utc>>, Query, description = "window end (RFC 3339 with offset); empty or absent: now"),
        ("window_seconds" = Option<i64>, Query, minimum = 1, maximum = 2678400, description = "window length before `to` when `from` is absent; empty or absent: 3600"),
        ("max_points" = Option<i64>, Query, minimum = 2, maximum = 10000, description = "latest readings used; empty or absent: 1000"),
        ("chart" = Option<String>, Query, pattern = "^(i_mr|xbar_r|xbar_s)$", description = "i_mr (individuals and moving range), xbar_r or xbar_s (subgroup means with ranges or standard deviations); empty or absent: the chart of the limits stored last for the resource and sensor, else i_mr"),
        ("subgroup_size" = Option<i64>, Query, minimum = 2, maximum = 25, description = "readings per subgroup, only with chart xbar_r or xbar_s; empty or absent: the stored limits' size, else 5"),
        ("limits_source" = Option<String>, Query, pattern = "^(auto|stored|window)$", description = "auto (stored limits where they exist, else from the window), stored (404 without), window (phase I: from the window even where limits are stored); empty or absent: auto")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "control chart", body = SpcReport),
        (status = 400, description = "a query parameter is malformed, unknown, repeated or missing; `from` and `window_seconds` are both given; `subgroup_size` without chart xbar_r or xbar_s", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`limits_source=stored` and no limits are stored for the resource, sensor and chart", body = Problem, content_type = "application/problem+json"),
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
    let asked = asked(&mut q)?;
    q.finish()?;
    let stored = match asked.wanted {
        Wanted::Window => None,
        Wanted::Auto | Wanted::Stored => {
            let size = asked.size.map(|n| i16::from(n.get()));
            store::in_force(&state.pool, &resource_id, &sensor, asked.chart, size).await?
        }
    };
    if asked.wanted == Wanted::Stored && stored.is_none() {
        return Err(ApiError::NotFound(format!(
            "no control limits stored for resource {resource_id:?}, sensor {sensor:?}{}",
            asked
                .chart
                .map(|c| format!(", chart {c}"))
                .unwrap_or_default()
        )));
    }
    let spec = stored
        .as_ref()
        .map_or_else(|| asked.spec(), |s| s.limits.spec);
    let rows = store::readings(
        &state.pool,
        &resource_id,
        &sensor,
        (from, to),
        Take::Newest(max_points),
    )
    .await?;
    let spec_limits = store::spec_limits(&state.pool, &resource_id, &sensor).await?;
    Ok(Json(report(
        (resource_id, sensor, from, to),
        spec,
        &rows,
        stored,
        spec_limits,
    )))
}

/// The chart of `rows` (time order) under the stored limits, or its own.
fn report(
    (resource_id, sensor, from, to): (String, String, DateTime<Utc>, DateTime<Utc>),
    spec: ChartSpec,
    rows: &[(DateTime<Utc>, f64)],
    stored: Option<StoredLimits>,
    spec_limits: Option<(Option<f64>, Option<f64>)>,
) -> SpcReport {
    let values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let plot = chart::plot(spec, &values);
    let own = plot.limits();
    let applied = stored.as_ref().map(|s| s.limits).or(own);
    let mut violations = Vec::new();
    let mut dispersion_violations = Vec::new();
    for judged in applied.iter().flat_map(|l| plot.judge(l)) {
        let point = plot.points[judged.index];
        let ts = rows[point.last].0;
        if judged.dispersion_out {
            if let Some(value) = point.dispersion {
                dispersion_violations.push(DispersionViolation { ts, value });
            }
        }
        if !judged.nelson.is_empty() || !judged.western_electric.is_empty() {
            violations.push(Violation {
                ts,
                value: point.value,
                rules: judged.western_electric,
                nelson_rules: judged.nelson,
            });
        }
    }
    let charted = &values[..values.len() - plot.dropped];
    let capability = match (own, spec_limits) {
        (Some(own), Some((lsl, usl))) => {
            chart::capability(charted, own.sigma_within, lsl, usl).map(Capability::from)
        }
        _ => None,
    };
    SpcReport {
        resource_id,
        sensor,
        from,
        to,
        points: values.len(),
        chart: spec.chart(),
        subgroup_size: spec.subgroup_size(),
        subgroups: plot.points.len(),
        dropped_points: plot.dropped,
        limits_source: if stored.is_some() {
            LimitsSource::Stored
        } else {
            LimitsSource::Window
        },
        stored_limits: stored.map(ControlLimitsVersion::from),
        limits: applied.as_ref().map(ControlLimits::from),
        dispersion: applied.as_ref().map(DispersionLimits::from),
        violations,
        dispersion_violations,
        capability,
    }
}

/// The OpenAPI schema of a domain value (an enum of strings, or a bounded integer).
macro_rules! value_schema {
    ($ty:ty, $schema:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema.into()
            }
        }
        impl ToSchema for $ty {}
    };
}

fn strings(description: &str, values: &[&str]) -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.to_vec()))
        .description(Some(description))
}

value_schema!(
    Chart,
    strings(
        "i_mr: individuals and moving range; xbar_r: subgroup means and ranges; xbar_s: \
         subgroup means and standard deviations",
        &["i_mr", "xbar_r", "xbar_s"]
    )
);
value_schema!(
    Dispersion,
    strings(
        "mr: moving range of two readings; r: subgroup range; s: subgroup standard deviation",
        &["mr", "r", "s"]
    )
);
value_schema!(
    SubgroupSize,
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(2))
        .maximum(Some(25))
        .description(Some("readings per subgroup, 2 to 25"))
);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap()
    }

    fn key() -> (String, String, DateTime<Utc>, DateTime<Utc>) {
        ("R".into(), "temp".into(), at(0), at(3600))
    }

    #[test]
    fn a_window_report_says_where_its_limits_come_from() {
        let rows: Vec<_> = [10.0, 12.0, 11.0, 13.0, 12.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (at(i as i64), *v))
            .collect();
        let r = report(
            key(),
            ChartSpec::IMr,
            &rows,
            None,
            Some((Some(8.0), Some(16.0))),
        );
        assert_eq!(r.limits_source, LimitsSource::Window);
        assert_eq!((r.chart, r.subgroup_size, r.subgroups), (Chart::IMr, 1, 5));
        let l = r.limits.unwrap();
        assert!((l.sigma - 1.5 / 1.128).abs() < 1e-12);
        assert_eq!(r.dispersion.unwrap().statistic, Dispersion::MovingRange);
        let c = r.capability.unwrap();
        assert!((c.cp.unwrap() - 8.0 / (6.0 * 1.5 / 1.128)).abs() < 1e-12);
        assert!(r.violations.is_empty());
    }

    #[test]
    fn subgroups_report_their_last_reading_and_the_dropped_ones() {
        let values = [1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 3.0, 3.0, 6.0, 7.0, 8.0];
        let rows: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (at(i as i64), *v))
            .collect();
        let n = SubgroupSize::new(3).unwrap();
        let r = report(
            key(),
            ChartSpec::XbarR(n),
            &rows,
            None,
            Some((None, Some(20.0))),
        );
        assert_eq!((r.points, r.subgroups, r.dropped_points), (11, 3, 2));
        // Capability uses the charted readings only (not 7 and 8).
        assert!((r.capability.unwrap().mean - 30.0 / 9.0).abs() < 1e-12);
        let none = report(key(), ChartSpec::XbarR(n), &rows[..2], None, None);
        assert!(none.limits.is_none() && none.dispersion.is_none());
        assert_eq!(none.dropped_points, 2);
    }
}
