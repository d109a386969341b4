//! Merged reads: a query evaluated with `merge=true` (or `replication.read_merge`) reads the
//! raw samples of every selection from all peers as well, in parallel, and merges them into
//! the local ones per series and timestamp (local first, then peers in configuration order:
//! first write wins, as in the store), so a client sees no gap while this replica is behind.
//!
//! A peer that fails or times out (`replication.peer_timeout`) is left out; the query
//! answers with what it has plus a warning naming the peer. Must not: fail a query because
//! of a peer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{peer::Peer, state::PeerLabels};
use crate::{
    promql::RemoteSelect,
    store::{Labels, Matcher, Sample, SeriesSamples, merge_first_wins},
};

/// One query's view across replicas; collects warnings for the response.
#[derive(Debug)]
pub struct MergedReader {
    peers: Vec<Peer>,
    metrics: super::state::ReplicationMetrics,
    warnings: Mutex<Vec<String>>,
}

impl MergedReader {
    /// A reader over `peers`.
    pub fn new(peers: Vec<Peer>, metrics: super::state::ReplicationMetrics) -> Arc<Self> {
        Arc::new(Self {
            peers,
            metrics,
            warnings: Mutex::new(Vec::new()),
        })
    }

    /// Warnings so far (one per failed peer request, deduplicated).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Merges `more` into `into` per series (first write wins on equal timestamps).
pub fn merge_series(into: &mut HashMap<Labels, Vec<Sample>>, more: Vec<SeriesSamples>) {
    for s in more {
        match into.get_mut(&s.labels) {
            Some(have) => merge_first_wins(have, &s.samples),
            None => {
                into.insert(s.labels, s.samples);
            }
        }
    }
}

impl RemoteSelect for MergedReader {
    fn merge_into(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        local: Vec<SeriesSamples>,
    ) -> Vec<SeriesSamples> {
        if self.peers.is_empty() {
            return local;
        }
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .peers
                .iter()
                .map(|peer| scope.spawn(move || peer.select(matchers, mint, maxt)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("peer read thread panicked"))
                .collect()
        });
        let mut merged: HashMap<Labels, Vec<Sample>> = HashMap::with_capacity(local.len());
        merge_series(&mut merged, local);
        for (peer, result) in self.peers.iter().zip(results) {
            match result {
                Ok(series) => merge_series(&mut merged, series),
                Err(error) => {
                    self.metrics
                        .read_errors
                        .get_or_create(&PeerLabels {
                            peer: peer.url().to_owned(),
                        })
                        .inc();
                    tracing::debug!(peer = peer.url(), %error, "merged read: peer left out");
                    let warning = format!("merged read left out {error}");
                    let mut warnings = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
                    if !warnings.contains(&warning) {
                        warnings.push(warning);
                    }
                }
            }
        }
        let mut out: Vec<SeriesSamples> = merged
            .into_iter()
            .map(|(labels, samples)| SeriesSamples { labels, samples })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}
