//! Value encoding chosen per series and block: decimal-scaled integers when that is exact,
//! raw float bits otherwise.
//!
//! A series whose values are all (or mostly) decimals with at most [`MAX_SCALE`] fractional
//! digits stores `v_int = v × 10^scale` as an `Int64` column (delta-encoded by Parquet, so a
//! counter costs the bits of its increments' jitter); every other value goes to the `Float64`
//! column `v_float` (byte-stream-split). Decoding is `v_int / 10^scale`, which reproduces the
//! original bits exactly: a value is only put in `v_int` after checking that round trip.
//!
//! Must not: know about files; it maps values to columns and back.

/// Largest number of decimal digits tried.
pub const MAX_SCALE: i8 = 9;

const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Integers up to this magnitude are exact in an f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// `m / 10^scale` as the decoder computes it.
pub fn decode(m: i64, scale: i8) -> f64 {
    m as f64 / POW10[scale as usize]
}

/// The mantissa of `v` at `scale`, when `decode` gives back exactly `v`'s bits.
pub fn encode_at(v: f64, scale: i8) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let scaled = (v * POW10[scale as usize]).round();
    if scaled.abs() >= MAX_EXACT {
        return None;
    }
    let m = scaled as i64;
    (decode(m, scale).to_bits() == v.to_bits()).then_some(m)
}

/// The smallest scale at which `v` is exact, if any up to [`MAX_SCALE`].
pub fn min_scale(v: f64) -> Option<i8> {
    (0..=MAX_SCALE).find(|&k| encode_at(v, k).is_some())
}

/// The scale for a series' values: the largest minimal scale among values that have one,
/// provided at least half of the values do; `None` stores every value as a float.
pub fn choose_scale(values: impl Iterator<Item = f64>) -> Option<i8> {
    let (mut exact, mut total, mut scale) = (0usize, 0usize, 0i8);
    for v in values {
        total += 1;
        if let Some(k) = min_scale(v) {
            exact += 1;
            scale = scale.max(k);
        }
    }
    (total > 0 && exact * 2 >= total).then_some(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_bit_exact() {
        for v in [0.0, 1.0, 0.52, 12345.67, 1.2e12, -3.5, 0.001, 123456.789] {
            let k = min_scale(v).unwrap_or_else(|| panic!("{v} has a scale"));
            let m = encode_at(v, k).unwrap();
            assert_eq!(decode(m, k).to_bits(), v.to_bits(), "{v}");
            // A larger scale is exact too.
            if k < MAX_SCALE {
                let m = encode_at(v, k + 1).unwrap();
                assert_eq!(decode(m, k + 1).to_bits(), v.to_bits(), "{v}");
            }
        }
        assert_eq!(min_scale(0.52), Some(2));
        assert_eq!(min_scale(7.0), Some(0));
    }

    #[test]
    fn non_decimals_stay_floats() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        for v in [
            stale,
            f64::NAN,
            f64::INFINITY,
            -0.0,
            std::f64::consts::PI,
            1e300,
        ] {
            assert_eq!(min_scale(v), None, "{v}");
        }
        assert_eq!(choose_scale([0.1, 0.25, stale].into_iter()), Some(2));
        assert_eq!(
            choose_scale([std::f64::consts::PI, std::f64::consts::E, 1.0].into_iter()),
            None
        );
    }
}
