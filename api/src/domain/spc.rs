//! Statistical process control (docs/api.md, SPC): Shewhart control charts of one sensor's
//! readings — individuals with moving ranges (I-MR), subgroup means with ranges (X̄-R) or with
//! standard deviations (X̄-S) — their limits, the run rules ([`rules`]) and process capability.
//! No HTTP and no SQL: the handlers read readings, specification limits and stored control
//! limits, this module computes.
//!
//! Limits (Montgomery, *Introduction to Statistical Quality Control*, ch. 6; NIST/SEMATECH
//! e-Handbook §6.3.2), with the factors of [`constants`]:
//!
//! | chart | center line | limits of the plotted points | dispersion chart: CL, LCL, UCL | σ within |
//! | --- | --- | --- | --- | --- |
//! | I-MR | x̄ | x̄ ± 3·MR̄/d2(2) | MR: MR̄, D3(2)·MR̄ = 0, D4(2)·MR̄ | MR̄/d2(2) |
//! | X̄-R | x̿ | x̿ ± A2(n)·R̄ | R: R̄, D3(n)·R̄, D4(n)·R̄ | R̄/d2(n) |
//! | X̄-S | x̿ | x̿ ± A3(n)·S̄ | S: S̄, B3(n)·S̄, B4(n)·S̄ | S̄/c4(n) |
//!
//! MRᵢ = |xᵢ − xᵢ₋₁|; a subgroup is n consecutive readings in time order, its R the largest
//! minus the smallest, its S the sample standard deviation (n − 1 in the denominator); an
//! incomplete last subgroup is left out ([`Plot::dropped`]).
//!
//! Limits computed from the data they judge are a phase I study; limits fixed from a baseline
//! ([`baseline`], which insists on enough data) and applied to later data are phase II, where a
//! drift cannot widen its own limits.
//!
//! Capability ([`capability()`]): Cp = (USL − LSL) / 6σ_within, Cpk = min(USL − x̄, x̄ − LSL) /
//! 3σ_within; Pp and Ppk the same with σ_overall, the sample standard deviation of all values.

pub mod capability;
pub mod constants;
pub mod rules;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::values::ValueError;
pub use capability::{capability, Capability};
use constants::Factors;
pub use rules::Zones;

/// Fewest readings an I-MR baseline may have (Montgomery §6.4: limits from 20–25 points).
pub const MIN_BASELINE_INDIVIDUALS: usize = 20;
/// Fewest complete subgroups an X̄-R or X̄-S baseline may have (Montgomery §6.2: 20–25).
pub const MIN_BASELINE_SUBGROUPS: usize = 20;

/// The kind of chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Chart {
    /// Individuals and moving range.
    #[serde(rename = "i_mr")]
    IMr,
    /// Subgroup means and ranges.
    #[serde(rename = "xbar_r")]
    XbarR,
    /// Subgroup means and standard deviations.
    #[serde(rename = "xbar_s")]
    XbarS,
}

impl Chart {
    pub const ALL: [Chart; 3] = [Chart::IMr, Chart::XbarR, Chart::XbarS];

    pub fn as_str(self) -> &'static str {
        match self {
            Chart::IMr => "i_mr",
            Chart::XbarR => "xbar_r",
            Chart::XbarS => "xbar_s",
        }
    }

    /// The statistic of its second chart.
    pub fn dispersion(self) -> Dispersion {
        match self {
            Chart::IMr => Dispersion::MovingRange,
            Chart::XbarR => Dispersion::Range,
            Chart::XbarS => Dispersion::StdDev,
        }
    }
}

impl fmt::Display for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Chart {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Chart::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ValueError(format!("expected i_mr, xbar_r or xbar_s, got {s:?}")))
    }
}

/// The statistic of a chart's dispersion chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dispersion {
    /// Moving range of two consecutive readings.
    #[serde(rename = "mr")]
    MovingRange,
    /// Subgroup range.
    #[serde(rename = "r")]
    Range,
    /// Subgroup sample standard deviation.
    #[serde(rename = "s")]
    StdDev,
}

