//! The in-memory head: every series with its recent (not yet flushed) samples, and a
//! postings index for selection. The WAL makes it durable; flushes move old samples into
//! Parquet blocks.
//!
//! Must not: touch files. Invariant: each series' samples are sorted by timestamp, one per
//! timestamp (first write wins).

pub mod chunk;

use std::{collections::HashSet, sync::Arc};

use self::chunk::Chunk;
use super::{
    Labels, Matcher, Sample,
    index::{SeriesId, SeriesIndex},
};

/// One series' samples (also the import's compact buffer): compressed chunks of in-order samples, plus out-of-order samples
/// (older than the newest chunk sample) kept sorted beside them. No timestamp appears twice
/// across both.
#[derive(Debug, Default)]
pub struct MemSeries {
    chunks: Vec<Chunk>,
    ooo: Vec<Sample>,
    count: usize,
}

impl MemSeries {
    /// Newest timestamp, if any.
    pub fn max_t(&self) -> Option<i64> {
        let c = self.chunks.last().map(Chunk::last_t);
        let o = self.ooo.last().map(|s| s.t);
        c.into_iter().chain(o).max()
    }

    /// Newest in-order timestamp, if any.
    pub fn last_t(&self) -> Option<i64> {
        self.chunks.last().map(Chunk::last_t)
    }

    fn contains(&self, t: i64) -> bool {
        if self.ooo.binary_search_by_key(&t, |s| s.t).is_ok() {
            return true;
        }
        let i = self.chunks.partition_point(|c| c.last_t() < t);
        match self.chunks.get(i) {
            Some(c) if c.first_t() <= t => {
                let mut buf = Vec::new();
                c.decode_into(&mut buf);
                buf.binary_search_by_key(&t, |s| s.t).is_ok()
            }
            _ => false,
        }
    }

    /// Inserts unless the timestamp is present (first write wins); true if inserted.
    pub fn push(&mut self, s: Sample) -> bool {
        match self.chunks.last_mut() {
            Some(c) if s.t > c.last_t() && !c.is_full() => {
                if !c.push(s) {
                    c.shrink();
                    self.chunks.push(Chunk::new(s));
                }
            }
            Some(c) if s.t > c.last_t() => {
                c.shrink();
                self.chunks.push(Chunk::new(s));
            }
            None => self.chunks.push(Chunk::new(s)),
            Some(_) => {
                if self.contains(s.t) {
                    return false;
                }
                let pos = self.ooo.partition_point(|o| o.t < s.t);
                self.ooo.insert(pos, s);
            }
        }
        self.count += 1;
        true
    }

    /// Samples in `[mint, maxt]`, sorted.
    pub fn range(&self, mint: i64, maxt: i64) -> Vec<Sample> {
        let mut out = Vec::new();
        for c in &self.chunks {
            if c.last_t() >= mint && c.first_t() <= maxt {
                c.decode_into(&mut out);
            }
        }
        out.retain(|s| s.t >= mint && s.t <= maxt);
        let start = self.ooo.partition_point(|s| s.t < mint);
        let end = self.ooo.partition_point(|s| s.t <= maxt);
        if start < end {
            super::merge_first_wins(&mut out, &self.ooo[start..end]);
        }
        out
    }

    /// Every sample, sorted by time.
    pub fn all(&self) -> Vec<Sample> {
        self.range(i64::MIN, i64::MAX)
    }

    /// Oldest timestamp, if any.
    pub fn min_t(&self) -> Option<i64> {
        let c = self.chunks.first().map(Chunk::first_t);
        let o = self.ooo.first().map(|s| s.t);
        c.into_iter().chain(o).min()
    }

    fn has_in_range(&self, mint: i64, maxt: i64) -> bool {
        let start = self.ooo.partition_point(|s| s.t < mint);
        if self.ooo.get(start).is_some_and(|s| s.t <= maxt) {
            return true;
        }
        self.chunks
            .iter()
            .any(|c| c.last_t() >= mint && c.first_t() <= maxt)
            && !self.range(mint, maxt).is_empty()
    }

    /// Rebuilds from sorted samples (after removing a range).
    fn from_sorted(samples: &[Sample]) -> Self {
        let mut out = Self::default();
        for &s in samples {
            out.push(s);
        }
        out
    }

    fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.heap_bytes() + size_of::<Chunk>())
            .sum::<usize>()
            + self.ooo.capacity() * size_of::<Sample>()
    }
}

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
    samples: Vec<MemSeries>,
    count: u64,
    max_t: Option<i64>,
    /// Every label name and value of the head's series, once: series share these copies
    /// (most values repeat across series: job, instance, metric names).
    symbols: HashSet<Arc<str>, foldhash::fast::RandomState>,
    /// Changes whenever series ids are reassigned (see [`Head::generation`]).
    generation: u64,
}

impl Head {
    /// Appends samples to the series with `labels`, creating it if needed.
    pub fn append(&mut self, labels: Labels, samples: &[Sample]) -> AppendOutcome {
        let (id, created_series) = match self.index.get(&labels) {
            Some(id) => (id, false),
            None => (self.create(labels), true),
        };
        AppendOutcome {
            created_series,
            ..self.append_to(id, samples)
        }
    }

