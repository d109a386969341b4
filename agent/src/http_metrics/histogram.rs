//! Histograms kept per series: exact classic bucket counts for export (so
//! `_bucket`/`_sum`/`_count` are exact, not re-binned), plus an HDR histogram for quantiles
//! (1% precision) behind the debug endpoint and, later, exemplars.
//!
//! Must not: lose an observation: values beyond the HDR range are clamped into it (the
//! exact buckets and sum still see the true value).

use hdrhistogram::Histogram;

/// Semantic-conventions buckets for `http.{server,client}.request.duration`, seconds.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Buckets for HTTP body sizes, bytes.
pub const SIZE_BOUNDS: [f64; 10] = [
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Buckets for TCP connect times, seconds.
pub const CONNECT_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Largest value the HDR histogram holds: one hour in microseconds.
const HDR_MAX_US: u64 = 3_600_000_000;

/// Exact classic buckets over integer bounds.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// Upper bounds in the unit of observations (ns, bytes).
    bounds: Vec<u64>,
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    counts: Vec<u64>,
    /// Sum of observations.
    sum: u128,
}

impl Buckets {
    /// Buckets with `bounds` given in export units, scaled by `scale` to observation units
    /// (e.g. seconds → ns with 1e9).
    pub fn new(bounds: &[f64], scale: f64) -> Self {
        Self {
            bounds: bounds.iter().map(|b| (b * scale).round() as u64).collect(),
            counts: vec![0; bounds.len() + 1],
            sum: 0,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i] += 1;
        self.sum += u128::from(value);
    }

    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of observations (observation units).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// Cumulative counts per finite bound (Prometheus `le` buckets, without +Inf).
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.counts[..self.bounds.len()]
            .iter()
            .map(|c| {
                total += c;
                total
            })
            .collect()
    }
}

/// Request durations of one series.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Exact buckets over [`DURATION_BOUNDS`], in ns.
    pub buckets: Buckets,
    hdr: Histogram<u32>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new(&DURATION_BOUNDS)
    }
}

impl Latency {
    /// Durations bucketed by `bounds` (seconds).
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            buckets: Buckets::new(bounds, 1e9),
            // Two significant digits: 1% precision; auto-resizing keeps small series small.
            hdr: Histogram::new(2).expect("2 significant figures is valid"),
        }
    }

    /// Adds one duration.
    pub fn observe(&mut self, ns: u64) {
        self.buckets.observe(ns);
        let us = (ns / 1000).clamp(1, HDR_MAX_US);
        // Cannot fail: auto-resize is on and the value is within bounds.
        let _ = self.hdr.record(us);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.count()
    }

    /// Sum in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.buckets.sum() as f64 / 1e9
    }

    /// The duration at quantile `q` (0..=1), seconds, from the HDR histogram.
    pub fn quantile_seconds(&self, q: f64) -> f64 {
        self.hdr.value_at_quantile(q) as f64 / 1e6
    }

    /// Largest duration seen, seconds (HDR precision).
    pub fn max_seconds(&self) -> f64 {
        self.hdr.max() as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_at_the_bounds() {
        let mut b = Buckets::new(&[0.005, 0.01], 1e9);
        b.observe(5_000_000); // exactly 5 ms: le="0.005"
        b.observe(5_000_001); // just above: le="0.01"
        b.observe(20_000_000); // +Inf
        assert_eq!(b.cumulative(), vec![1, 2]);
        assert_eq!(b.count(), 3);
        assert_eq!(b.sum(), 30_000_001);
    }

    #[test]
    fn size_buckets_include_zero() {
        let mut b = Buckets::new(&SIZE_BOUNDS, 1.0);
        b.observe(0);
        b.observe(33);
        b.observe(100_000);
        let c = b.cumulative();
        assert_eq!((c[0], c[1], c[2], *c.last().unwrap()), (1, 1, 2, 2));
        assert_eq!(b.count(), 3);
    }

    #[test]
    fn quantiles_within_one_percent() {
        let mut l = Latency::default();
        for i in 1..=1000u64 {
            l.observe(i * 100_000); // 0.1 ms … 100 ms
        }
        let p50 = l.quantile_seconds(0.5);
        let p99 = l.quantile_seconds(0.99);
        assert!((p50 - 0.050).abs() / 0.050 < 0.01, "{p50}");
        assert!((p99 - 0.099).abs() / 0.099 < 0.01, "{p99}");
        assert!((l.sum_seconds() - 50.05).abs() < 1e-9);
        assert_eq!(l.count(), 1000);
    }
}
