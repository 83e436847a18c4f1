#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::constants::{self, Factors};
use super::rules::{nelson, western_electric};
use super::*;

fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not {expected} ± {tolerance}"
    );
}

fn n(size: u8) -> SubgroupSize {
    SubgroupSize::new(size).unwrap()
}

// ---- constants ----

/// Rows of Montgomery, *Introduction to Statistical Quality Control*, Appendix VI, typed here
/// again from the book: n, A2, A3, c4, B3, B4, d2, d3, D3, D4.
#[rustfmt::skip]
const MONTGOMERY_ROWS: [constants::TableRow; 5] = [
    (2, 1.880, 2.659, 0.7979, 0.0, 3.267, 1.128, 0.853, 0.0, 3.267),
    (5, 0.577, 1.427, 0.9400, 0.0, 2.089, 2.326, 0.864, 0.0, 2.114),
    (7, 0.419, 1.182, 0.9594, 0.118, 1.882, 2.704, 0.833, 0.076, 1.924),
    (10, 0.308, 0.975, 0.9727, 0.284, 1.716, 3.078, 0.797, 0.223, 1.777),
    (25, 0.153, 0.606, 0.9896, 0.565, 1.435, 3.931, 0.708, 0.459, 1.541),
];

#[test]
fn constants_are_the_published_table() {
    for (size, a2, a3, c4, b3, b4, d2, d3, range_d3, range_d4) in MONTGOMERY_ROWS {
        let expected = Factors {
            n: size,
            a2,
            a3,
            c4,
            b3,
            b4,
            d2,
            d3,
            range_d3,
            range_d4,
        };
        assert_eq!(constants::factors(size), Some(expected), "n = {size}");
    }
    // The NIST/SEMATECH e-Handbook's individuals chart (§6.3.2.2) divides MR̄ by 1.128 and
    // multiplies it by D4 = 3.267.
    let mr = constants::moving_range();
    assert_eq!(
        (mr.n, mr.d2, mr.range_d4, mr.range_d3),
        (2, 1.128, 3.267, 0.0)
    );
    assert_eq!(constants::all().count(), 24);
    assert_eq!(constants::factors(1), None);
    assert_eq!(constants::factors(26), None);
}

/// Every row agrees, within the table's rounding, with the formulas the table comes from
/// (SAS/QC "Deriving control chart constants"; Montgomery ch. 6): A2 = 3/(d2·√n), A3 = 3/(c4·√n),
/// B3,4 = 1 ∓ 3·√(1 − c4²)/c4 (B3 at least 0), D3,4 = 1 ∓ 3·d3/d2 (D3 at least 0).
#[test]
fn every_row_follows_from_d2_d3_and_c4() {
    for f in constants::all() {
        let root = f64::from(f.n).sqrt();
        let what = |name: &str| format!("{name}({})", f.n);
        close(f.a2, 3.0 / (f.d2 * root), 0.0015, &what("A2"));
        close(f.a3, 3.0 / (f.c4 * root), 0.0015, &what("A3"));
        let s = 3.0 * (1.0 - f.c4 * f.c4).sqrt() / f.c4;
        close(f.b4, 1.0 + s, 0.0015, &what("B4"));
        close(f.b3, (1.0 - s).max(0.0), 0.0015, &what("B3"));
        let r = 3.0 * f.d3 / f.d2;
        close(f.range_d4, 1.0 + r, 0.003, &what("D4"));
        close(f.range_d3, (1.0 - r).max(0.0), 0.003, &what("D3"));
    }
}

/// c4(n) = √(2/(n−1)) · Γ(n/2) / Γ((n−1)/2), the ratio of gammas by its recurrence
/// g(n)·g(n+1) = (n−1)/2 from g(2) = 1/√π.
#[test]
fn c4_is_the_bias_of_the_sample_standard_deviation() {
    let mut ratio = 1.0 / std::f64::consts::PI.sqrt();
    for size in 2..=25u8 {
        let k = f64::from(size);
        let c4 = (2.0 / (k - 1.0)).sqrt() * ratio;
        close(
            constants::factors(size).unwrap().c4,
            c4,
            0.00005,
            &format!("c4({size})"),
        );
        ratio = (k - 1.0) / (2.0 * ratio);
    }
}

