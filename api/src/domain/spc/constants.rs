//! Shewhart control chart constants for subgroups of n = 2 … 25, as published in Montgomery,
//! *Introduction to Statistical Quality Control*, Appendix VI ("Factors for constructing
//! variables control charts"); the NIST/SEMATECH e-Handbook of Statistical Methods (§6.3.2) uses
//! the same values (d2(2) = 1.128, D4(2) = 3.267 in its individuals chart). Typed from the table,
//! never recomputed at run time: the published values are what an engineer checks a chart
//! against. The tests check several rows against the table and every row against the theory the
//! table comes from (d2 the expected range of n standard normal values, c4 from the gamma
//! function, the others from d2, d3 and c4).

/// The factors for one subgroup size. The tables' capital letters become `range_d3` (D3) and
/// `range_d4` (D4), beside the lower-case d2 and d3 they derive from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    pub n: u8,
    /// X̄ chart from R̄: limits x̿ ± A2·R̄ (A2 = 3 / (d2·√n)).
    pub a2: f64,
    /// X̄ chart from S̄: limits x̿ ± A3·S̄ (A3 = 3 / (c4·√n)).
    pub a3: f64,
    /// E(s) = c4·σ for the sample standard deviation s of n values.
    pub c4: f64,
    /// S chart: LCL = B3·S̄.
    pub b3: f64,
    /// S chart: UCL = B4·S̄.
    pub b4: f64,
    /// E(R) = d2·σ for the range R of n values.
    pub d2: f64,
    /// sd(R) = d3·σ.
    pub d3: f64,
    /// R (or MR) chart: LCL = D3·R̄ (the table's D3).
    pub range_d3: f64,
    /// R (or MR) chart: UCL = D4·R̄ (the table's D4).
    pub range_d4: f64,
}

/// One row as the tables print it: n, A2, A3, c4, B3, B4, d2, d3, D3, D4.
pub type TableRow = (u8, f64, f64, f64, f64, f64, f64, f64, f64, f64);

#[rustfmt::skip]
const TABLE: [TableRow; 24] = [
    (2, 1.880, 2.659, 0.7979, 0.0, 3.267, 1.128, 0.853, 0.0, 3.267),
    (3, 1.023, 1.954, 0.8862, 0.0, 2.568, 1.693, 0.888, 0.0, 2.574),
    (4, 0.729, 1.628, 0.9213, 0.0, 2.266, 2.059, 0.880, 0.0, 2.282),
    (5, 0.577, 1.427, 0.9400, 0.0, 2.089, 2.326, 0.864, 0.0, 2.114),
    (6, 0.483, 1.287, 0.9515, 0.030, 1.970, 2.534, 0.848, 0.0, 2.004),
    (7, 0.419, 1.182, 0.9594, 0.118, 1.882, 2.704, 0.833, 0.076, 1.924),
    (8, 0.373, 1.099, 0.9650, 0.185, 1.815, 2.847, 0.820, 0.136, 1.864),
    (9, 0.337, 1.032, 0.9693, 0.239, 1.761, 2.970, 0.808, 0.184, 1.816),
    (10, 0.308, 0.975, 0.9727, 0.284, 1.716, 3.078, 0.797, 0.223, 1.777),
    (11, 0.285, 0.927, 0.9754, 0.321, 1.679, 3.173, 0.787, 0.256, 1.744),
    (12, 0.266, 0.886, 0.9776, 0.354, 1.646, 3.258, 0.778, 0.283, 1.717),
    (13, 0.249, 0.850, 0.9794, 0.382, 1.618, 3.336, 0.770, 0.307, 1.693),
    (14, 0.235, 0.817, 0.9810, 0.406, 1.594, 3.407, 0.763, 0.328, 1.672),
    (15, 0.223, 0.789, 0.9823, 0.428, 1.572, 3.472, 0.756, 0.347, 1.653),
    (16, 0.212, 0.763, 0.9835, 0.448, 1.552, 3.532, 0.750, 0.363, 1.637),
    (17, 0.203, 0.739, 0.9845, 0.466, 1.534, 3.588, 0.744, 0.378, 1.622),
    (18, 0.194, 0.718, 0.9854, 0.482, 1.518, 3.640, 0.739, 0.391, 1.608),
    (19, 0.187, 0.698, 0.9862, 0.497, 1.503, 3.689, 0.734, 0.403, 1.597),
    (20, 0.180, 0.680, 0.9869, 0.510, 1.490, 3.735, 0.729, 0.415, 1.585),
    (21, 0.173, 0.663, 0.9876, 0.523, 1.477, 3.778, 0.724, 0.425, 1.575),
    (22, 0.167, 0.647, 0.9882, 0.534, 1.466, 3.819, 0.720, 0.434, 1.566),
    (23, 0.162, 0.633, 0.9887, 0.545, 1.455, 3.858, 0.716, 0.443, 1.557),
    (24, 0.157, 0.619, 0.9892, 0.555, 1.445, 3.895, 0.712, 0.451, 1.548),
    (25, 0.153, 0.606, 0.9896, 0.565, 1.435, 3.931, 0.708, 0.459, 1.541),
];

/// Smallest and largest subgroup size of the table.
pub const MIN_N: u8 = 2;
pub const MAX_N: u8 = 25;

/// The factors for subgroups of `n`; `None` outside 2 … 25.
pub fn factors(n: u8) -> Option<Factors> {
    TABLE.iter().find(|row| row.0 == n).map(
        |&(n, a2, a3, c4, b3, b4, d2, d3, range_d3, range_d4)| Factors {
            n,
            a2,
            a3,
            c4,
            b3,
            b4,
            d2,
            d3,
            range_d3,
            range_d4,
        },
    )
}

/// Every row, n = 2 … 25.
pub fn all() -> impl Iterator<Item = Factors> {
    (MIN_N..=MAX_N).filter_map(factors)
}

/// The factors of the moving range of two consecutive values (I-MR chart).
pub fn moving_range() -> Factors {
    TABLE_N2
}

const TABLE_N2: Factors = Factors {
    n: 2,
    a2: TABLE[0].1,
    a3: TABLE[0].2,
    c4: TABLE[0].3,
    b3: TABLE[0].4,
    b4: TABLE[0].5,
    d2: TABLE[0].6,
    d3: TABLE[0].7,
    range_d3: TABLE[0].8,
    range_d4: TABLE[0].9,
};
