//! Merged reads: a query evaluated with `merge=true` (or `replication.read_merge`) reads the
//! raw samples of every selection from all peers as well, in parallel, and merges them into
//! the local ones per series and timestamp (local first, then peers in configuration order:
//! first write wins, as in the store), so a client sees no gap while this replica is behind.
//!
//! A peer that fails or times out (`replication.peer_timeout`) is left out; the query
//! answers with what it has plus a warning naming the peer. Must not: fail a query because
//! of a peer.

use std::sync::{Arc, Mutex};

use super::{peer::Peer, state::PeerLabels};
use crate::{
    promql::RemoteSelect,
    store::{Matcher, SeriesSamples, merge_sorted, sorted_by_labels},
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
        // The local answer first: it wins on equal timestamps, then each peer in order.
        let mut merged = sorted_by_labels(local);
        for (peer, result) in self.peers.iter().zip(results) {
            match result {
                Ok(series) => merged = merge_sorted(merged, sorted_by_labels(series)),
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
        merged
    }
}