/// The standard normal distribution function (erf by Abramowitz & Stegun 7.1.26, |ε| < 1.5e-7).
fn phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * (1.0 + if x < 0.0 { -erf } else { erf })
}

/// d2(n) = E(range of n standard normal values) = ∫ 1 − Φ(x)ⁿ − (1 − Φ(x))ⁿ dx (Simpson).
#[test]
fn d2_is_the_expected_range_of_n_standard_normal_values() {
    for size in 2..=25u8 {
        let k = i32::from(size);
        let integrand = |x: f64| 1.0 - phi(x).powi(k) - (1.0 - phi(x)).powi(k);
        let (a, b, steps) = (-9.0, 9.0, 3600);
        let h = (b - a) / f64::from(steps);
        let mut sum = integrand(a) + integrand(b);
        for i in 1..steps {
            let w = if i % 2 == 1 { 4.0 } else { 2.0 };
            sum += w * integrand(a + h * f64::from(i));
        }
        let d2 = sum * h / 3.0;
        close(
            constants::factors(size).unwrap().d2,
            d2,
            0.0006,
            &format!("d2({size})"),
        );
    }
}

// ---- published worked examples ----

/// NIST/SEMATECH e-Handbook of Statistical Methods, §6.3.2.2 "Individuals control charts"
/// (https://www.itl.nist.gov/div898/handbook/pmc/section3/pmc322.htm): the flow rate of the
/// first 10 batches of a new process. Published: x̄ = 50.81, MR̄ = 1.8778, individuals chart
/// UCL = 55.8041, CL = 50.81, LCL = 45.8159; moving range chart UCL = 6.1348, CL = 1.8778,
/// LCL = 0.
#[test]
fn nist_individuals_chart_example() {
    let flow = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1];
    let plot = plot(ChartSpec::IMr, &flow);
    let moving: Vec<f64> = plot.points.iter().filter_map(|p| p.dispersion).collect();
    let published_mr = [2.0, 2.3, 1.4, 3.5, 3.4, 1.4, 0.2, 1.2, 1.5];
    assert_eq!(moving.len(), published_mr.len());
    for (mr, published) in moving.iter().zip(published_mr) {
        close(*mr, published, 1e-9, "moving range");
    }
    let l = plot.limits().unwrap();
    close(l.location.center, 50.81, 5e-5, "CL");
    close(l.dispersion.center, 1.8778, 5e-5, "MR-bar");
    close(l.location.ucl, 55.8041, 5e-5, "UCL");
    close(l.location.lcl, 45.8159, 5e-5, "LCL");
    close(l.dispersion.ucl, 6.1348, 2e-4, "MR UCL");
    assert_eq!(l.dispersion.lcl, 0.0);
    close(l.sigma_within, 1.8778 / 1.128, 1e-4, "sigma");
    // "On both charts the process is in control."
    assert!(plot
        .judge(&l)
        .iter()
        .all(|j| !j.nelson.contains(&1) && !j.dispersion_out));
}

/// Montgomery, *Introduction to Statistical Quality Control*, Table 6.3: inside diameters (mm)
/// of forged piston rings, 25 samples of 5, in sample order.
fn piston_rings() -> Vec<f64> {
    include_str!("../../../tests/fixtures/piston-rings.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|v| v.parse::<f64>().expect("a number"))
        })
        .collect()
}

