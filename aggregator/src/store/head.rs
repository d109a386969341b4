//! The in-memory head: every series with its recent (not yet flushed) samples, and a
//! postings index for selection. The WAL makes it durable; flushes move old samples into
//! Parquet blocks.
//!
//! Must not: touch files. Invariant: each series' samples are sorted by timestamp, one per
//! timestamp (first write wins).

use super::{
    Labels, Matcher, Sample,
    index::{SeriesId, SeriesIndex},
};

/// A series' labels and the samples a selection returned.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series' labels.
    pub labels: Labels,
    /// Samples in time order.
    pub samples: Vec<Sample>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples stored.
    pub appended: usize,
    /// Samples ignored because the series already had a sample at that timestamp.
    pub duplicates: usize,
    /// Whether the series was new.
    pub created_series: bool,
}

/// Sizes, for self-monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Series held.
    pub series: usize,
    /// Samples held.
    pub samples: u64,
}

/// The head block.
#[derive(Debug, Default)]
pub struct Head {
    index: SeriesIndex,
    samples: Vec<Vec<Sample>>,
    count: u64,
    max_t: Option<i64>,
}

/// Inserts `sample` into sorted `series` unless its timestamp is present; true if inserted.
fn insert_sorted(series: &mut Vec<Sample>, sample: Sample) -> bool {
    match series.last() {
        None => series.push(sample),
        Some(last) if last.t < sample.t => series.push(sample),
        _ => match series.binary_search_by_key(&sample.t, |s| s.t) {
            Ok(_) => return false,
            Err(pos) => series.insert(pos, sample),
        },
    }
    true
}

impl Head {
    /// Appends samples to the series with `labels`, creating it if needed.
    pub fn append(&mut self, labels: Labels, samples: &[Sample]) -> AppendOutcome {
        let (id, created_series) = self.index.get_or_insert(labels);
        if created_series {
            self.samples.push(Vec::new());
        }
        let mut outcome = AppendOutcome {
            created_series,
            ..Default::default()
        };
        let series = &mut self.samples[id as usize];
        for &sample in samples {
            if insert_sorted(series, sample) {
                outcome.appended += 1;
                self.max_t = Some(self.max_t.map_or(sample.t, |m| m.max(sample.t)));
            } else {
                outcome.duplicates += 1;
            }
        }
        self.count += outcome.appended as u64;
        outcome
    }

    /// The samples of `samples` that an append would store: those at timestamps neither the
    /// series nor an earlier sample of the same call has (first write wins).
    pub fn new_samples(&self, labels: &Labels, samples: &[Sample]) -> Vec<Sample> {
        let existing: &[Sample] = match self.index.get(labels) {
            Some(id) => &self.samples[id as usize],
            None => &[],
        };
        let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
        let mut sorted = true;
        for &s in samples {
            if existing.binary_search_by_key(&s.t, |e| e.t).is_ok() {
                continue;
            }
            if let Some(last) = out.last()
                && last.t >= s.t
            {
                sorted = false;
            }
            out.push(s);
        }
        if !sorted {
            // Keep the first of each timestamp: stable sort, then dedup keeps the first.
            out.sort_by_key(|s| s.t);
            out.dedup_by_key(|s| s.t);
        }
        out
    }

    /// The head id of `labels`, if present.
    pub fn id(&self, labels: &Labels) -> Option<SeriesId> {
        self.index.get(labels)
    }

    /// The labels of head series `id`.
    pub fn labels(&self, id: SeriesId) -> &Labels {
        self.index.labels(id)
    }

    /// Newest timestamp ever appended (flushed samples included), if any.
    pub fn max_t(&self) -> Option<i64> {
        self.max_t
    }

    /// Raises the remembered newest timestamp (after replay, from blocks).
    pub fn observe_max_t(&mut self, t: i64) {
        self.max_t = Some(self.max_t.map_or(t, |m| m.max(t)));
    }

    /// Oldest timestamp held, if any.
    pub fn min_t(&self) -> Option<i64> {
        self.samples
            .iter()
            .filter_map(|s| s.first())
            .map(|s| s.t)
            .min()
    }

