//! Storing samples pulled from a peer: through the normal append path (WAL, dedup, first
//! write wins) while they are within the out-of-order window, and as a new Parquet block of
//! only the samples this replica lacks when they are older (a sealed range no append may
//! write any more).
//!
//! Must not: talk to peers. Invariant: nothing already held is stored twice in the head, and
//! a backfilled block holds only samples a fresh selection did not return, so reads (which
//! merge blocks and head first-write-wins) never see a duplicate.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
};

use crate::store::{Labels, Sample, SeriesSamples, Store, StoreError};

/// What storing pulled samples did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// New samples appended through the WAL.
    pub appended: u64,
    /// New samples written into backfill blocks.
    pub backfilled: u64,
    /// Samples already held.
    pub duplicates: u64,
}

impl Stored {
    /// New samples, however stored.
    pub fn new_samples(&self) -> u64 {
        self.appended + self.backfilled
    }
}

/// Serialises backfills (two peers' threads must not both write the same missing samples).
#[derive(Debug, Default)]
pub struct Backfill {
    lock: Mutex<()>,
}

impl Backfill {
    /// Stores `series` (pulled from a peer) in `store`.
    pub fn store(&self, store: &Store, series: Vec<SeriesSamples>) -> Result<Stored, StoreError> {
        let mut stored = Stored::default();
        let mut pending: Vec<(Labels, Vec<Sample>)> = series
            .into_iter()
            .filter(|s| !s.samples.is_empty())
            .map(|s| (s.labels, s.samples))
            .collect();
        let mut old: Vec<(Labels, Vec<Sample>)> = Vec::new();
        // The accepted range moves forward with ingest: retry with the bound the store names.
        for _ in 0..4 {
            if pending.is_empty() {
                break;
            }
            match store.append_batch(pending.clone(), Vec::new()) {
                Ok(outcome) => {
                    stored.appended += outcome.appended;
                    stored.duplicates += outcome.duplicates;
                    pending.clear();
                }
                Err(StoreError::TooOld { min_t, .. }) => {
                    let mut recent = Vec::new();
                    for (labels, samples) in pending.drain(..) {
                        let cut = samples.partition_point(|s| s.t < min_t);
                        if cut > 0 {
                            old.push((labels.clone(), samples[..cut].to_vec()));
                        }
                        if cut < samples.len() {
                            recent.push((labels, samples[cut..].to_vec()));
                        }
                    }
                    pending = recent;
                }
                Err(other) => return Err(other),
            }
        }
        if !pending.is_empty() {
            // Still refused after following the bound four times: treat it as old.
            old.append(&mut pending);
        }
        if !old.is_empty() {
            let (backfilled, duplicates) = self.backfill(store, old)?;
            stored.backfilled += backfilled;
            stored.duplicates += duplicates;
        }
        Ok(stored)
    }

    /// Writes the samples of `series` this store lacks as blocks, one per block window.
    fn backfill(
        &self,
        store: &Store,
        series: Vec<(Labels, Vec<Sample>)>,
    ) -> Result<(u64, u64), StoreError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let step = store.options().block_duration.as_millis().max(1) as i64;
        let mut by_window: BTreeMap<i64, Vec<(Labels, Vec<Sample>)>> = BTreeMap::new();
        for (labels, samples) in series {
            let mut rest = samples.as_slice();
            while let Some(first) = rest.first() {
                let start = first.t.div_euclid(step) * step;
                let end = rest.partition_point(|s| s.t < start + step);
                by_window
                    .entry(start)
                    .or_default()
                    .push((labels.clone(), rest[..end].to_vec()));
                rest = &rest[end..];
            }
        }
        let (mut written, mut duplicates) = (0u64, 0u64);
        for (start, part) in by_window {
            let held: HashMap<Labels, HashSet<i64>> = store
                .select(&[], start, start + step - 1)?
                .into_iter()
                .map(|s| (s.labels, s.samples.iter().map(|x| x.t).collect()))
                .collect();
            let mut missing = Vec::new();
            for (labels, samples) in part {
                let have = held.get(&labels);
                let fresh: Vec<Sample> = samples
                    .iter()
                    .copied()
                    .filter(|s| have.is_none_or(|h| !h.contains(&s.t)))
                    .collect();
                duplicates += (samples.len() - fresh.len()) as u64;
                if !fresh.is_empty() {
                    written += fresh.len() as u64;
                    missing.push((labels, fresh));
                }
            }
            if !missing.is_empty() {
                store.write_block(missing)?;
                tracing::info!(
                    window_start_ms = start,
                    samples = written,
                    "replication: backfilled a block with samples older than the out-of-order window"
                );
            }
        }
        Ok((written, duplicates))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{Matcher, StoreOptions};

    fn series(name: &str, ts: &[i64]) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: ts.iter().map(|&t| Sample { t, v: t as f64 }).collect(),
        }
    }

    #[test]
    fn recent_samples_are_appended_old_ones_backfilled_and_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            out_of_order_window: Duration::from_secs(60),
            block_duration: Duration::from_secs(3600),
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), options).unwrap();
        let hour = 3_600_000;
        // The store is at 10 h; the out-of-order window reaches back to 10 h − 1 min.
        store
            .append(
                Labels::from_pairs([("__name__", "a")]),
                &[Sample {
                    t: hour + 5,
                    v: 5.0,
                }],
            )
            .unwrap();
        store
            .append(
                Labels::from_pairs([("__name__", "a")]),
                &[Sample {
                    t: 10 * hour,
                    v: 0.0,
                }],
            )
            .unwrap();
        let backfill = Backfill::default();
        let pulled = vec![series(
            "a",
            &[hour + 5, hour + 6, 2 * hour + 1, 10 * hour, 10 * hour - 1],
        )];
        let stored = backfill.store(&store, pulled.clone()).unwrap();
        assert_eq!(
            stored,
            Stored {
                appended: 1,
                backfilled: 2,
                duplicates: 2
            }
        );
        // Pulling the same again stores nothing.
        let again = backfill.store(&store, pulled).unwrap();
        assert_eq!(again.new_samples(), 0);
        assert_eq!(again.duplicates, 5);
        let got = store
            .select(&[Matcher::equal("__name__", "a")], 0, 11 * hour)
            .unwrap();
        let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
        assert_eq!(
            ts,
            vec![hour + 5, hour + 6, 2 * hour + 1, 10 * hour - 1, 10 * hour]
        );
    }
}