    /// Adds a series that must not exist yet, without samples, and returns its id.
    pub fn create(&mut self, labels: Labels) -> SeriesId {
        let labels = self.intern(labels);
        let id = self.index.insert(labels);
        self.samples.push(MemSeries::default());
        id
    }

    /// `labels` sharing the head's copies of their strings.
    fn intern(&mut self, labels: Labels) -> Labels {
        let symbols = &mut self.symbols;
        labels.map_strs(|s| match symbols.get(&s) {
            Some(shared) => shared.clone(),
            None => {
                symbols.insert(s.clone());
                s
            }
        })
    }

    /// Identifies the current assignment of series ids: ids handed out under one generation
    /// name the same series for as long as the generation stays (a flush that drops empty
    /// series renumbers them and moves to a new one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Appends `samples` to the existing series `id` (first write wins per timestamp).
    pub fn append_to(&mut self, id: SeriesId, samples: &[Sample]) -> AppendOutcome {
        let mut outcome = AppendOutcome::default();
        let series = &mut self.samples[id as usize];
        for &sample in samples {
            if series.push(sample) {
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
        self.new_samples_of(self.index.get(labels), samples)
    }

    /// [`Head::new_samples`] for a series already looked up (`None`: not in the head).
    pub fn new_samples_of(&self, id: Option<SeriesId>, samples: &[Sample]) -> Vec<Sample> {
        let existing = id.map(|id| &self.samples[id as usize]);
        let last_t = existing.and_then(MemSeries::last_t);
        let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
        let mut sorted = true;
        for &s in samples {
            let newer = last_t.is_none_or(|last| s.t > last);
            if !newer && existing.is_some_and(|e| e.contains(s.t)) {
                continue;
            }
            if out.last().is_some_and(|last| last.t >= s.t) {
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
        self.samples.iter().filter_map(MemSeries::min_t).min()
    }

    /// Every series with samples: id, labels, samples (decoded).
    pub fn iter(&self) -> impl Iterator<Item = (SeriesId, &Labels, Vec<Sample>)> {
        self.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.count > 0)
            .map(|(i, s)| (i as SeriesId, self.index.labels(i as SeriesId), s.all()))
    }

    /// Removes and returns the samples in `[mint, maxt)`, per series (series without any
    /// are left out).
    pub fn take_range(&mut self, mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
        let mut out = Vec::new();
        for (id, series) in self.samples.iter_mut().enumerate() {
            if series.min_t().is_none_or(|t| t >= maxt) {
                continue;
            }
            let mut all = series.all();
            let start = all.partition_point(|s| s.t < mint);
            let end = all.partition_point(|s| s.t < maxt);
            if start < end {
                let taken: Vec<Sample> = all.drain(start..end).collect();
                self.count -= taken.len() as u64;
                *series = MemSeries::from_sorted(&all);
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
            generation: self.generation + 1,
            ..Default::default()
        };
        for (id, samples) in self.samples.into_iter().enumerate() {
            if samples.count > 0 {
                let labels = head.intern(self.index.labels(id as SeriesId).clone());
                head.index.insert(labels);
                head.count += samples.count as u64;
                head.samples.push(samples);
            }
        }
        head
    }

    fn in_range(&self, id: SeriesId, mint: i64, maxt: i64) -> bool {
        self.samples[id as usize].has_in_range(mint, maxt)
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
                let samples = self.samples[id as usize].range(mint, maxt);
                (!samples.is_empty()).then(|| SeriesSamples {
                    labels: self.index.labels(id).clone(),
                    samples,
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
                .map(|s| s.heap_bytes() + size_of::<MemSeries>())
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

#[cfg(test)]
mod memory_tests {
    use super::*;

    /// Memory per active series with the head full (out-of-order window + a block range =
    /// 3 h at 15 s) on a node_exporter-like mix: constants, CPU-seconds counters (1/100 s
    /// precision) and noisy byte counters. Deterministic (an estimate from capacities), not
    /// timed. The figure is printed; the bound guards the compression (uncompressed samples
    /// alone would take 720 × 16 B = 11.5 KiB).
    #[test]
    fn memory_per_active_series_on_a_node_exporter_mix() {
        let mut head = Head::default();
        let series = 600;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        for i in 0..series {
            let labels = Labels::from_pairs([
                ("__name__", format!("node_metric_{}", i % 3)),
                ("instance", format!("host-{:02}:9100", i % 20)),
                ("job", "node".to_owned()),
                ("device", format!("eth{}", i / 60)),
            ]);
            let mut v: f64 = 1e6;
            let samples: Vec<Sample> = (0..720)
                .map(|k| {
                    v = match i % 3 {
                        0 => v,
                        1 => ((v + 10.0 + rnd() * 1.2) * 100.0).round() / 100.0,
                        _ => (v + 7_500_000.0 + rnd() * 3_000_000.0).round(),
                    };
                    Sample { t: k * 15_000, v }
                })
                .collect();
            head.append(labels, &samples);
        }
        let per_series = head.heap_bytes() / series;
        eprintln!("head memory: {per_series} B per series with 720 samples each");
        assert!(per_series <= 2048, "{per_series} B per series");
    }
}
