//! Exemplars: a bounded, in-memory circular buffer shared by all series, like Prometheus'
//! `CircularExemplarStorage`. The newest `capacity` exemplars are kept; each series links its
//! exemplars oldest → newest through the ring, so a write that wraps around evicts the
//! globally oldest exemplar, whichever series it belongs to.
//!
//! Rules (Prometheus 2.x): an exemplar's label set is at most 128 UTF-8 code points (names
//! plus values, checked by ingest validation); per series, an exemplar equal to the newest
//! one is a duplicate and one not newer than it is out of order; both are dropped (counted
//! by the caller), never an error of the batch they came with.
//!
//! Durability: exemplars are logged in the WAL with their batch and replayed into the ring
//! on open. Since flushes delete WAL segments, every flush that follows new exemplars first
//! logs the whole ring as one checkpoint record in the current segment (fsynced before any
//! segment is deleted), like Prometheus' WAL checkpoint; replaying a checkpoint after the
//! records it repeats drops the repeats as duplicates. A restart, clean or not, keeps them.
//!
//! Must not: know PromQL or HTTP; callers hand it labels, exemplars and matchers.

use std::{collections::HashMap, sync::Arc};

use super::{Labels, Matcher};

/// Prometheus' limit on the code points of an exemplar's label names and values together.
pub const MAX_LABEL_SET_CHARS: usize = 128;

/// One exemplar: labels (typically `trace_id`), the observed value and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Exemplar labels, e.g. `trace_id`.
    pub labels: Labels,
    /// The observed value.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub t: i64,
}

impl Exemplar {
    fn same_as(&self, other: &Exemplar) -> bool {
        self.t == other.t
            && self.value.to_bits() == other.value.to_bits()
            && self.labels == other.labels
    }
}

/// What happened to one exemplar offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Kept.
    Added,
    /// Equal to the series' newest exemplar: dropped.
    Duplicate,
    /// Not newer than the series' newest exemplar: dropped.
    OutOfOrder,
    /// Exemplar storage is disabled (capacity 0): dropped.
    Disabled,
}

/// The exemplars of one series, as a query returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesExemplars {
    /// The series.
    pub labels: Labels,
    /// Its exemplars in the time range, oldest first.
    pub exemplars: Vec<Exemplar>,
}