    /// Every series with samples: id, labels, samples.
    pub fn iter(&self) -> impl Iterator<Item = (SeriesId, &Labels, &[Sample])> {
        self.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(i, s)| {
                (
                    i as SeriesId,
                    self.index.labels(i as SeriesId),
                    s.as_slice(),
                )
            })
    }

    /// Removes and returns the samples in `[mint, maxt)`, per series (series without any
    /// are left out).
    pub fn take_range(&mut self, mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
        let mut out = Vec::new();
        for (id, series) in self.samples.iter_mut().enumerate() {
            let start = series.partition_point(|s| s.t < mint);
            let end = series.partition_point(|s| s.t < maxt);
            if start < end {
                let taken: Vec<Sample> = series.drain(start..end).collect();
                self.count -= taken.len() as u64;
                out.push((self.index.labels(id as SeriesId).clone(), taken));
            }
        }
        out
    }

    /// Rebuilds the head without series that hold no samples (after a flush), so ids stay
    /// dense; returns the new head. The newest timestamp is kept.
    pub fn without_empty_series(self) -> Head {
        let mut head = Head {
            max_t: self.max_t,
            ..Default::default()
        };
        for (id, samples) in self.samples.into_iter().enumerate() {
            if !samples.is_empty() {
                head.index.insert(self.index.labels(id as SeriesId).clone());
                head.count += samples.len() as u64;
                head.samples.push(samples);
            }
        }
        head
    }

    fn in_range(&self, id: SeriesId, mint: i64, maxt: i64) -> bool {
        let samples = &self.samples[id as usize];
        let start = samples.partition_point(|s| s.t < mint);
        samples.get(start).is_some_and(|s| s.t <= maxt)
    }

    /// Labels of the series matching any selector (all when none) with a sample in range.
    pub fn matching_labels(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = &Labels> {
        self.index
            .matching_any(selectors)
            .into_iter()
            .filter(move |&id| self.in_range(id, mint, maxt))
            .map(|id| self.index.labels(id))
    }

    /// Series matching all `matchers` with their samples in `[mint, maxt]`; series without
    /// samples in range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.index
            .matching(matchers)
            .into_iter()
            .filter_map(|id| {
                let samples = &self.samples[id as usize];
                let start = samples.partition_point(|s| s.t < mint);
                let end = samples.partition_point(|s| s.t <= maxt);
                (start < end).then(|| SeriesSamples {
                    labels: self.index.labels(id).clone(),
                    samples: samples[start..end].to_vec(),
                })
            })
            .collect()
    }

    /// Label sets of matching series, sorted.
    pub fn series(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .matching_labels(selectors, mint, maxt)
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Sorted distinct label names of matching series.
    pub fn label_names(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        for labels in self.matching_labels(selectors, mint, maxt) {
            for label in labels.iter() {
                names.insert(label.name.clone());
            }
        }
        names.into_iter().map(|n| n.to_string()).collect()
    }

    /// Sorted distinct values of label `name` over matching series.
    pub fn label_values(
        &self,
        name: &str,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Vec<String> {
        let mut values = std::collections::BTreeSet::new();
        for labels in self.matching_labels(selectors, mint, maxt) {
            if let Some(v) = labels.get(name) {
                values.insert(v);
            }
        }
        values.into_iter().map(str::to_owned).collect()
    }

    /// Current sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            series: self.iter().count(),
            samples: self.count,
        }
    }

    /// Approximate heap bytes held: index plus sample vectors (by capacity).
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + self
                .samples
                .iter()
                .map(|s| s.capacity() * size_of::<Sample>() + 24)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MatchOp;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    #[test]
    fn out_of_order_inserted_and_duplicates_ignored_first_wins() {
        let mut head = Head::default();
        let l = labels(&[("__name__", "up")]);
        let out = head.append(l.clone(), &[s(10, 1.0), s(30, 3.0)]);
        assert_eq!(
            (out.appended, out.duplicates, out.created_series),
            (2, 0, true)
        );
        let out = head.append(l.clone(), &[s(20, 2.0), s(30, 99.0)]);
        assert_eq!(
            (out.appended, out.duplicates, out.created_series),
            (1, 1, false)
        );
        let got = head.select(&[Matcher::equal("__name__", "up")], 0, 100);
        assert_eq!(got[0].samples, vec![s(10, 1.0), s(20, 2.0), s(30, 3.0)]);
        assert_eq!(
            head.stats(),
            Stats {
                series: 1,
                samples: 3
            }
        );
    }

    #[test]
    fn select_by_matchers_and_time_range() {
        let mut head = Head::default();
        head.append(
            labels(&[("__name__", "a"), ("job", "x")]),
            &[s(1, 1.0), s(5, 5.0)],
        );
        head.append(labels(&[("__name__", "a"), ("job", "y")]), &[s(1, 1.0)]);
        head.append(labels(&[("__name__", "b"), ("job", "x")]), &[s(1, 1.0)]);

        let got = head.select(&[Matcher::equal("__name__", "a")], 2, 10);
        assert_eq!(got.len(), 1, "series without samples in range are left out");
        assert_eq!(got[0].labels.get("job"), Some("x"));

        let re = Matcher::regex("__name__", "a|b", false).unwrap();
        let not_x = Matcher {
            name: "job".into(),
            op: MatchOp::NotEqual("x".into()),
        };
        let got = head.select(&[re, not_x], 0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels.get("job"), Some("y"));

        // Equality to "" selects series without the label.
        let got = head.select(&[Matcher::equal("instance", "")], 0, 10);
        assert_eq!(got.len(), 3);
        let got = head.select(&[Matcher::equal("job", "nope")], 0, 10);
        assert!(got.is_empty());
    }

    #[test]
    fn label_names_and_values() {
        let mut head = Head::default();
        head.append(labels(&[("__name__", "a"), ("job", "x")]), &[s(1, 1.0)]);
        head.append(labels(&[("__name__", "b"), ("zone", "z")]), &[s(100, 1.0)]);
        assert_eq!(head.label_names(&[], 0, 10), ["__name__", "job"]);
        assert_eq!(head.label_values("__name__", &[], 0, 1000), ["a", "b"]);
        let sel = vec![vec![Matcher::equal("zone", "z")]];
        assert_eq!(head.label_values("__name__", &sel, 0, 1000), ["b"]);
    }
}
