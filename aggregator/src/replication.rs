//! Replication between aggregator replicas: every replica stores what agents send it (they
//! send every batch to every replica), and this module closes the gaps a replica that was
//! down, partitioned or out of disk has, and lets a query read across replicas meanwhile.
//!
//! Owns: the `[replication]` settings ([`config`]), stable digests of what a replica holds
//! ([`digest`]), the peer protocol over HTTP ([`wire`], [`serve`] the server side, [`peer`]
//! the client), anti-entropy ([`anti_entropy`]: one thread per peer, pulling missing samples
//! into the store through [`apply`]), merged reads ([`read`]) and per-peer health
//! ([`state`]: status endpoint data and `sonde_aggregator_replication_*` metrics).
//!
//! Must not: block ingest or queries on a peer (peer calls run on their own threads or on
//! the blocking pool with timeouts), nor change what an agent's batch stores: pulled samples
//! go through the same first-write-wins store path.
//!
//! Peers talk HTTP (the replica's existing HTTP listener) rather than gRPC: the protocol is
//! request/response, the merged-read client runs inside blocking query evaluation, and the
//! existing listener and its port are all an operator has to open between replicas.

pub mod anti_entropy;
pub mod apply;
pub mod config;
pub mod digest;
pub mod peer;
pub mod read;
pub mod serve;
pub mod state;
pub mod wire;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

pub use self::{
    anti_entropy::AntiEntropy, config::ReplicationConfig, read::MergedReader,
    state::ReplicationMetrics,
};
use self::{apply::Backfill, peer::Peer, state::PeerTable};
use crate::store::Store;

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// This replica's replication state, shared by the HTTP handlers, merged reads and the
/// anti-entropy threads.
#[derive(Debug)]
pub struct Replication {
    /// This replica's id.
    pub replica_id: String,
    /// The local store.
    pub store: Arc<Store>,
    /// Digest window, ms.
    pub window_ms: i64,
    /// Whether queries merge by default.
    pub read_merge_default: bool,
    /// Per-peer status.
    pub peers: PeerTable,
    /// Metrics.
    pub metrics: ReplicationMetrics,
    config: ReplicationConfig,
    clients: Vec<Peer>,
    backfill: Backfill,
}

fn default_replica_id(http: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "aggregator".to_owned()
    } else {
        host
    };
    format!("{host}:{}", http.port())
}

impl Replication {
    /// Replication over `store`; `http` is this replica's HTTP address (default id).
    pub fn new(
        config: ReplicationConfig,
        store: Arc<Store>,
        metrics: ReplicationMetrics,
        http: SocketAddr,
    ) -> Arc<Self> {
        let urls = config.peer_urls();
        let replica_id = if config.replica_id.is_empty() {
            default_replica_id(http)
        } else {
            config.replica_id.clone()
        };
        Arc::new(Self {
            replica_id,
            store,
            window_ms: config.window.as_millis().max(1) as i64,
            read_merge_default: config.read_merge,
            peers: PeerTable::new(&urls),
            metrics,
            clients: urls
                .iter()
                .map(|u| Peer::new(u, config.peer_timeout))
                .collect(),
            config,
            backfill: Backfill::default(),
        })
    }

    /// Whether any peer is configured.
    pub fn has_peers(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Up to when this replica is verified to hold what peer `i` holds (ms; 0 never).
    pub fn in_sync_until(&self, i: usize) -> i64 {
        self.peers
            .snapshot(now_ms())
            .get(i)
            .map_or(0, |p| p.in_sync_until_ms)
    }

    /// A reader for one query when it should merge: `merge` is the request's `merge`
    /// parameter (`true`/`1`, `false`/`0`, or absent for the configured default).
    pub fn reader(&self, merge: Option<&str>) -> Result<Option<Arc<MergedReader>>, String> {
        let on = match merge {
            None | Some("") => self.read_merge_default,
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(format!(
                    "invalid parameter \"merge\": {other:?} is not true or false"
                ));
            }
        };
        Ok((on && self.has_peers())
            .then(|| MergedReader::new(self.clients.clone(), self.metrics.clone())))
    }
}