/// Montgomery's piston rings with X̄-R: x̿ = 74.001, R̄ = 0.023, x̄ chart UCL = 74.014, LCL =
/// 73.988; R chart UCL = 0.049, LCL = 0; σ̂ = R̄/d2 = 0.0099 (the book rounds R̄ and x̿ before
/// the limits, hence the tolerance of one unit in the last published digit).
#[test]
fn montgomery_piston_rings_xbar_r() {
    let readings: Vec<f64> = piston_rings();
    let plot = plot(ChartSpec::XbarR(n(5)), &readings);
    assert_eq!((plot.points.len(), plot.dropped), (25, 0));
    let l = plot.limits().unwrap();
    close(l.location.center, 74.001, 5e-4, "grand mean");
    close(l.dispersion.center, 0.023, 5e-4, "R-bar");
    close(l.location.ucl, 74.014, 1e-3, "UCL");
    close(l.location.lcl, 73.988, 1e-3, "LCL");
    close(l.dispersion.ucl, 0.049, 5e-4, "R UCL");
    assert_eq!(l.dispersion.lcl, 0.0);
    close(l.sigma_within, 0.0099, 1.5e-4, "sigma");
    // From the published summary, the published limits to their last digit.
    let book = ChartLimits::xbar_r(74.001, 0.023, n(5));
    close(book.location.ucl, 74.014, 5e-4, "UCL from x̿ and R̄");
    close(book.location.lcl, 73.988, 5e-4, "LCL from x̿ and R̄");
    close(book.dispersion.ucl, 0.049, 5e-4, "R UCL from R̄");
    // Montgomery: the process is in statistical control.
    assert!(plot
        .judge(&l)
        .iter()
        .all(|j| !j.nelson.contains(&1) && !j.dispersion_out));
}

/// Montgomery Example 6.3, the piston rings with X̄-S: s̄ = 0.0094, x̄ chart UCL = 74.014,
/// LCL = 73.988; s chart UCL = 0.0196, LCL = 0; σ̂ = s̄/c4 = 0.0094/0.9400 = 0.01.
#[test]
fn montgomery_piston_rings_xbar_s() {
    let readings: Vec<f64> = piston_rings();
    let plot = plot(ChartSpec::XbarS(n(5)), &readings);
    let l = plot.limits().unwrap();
    close(l.dispersion.center, 0.0094, 5e-5, "s-bar");
    close(l.location.ucl, 74.014, 1e-3, "UCL");
    close(l.location.lcl, 73.988, 1e-3, "LCL");
    close(l.dispersion.ucl, 0.0196, 5e-5, "s UCL");
    assert_eq!(l.dispersion.lcl, 0.0);
    close(l.sigma_within, 0.01, 5e-5, "sigma");
    let book = ChartLimits::xbar_s(74.001, 0.0094, n(5));
    close(book.location.ucl, 74.014, 5e-4, "UCL from x̿ and s̄");
    close(book.location.lcl, 73.988, 5e-4, "LCL from x̿ and s̄");
    close(book.dispersion.ucl, 0.0196, 5e-5, "s UCL from s̄");
    // The first sample's s, as the book lists it.
    close(
        plot.points[0].dispersion.unwrap(),
        0.0148,
        5e-5,
        "s of sample 1",
    );
}

// ---- hand-computed charts ----

/// x = 10, 12, 11, 13, 12: x̄ = 11.6; MR = 2, 1, 2, 1, MR̄ = 1.5; σ = 1.5/1.128 = 1.3297872;
/// limits 11.6 ± 3.9893617 = 15.5893617 / 7.6106383; MR chart UCL = 3.267·1.5 = 4.9005.
#[test]
fn individuals_and_moving_range_by_hand() {
    let plot = plot(ChartSpec::IMr, &[10.0, 12.0, 11.0, 13.0, 12.0]);
    assert_eq!(plot.points[0].dispersion, None);
    assert_eq!(plot.points[3].dispersion, Some(2.0));
    let l = plot.limits().unwrap();
    close(l.location.center, 11.6, 1e-12, "CL");
    close(l.sigma_within, 1.329_787_234, 1e-9, "sigma");
    close(l.location.ucl, 15.589_361_702, 1e-9, "UCL");
    close(l.location.lcl, 7.610_638_298, 1e-9, "LCL");
    close(l.dispersion.center, 1.5, 1e-12, "MR-bar");
    close(l.dispersion.ucl, 4.9005, 1e-12, "MR UCL");
    assert_eq!(l.dispersion.lcl, 0.0);
    // The zones of the individuals chart are σ within.
    close(l.zones().sigma, l.sigma_within, 1e-12, "zone sigma");
}

