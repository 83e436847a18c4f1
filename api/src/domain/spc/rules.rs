//! Run rules: which plotted points signal a special cause. Both sets judge the points in time
//! order against a center line and the σ of the plotted statistic (a third of the distance from
//! the center line to a control limit: σ within for individuals, σ within / √n for subgroup
//! means). A point is flagged when it completes a pattern; while a run goes on, every further
//! point of it is flagged too.
//!
//! Words used below: a point is *beyond kσ* when it lies strictly more than kσ from the center
//! line, *within 1σ* when it lies at most 1σ from it; *above* and *below* are strict, so a point
//! on the center line is on neither side and ends a run; *increasing* and *decreasing* are
//! strict, so two equal points end a trend or an alternation. With σ = 0 (all points equal) no
//! zone rule (1, 5, 6, 7, 8) can fire.
//!
//! Nelson (1984, *J. Quality Technology* 16(4)), numbered as in Minitab's "tests for special
//! causes":
//! 1. one point beyond 3σ;
//! 2. nine points in a row on the same side of the center line;
//! 3. six points in a row, all increasing or all decreasing;
//! 4. fourteen points in a row, alternating up and down;
//! 5. two of three points in a row beyond 2σ on the same side (the flagged point among them);
//! 6. four of five points in a row beyond 1σ on the same side (the flagged point among them);
//! 7. fifteen points in a row within 1σ, on either side;
//! 8. eight points in a row beyond 1σ, on either side (none within 1σ; they may all be on one
//!    side, as in Minitab).
//!
//! Western Electric (*Statistical Quality Control Handbook*, 1956), the numbering `GET /spc` has
//! always answered in `rules`: 1 = Nelson 1; 2 = Nelson 5; 3 = Nelson 6; 4: eight points in a
//! row on the same side of the center line.
//!
//! At the start of a series, rules 5 and 6 (WE 2 and 3) look at the points there are: the first
//! two points both beyond 2σ on one side already make two of three.

/// The center line and the σ of the plotted statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zones {
    pub center: f64,
    pub sigma: f64,
}

impl Zones {
    /// +1 beyond `k`σ above, -1 beyond `k`σ below, 0 otherwise (and always 0 without spread).
    fn beyond(&self, v: f64, k: f64) -> i8 {
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            0
        } else if v - self.center > k * self.sigma {
            1
        } else if self.center - v > k * self.sigma {
            -1
        } else {
            0
        }
    }

    fn within_one(&self, v: f64) -> bool {
        self.sigma > 0.0 && self.sigma.is_finite() && self.beyond(v, 1.0) == 0
    }

    fn side(&self, v: f64) -> i8 {
        sign(v - self.center)
    }
}

fn sign(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// Whether the window of up to `window` points ending at `i` holds at least `needed` beyond
/// `k`σ on the side of point `i`, point `i` being beyond itself.
fn k_of_window(
    values: &[f64],
    zones: &Zones,
    i: usize,
    k: f64,
    window: usize,
    needed: usize,
) -> bool {
    let here = zones.beyond(values[i], k);
    here != 0
        && values[(i + 1).saturating_sub(window)..=i]
            .iter()
            .filter(|&&v| zones.beyond(v, k) == here)
            .count()
            >= needed
}

/// Lengths of the runs ending at each point for which `same(previous, current)` holds, counting
/// points: 1 where the run starts (when `starts(current)`), 0 where no run can start.
fn runs(
    len: usize,
    starts: impl Fn(usize) -> bool,
    same: impl Fn(usize, usize) -> bool,
) -> Vec<usize> {
    let mut out = vec![0; len];
    for i in 0..len {
        out[i] = if !starts(i) {
            0
        } else if i > 0 && out[i - 1] > 0 && same(i - 1, i) {
            out[i - 1] + 1
        } else {
            1
        };
    }
    out
}

/// The Nelson rules each point breaks (index-aligned with `values`), ascending.
pub fn nelson(values: &[f64], zones: Zones) -> Vec<Vec<u8>> {
    let n = values.len();
    let side = |i: usize| zones.side(values[i]);
    let step = |i: usize| {
        if i == 0 {
            0
        } else {
            sign(values[i] - values[i - 1])
        }
    };
    let same_side = runs(n, |i| side(i) != 0, |a, b| side(a) == side(b));
    // Steps in one direction: a run of k steps is k + 1 points.
    let trend = runs(n, |i| step(i) != 0, |a, b| step(a) == step(b));
    let alternating = runs(n, |i| step(i) != 0, |a, b| step(a) == -step(b));
    let within = runs(n, |i| zones.within_one(values[i]), |_, _| true);
    let outside = runs(n, |i| zones.beyond(values[i], 1.0) != 0, |_, _| true);
    (0..n)
        .map(|i| {
            let mut broken = Vec::new();
            if zones.beyond(values[i], 3.0) != 0 {
                broken.push(1);
            }
            if same_side[i] >= 9 {
                broken.push(2);
            }
            if trend[i] + 1 >= 6 {
                broken.push(3);
            }
            if alternating[i] + 1 >= 14 {
                broken.push(4);
            }
            if k_of_window(values, &zones, i, 2.0, 3, 2) {
                broken.push(5);
            }
            if k_of_window(values, &zones, i, 1.0, 5, 4) {
                broken.push(6);
            }
            if within[i] >= 15 {
                broken.push(7);
            }
            if outside[i] >= 8 {
                broken.push(8);
            }
            broken
        })
        .collect()
}

/// The Western Electric rules 1–4 each point breaks (index-aligned with `values`), ascending.
pub fn western_electric(values: &[f64], zones: Zones) -> Vec<Vec<u8>> {
    let side = |i: usize| zones.side(values[i]);
    let same_side = runs(values.len(), |i| side(i) != 0, |a, b| side(a) == side(b));
    (0..values.len())
        .map(|i| {
            let mut broken = Vec::new();
            if zones.beyond(values[i], 3.0) != 0 {
                broken.push(1);
            }
            if k_of_window(values, &zones, i, 2.0, 3, 2) {
                broken.push(2);
            }
            if k_of_window(values, &zones, i, 1.0, 5, 4) {
                broken.push(3);
            }
            if same_side[i] >= 8 {
                broken.push(4);
            }
            broken
        })
        .collect()
}