/// The size of a rational subgroup: 2 … 25, the sizes the constants table covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct SubgroupSize(u8);

impl SubgroupSize {
    pub fn new(n: u8) -> Result<Self, ValueError> {
        if (constants::MIN_N..=constants::MAX_N).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ValueError(format!(
                "expected a subgroup size of {} to {}, got {n}",
                constants::MIN_N,
                constants::MAX_N
            )))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    fn factors(self) -> Factors {
        // The constructor admits only sizes the table has.
        constants::factors(self.0).unwrap_or_else(constants::moving_range)
    }
}

impl TryFrom<u8> for SubgroupSize {
    type Error = ValueError;
    fn try_from(n: u8) -> Result<Self, ValueError> {
        Self::new(n)
    }
}

impl From<SubgroupSize> for u8 {
    fn from(n: SubgroupSize) -> u8 {
        n.0
    }
}

/// A chart and its subgroup size: individuals take none, subgroup charts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChartSpec {
    IMr,
    XbarR(SubgroupSize),
    XbarS(SubgroupSize),
}

/// A chart named with a subgroup size it cannot take, or without one it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("i_mr plots individual readings: leave subgroup_size out")]
    SizeWithIndividuals,
    #[error("{0} needs a subgroup_size (2 to 25)")]
    SizeMissing(Chart),
}

impl ChartSpec {
    pub fn new(chart: Chart, n: Option<SubgroupSize>) -> Result<Self, SpecError> {
        match (chart, n) {
            (Chart::IMr, None) => Ok(ChartSpec::IMr),
            (Chart::IMr, Some(_)) => Err(SpecError::SizeWithIndividuals),
            (Chart::XbarR, Some(n)) => Ok(ChartSpec::XbarR(n)),
            (Chart::XbarS, Some(n)) => Ok(ChartSpec::XbarS(n)),
            (c, None) => Err(SpecError::SizeMissing(c)),
        }
    }

    pub fn chart(self) -> Chart {
        match self {
            ChartSpec::IMr => Chart::IMr,
            ChartSpec::XbarR(_) => Chart::XbarR,
            ChartSpec::XbarS(_) => Chart::XbarS,
        }
    }

    /// Readings per plotted point: 1 for individuals.
    pub fn subgroup_size(self) -> u8 {
        match self {
            ChartSpec::IMr => 1,
            ChartSpec::XbarR(n) | ChartSpec::XbarS(n) => n.get(),
        }
    }
}

/// A center line and its control limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lines {
    pub center: f64,
    pub ucl: f64,
    pub lcl: f64,
}

impl Lines {
    fn is_finite(&self) -> bool {
        self.center.is_finite() && self.ucl.is_finite() && self.lcl.is_finite()
    }
}

/// The limits of a chart: of its plotted points (individuals or subgroup means) and of its
/// dispersion chart (MR, R or S), with the σ of the individual readings they imply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartLimits {
    pub spec: ChartSpec,
    pub location: Lines,
    pub dispersion: Lines,
    /// σ of the individual readings: MR̄/d2(2), R̄/d2(n) or S̄/c4(n).
    pub sigma_within: f64,
}

impl ChartLimits {
    /// I-MR limits from the mean of the readings and their average moving range.
    pub fn i_mr(mean: f64, mr_bar: f64) -> Self {
        let f = constants::moving_range();
        let sigma = mr_bar / f.d2;
        Self {
            spec: ChartSpec::IMr,
            location: Lines {
                center: mean,
                ucl: mean + 3.0 * sigma,
                lcl: mean - 3.0 * sigma,
            },
            dispersion: Lines {
                center: mr_bar,
                ucl: f.range_d4 * mr_bar,
                lcl: f.range_d3 * mr_bar,
            },
            sigma_within: sigma,
        }
    }

