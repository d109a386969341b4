//! `[replication]` settings: who this replica is, its peers, and how hard anti-entropy and
//! merged reads may work. Must not: start anything; the server reads these.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Settings of replication between aggregator replicas (`[replication]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// This replica's name, reported to peers and on the status endpoint ("" = the host
    /// name followed by the HTTP port).
    pub replica_id: String,
    /// Base URLs of the other replicas' HTTP API (e.g. `http://aggregator-2:9180`).
    pub peers: Vec<String>,
    /// Pause between anti-entropy rounds with a peer that was in sync.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Granularity of the digests replicas compare (at least 1s; windows are aligned to
    /// multiples of it).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Every round compares the windows of this recent stretch.
    #[serde(with = "humantime_serde")]
    pub recent: Duration,
    /// Every round also compares this many older windows, walking back through the
    /// retention period and wrapping around, so old gaps are found too (bounded work).
    pub sweep_windows: usize,
    /// Samples newer than this are not compared yet (they may still be in flight to both).
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Most samples pulled from one peer per round; a replica further behind goes on at once
    /// with the next round.
    pub max_pull_samples: u64,
    /// Timeout of one request to a peer (anti-entropy and merged reads).
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// Longest pause between attempts to reach an unreachable peer (exponential backoff
    /// with jitter, starting at `interval`).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Whether `/api/v1/query` and `query_range` merge the peers' samples by default
    /// (`merge=true|false` on a request overrides it).
    pub read_merge: bool,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            replica_id: String::new(),
            peers: Vec::new(),
            interval: Duration::from_secs(10),
            window: Duration::from_secs(5 * 60),
            recent: Duration::from_secs(3600),
            sweep_windows: 24,
            settle: Duration::from_secs(15),
            max_pull_samples: 2_000_000,
            peer_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            read_merge: false,
        }
    }
}

impl ReplicationConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        for peer in &self.peers {
            if !peer.starts_with("http://") {
                return invalid(
                    "replication.peers",
                    format!("{peer:?} must be an http:// URL (a peer's HTTP API)"),
                );
            }
        }
        if self.interval.is_zero() {
            return invalid("replication.interval", "must be positive".into());
        }
        if self.window < Duration::from_secs(1) {
            return invalid("replication.window", "must be at least 1s".into());
        }
        if self.recent < self.window {
            return invalid(
                "replication.recent",
                "must be at least replication.window".into(),
            );
        }
        if self.max_pull_samples == 0 {
            return invalid("replication.max_pull_samples", "must be at least 1".into());
        }
        if self.peer_timeout.is_zero() {
            return invalid("replication.peer_timeout", "must be positive".into());
        }
        if self.max_backoff < self.interval {
            return invalid(
                "replication.max_backoff",
                "must be at least replication.interval".into(),
            );
        }
        Ok(())
    }

    /// Peer URLs without a trailing slash.
    pub fn peer_urls(&self) -> Vec<String> {
        self.peers
            .iter()
            .map(|p| p.trim_end_matches('/').to_owned())
            .collect()
    }
}