#[derive(Debug)]
struct Slot {
    exemplar: Exemplar,
    series: Arc<Labels>,
    /// Next (newer) slot of the same series.
    next: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Chain {
    oldest: usize,
    newest: usize,
}

/// The circular exemplar buffer. Not synchronised: the store wraps it in a lock.
#[derive(Debug, Default)]
pub struct ExemplarRing {
    capacity: usize,
    slots: Vec<Slot>,
    /// Where the next exemplar is written (once `slots` is full).
    cursor: usize,
    index: HashMap<Arc<Labels>, Chain>,
    /// Exemplars added since the last [`ExemplarRing::take_changed`].
    changed: u64,
    /// WAL segment of the last checkpoint.
    pub(crate) checkpoint_segment: Option<u64>,
}

impl ExemplarRing {
    /// A ring holding at most `capacity` exemplars (0 disables exemplar storage).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: Vec::new(),
            cursor: 0,
            index: HashMap::new(),
            changed: 0,
            checkpoint_segment: None,
        }
    }

    /// Exemplars added since the last call (and resets the count).
    pub fn take_changed(&mut self) -> u64 {
        std::mem::take(&mut self.changed)
    }

    /// Restores a count taken by [`ExemplarRing::take_changed`] (its checkpoint failed).
    pub fn changed_again(&mut self, n: u64) {
        self.changed += n;
    }

    /// Every exemplar with its series, oldest first (the order that rebuilds the ring).
    pub fn entries(&self) -> Vec<(Labels, Exemplar)> {
        let start = if self.slots.len() < self.capacity {
            0
        } else {
            self.cursor
        };
        self.slots[start..]
            .iter()
            .chain(&self.slots[..start])
            .map(|s| ((*s.series).clone(), s.exemplar.clone()))
            .collect()
    }

    /// Exemplars held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Series with at least one exemplar.
    pub fn series_count(&self) -> usize {
        self.index.len()
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `exemplar` would be kept for `series` (nothing is changed).
    pub fn check(&self, series: &Labels, exemplar: &Exemplar) -> AddOutcome {
        if self.capacity == 0 {
            return AddOutcome::Disabled;
        }
        match self.index.get(series) {
            Some(chain) => {
                let newest = &self.slots[chain.newest].exemplar;
                if newest.same_as(exemplar) {
                    AddOutcome::Duplicate
                } else if exemplar.t <= newest.t {
                    AddOutcome::OutOfOrder
                } else {
                    AddOutcome::Added
                }
            }
            None => AddOutcome::Added,
        }
    }

    /// Offers one exemplar of `series`.
    pub fn add(&mut self, series: &Labels, exemplar: Exemplar) -> AddOutcome {
        let outcome = self.check(series, &exemplar);
        if outcome != AddOutcome::Added {
            return outcome;
        }
        let key = match self.index.get_key_value(series) {
            Some((key, _)) => key.clone(),
            None => Arc::new(series.clone()),
        };
        let slot = Slot {
            exemplar,
            series: key.clone(),
            next: None,
        };
        let at = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let at = self.cursor;
            self.cursor = (self.cursor + 1) % self.capacity;
            let old = std::mem::replace(&mut self.slots[at], slot);
            self.evict(&old);
            at
        };
        // Looked up after the eviction, which may have emptied this very series.
        let chain = match self.index.get(&key) {
            Some(chain) => {
                let newest = chain.newest;
                self.slots[newest].next = Some(at);
                Chain {
                    oldest: chain.oldest,
                    newest: at,
                }
            }
            None => Chain {
                oldest: at,
                newest: at,
            },
        };
        self.index.insert(key, chain);
        self.changed += 1;
        AddOutcome::Added
    }

    /// Unlinks the overwritten slot `old` (always its series' oldest).
    fn evict(&mut self, old: &Slot) {
        match old.next {
            Some(next) => {
                if let Some(chain) = self.index.get_mut(&old.series) {
                    chain.oldest = next;
                }
            }
            None => {
                self.index.remove(&old.series);
            }
        }
    }

    /// Exemplars with `start <= t <= end` of the series matching any of the matcher groups
    /// (all matchers of a group must match), sorted by series labels, each oldest first.
    pub fn select(&self, start: i64, end: i64, groups: &[Vec<Matcher>]) -> Vec<SeriesExemplars> {
        let mut out = Vec::new();
        for (labels, chain) in &self.index {
            if self.slots[chain.newest].exemplar.t < start
                || self.slots[chain.oldest].exemplar.t > end
            {
                continue;
            }
            let matches = groups.iter().any(|group| {
                group
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            });
            if !matches {
                continue;
            }
            let mut exemplars = Vec::new();
            let mut at = Some(chain.oldest);
            while let Some(i) = at {
                let slot = &self.slots[i];
                if slot.exemplar.t > end {
                    break;
                }
                if slot.exemplar.t >= start {
                    exemplars.push(slot.exemplar.clone());
                }
                at = slot.next;
            }
            if !exemplars.is_empty() {
                out.push(SeriesExemplars {
                    labels: (**labels).clone(),
                    exemplars,
                });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

/// The number of code points in an exemplar's label names and values.
pub fn label_set_chars<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    pairs
        .into_iter()
        .map(|(n, v)| n.chars().count() + v.chars().count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(job: &str) -> Labels {
        Labels::from_pairs([("__name__", "latency_bucket"), ("job", job)])
    }

    fn ex(trace: &str, value: f64, t: i64) -> Exemplar {
        Exemplar {
            labels: Labels::from_pairs([("trace_id", trace)]),
            value,
            t,
        }
    }

    fn all() -> Vec<Vec<Matcher>> {
        vec![vec![Matcher::equal("__name__", "latency_bucket")]]
    }

    fn traces(ring: &ExemplarRing, job: &str) -> Vec<String> {
        ring.select(i64::MIN, i64::MAX, &all())
            .into_iter()
            .filter(|s| s.labels.get("job") == Some(job))
            .flat_map(|s| s.exemplars)
            .map(|e| e.labels.get("trace_id").unwrap().to_owned())
            .collect()
    }

    #[test]
    fn keeps_order_rejects_duplicates_and_out_of_order() {
        let mut ring = ExemplarRing::new(10);
        assert_eq!(ring.add(&series("a"), ex("t1", 1.0, 10)), AddOutcome::Added);
        assert_eq!(
            ring.add(&series("a"), ex("t1", 1.0, 10)),
            AddOutcome::Duplicate
        );
        assert_eq!(
            ring.add(&series("a"), ex("t0", 2.0, 10)),
            AddOutcome::OutOfOrder
        );
        assert_eq!(
            ring.add(&series("a"), ex("t0", 2.0, 5)),
            AddOutcome::OutOfOrder
        );
        // Another series has its own order.
        assert_eq!(ring.add(&series("b"), ex("u1", 1.0, 5)), AddOutcome::Added);
        assert_eq!(ring.add(&series("a"), ex("t2", 3.0, 20)), AddOutcome::Added);
        assert_eq!(traces(&ring, "a"), ["t1", "t2"]);
        assert_eq!(traces(&ring, "b"), ["u1"]);
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn wrapping_evicts_the_globally_oldest_and_unlinks_emptied_series() {
        let mut ring = ExemplarRing::new(3);
        ring.add(&series("a"), ex("a1", 1.0, 1));
        ring.add(&series("b"), ex("b1", 1.0, 2));
        ring.add(&series("a"), ex("a2", 1.0, 3));
        assert_eq!(ring.series_count(), 2);
        // Overwrites a1: a keeps a2.
        ring.add(&series("c"), ex("c1", 1.0, 4));
        assert_eq!(traces(&ring, "a"), ["a2"]);
        // Overwrites b1: b is gone from the index.
        ring.add(&series("a"), ex("a3", 1.0, 5));
        assert_eq!(traces(&ring, "b"), Vec::<String>::new());
        assert_eq!(ring.series_count(), 2);
        assert_eq!(traces(&ring, "a"), ["a2", "a3"]);
        // Overwrites a2 with a newer exemplar of a itself.
        ring.add(&series("a"), ex("a4", 1.0, 6));
        assert_eq!(traces(&ring, "a"), ["a3", "a4"]);
        assert_eq!(traces(&ring, "c"), ["c1"]);
        assert_eq!(ring.len(), 3);
        // Many more: always the newest three.
        for t in 7..100 {
            ring.add(&series("a"), ex(&format!("a{t}"), 1.0, t));
        }
        assert_eq!(traces(&ring, "a"), ["a97", "a98", "a99"]);
        assert_eq!(ring.series_count(), 1);
    }

    #[test]
    fn entries_rebuild_the_same_ring() {
        let mut ring = ExemplarRing::new(3);
        for (i, job) in ["a", "b", "a", "c", "a"].iter().enumerate() {
            ring.add(&series(job), ex(&format!("{job}{i}"), 1.0, i as i64));
        }
        assert_eq!(ring.take_changed(), 5);
        assert_eq!(ring.take_changed(), 0);
        let entries = ring.entries();
        let ts: Vec<i64> = entries.iter().map(|(_, e)| e.t).collect();
        assert_eq!(ts, [2, 3, 4]);
        let mut copy = ExemplarRing::new(3);
        for (s, e) in entries {
            copy.add(&s, e);
        }
        let everything = vec![vec![]];
        assert_eq!(
            copy.select(i64::MIN, i64::MAX, &everything),
            ring.select(i64::MIN, i64::MAX, &everything)
        );
        // Replaying the same entries again adds nothing.
        for (s, e) in ring.entries() {
            assert_ne!(copy.add(&s, e), AddOutcome::Added);
        }
    }

    #[test]
    fn capacity_one_evicts_the_series_own_oldest_and_zero_disables() {
        let mut ring = ExemplarRing::new(1);
        ring.add(&series("a"), ex("a1", 1.0, 1));
        ring.add(&series("a"), ex("a2", 1.0, 2));
        assert_eq!(traces(&ring, "a"), ["a2"]);
        assert_eq!(
            ring.add(&series("a"), ex("a0", 1.0, 1)),
            AddOutcome::OutOfOrder
        );
        let mut off = ExemplarRing::new(0);
        assert_eq!(
            off.add(&series("a"), ex("a1", 1.0, 1)),
            AddOutcome::Disabled
        );
        assert!(off.is_empty());
    }

    #[test]
    fn select_filters_by_time_and_matchers_and_sorts_by_series() {
        let mut ring = ExemplarRing::new(100);
        for job in ["z", "a", "m"] {
            for t in [10, 20, 30] {
                ring.add(&series(job), ex(&format!("{job}{t}"), t as f64, t));
            }
        }
        let got = ring.select(15, 25, &all());
        let jobs: Vec<_> = got.iter().map(|s| s.labels.get("job").unwrap()).collect();
        assert_eq!(jobs, ["a", "m", "z"]);
        assert!(
            got.iter()
                .all(|s| s.exemplars.len() == 1 && s.exemplars[0].t == 20)
        );
        let only_m = vec![vec![
            Matcher::equal("__name__", "latency_bucket"),
            Matcher::regex("job", "m|q", false).unwrap(),
        ]];
        let got = ring.select(0, 100, &only_m);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].exemplars.len(), 3);
        assert!(ring.select(31, 100, &all()).is_empty());
        assert!(ring.select(0, 9, &all()).is_empty());
    }

    #[test]
    fn label_set_length_counts_code_points() {
        assert_eq!(label_set_chars([("trace_id", "ü")]), 9);
    }
}