/// Subgroups of 3: (1, 2, 3), (2, 4, 6), (3, 3, 6) and an incomplete (7, 8), dropped.
/// Means 2, 4, 4: x̿ = 10/3. Ranges 2, 4, 3: R̄ = 3. Standard deviations 1, 2, √3:
/// S̄ = (3 + √3)/3 = 1.5773503.
/// X̄-R (A2 = 1.023, D4 = 2.574, d2 = 1.693): 3.3333333 ± 3.069 = 6.4023333 / 0.2643333,
/// R chart UCL 7.722, LCL 0, σ = 3/1.693 = 1.7720024.
/// X̄-S (A3 = 1.954, B4 = 2.568, c4 = 0.8862): 3.3333333 ± 3.0821424 = 6.4154758 / 0.2511909,
/// S chart UCL 4.0506355, LCL 0, σ = 1.5773503/0.8862 = 1.7799033.
#[test]
fn subgroup_charts_by_hand() {
    let readings = [1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 3.0, 3.0, 6.0, 7.0, 8.0];
    let r = plot(ChartSpec::XbarR(n(3)), &readings);
    assert_eq!(r.dropped, 2, "the incomplete last subgroup");
    let means: Vec<f64> = r.values();
    assert_eq!(means, [2.0, 4.0, 4.0]);
    let lasts: Vec<usize> = r.points.iter().map(|p| p.last).collect();
    assert_eq!(lasts, [2, 5, 8]);
    let ranges: Vec<f64> = r.points.iter().filter_map(|p| p.dispersion).collect();
    assert_eq!(ranges, [2.0, 4.0, 3.0]);
    let l = r.limits().unwrap();
    close(l.location.center, 10.0 / 3.0, 1e-12, "grand mean");
    close(l.location.ucl, 6.402_333_333, 1e-9, "X̄-R UCL");
    close(l.location.lcl, 0.264_333_333, 1e-9, "X̄-R LCL");
    close(l.dispersion.center, 3.0, 1e-12, "R-bar");
    close(l.dispersion.ucl, 7.722, 1e-9, "R UCL");
    assert_eq!(l.dispersion.lcl, 0.0);
    close(l.sigma_within, 1.772_002_363, 1e-9, "R-bar/d2");

    let s = plot(ChartSpec::XbarS(n(3)), &readings);
    let sds: Vec<f64> = s.points.iter().filter_map(|p| p.dispersion).collect();
    close(sds[0], 1.0, 1e-12, "s1");
    close(sds[1], 2.0, 1e-12, "s2");
    close(sds[2], 3f64.sqrt(), 1e-12, "s3");
    let l = s.limits().unwrap();
    close(l.dispersion.center, 1.577_350_269, 1e-9, "S-bar");
    close(l.location.ucl, 6.415_475_759, 1e-9, "X̄-S UCL");
    close(l.location.lcl, 0.251_190_907, 1e-9, "X̄-S LCL");
    close(l.dispersion.ucl, 4.050_635_491, 1e-9, "S UCL");
    assert_eq!(l.dispersion.lcl, 0.0);
    close(l.sigma_within, 1.779_903_260, 1e-9, "S-bar/c4");
    // The zones of a chart of means: σ / √n (here A3·S̄/3).
    close(
        l.zones().sigma,
        1.954 * 1.577_350_269 / 3.0,
        1e-9,
        "zone sigma",
    );
}

#[test]
fn a_dispersion_point_beyond_its_limits_is_flagged() {
    // Subgroups of 7 have an R chart LCL above 0 (D3 = 0.076).
    let limits = ChartLimits::xbar_r(0.0, 1.0, n(7));
    close(limits.dispersion.lcl, 0.076, 1e-12, "R LCL");
    let mut readings = vec![0.0, 0.5, -0.5, 0.2, -0.2, 0.1, -0.1]; // R = 1.0
    readings.extend([0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0]); // R = 0.01 < LCL
    readings.extend([0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0]); // R = 2.0 > UCL 1.924
    let judged = plot(ChartSpec::XbarR(n(7)), &readings).judge(&limits);
    let out: Vec<bool> = judged.iter().map(|j| j.dispersion_out).collect();
    assert_eq!(out, [false, true, true]);
}

