//! The in-memory head: every series with its recent samples, and a postings index from
//! label pairs to series for selection.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::{Labels, MatchOp, Matcher, Sample};

/// Dense id of a series in the head.
pub type SeriesId = u32;

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

#[derive(Debug)]
struct MemSeries {
    labels: Labels,
    samples: Vec<Sample>,
}

/// The head block.
#[derive(Debug, Default)]
pub struct Head {
    series: Vec<MemSeries>,
    ids: HashMap<Labels, SeriesId>,
    /// name → value → ids (ascending, since ids are assigned in increasing order).
    postings: HashMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>>,
    samples: u64,
}

impl Head {
    /// Appends samples to the series with `labels`, creating it if needed.
    pub fn append(&mut self, labels: Labels, samples: &[Sample]) -> AppendOutcome {
        let mut outcome = AppendOutcome::default();
        let id = match self.ids.get(&labels) {
            Some(&id) => id,
            None => {
                outcome.created_series = true;
                self.create(labels)
            }
        };
        let series = &mut self.series[id as usize].samples;
        for &sample in samples {
            match series.last() {
                // The common case: in order.
                None => series.push(sample),
                Some(last) if last.t < sample.t => series.push(sample),
                _ => match series.binary_search_by_key(&sample.t, |s| s.t) {
                    Ok(_) => {
                        outcome.duplicates += 1;
                        continue;
                    }
                    Err(pos) => series.insert(pos, sample),
                },
            }
            outcome.appended += 1;
        }
        self.samples += outcome.appended as u64;
        outcome
    }

    fn create(&mut self, labels: Labels) -> SeriesId {
        let id = SeriesId::try_from(self.series.len()).expect("fewer than 2^32 series");
        for label in labels.iter() {
            self.postings
                .entry(label.name.clone())
                .or_default()
                .entry(label.value.clone())
                .or_default()
                .push(id);
        }
        self.ids.insert(labels.clone(), id);
        self.series.push(MemSeries {
            labels,
            samples: Vec::new(),
        });
        id
    }

    /// Ids of the series matching every matcher, ascending.
    fn matching(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        // Narrow with the most selective equality matcher on a non-empty value, if any.
        let candidates: Option<&Vec<SeriesId>> = matchers
            .iter()
            .filter_map(|m| match &m.op {
                MatchOp::Equal(v) if !v.is_empty() => Some(
                    self.postings
                        .get(m.name.as_str())
                        .and_then(|values| values.get(v.as_str())),
                ),
                _ => None,
            })
            .map(|list| list.unwrap_or(const { &Vec::new() }))
            .min_by_key(|list| list.len());
        let accept = |id: SeriesId| {
            let labels = &self.series[id as usize].labels;
            matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
        };
        match candidates {
            Some(list) => list.iter().copied().filter(|&id| accept(id)).collect(),
            None => (0..self.series.len() as SeriesId)
                .filter(|&id| accept(id))
                .collect(),
        }
    }

    /// Ids matching any selector (all series when there are none) with a sample in range.
    fn matching_any(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> BTreeSet<SeriesId> {
        let in_range = |id: &SeriesId| {
            let samples = &self.series[*id as usize].samples;
            let start = samples.partition_point(|s| s.t < mint);
            samples.get(start).is_some_and(|s| s.t <= maxt)
        };
        if selectors.is_empty() {
            (0..self.series.len() as SeriesId)
                .filter(in_range)
                .collect()
        } else {
            selectors
                .iter()
                .flat_map(|m| self.matching(m))
                .filter(in_range)
                .collect()
        }
    }

    /// Series matching all `matchers` with their samples in `[mint, maxt]`; series without
    /// samples in range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.matching(matchers)
            .into_iter()
            .filter_map(|id| {
                let series = &self.series[id as usize];
                let start = series.samples.partition_point(|s| s.t < mint);
                let end = series.samples.partition_point(|s| s.t <= maxt);
                (start < end).then(|| SeriesSamples {
                    labels: series.labels.clone(),
                    samples: series.samples[start..end].to_vec(),
                })
            })
            .collect()
    }

    /// Label sets of matching series, sorted.
    pub fn series(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .matching_any(selectors, mint, maxt)
            .into_iter()
            .map(|id| self.series[id as usize].labels.clone())
            .collect();
        out.sort();
        out
    }

    /// Sorted distinct label names of matching series.
    pub fn label_names(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<String> {
        let mut names = BTreeSet::new();
        for id in self.matching_any(selectors, mint, maxt) {
            for label in self.series[id as usize].labels.iter() {
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
        let mut values = BTreeSet::new();
        for id in self.matching_any(selectors, mint, maxt) {
            if let Some(v) = self.series[id as usize].labels.get(name) {
                values.insert(v);
            }
        }
        values.into_iter().map(str::to_owned).collect()
    }

    /// Current sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            series: self.series.len(),
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
