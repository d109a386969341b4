//! A series index: label sets with dense ids and a postings list per label pair, used by the
//! head and by every block to find the series a set of matchers selects.
//!
//! Must not: hold samples; callers keep per-series data in vectors indexed by [`SeriesId`].

use std::{
    collections::{BTreeMap, HashMap},
    hash::BuildHasher,
    sync::Arc,
};

use super::{Labels, MatchOp, Matcher};

/// Dense id of a series within one index (head or block).
pub type SeriesId = u32;

/// Label sets by dense id, with postings.
#[derive(Debug, Default)]
pub struct SeriesIndex {
    labels: Vec<Labels>,
    /// Label set → id, as ids hashed by their label set (foldhash: ingest looks up every
    /// series of every batch here); the labels themselves live once, in `labels`.
    ids: hashbrown::HashTable<SeriesId>,
    hasher: foldhash::fast::RandomState,
    /// name → value → ids (ascending, since ids are assigned in increasing order).
    postings: HashMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>>,
}

impl SeriesIndex {
    /// Number of series.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The id of `labels`, if known.
    pub fn get(&self, labels: &Labels) -> Option<SeriesId> {
        let hash = self.hasher.hash_one(labels);
        self.ids
            .find(hash, |&id| self.labels[id as usize] == *labels)
            .copied()
    }

    /// The labels of series `id`.
    pub fn labels(&self, id: SeriesId) -> &Labels {
        &self.labels[id as usize]
    }

    /// Adds a series (which must be new) and returns its id.
    pub fn insert(&mut self, labels: Labels) -> SeriesId {
        debug_assert!(self.get(&labels).is_none());
        let id = SeriesId::try_from(self.labels.len()).expect("fewer than 2^32 series");
        for label in labels.iter() {
            self.postings
                .entry(label.name.clone())
                .or_default()
                .entry(label.value.clone())
                .or_default()
                .push(id);
        }
        let Self {
            labels: all,
            ids,
            hasher,
            ..
        } = self;
        ids.insert_unique(hasher.hash_one(&labels), id, |&id| {
            hasher.hash_one(&all[id as usize])
        });
        all.push(labels);
        id
    }

    /// Ids of the series matching every matcher, ascending.
    pub fn matching(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        // Narrow with the most selective equality matcher on a non-empty value, if any; its
        // postings satisfy it, so only the other matchers are checked.
        let candidates: Option<(usize, &Vec<SeriesId>)> = matchers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match &m.op {
                MatchOp::Equal(v) if !v.is_empty() => Some((
                    i,
                    self.postings
                        .get(m.name.as_str())
                        .and_then(|values| values.get(v.as_str())),
                )),
                _ => None,
            })
            .map(|(i, list)| (i, list.unwrap_or(const { &Vec::new() })))
            .min_by_key(|(_, list)| list.len());
        let accept = |id: SeriesId, skip: usize| {
            let labels = &self.labels[id as usize];
            matchers
                .iter()
                .enumerate()
                .all(|(i, m)| i == skip || m.matches(labels.get(&m.name).unwrap_or("")))
        };
        match candidates {
            Some((used, list)) if matchers.len() == 1 => {
                debug_assert_eq!(used, 0);
                list.clone()
            }
            Some((used, list)) => list
                .iter()
                .copied()
                .filter(|&id| accept(id, used))
                .collect(),
            None => (0..self.labels.len() as SeriesId)
                .filter(|&id| accept(id, usize::MAX))
                .collect(),
        }
    }

    /// Ids matching any selector (all series when there are none), ascending, deduplicated.
    pub fn matching_any(&self, selectors: &[Vec<Matcher>]) -> Vec<SeriesId> {
        if selectors.is_empty() {
            return (0..self.labels.len() as SeriesId).collect();
        }
        let mut ids: Vec<SeriesId> = selectors.iter().flat_map(|m| self.matching(m)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Approximate heap bytes held (labels are shared `Arc<str>`s, counted once per series).
    pub fn heap_bytes(&self) -> usize {
        let per_series: usize = self
            .labels
            .iter()
            .map(|l| {
                l.len() * size_of::<super::Label>()
                    + l.iter().map(|p| p.value.len() + 16).sum::<usize>()
            })
            .sum();
        // Labels once, an id and a control byte in the table, postings one id per label.
        per_series
            + self.labels.len() * (size_of::<Labels>() + size_of::<SeriesId>() + 1)
            + self.labels.iter().map(|l| l.len() * 4).sum::<usize>()
    }
}