    /// X̄-R limits from the grand mean and the average range of subgroups of `n`.
    pub fn xbar_r(grand_mean: f64, r_bar: f64, n: SubgroupSize) -> Self {
        let f = n.factors();
        Self {
            spec: ChartSpec::XbarR(n),
            location: Lines {
                center: grand_mean,
                ucl: grand_mean + f.a2 * r_bar,
                lcl: grand_mean - f.a2 * r_bar,
            },
            dispersion: Lines {
                center: r_bar,
                ucl: f.range_d4 * r_bar,
                lcl: f.range_d3 * r_bar,
            },
            sigma_within: r_bar / f.d2,
        }
    }

    /// X̄-S limits from the grand mean and the average standard deviation of subgroups of `n`.
    pub fn xbar_s(grand_mean: f64, s_bar: f64, n: SubgroupSize) -> Self {
        let f = n.factors();
        Self {
            spec: ChartSpec::XbarS(n),
            location: Lines {
                center: grand_mean,
                ucl: grand_mean + f.a3 * s_bar,
                lcl: grand_mean - f.a3 * s_bar,
            },
            dispersion: Lines {
                center: s_bar,
                ucl: f.b4 * s_bar,
                lcl: f.b3 * s_bar,
            },
            sigma_within: s_bar / f.c4,
        }
    }

    /// The center line and the σ of the plotted points the run rules use: a third of the
    /// distance between the center line and a limit (half-width / 3).
    pub fn zones(&self) -> Zones {
        Zones {
            center: self.location.center,
            sigma: (self.location.ucl - self.location.lcl) / 6.0,
        }
    }

    pub fn is_finite(&self) -> bool {
        self.location.is_finite() && self.dispersion.is_finite() && self.sigma_within.is_finite()
    }
}

/// One plotted point: a reading, or the mean of a subgroup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Index of the last reading it contains (a subgroup is plotted when it is complete).
    pub last: usize,
    pub value: f64,
    /// Its MR (`None` for the first reading), R or S.
    pub dispersion: Option<f64>,
}

/// The plotted points of a series of readings in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub spec: ChartSpec,
    pub points: Vec<Point>,
    /// Readings of the incomplete last subgroup, left out.
    pub dropped: usize,
}

/// The mean, robust against sums beyond a double; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let sum: f64 = values.iter().sum();
    Some(if sum.is_finite() {
        sum / n
    } else {
        values.iter().map(|v| v / n).sum()
    })
}

/// The sample standard deviation (n − 1); 0 for fewer than two values.
pub fn sample_sd(values: &[f64]) -> f64 {
    let Some(m) = mean(values) else {
        return 0.0;
    };
    if values.len() < 2 {
        return 0.0;
    }
    let ss: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// Groups `values` (time order) into the chart's points.
pub fn plot(spec: ChartSpec, values: &[f64]) -> Plot {
    match spec {
        ChartSpec::IMr => Plot {
            spec,
            points: values
                .iter()
                .enumerate()
                .map(|(i, &v)| Point {
                    last: i,
                    value: v,
                    dispersion: (i > 0).then(|| (v - values[i - 1]).abs()),
                })
                .collect(),
            dropped: 0,
        },
        ChartSpec::XbarR(n) | ChartSpec::XbarS(n) => {
            let size = usize::from(n.get());
            let chunks = values.chunks_exact(size);
            let dropped = chunks.remainder().len();
            let points = chunks
                .enumerate()
                .map(|(k, group)| {
                    let dispersion = if matches!(spec, ChartSpec::XbarR(_)) {
                        let max = group.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let min = group.iter().copied().fold(f64::INFINITY, f64::min);
                        max - min
                    } else {
                        sample_sd(group)
                    };
                    Point {
                        last: k * size + size - 1,
                        value: mean(group).unwrap_or(f64::NAN),
                        dispersion: Some(dispersion),
                    }
                })
                .collect();
            Plot {
                spec,
                points,
                dropped,
            }
        }
    }
}

impl Plot {
    /// The plotted values (readings or subgroup means).
    pub fn values(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.value).collect()
    }

    /// Limits from these very points (phase I); `None` without points. A single reading has no
    /// moving range: its σ within is 0.
    pub fn limits(&self) -> Option<ChartLimits> {
        let center = mean(&self.values())?;
        let dispersions: Vec<f64> = self.points.iter().filter_map(|p| p.dispersion).collect();
        let average = mean(&dispersions).unwrap_or(0.0);
        Some(match self.spec {
            ChartSpec::IMr => ChartLimits::i_mr(center, average),
            ChartSpec::XbarR(n) => ChartLimits::xbar_r(center, average, n),
            ChartSpec::XbarS(n) => ChartLimits::xbar_s(center, average, n),
        })
    }

    /// The points that break rules against `limits`.
    pub fn judge(&self, limits: &ChartLimits) -> Vec<Judged> {
        let values = self.values();
        let zones = limits.zones();
        let nelson = rules::nelson(&values, zones);
        let western = rules::western_electric(&values, zones);
        self.points
            .iter()
            .zip(nelson.into_iter().zip(western))
            .enumerate()
            .map(|(index, (point, (nelson, western_electric)))| {
                let d = &limits.dispersion;
                let dispersion_out = point
                    .dispersion
                    .is_some_and(|x| x > d.ucl || (d.lcl > 0.0 && x < d.lcl));
                Judged {
                    index,
                    nelson,
                    western_electric,
                    dispersion_out,
                }
            })
            .collect()
    }
}