#[test]
fn chart_specs_pair_charts_with_subgroup_sizes() {
    assert_eq!(ChartSpec::new(Chart::IMr, None), Ok(ChartSpec::IMr));
    assert_eq!(
        ChartSpec::new(Chart::IMr, Some(n(5))),
        Err(SpecError::SizeWithIndividuals)
    );
    assert_eq!(
        ChartSpec::new(Chart::XbarS, None),
        Err(SpecError::SizeMissing(Chart::XbarS))
    );
    assert_eq!(
        ChartSpec::new(Chart::XbarR, Some(n(4)))
            .unwrap()
            .subgroup_size(),
        4
    );
    assert!(SubgroupSize::new(1).is_err() && SubgroupSize::new(26).is_err());
    for c in Chart::ALL {
        assert_eq!(c.as_str().parse::<Chart>(), Ok(c));
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
    }
    assert!("imr".parse::<Chart>().is_err());
}

// ---- baselines ----

#[test]
fn a_baseline_needs_enough_readings_or_subgroups_and_variation() {
    let wobble = |k: usize| -> Vec<f64> { (0..k).map(|i| (i % 3) as f64).collect() };
    assert_eq!(
        baseline(ChartSpec::IMr, &wobble(19)).unwrap_err(),
        BaselineError::TooFewReadings { got: 19 }
    );
    assert!(baseline(ChartSpec::IMr, &wobble(20)).is_ok());
    // 99 readings: 19 subgroups of 5 and 4 left over.
    assert_eq!(
        baseline(ChartSpec::XbarR(n(5)), &wobble(99)).unwrap_err(),
        BaselineError::TooFewSubgroups {
            got: 19,
            n: 5,
            readings: 99
        }
    );
    let (limits, plot) = baseline(ChartSpec::XbarS(n(5)), &wobble(103)).unwrap();
    assert_eq!((plot.points.len(), plot.dropped), (20, 3));
    assert!(limits.sigma_within > 0.0);
    assert_eq!(
        baseline(ChartSpec::IMr, &[7.0; 30]).unwrap_err(),
        BaselineError::NoVariation
    );
    let huge: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 0 { f64::MAX } else { -f64::MAX })
        .collect();
    assert_eq!(
        baseline(ChartSpec::IMr, &huge).unwrap_err(),
        BaselineError::Overflow
    );
}

// ---- capability ----

/// x = 10, 12, 11, 13, 12 against LSL 8, USL 16: x̄ = 11.6, σ within = 1.5/1.128 = 1.3297872,
/// σ overall = √(5.2/4) = 1.1401754. Cp = 8/(6·1.3297872) = 1.0026667, Cpk = min(4.4, 3.6) /
/// (3·1.3297872) = 0.9024, Pp = 8/(6·1.1401754) = 1.1694107, Ppk = 3.6/(3·1.1401754) =
/// 1.0524696.
#[test]
fn capability_by_hand() {
    let values = [10.0, 12.0, 11.0, 13.0, 12.0];
    let within = plot(ChartSpec::IMr, &values).limits().unwrap().sigma_within;
    let c = capability(&values, within, Some(8.0), Some(16.0)).unwrap();
    close(c.mean, 11.6, 1e-12, "mean");
    close(c.sigma_overall, 1.140_175_425, 1e-9, "sigma overall");
    close(c.cp.unwrap(), 1.002_666_667, 1e-9, "Cp");
    close(c.cpk.unwrap(), 0.9024, 1e-9, "Cpk");
    close(c.pp.unwrap(), 1.169_410_692, 1e-9, "Pp");
    close(c.ppk.unwrap(), 1.052_469_623, 1e-9, "Ppk");
    // One limit: no Cp/Pp, one-sided Cpk/Ppk.
    let c = capability(&values, within, None, Some(16.0)).unwrap();
    assert_eq!((c.cp, c.pp), (None, None));
    close(c.cpk.unwrap(), 4.4 / (3.0 * within), 1e-12, "upper Cpk");
    // No spread: no indices.
    let c = capability(&[5.0, 5.0], 0.0, Some(0.0), Some(10.0)).unwrap();
    assert_eq!((c.cp, c.cpk, c.pp, c.ppk), (None, None, None, None));
    assert_eq!(capability(&[], 1.0, Some(0.0), Some(1.0)), None);
}

