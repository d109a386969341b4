//! Applying a decoded payload to the store: validation, the per-source cardinality guard,
//! conversion and the appends. Shared by the agents' gRPC stream and Prometheus remote write.

use std::{
    collections::{HashMap, HashSet},
    hash::BuildHasher,
    sync::{Arc, Mutex},
};

use sonde_proto::v1::BatchPayload;

use super::{ValidationError, convert_batch, validate::validate};
use crate::{
    config::Limits,
    metrics::Metrics,
    store::{Store, StoreError},
};

/// Why a payload was not (fully) stored.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The payload is invalid: resending it cannot succeed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The source would exceed its series limit: resending it cannot succeed until series
    /// age out or the limit is raised.
    #[error(
        "{source_id} would have {would_have} series, over the limit of {limit} \
         (limits.max_series_per_agent)"
    )]
    Cardinality {
        /// The agent (or other source).
        source_id: String,
        /// Series it would have with this payload.
        would_have: usize,
        /// The limit.
        limit: usize,
    },
    /// The store refused or failed; nothing of the payload was stored (one WAL record per
    /// payload). Resending is safe unless the error is permanent (samples too old).
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

impl ApplyError {
    /// Whether resending the same payload later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(error) if !error.is_permanent())
    }
}

/// Samples stored by an applied payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// New samples stored.
    pub stored: u64,
    /// Samples ignored because the series already had one at that timestamp.
    pub duplicates: u64,
    /// Spans stored.
    pub spans: u64,
}

/// Applies payloads to the store.
#[derive(Debug)]
pub struct Applier {
    store: Arc<Store>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Per source: hashes of the series it created (the cardinality guard).
    series: Mutex<HashMap<String, HashSet<u64, foldhash::fast::RandomState>>>,
}

impl Applier {
    /// An applier over `store` enforcing `limits`.
    pub fn new(store: Arc<Store>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            limits,
            metrics,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates, guards and stores `payload` from `source` (an agent id).
    pub fn apply(&self, source: &str, payload: BatchPayload) -> Result<Applied, ApplyError> {
        validate(&payload, &self.limits)?;
        let converted = convert_batch(payload);
        // Fixed seed: the guard compares hashes across payloads.
        let state = foldhash::fast::FixedState::with_seed(0x50de);
        let hashes: Vec<u64> = converted
            .series
            .iter()
            .map(|(labels, _)| state.hash_one(labels))
            .collect();
        {
            let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
            let known = all.entry(source.to_owned()).or_default();
            let new: HashSet<u64, foldhash::fast::RandomState> = hashes
                .iter()
                .copied()
                .filter(|h| !known.contains(h))
                .collect();
            let would_have = known.len() + new.len();
            if would_have > self.limits.max_series_per_agent {
                return Err(ApplyError::Cardinality {
                    source_id: source.to_owned(),
                    would_have,
                    limit: self.limits.max_series_per_agent,
                });
            }
            known.extend(new);
        }
        for (family, metadata) in converted.metadata {
            self.store.set_metadata(family, metadata);
        }
        // One WAL record for the whole payload: all or nothing, durable before the ack.
        let outcome = self.store.append_batch_with_exemplars(
            converted.series,
            converted.spans,
            converted.exemplars,
        )?;
        let applied = Applied {
            stored: outcome.appended,
            duplicates: outcome.duplicates,
            spans: outcome.spans,
        };
        self.metrics.ingest_samples.inc_by(applied.stored);
        self.metrics
            .ingest_duplicate_samples
            .inc_by(applied.duplicates);
        self.metrics.traces.exemplars_appended(&outcome);
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{Label, Sample, Series};

    use super::*;

    fn payload(names: &[&str]) -> BatchPayload {
        BatchPayload {
            series: names
                .iter()
                .map(|n| Series {
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: (*n).into(),
                    }],
                    samples: vec![Sample {
                        timestamp_ms: 1,
                        value: 1.0,
                    }],
                    exemplars: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn cardinality_guard_is_per_source_and_counts_only_new_series() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let limits = Limits {
            max_series_per_agent: 2,
            ..Limits::default()
        };
        let applier = Applier::new(store, limits, Arc::new(Metrics::new()));
        applier.apply("a", payload(&["x", "y"])).unwrap();
        // Known series do not count again.
        applier.apply("a", payload(&["x", "y"])).unwrap();
        let err = applier.apply("a", payload(&["z"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("a would have 3 series, over the limit of 2"),
            "{err}"
        );
        assert!(!err.is_transient());
        // Another agent has its own budget.
        applier.apply("b", payload(&["z"])).unwrap();
    }
}
