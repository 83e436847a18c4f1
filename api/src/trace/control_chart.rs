//! SPC of a run's readings: the adapter between the trace answers and the control chart of
//! [`crate::domain::spc`]. This file is the only place the trace calls the chart —
//! [`spc::plot`] with [`ChartSpec::IMr`], judged ([`Plot::judge`]: Nelson 1–8, Western Electric
//! 1–4, moving ranges beyond D4·MR̄, read from [`spc::Judged`]'s fields) against the stored I-MR
//! limits in force for the resource and sensor (phase II, as `GET /spc` applies them), else
//! against limits from the points judged ([`Plot::limits`], phase I: x̄ ± 3·MR̄/d2) — and it
//! answers in its own types, so a change of the chart changes this file, not the trace's
//! handlers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::spc::{self, ChartSpec, Plot};
use crate::spc::LimitsSource;

/// The chart the trace draws (`GET /spc`'s `chart`).
pub const CHART: &str = "i_mr";

/// Center line and control limits the points were judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChartLimits {
    /// `stored`: the I-MR limits in force for the resource and sensor (`POST /spc/limits`,
    /// phase II); `window`: from the points judged (phase I).
    pub source: LimitsSource,
    /// The stored version applied; `null` with `source` `window`.
    pub version: Option<i32>,
    /// Center line: x̄ of the baseline (stored) or of the points judged.
    pub mean: f64,
    /// σ within: MR̄ / d2(2) (d2 = 1.128).
    pub sigma: f64,
    /// x̄ + 3σ.
    pub ucl: f64,
    /// x̄ − 3σ.
    pub lcl: f64,
}

/// A reading that breaks one or more run rules, or whose moving range is beyond its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleBreak {
    pub ts: DateTime<Utc>,
    pub value: f64,
    /// Western Electric rules broken (1–4, numbered as `GET /spc` numbers them).
    pub rules: Vec<u8>,
    /// Nelson rules broken (1–8).
    pub nelson_rules: Vec<u8>,
    /// Its moving range (with the reading before) is above the MR chart's UCL, D4·MR̄.
    pub moving_range_out: bool,
}

/// What the chart says of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// `None` for no points, or points whose limits are beyond a double.
    pub limits: Option<ChartLimits>,
    /// The earliest `max_breaks` breaks.
    pub breaks: Vec<RuleBreak>,
    /// Every break among the points.
    pub breaks_total: usize,
}

/// Stored limits the trace may apply: a version of I-MR limits.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub version: i32,
    pub limits: &'a spc::ChartLimits,
}