/// What a plotted point breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Index into [`Plot::points`].
    pub index: usize,
    /// Nelson rules 1–8 broken on the chart of individuals or means.
    pub nelson: Vec<u8>,
    /// Western Electric rules 1–4 broken there.
    pub western_electric: Vec<u8>,
    /// Its MR, R or S lies beyond the dispersion chart's limits (above the UCL, or below an LCL
    /// above 0).
    pub dispersion_out: bool,
}

impl Judged {
    /// Whether it breaks anything: a rule of either set, or its dispersion chart's limits.
    pub fn any(&self) -> bool {
        !self.nelson.is_empty() || !self.western_electric.is_empty() || self.dispersion_out
    }
}

/// Why a baseline cannot give limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    #[error(
        "the baseline holds {got} readings; an i_mr baseline needs at least \
         {MIN_BASELINE_INDIVIDUALS}"
    )]
    TooFewReadings { got: usize },
    #[error(
        "the baseline holds {got} complete subgroups of {n} ({readings} readings); at least \
         {MIN_BASELINE_SUBGROUPS} are needed"
    )]
    TooFewSubgroups { got: usize, n: u8, readings: usize },
    #[error(
        "the baseline's readings do not vary within subgroups (σ within = 0): the limits would \
         coincide with the center line"
    )]
    NoVariation,
    #[error("the baseline's readings are too large for control limits (beyond a double)")]
    Overflow,
}

/// Phase I limits from a baseline's readings (time order), refused when there are too few
/// readings or subgroups, no variation, or values beyond a double's range.
pub fn baseline(spec: ChartSpec, values: &[f64]) -> Result<(ChartLimits, Plot), BaselineError> {
    let plot = plot(spec, values);
    match spec {
        ChartSpec::IMr if values.len() < MIN_BASELINE_INDIVIDUALS => {
            return Err(BaselineError::TooFewReadings { got: values.len() })
        }
        ChartSpec::XbarR(n) | ChartSpec::XbarS(n) if plot.points.len() < MIN_BASELINE_SUBGROUPS => {
            return Err(BaselineError::TooFewSubgroups {
                got: plot.points.len(),
                n: n.get(),
                readings: values.len(),
            })
        }
        _ => {}
    }
    let limits = plot
        .limits()
        .ok_or(BaselineError::TooFewReadings { got: 0 })?;
    if !limits.is_finite() {
        return Err(BaselineError::Overflow);
    }
    if limits.sigma_within <= 0.0 {
        return Err(BaselineError::NoVariation);
    }
    Ok((limits, plot))
}

#[cfg(test)]
mod tests;