/// A steady drift 1, 2, …, 20 against 0 … 21: every moving range is 1, so σ within =
/// 1/1.128 = 0.8865248 and Cp = 21/(6·0.8865248) = 3.948; the overall σ = √35 = 5.9160798 and
/// Pp = 21/(6·5.9160798) = 0.5916080. Capable in the short term, not over the window: Pp/Ppk
/// tell what Cp/Cpk cannot.
#[test]
fn a_drift_is_capable_within_and_not_overall() {
    let values: Vec<f64> = (1..=20).map(f64::from).collect();
    let within = plot(ChartSpec::IMr, &values).limits().unwrap().sigma_within;
    let c = capability(&values, within, Some(0.0), Some(21.0)).unwrap();
    close(c.cp.unwrap(), 3.948, 1e-9, "Cp");
    close(c.cpk.unwrap(), 10.5 / (3.0 / 1.128), 1e-9, "Cpk");
    close(c.sigma_overall, 35f64.sqrt(), 1e-12, "sigma overall");
    close(c.pp.unwrap(), 0.591_607_978, 1e-9, "Pp");
    close(c.ppk.unwrap(), 10.5 / (3.0 * 35f64.sqrt()), 1e-12, "Ppk");
}

// ---- rules ----

const UNIT: Zones = Zones {
    center: 0.0,
    sigma: 1.0,
};

fn flagged_by(values: &[f64], rule: u8) -> Vec<usize> {
    nelson(values, UNIT)
        .iter()
        .enumerate()
        .filter(|(_, r)| r.contains(&rule))
        .map(|(i, _)| i)
        .collect()
}

fn none() -> Vec<usize> {
    Vec::new()
}

#[test]
fn nelson_1_one_point_beyond_three_sigma() {
    assert_eq!(flagged_by(&[0.0, 3.1, 0.0, -3.5, 2.9], 1), [1, 3]);
    assert_eq!(
        flagged_by(&[3.0, -3.0], 1),
        none(),
        "on the limit is not beyond"
    );
}

#[test]
fn nelson_2_nine_in_a_row_on_one_side() {
    let mut v = vec![0.5; 9];
    assert_eq!(flagged_by(&v, 2), [8]);
    v.push(0.1);
    assert_eq!(flagged_by(&v, 2), [8, 9], "the run goes on");
    assert_eq!(flagged_by(&v[..8], 2), none(), "eight");
    let mut broken = vec![0.5; 9];
    broken[4] = 0.0;
    assert_eq!(
        flagged_by(&broken, 2),
        none(),
        "a point on the center line ends the run"
    );
    broken[4] = -0.5;
    assert_eq!(flagged_by(&broken, 2), none());
}

#[test]
fn nelson_3_six_increasing_or_decreasing() {
    let up = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5];
    assert_eq!(flagged_by(&up, 3), [5]);
    let down: Vec<f64> = up.iter().rev().copied().collect();
    assert_eq!(flagged_by(&down, 3), [5]);
    assert_eq!(flagged_by(&up[..5], 3), none(), "five");
    assert_eq!(
        flagged_by(&[0.0, 0.1, 0.2, 0.2, 0.3, 0.4], 3),
        none(),
        "a tie ends the trend"
    );
    assert_eq!(flagged_by(&[0.0, 0.1, 0.2, 0.1, 0.3, 0.4, 0.5], 3), none());
}

#[test]
fn nelson_4_fourteen_alternating() {
    let saw: Vec<f64> = (0..14)
        .map(|i| if i % 2 == 0 { 0.2 } else { -0.2 })
        .collect();
    assert_eq!(flagged_by(&saw, 4), [13]);
    assert_eq!(flagged_by(&saw[..13], 4), none(), "thirteen");
    let mut tie = saw.clone();
    tie[7] = tie[6];
    assert_eq!(
        flagged_by(&tie, 4),
        none(),
        "two equal points end the alternation"
    );
    // Alternating steps, not alternating sides: a saw above the center line counts too.
    let high: Vec<f64> = saw.iter().map(|v| v + 1.0).collect();
    assert_eq!(flagged_by(&high, 4), [13]);
}

