//! Process capability: how the spread of a series compares with its specification limits.
//! Cp/Cpk use the short-term σ within (what the control chart estimates: MR̄/d2, R̄/d2 or S̄/c4),
//! Pp/Ppk the long-term σ overall (the sample standard deviation of every value); a process that
//! drifts or shifts has Cp well above Pp.

use super::{mean, sample_sd};

/// Process capability of a series against specification limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capability {
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    /// Mean of the readings.
    pub mean: f64,
    /// Short-term σ: the chart's MR̄/d2, R̄/d2 or S̄/c4.
    pub sigma_within: f64,
    /// Long-term σ: sample standard deviation of all readings.
    pub sigma_overall: f64,
    pub cp: Option<f64>,
    pub cpk: Option<f64>,
    pub pp: Option<f64>,
    pub ppk: Option<f64>,
}

/// (spread index, centered index) for σ: (USL − LSL)/6σ with both limits, min(USL − x̄, x̄ −
/// LSL)/3σ over the limits there are; `None` where σ is 0 or a result is not finite.
fn indices(
    mean: f64,
    sigma: f64,
    lsl: Option<f64>,
    usl: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let finite = |x: f64| x.is_finite().then_some(x);
    if !(sigma > 0.0 && sigma.is_finite()) {
        return (None, None);
    }
    let spread = match (lsl, usl) {
        (Some(l), Some(u)) => finite((u - l) / (6.0 * sigma)),
        _ => None,
    };
    let nearest = [usl.map(|u| u - mean), lsl.map(|l| mean - l)]
        .into_iter()
        .flatten()
        .reduce(f64::min);
    (spread, nearest.and_then(|d| finite(d / (3.0 * sigma))))
}

/// Cp/Cpk from `sigma_within` beside Pp/Ppk from the sample σ of `values`; `None` for no values.
pub fn capability(
    values: &[f64],
    sigma_within: f64,
    lsl: Option<f64>,
    usl: Option<f64>,
) -> Option<Capability> {
    let mean = mean(values)?;
    let sigma_overall = sample_sd(values);
    let (cp, cpk) = indices(mean, sigma_within, lsl, usl);
    let (pp, ppk) = indices(mean, sigma_overall, lsl, usl);
    Some(Capability {
        lsl,
        usl,
        mean,
        sigma_within,
        sigma_overall,
        cp,
        cpk,
        pp,
        ppk,
    })
}
