//! Numeric building blocks with Prometheus' (Go's) exact semantics: NaN-propagating min/max,
//! Neumaier-compensated sums, quantiles, classic-bucket quantiles, least-squares regression,
//! and Go's float formatting.
//!
//! Must not: know about series, labels or time grids; everything here is plain numbers.

use crate::store::Sample;

/// Go's `math.Max`: NaN if either is NaN; +0 beats -0.
pub fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN if either is NaN; -0 beats +0.
pub fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// `sgn()`: -1, 1, or the value itself (±0, NaN).
pub fn sgn(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else if v > 0.0 {
        1.0
    } else {
        v
    }
}

/// `deg()`.
pub fn deg(v: f64) -> f64 {
    v * 180.0 / std::f64::consts::PI
}

/// `rad()`.
pub fn rad(v: f64) -> f64 {
    v * std::f64::consts::PI / 180.0
}

/// One step of Neumaier-compensated summation: returns the new sum and compensation.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus' `quantile`: φ < 0 → -Inf, φ > 1 → +Inf, linear interpolation between the two
/// nearest ranks. Sorts `values` in place.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if q.is_nan() {
        return f64::NAN;
    }
    // NaN sorts first, as with Go's sort over `a < b || isNaN(a)`.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// A classic histogram bucket: upper bound and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The `le` bound.
    pub upper: f64,
    /// Cumulative count.
    pub count: f64,
}

/// `histogram_quantile` over classic buckets, as Prometheus 2.x computes it: buckets sorted by
/// bound, equal bounds merged, counts forced monotonic, linear interpolation inside the bucket
/// holding the rank (the lowest bucket starts at 0 unless its bound is ≤ 0), the second highest
/// bound when the rank falls into the +Inf bucket. NaN without a +Inf bucket or observations.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if buckets.is_empty() {
        return f64::NAN;
    }
    buckets.sort_by(|a, b| a.upper.total_cmp(&b.upper));
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return f64::NAN;
    }
    // Merge equal bounds.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    *buckets = merged;
    // Force monotonic counts.
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // The first bucket (excluding +Inf) whose count reaches the rank.
    let searched = buckets.len() - 1;
    let b = buckets[..searched].partition_point(|b| b.count < rank);
    if b == searched {
        return buckets[buckets.len() - 2].upper;
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return buckets[0].upper;
    }
    let mut start = 0.0;
    let end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// Least-squares fit of the samples with time measured in seconds from `intercept_ms`:
/// `(slope, intercept)`. A constant series has slope 0 (NaN when the constant is infinite).
pub fn linear_regression(samples: &[Sample], intercept_ms: i64) -> (f64, f64) {
    let init_y = samples[0].v;
    let mut const_y = true;
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    for (i, s) in samples.iter().enumerate() {
        if const_y && i > 0 && s.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_ms) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(s.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * s.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` with Prometheus' spellings of the specials:
/// `NaN`, `+Inf`, `-Inf`; otherwise the shortest digits that round-trip, never an exponent.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        // Rust's Display is the shortest round-trip representation without exponent.
        format!("{v}")
    }
}

/// The text exposition format's spelling of a value: Go's `strconv.FormatFloat(v, 'g', -1,
/// 64)`, i.e. the shortest round-trip digits, in exponent form (`1.234567e+06`, `1e-05`) when
/// the decimal exponent is below -4 or at least 6; `0` for both zeros.
pub fn format_float_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v == f64::INFINITY {
        return "+Inf".to_owned();
    }
    if v == f64::NEG_INFINITY {
        return "-Inf".to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    // Shortest round-trip digits and exponent via Rust's `{:e}`: "d.ddde±x".
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_propagate_nan_like_go() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert!(go_min(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(-0.0, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(go_min(0.0, -0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(go_max(1.0, 2.0), 2.0);
    }

    #[test]
    fn quantiles() {
        let mut v = vec![3.0, 1.0, 2.0, 4.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(0.0, &mut v), 1.0);
        assert_eq!(quantile(1.0, &mut v), 4.0);
        assert_eq!(quantile(-1.0, &mut v), f64::NEG_INFINITY);
        assert_eq!(quantile(2.0, &mut v), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn bucket_quantiles() {
        let b = |upper, count| Bucket { upper, count };
        let mut buckets = vec![b(f64::INFINITY, 100.0), b(0.1, 50.0), b(1.0, 90.0)];
        // Rank 50 lands exactly on the first bucket's count: its upper bound.
        assert!((bucket_quantile(0.5, &mut buckets.clone()) - 0.1).abs() < 1e-12);
        // Rank 70: 20 of 40 into (0.1, 1].
        assert!((bucket_quantile(0.7, &mut buckets.clone()) - 0.55).abs() < 1e-12);
        // Rank 95 falls in +Inf: the highest finite bound.
        assert_eq!(bucket_quantile(0.95, &mut buckets), 1.0);
        let mut no_inf = vec![b(1.0, 1.0)];
        assert!(bucket_quantile(0.5, &mut no_inf).is_nan());
    }

    #[test]
    fn regression() {
        let s = |t, v| Sample { t, v };
        let (slope, intercept) = linear_regression(&[s(0, 1.0), s(1000, 3.0), s(2000, 5.0)], 0);
        assert!((slope - 2.0).abs() < 1e-12 && (intercept - 1.0).abs() < 1e-12);
        assert_eq!(linear_regression(&[s(0, 7.0), s(1000, 7.0)], 0), (0.0, 7.0));
    }

    #[test]
    fn go_float_formats() {
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float_g(1.0), "1");
        assert_eq!(format_float_g(1234567.0), "1.234567e+06");
        assert_eq!(format_float_g(0.0001), "0.0001");
        assert_eq!(format_float_g(0.00001), "1e-05");
        assert_eq!(format_float_g(123456.0), "123456");
        assert_eq!(format_float_g(f64::NEG_INFINITY), "-Inf");
    }
}
