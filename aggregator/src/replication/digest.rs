//! Digests that let two replicas find what one holds and the other lacks without shipping
//! samples: per time window (series, samples, hash) and, inside a window that differs, per
//! series (samples, hash).
//!
//! Owns: the stable hashes (FNV-1a over labels, a SplitMix64 finaliser per sample) and the
//! order-independent combination (wrapping sum), so a digest does not depend on how a store
//! happens to order its series. Must not: read the store or talk to peers; it folds what it
//! is given.
//!
//! Invariant: two replicas holding the same `(series, t, value bits)` set over a window
//! compute the same window digest and the same series digests, whatever the process, build
//! or platform (no `std` hasher, whose keys and algorithm may change).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{Labels, SeriesSamples};

/// Stable 64-bit FNV-1a of a series' labels (`name\0value\0` pairs in label order).
pub fn series_hash(labels: &Labels) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for label in labels.iter() {
        for part in [label.name.as_bytes(), b"\0", label.value.as_bytes(), b"\0"] {
            for &b in part {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of one sample of the series whose [`series_hash`] is `series`.
pub fn sample_hash(series: u64, t: i64, bits: u64) -> u64 {
    mix(series ^ mix(t as u64 ^ mix(bits.wrapping_add(0x9e37_79b9_7f4a_7c15))))
}

/// What one replica holds of one series in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesDigest {
    /// [`series_hash`] of the labels.
    pub series: u64,
    /// Samples in the window.
    pub samples: u64,
    /// Wrapping sum of the [`sample_hash`]es.
    pub hash: u64,
}

/// What one replica holds in one window `[start, end)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowDigest {
    /// Window start (ms, inclusive).
    pub start: i64,
    /// Window end (ms, exclusive).
    pub end: i64,
    /// Series with at least one sample in the window.
    pub series: u64,
    /// Samples in the window.
    pub samples: u64,
    /// Wrapping sum of the series digests' hashes.
    pub hash: u64,
}

impl WindowDigest {
    /// Whether both replicas hold the same data in this window.
    pub fn same_content(&self, other: &Self) -> bool {
        (self.series, self.samples, self.hash) == (other.series, other.samples, other.hash)
    }
}

/// The digest of one series' samples (all of `samples` must lie in the window).
pub fn digest_series(s: &SeriesSamples) -> SeriesDigest {
    let series = series_hash(&s.labels);
    let hash = s.samples.iter().fold(0u64, |acc, x| {
        acc.wrapping_add(sample_hash(series, x.t, x.v.to_bits()))
    });
    SeriesDigest {
        series,
        samples: s.samples.len() as u64,
        hash,
    }
}

/// Per-series digests of `selected` restricted to `[start, end)`, by series hash (series
/// without samples there are left out).
pub fn series_digests(selected: &[SeriesSamples], start: i64, end: i64) -> Vec<SeriesDigest> {
    let mut out: Vec<SeriesDigest> = selected
        .iter()
        .filter_map(|s| {
            let lo = s.samples.partition_point(|x| x.t < start);
            let hi = s.samples.partition_point(|x| x.t < end);
            (lo < hi).then(|| {
                digest_series(&SeriesSamples {
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi].to_vec(),
                })
            })
        })
        .collect();
    out.sort_by_key(|d| d.series);
    out
}

/// Window digests of `selected` over `[start, end)` cut every `window` ms from `start` (the
/// last window ends at `end`). Every window is listed, empty ones included, so a missing
/// window is never mistaken for agreement.
pub fn window_digests(
    selected: &[SeriesSamples],
    start: i64,
    end: i64,
    window: i64,
) -> Vec<WindowDigest> {
    let window = window.max(1);
    let mut out: BTreeMap<i64, WindowDigest> = BTreeMap::new();
    let mut w = start;
    while w < end {
        let e = (w + window).min(end);
        out.insert(
            w,
            WindowDigest {
                start: w,
                end: e,
                ..Default::default()
            },
        );
        w = e;
    }
    for s in selected {
        let series = series_hash(&s.labels);
        let mut current: Option<(i64, u64, u64)> = None;
        let mut close = |c: Option<(i64, u64, u64)>| {
            if let Some((ws, n, h)) = c
                && let Some(d) = out.get_mut(&ws)
            {
                d.series += 1;
                d.samples += n;
                d.hash = d.hash.wrapping_add(h);
            }
        };
        for x in &s.samples {
            if x.t < start || x.t >= end {
                continue;
            }
            let ws = start + (x.t - start) / window * window;
            let h = sample_hash(series, x.t, x.v.to_bits());
            current = match current {
                Some((cs, n, acc)) if cs == ws => Some((cs, n + 1, acc.wrapping_add(h))),
                other => {
                    close(other);
                    Some((ws, 1, h))
                }
            };
        }
        close(current);
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sample;

    fn series(name: &str, samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs([("__name__", name), ("job", "j")]),
            samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
        }
    }

    #[test]
    fn series_hash_is_stable_across_builds() {
        // FNV-1a of "__name__\0up\0job\0x\0" (checked with a few lines of Python); a change here
        // breaks replication between versions.
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        assert_eq!(series_hash(&labels), 0x6109_479c_f896_ccdc_u64);
    }

    #[test]
    fn window_digest_is_order_independent_and_sees_every_difference() {
        let a = vec![
            series("a", &[(0, 1.0), (10, 2.0)]),
            series("b", &[(5, 1.0)]),
        ];
        let b = vec![
            series("b", &[(5, 1.0)]),
            series("a", &[(0, 1.0), (10, 2.0)]),
        ];
        assert_eq!(window_digests(&a, 0, 20, 20), window_digests(&b, 0, 20, 20));
        let missing = vec![series("a", &[(0, 1.0)]), series("b", &[(5, 1.0)])];
        let other_value = vec![
            series("a", &[(0, 1.0), (10, 3.0)]),
            series("b", &[(5, 1.0)]),
        ];
        let moved = vec![
            series("a", &[(0, 1.0), (11, 2.0)]),
            series("b", &[(5, 1.0)]),
        ];
        let ours = window_digests(&a, 0, 20, 20)[0];
        for theirs in [missing, other_value, moved] {
            assert!(!ours.same_content(&window_digests(&theirs, 0, 20, 20)[0]));
        }
    }

    #[test]
    fn windows_cover_the_range_and_split_series() {
        let d = window_digests(&[series("a", &[(0, 1.0), (10, 2.0), (25, 3.0)])], 0, 30, 10);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.iter()
                .map(|w| (w.start, w.end, w.series, w.samples))
                .collect::<Vec<_>>(),
            vec![(0, 10, 1, 1), (10, 20, 1, 1), (20, 30, 1, 1)]
        );
        let per_series = series_digests(&[series("a", &[(0, 1.0), (10, 2.0)])], 10, 20);
        assert_eq!(per_series.len(), 1);
        assert_eq!(per_series[0].samples, 1);
        assert_eq!(per_series[0].hash, d[1].hash, "one series: same hash");
    }
}
