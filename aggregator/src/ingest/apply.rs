//! Applying a decoded payload to the store: validation, the per-source cardinality guard,
//! conversion and the appends. Shared by the agents' gRPC stream and Prometheus remote write.

use std::{
    collections::{HashMap, HashSet},
    hash::BuildHasher,
    sync::{Arc, Mutex},
};

use prost::Message;
use sonde_proto::{
    codec::DecodeError,
    scan::scan_payload,
    v1::{BatchPayload, Series},
};

use super::{
    ConvertedBatch, ValidationError, convert::to_samples, convert_batch, validate::validate,
};
use crate::{
    config::Limits,
    metrics::Metrics,
    store::{Sample, SeriesId, SeriesKey, Store, StoreError},
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
    /// The payload is not a valid `BatchPayload`.
    #[error(transparent)]
    Decode(#[from] DecodeError),
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
    /// Per source: the series it sent before, by the bytes of their labels.
    known: Mutex<HashMap<String, Arc<Mutex<KnownSeries>>>>,
}

/// One source's series by the encoded bytes of their labels: a series sent again with the
/// same bytes was validated, converted and admitted before, and is stored by its head id
/// without decoding a label. Valid for one head generation; cleared when the head
/// renumbers its series.
#[derive(Debug, Default)]
struct KnownSeries {
    generation: u64,
    ids: hashbrown::HashTable<(Box<[u8]>, SeriesId)>,
    hasher: foldhash::fast::RandomState,
}

impl KnownSeries {
    fn get(&self, labels: &[u8]) -> Option<SeriesId> {
        self.ids
            .find(self.hasher.hash_one(labels), |(k, _)| **k == *labels)
            .map(|&(_, id)| id)
    }

    fn insert(&mut self, labels: &[u8], id: SeriesId) {
        let Self { ids, hasher, .. } = self;
        let hash = hasher.hash_one(labels);
        if ids.find(hash, |(k, _)| **k == *labels).is_none() {
            ids.insert_unique(hash, (labels.into(), id), |(k, _)| hasher.hash_one(k));
        }
    }

    /// Forgets everything when the ids of `generation` replace those held; true if so.
    fn renew(&mut self, generation: u64) -> bool {
        if generation == self.generation {
            return false;
        }
        self.ids.clear();
        self.generation = generation;
        true
    }
}

impl Applier {
    /// An applier over `store` enforcing `limits`.
    pub fn new(store: Arc<Store>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            limits,
            metrics,
            series: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates, guards and stores `payload` from `source` (an agent id).
    pub fn apply(&self, source: &str, payload: BatchPayload) -> Result<Applied, ApplyError> {
        let converted = self.admit(source, payload)?;
        let series = converted
            .series
            .into_iter()
            .map(|(labels, samples)| (SeriesKey::Labels(labels), samples))
            .collect();
        self.store(series, converted.spans, converted.exemplars)
    }

    /// [`Applier::apply`] for an encoded payload (batch `sequence` of `source`): series the
    /// source sent before with the same label bytes skip decoding, validation, conversion,
    /// the cardinality guard and the label lookup; the others take the full path. The
    /// outcome is the same as decoding the payload and applying it.
    pub fn apply_encoded(
        &self,
        source: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<Applied, ApplyError> {
        let decode = |bytes: &[u8]| {
            BatchPayload::decode(bytes).map_err(|source| DecodeError::Protobuf { sequence, source })
        };
        let Ok(scanned) = scan_payload(bytes) else {
            // prost names the problem.
            return self.apply(source, decode(bytes)?);
        };
        let known = Arc::clone(
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(source.to_owned())
                .or_default(),
        );
        let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
        // Payload order is kept (it decides which of two equal timestamps wins): hits are
        // placed now, misses filled in from the full path below.
        let mut slots: Vec<Option<(SeriesKey, Vec<Sample>)>> =
            Vec::with_capacity(scanned.series.len());
        let mut misses = Vec::new();
        for raw in &scanned.series {
            match raw.plain.then(|| known.get(raw.labels)).flatten() {
                Some(id) => slots.push(Some((
                    SeriesKey::Id {
                        id,
                        generation: known.generation,
                    },
                    to_samples(&raw.samples),
                ))),
                None => {
                    misses.push(
                        Series::decode(raw.message)
                            .map_err(|source| DecodeError::Protobuf { sequence, source })?,
                    );
                    slots.push(None);
                }
            }
        }
        let decoded = misses.len() as u64;
        let converted = self.admit(
            source,
            BatchPayload {
                series: misses,
                ..scanned.rest
            },
        )?;
        // The first converted series are the misses, in order; histogram series follow.
        let mut converted_series = converted.series.into_iter();
        let mut series: Vec<(SeriesKey, Vec<Sample>)> = slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    let (labels, samples) = converted_series.next().expect("one per miss");
                    (SeriesKey::Labels(labels), samples)
                })
            })
            .collect();
        series.extend(converted_series.map(|(l, s)| (SeriesKey::Labels(l), s)));
        let plain = scanned.series.len();
        match self
            .store
            .append_keyed(series, converted.spans, converted.exemplars)
        {
            Ok(keyed) => {
                if known.renew(keyed.generation) {
                    self.forget_stale(keyed.generation);
                }
                for (raw, id) in scanned.series.iter().zip(&keyed.ids[..plain]) {
                    if let (true, Some(id)) = (raw.plain, id) {
                        known.insert(raw.labels, *id);
                    }
                }
                self.metrics
                    .ingest_known_series
                    .inc_by(plain as u64 - decoded);
                self.metrics.ingest_decoded_series.inc_by(decoded);
                Ok(self.count(keyed.outcome))
            }
            Err(StoreError::StaleSeriesIds { current, .. }) => {
                // A flush renumbered the head since these ids were handed out: nothing was
                // stored; store by labels (and learn the new ids on the next batch).
                if known.renew(current) {
                    self.forget_stale(current);
                }
                self.metrics.ingest_decoded_series.inc_by(plain as u64);
                self.apply(source, decode(bytes)?)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Drops the remembered series of other sources whose ids predate `generation` (they
    /// could never be used again; a source that went away would keep them forever). Sources
    /// busy with a batch are left for their own renewal.
    fn forget_stale(&self, generation: u64) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, known| match known.try_lock() {
                Ok(known) => known.generation >= generation,
                // Busy (`source` itself, locked by the caller, or another batch).
                Err(_) => true,
            });
    }

    /// Validates, converts and passes the cardinality guard; records metadata.
    fn admit(&self, source: &str, payload: BatchPayload) -> Result<ConvertedBatch, ApplyError> {
        validate(&payload, &self.limits)?;
        let mut converted = convert_batch(payload);
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
        for (family, metadata) in std::mem::take(&mut converted.metadata) {
            self.store.set_metadata(family, metadata);
        }
        Ok(converted)
    }

    fn store(
        &self,
        series: Vec<(SeriesKey, Vec<Sample>)>,
        spans: Vec<crate::store::Span>,
        exemplars: Vec<(crate::store::Labels, crate::store::Exemplar)>,
    ) -> Result<Applied, ApplyError> {
        // One WAL record for the whole payload: all or nothing, durable before the ack.
        let outcome = self.store.append_keyed(series, spans, exemplars)?.outcome;
        Ok(self.count(outcome))
    }

    fn count(&self, outcome: crate::store::BatchOutcome) -> Applied {
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
        applied
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{Exemplar, HistogramPoint, HistogramSeries, Label, Sample, Series};

    use super::*;
    use crate::store::tests::{all, bits};

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(job: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: vec![label("__name__", "up"), label("job", job)],
            samples: samples
                .iter()
                .map(|&(timestamp_ms, value)| Sample {
                    timestamp_ms,
                    value,
                })
                .collect(),
            exemplars: vec![],
        }
    }

    /// Everything the store holds, bit-exact.
    fn dump(store: &Store) -> Vec<(String, Vec<(i64, u64)>)> {
        all(store)
            .into_iter()
            .map(|s| (s.labels.to_string(), bits(&s.samples)))
            .collect()
    }

    fn known_len(applier: &Applier, source: &str) -> usize {
        let known = applier.known.lock().unwrap();
        known.get(source).map_or(0, |k| k.lock().unwrap().ids.len())
    }

    fn appliers() -> (Applier, Applier, tempfile::TempDir, tempfile::TempDir) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let new = |dir: &tempfile::TempDir| {
            Applier::new(
                Store::open(dir.path()).unwrap(),
                Limits::default(),
                Arc::new(Metrics::new()),
            )
        };
        (new(&a), new(&b), a, b)
    }

    #[test]
    fn encoded_path_stores_exactly_what_the_decoded_path_stores() {
        let (fast, slow, _a, _b) = appliers();
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut with_exemplar = series("e", &[(10, 1.0)]);
        with_exemplar.exemplars.push(Exemplar {
            labels: vec![label("trace_id", "ab")],
            value: 1.0,
            timestamp_ms: 10,
        });
        let histogram = HistogramSeries {
            labels: vec![label("__name__", "h"), label("job", "a")],
            upper_bounds: vec![0.5],
            points: vec![HistogramPoint {
                timestamp_ms: 10,
                bucket_counts: vec![1],
                count: 2,
                sum: 0.7,
            }],
            exemplars: vec![],
        };
        let payloads = [
            BatchPayload {
                series: vec![series("a", &[(10, 1.0)]), with_exemplar.clone()],
                histograms: vec![histogram.clone()],
                ..Default::default()
            },
            // Known series again (the fast path), a new one, the same series twice at one
            // timestamp (the first wins), a stale marker, a duplicate of a stored sample.
            BatchPayload {
                series: vec![
                    series("a", &[(20, 2.0), (30, stale)]),
                    series("b", &[(20, 5.0)]),
                    series("a", &[(40, 3.0)]),
                    series("a", &[(40, 4.0), (10, 9.0)]),
                    with_exemplar,
                ],
                histograms: vec![histogram],
                ..Default::default()
            },
        ];
        for (i, p) in payloads.iter().enumerate() {
            let bytes = p.encode_to_vec();
            let a = fast.apply_encoded("agent", i as u64 + 1, &bytes).unwrap();
            let b = slow.apply("agent", p.clone()).unwrap();
            assert_eq!(a, b, "payload {i}");
        }
        assert_eq!(dump(&fast.store), dump(&slow.store));
        // a and b are plain and known; e has exemplars (always the full path).
        assert_eq!(known_len(&fast, "agent"), 2);
        // Batch 1: a, e decoded; batch 2: a ×3 known, b and e decoded.
        assert_eq!(fast.metrics.ingest_known_series.get(), 3);
        assert_eq!(fast.metrics.ingest_decoded_series.get(), 4);
        let a = dump(&fast.store)
            .into_iter()
            .find(|(l, _)| l == r#"up{job="a"}"#)
            .unwrap();
        assert_eq!(
            a.1,
            vec![
                (10, 1.0f64.to_bits()),
                (20, 2.0f64.to_bits()),
                (30, stale.to_bits()),
                (40, 3.0f64.to_bits())
            ]
        );
    }

    #[test]
    fn known_series_are_stored_after_a_flush_renumbers_the_head() {
        let (fast, _, _a, _b) = appliers();
        let p = |t: i64| BatchPayload {
            series: vec![series("a", &[(t, 1.0)]), series("b", &[(t, 2.0)])],
            ..Default::default()
        };
        fast.apply_encoded("agent", 1, &p(1_000).encode_to_vec())
            .unwrap();
        // Renumbers: the head is emptied into a block, its generation moves on.
        fast.store.flush(true).unwrap();
        let applied = fast
            .apply_encoded("agent", 2, &p(2_000).encode_to_vec())
            .unwrap();
        assert_eq!(applied.stored, 2);
        let applied = fast
            .apply_encoded("agent", 3, &p(3_000).encode_to_vec())
            .unwrap();
        assert_eq!(applied.stored, 2);
        let all = dump(&fast.store);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().all(|(_, s)| s.len() == 3), "{all:?}");
        // A source that went away is forgotten once the ids it knew are stale.
        let other = BatchPayload {
            series: vec![series("gone", &[(3_000, 1.0)])],
            ..Default::default()
        };
        fast.apply_encoded("gone", 1, &other.encode_to_vec())
            .unwrap();
        assert_eq!(known_len(&fast, "gone"), 1);
        fast.store.flush(true).unwrap();
        fast.apply_encoded("agent", 4, &p(4_000).encode_to_vec())
            .unwrap();
        assert!(!fast.known.lock().unwrap().contains_key("gone"));
    }

    #[test]
    fn invalid_new_series_reject_the_batch_and_store_nothing() {
        let (fast, _, _a, _b) = appliers();
        fast.apply_encoded(
            "agent",
            1,
            &BatchPayload {
                series: vec![series("a", &[(1, 1.0)])],
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .unwrap();
        let mut bad = series("b", &[(2, 1.0)]);
        bad.labels.push(label("0bad", "x"));
        let err = fast
            .apply_encoded(
                "agent",
                2,
                &BatchPayload {
                    series: vec![series("a", &[(2, 2.0)]), bad],
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .unwrap_err();
        assert!(matches!(err, ApplyError::Invalid(_)), "{err}");
        assert_eq!(
            dump(&fast.store)[0].1.len(),
            1,
            "the known series' sample is not stored"
        );
        let err = fast
            .apply_encoded("agent", 3, &[0x0a, 0x05, 0x01])
            .unwrap_err();
        assert!(
            err.to_string().contains("batch 3: malformed payload"),
            "{err}"
        );
    }

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
