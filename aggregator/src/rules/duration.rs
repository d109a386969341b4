//! Prometheus' duration notation (`model.Duration`): `1y2w3d4h5m6s7ms`, units in that order,
//! each at most once, integers only; `0` alone is zero. Used by rule files (`interval`, `for`,
//! `keep_firing_for`) and promtool's unit-test files (`eval_time`, `interval`).
//!
//! Must not: accept anything Prometheus 2.42 rejects (fractions, spaces, `µs`), so a file
//! valid for Sonde stays valid for promtool.

use std::time::Duration;

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration; the error is Prometheus' message.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration string".to_owned());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || format!("not a valid duration string: {text:?}");
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        // "ms" must be tried before "m".
        let unit = if rest.starts_with("ms") {
            6
        } else {
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();

            UNITS[..6]
                .iter()
                .position(|(u, _)| &rest[..letters] == *u)
                .ok_or_else(invalid)?
        };
        if unit < next_unit {
            return Err(invalid());
        }
        next_unit = unit + 1;
        rest = &rest[UNITS[unit].0.len()..];
        total = number
            .checked_mul(UNITS[unit].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats like `model.Duration.String()`: `0s`, `90s` → `1m30s`, `1d`, `1h30m`.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d2h"), Ok(Duration::from_secs(26 * 3600)));
        assert_eq!(parse("1m500ms"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse("2w"), Ok(Duration::from_secs(14 * 86400)));
        for bad in ["", "5", "1.5m", "5m1h", "1m1m", "10 m", "-1m", "1us", "m"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_like_model_duration() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(86400)), "1d");
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
    }
}