/// Judges `points` (in time order) against `stored` I-MR limits when given (others are ignored),
/// else against limits computed from the points, keeping the earliest `max_breaks` breaks.
pub fn judge(
    points: &[(DateTime<Utc>, f64)],
    max_breaks: usize,
    stored: Option<Stored<'_>>,
) -> Judgement {
    let values: Vec<f64> = points.iter().map(|&(_, v)| v).collect();
    let plot: Plot = spc::plot(ChartSpec::IMr, &values);
    let stored = stored.filter(|s| s.limits.spec == ChartSpec::IMr);
    let (limits, source, version) = match stored {
        Some(s) => (Some(*s.limits), LimitsSource::Stored, Some(s.version)),
        None if values.is_empty() => (None, LimitsSource::Window, None),
        None => (plot.limits(), LimitsSource::Window, None),
    };
    let Some(limits) = limits.filter(spc::ChartLimits::is_finite) else {
        return Judgement {
            limits: None,
            breaks: Vec::new(),
            breaks_total: 0,
        };
    };
    let mut breaks = Vec::new();
    let mut breaks_total = 0;
    let broken = |j: &spc::Judged| {
        !j.western_electric.is_empty() || !j.nelson.is_empty() || j.dispersion_out
    };
    for judged in plot.judge(&limits).into_iter().filter(broken) {
        breaks_total += 1;
        if breaks.len() < max_breaks {
            // I-MR: one plotted point per reading.
            let (ts, value) = points[plot.points[judged.index].last];
            breaks.push(RuleBreak {
                ts,
                value,
                rules: judged.western_electric,
                nelson_rules: judged.nelson,
                moving_range_out: judged.dispersion_out,
            });
        }
    }
    Judgement {
        limits: Some(ChartLimits {
            source,
            version,
            mean: limits.location.center,
            sigma: limits.sigma_within,
            ucl: limits.location.ucl,
            lcl: limits.location.lcl,
        }),
        breaks,
        breaks_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Vec<(DateTime<Utc>, f64)> {
        let start: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (start + chrono::Duration::seconds(i as i64), v))
            .collect()
    }

    #[test]
    fn limits_come_from_the_moving_range() {
        // 20, 22, 24: x̄ 22, MR̄ 2, σ 2/1.128, UCL 22 + 6/1.128; nothing broken.
        let j = judge(&series(&[20.0, 22.0, 24.0]), 10, None);
        let l = j.limits.unwrap();
        assert!((l.mean - 22.0).abs() < 1e-12);
        assert!((l.sigma - 2.0 / 1.128).abs() < 1e-12);
        assert!((l.ucl - (22.0 + 6.0 / 1.128)).abs() < 1e-12);
        assert!((l.lcl - (22.0 - 6.0 / 1.128)).abs() < 1e-12);
        assert_eq!(j.breaks_total, 0);
    }

    #[test]
    fn a_level_shift_breaks_every_point_and_breaks_are_capped() {
        // 0 × 10 then 1 × 10: MR̄ 1/19, σ 0.0467: every point is beyond 3σ of x̄ 0.5.
        let shift: Vec<f64> = [vec![0.0; 10], vec![1.0; 10]].concat();
        let j = judge(&series(&shift), 3, None);
        assert_eq!(j.breaks_total, 20);
        assert_eq!(j.breaks.len(), 3, "capped");
        assert_eq!(j.breaks[0].ts, series(&shift)[0].0, "earliest first");
        assert_eq!(
            (j.breaks[0].rules.clone(), j.breaks[0].nelson_rules.clone()),
            (vec![1], vec![1])
        );
        let jump = judge(&series(&shift), 20, None).breaks.remove(10);
        assert!(jump.moving_range_out, "the jump's moving range");
    }

    #[test]
    fn stored_limits_judge_a_drift_the_windows_own_limits_would_absorb() {
        // A baseline of 20, 22, 24 (x̄ 22, MR̄ 2): UCL 22 + 6/1.128 = 27.32. The run drifts to
        // 28-30: beyond the stored UCL at every point, while limits from the run itself (x̄ 29,
        // MR̄ 1) sit around the drift.
        let baseline = spc::plot(ChartSpec::IMr, &[20.0, 22.0, 24.0])
            .limits()
            .unwrap();
        let run = series(&[28.0, 29.0, 30.0, 29.0, 28.0, 29.0, 30.0]);
        let stored = judge(
            &run,
            100,
            Some(Stored {
                version: 4,
                limits: &baseline,
            }),
        );
        let l = stored.limits.unwrap();
        assert_eq!((l.source, l.version), (LimitsSource::Stored, Some(4)));
        assert!((l.mean - 22.0).abs() < 1e-12 && (l.ucl - (22.0 + 6.0 / 1.128)).abs() < 1e-12);
        assert_eq!(stored.breaks_total, 7, "every point above the stored UCL");
        assert!(stored.breaks.iter().all(|b| b.rules.contains(&1)));
        let window = judge(&run, 100, None);
        assert_eq!(window.limits.unwrap().source, LimitsSource::Window);
        assert_eq!(window.breaks_total, 0, "the drift widened its own limits");
        // Stored limits of another chart are not applied to an I-MR chart.
        let xbar = spc::plot(
            ChartSpec::XbarR(spc::SubgroupSize::new(2).unwrap()),
            &[20.0, 22.0, 24.0, 21.0],
        )
        .limits()
        .unwrap();
        let other = judge(
            &run,
            100,
            Some(Stored {
                version: 1,
                limits: &xbar,
            }),
        );
        assert_eq!(other.limits.unwrap().source, LimitsSource::Window);
    }

    #[test]
    fn nothing_to_judge_gives_no_limits() {
        assert_eq!(judge(&[], 10, None).limits, None);
        assert_eq!(judge(&[], 10, None).breaks_total, 0);
        let huge = series(&[f64::MAX, -f64::MAX, f64::MAX]);
        assert_eq!(
            judge(&huge, 10, None).limits,
            None,
            "moving ranges beyond a double"
        );
    }
}