#[test]
fn nelson_5_two_of_three_beyond_two_sigma_on_one_side() {
    assert_eq!(flagged_by(&[2.1, 0.0, 2.2, 0.0], 5), [2]);
    assert_eq!(flagged_by(&[-2.5, -2.1, 0.0], 5), [1]);
    assert_eq!(flagged_by(&[2.1, 0.0, -2.2], 5), none(), "opposite sides");
    assert_eq!(flagged_by(&[2.1, 0.0, 0.0, 2.2], 5), none(), "two of four");
    assert_eq!(
        flagged_by(&[2.1, 2.0, 0.0], 5),
        none(),
        "at 2σ is not beyond"
    );
}

#[test]
fn nelson_6_four_of_five_beyond_one_sigma_on_one_side() {
    assert_eq!(flagged_by(&[1.1, 1.2, 0.0, 1.5, 1.3], 6), [4]);
    assert_eq!(
        flagged_by(&[1.1, -1.2, 1.3, 1.5, 1.4], 6),
        [4],
        "the fifth anywhere"
    );
    assert_eq!(
        flagged_by(&[1.1, 1.2, 0.0, 1.5, 0.5], 6),
        none(),
        "three of five"
    );
    assert_eq!(
        flagged_by(&[1.1, -1.2, -1.3, 1.5, 1.4], 6),
        none(),
        "split sides"
    );
}

#[test]
fn nelson_7_fifteen_within_one_sigma() {
    let hugging: Vec<f64> = (0..15)
        .map(|i| if i % 3 == 0 { 1.0 } else { -0.4 })
        .collect();
    assert_eq!(flagged_by(&hugging, 7), [14], "at 1σ is within");
    assert_eq!(flagged_by(&hugging[..14], 7), none(), "fourteen");
    let mut escaped = hugging.clone();
    escaped[7] = 1.01;
    assert_eq!(flagged_by(&escaped, 7), none());
}

#[test]
fn nelson_8_eight_beyond_one_sigma_on_either_side() {
    let mixture: Vec<f64> = (0..8)
        .map(|i| if i % 2 == 0 { 1.5 } else { -1.5 })
        .collect();
    assert_eq!(flagged_by(&mixture, 8), [7]);
    assert_eq!(flagged_by(&mixture[..7], 8), none(), "seven");
    let mut entered = mixture.clone();
    entered[3] = -1.0;
    assert_eq!(flagged_by(&entered, 8), none(), "one within 1σ");
}

#[test]
fn a_constant_series_breaks_no_zone_rule() {
    let flat = [4.0; 20];
    let z = Zones {
        center: 4.0,
        sigma: 0.0,
    };
    assert!(nelson(&flat, z).iter().all(Vec::is_empty));
    assert!(western_electric(&flat, z).iter().all(Vec::is_empty));
}

fn we_flagged(values: &[f64], rule: u8) -> Vec<usize> {
    western_electric(values, UNIT)
        .iter()
        .enumerate()
        .filter(|(_, r)| r.contains(&rule))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn western_electric_rules_keep_their_numbers() {
    assert_eq!(we_flagged(&[0.0, 3.1, 0.0, -3.5, 2.9], 1), [1, 3]);
    assert_eq!(we_flagged(&[2.1, 0.0, 2.2, 0.0], 2), [2]);
    assert_eq!(we_flagged(&[2.1, 0.0, -2.2, 0.0], 2), none());
    assert_eq!(we_flagged(&[1.1, 1.2, 0.0, 1.5, 1.3], 3), [4]);
    let v = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2, 0.4, -0.1];
    assert_eq!(we_flagged(&v, 4), [7, 8]);
    assert_eq!(we_flagged(&v[..7], 4), none());
    // Eight on one side is Western Electric 4, not yet Nelson 2.
    assert_eq!(flagged_by(&v[..8], 2), none());
}
