//! What each replica knows about its peers: reachability, how far it is verified to be in
//! sync with each, what it pulled. Shared by the anti-entropy threads (writers), the status
//! endpoint and `/metrics` (readers).
//!
//! Must not: do I/O. Metrics are `sonde_aggregator_replication_*`, registered here into the
//! aggregator's registry and labelled by peer URL.

use std::sync::Mutex;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};
use serde::Serialize;

/// `peer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's base URL.
    pub peer: String,
}

/// The `sonde_aggregator_replication_*` metrics.
#[derive(Debug, Clone, Default)]
pub struct ReplicationMetrics {
    /// Seconds this replica may be behind a peer (now minus the time up to which the last
    /// complete comparison found nothing missing).
    pub lag: Family<PeerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Samples the peer held and this replica lacked, as of the last comparison.
    pub missing: Family<PeerLabels, Gauge>,
    /// Samples pulled from a peer and stored.
    pub pulled: Family<PeerLabels, Counter>,
    /// Anti-entropy rounds completed with a peer.
    pub rounds: Family<PeerLabels, Counter>,
    /// Failed rounds (peer unreachable, bad answer, local store error).
    pub errors: Family<PeerLabels, Counter>,
    /// Whether the peer answered the last attempt (1) or not (0).
    pub up: Family<PeerLabels, Gauge>,
    /// Peer requests made by merged reads that failed (the read answered without them).
    pub read_errors: Family<PeerLabels, Counter>,
}

impl ReplicationMetrics {
    /// Creates the metrics and registers them in `registry` (prefix `sonde_aggregator`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register_with_unit(
            "replication_lag",
            "How far this replica may be behind each peer: now minus the time up to which the \
             last complete anti-entropy comparison found nothing missing",
            Unit::Seconds,
            m.lag.clone(),
        );
        registry.register(
            "replication_missing_samples",
            "Samples a peer held that this replica lacked at the last comparison",
            m.missing.clone(),
        );
        registry.register(
            "replication_pulled_samples",
            "Missing samples pulled from a peer and stored",
            m.pulled.clone(),
        );
        registry.register(
            "replication_rounds",
            "Anti-entropy rounds completed with a peer",
            m.rounds.clone(),
        );
        registry.register(
            "replication_errors",
            "Anti-entropy rounds that failed (peer unreachable, bad answer, store error)",
            m.errors.clone(),
        );
        registry.register(
            "replication_peer_up",
            "Whether the peer answered the last anti-entropy attempt",
            m.up.clone(),
        );
        registry.register(
            "replication_read_errors",
            "Merged reads that could not reach a peer (answered without it, with a warning)",
            m.read_errors.clone(),
        );
        m
    }
}

/// One peer as the status endpoint shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    /// Base URL.
    pub url: String,
    /// The replica id the peer reported (empty until it answered).
    pub replica_id: String,
    /// Whether the last attempt reached it.
    pub up: bool,
    /// Up to when (ms) this replica is verified to hold everything the peer holds; 0 never.
    pub in_sync_until_ms: i64,
    /// `now − in_sync_until`, seconds (infinite, shown as -1, before the first success).
    pub lag_seconds: f64,
    /// Samples the peer held that this replica lacked at the last comparison.
    pub missing_samples: u64,
    /// Samples pulled from this peer since start.
    pub pulled_samples: u64,
    /// Rounds completed.
    pub rounds: u64,
    /// Failed rounds.
    pub errors: u64,
    /// Consecutive failures (drives the backoff).
    pub consecutive_failures: u32,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the last round finished (ms).
    pub last_round_ms: i64,
    /// Duration of the last round, seconds.
    pub last_round_seconds: f64,
    /// Windows that differed at the last round.
    pub differing_windows: u64,
}

/// Status of every peer, in configuration order.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: Mutex<Vec<PeerStatus>>,
}

impl PeerTable {
    /// A table for `urls`.
    pub fn new(urls: &[String]) -> Self {
        Self {
            peers: Mutex::new(
                urls.iter()
                    .map(|u| PeerStatus {
                        url: u.clone(),
                        lag_seconds: -1.0,
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    /// Changes peer `i`.
    pub fn update(&self, i: usize, f: impl FnOnce(&mut PeerStatus)) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get_mut(i) {
            f(p);
        }
    }

    /// A copy of every peer's status with lags computed at `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> Vec<PeerStatus> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for p in &mut peers {
            p.lag_seconds = lag_seconds(p.in_sync_until_ms, now_ms);
        }
        peers
    }
}

/// Lag in seconds, or -1 when never in sync.
pub fn lag_seconds(in_sync_until_ms: i64, now_ms: i64) -> f64 {
    if in_sync_until_ms <= 0 {
        -1.0
    } else {
        (now_ms - in_sync_until_ms).max(0) as f64 / 1000.0
    }
}
