//! Storage of samples: what is kept, how it is found.
//!
//! Owns: series identity ([`Labels`]), the in-memory head of recent samples with its postings
//! index ([`head`]), selection by label matchers ([`matcher`]), metric metadata, and the
//! on-disk data directory ([`dir`]). Must not: know about PromQL, HTTP or gRPC; callers hand it
//! plain labels, samples and matchers.
//!
//! Invariant: samples of one series are kept sorted by timestamp with at most one sample per
//! timestamp (the first write wins, so a replayed batch never double counts).

pub mod dir;
pub mod head;
pub mod labels;
pub mod matcher;

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

pub use self::{
    dir::{DataDir, DirError},
    head::{AppendOutcome, Head, SeriesSamples},
    labels::{Label, Labels},
    matcher::{MatchOp, Matcher},
};

/// One float sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value; bit-exact (stale markers are a NaN payload).
    pub v: f64,
}

/// Prometheus metric type, as carried in metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Classic histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
    /// Summary.
    Summary,
    /// Info metric.
    Info,
    /// State set.
    Stateset,
    /// Unknown type.
    Unknown,
}

impl MetricType {
    /// The name Prometheus' `/api/v1/metadata` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Info => "info",
            Self::Stateset => "stateset",
            Self::Unknown => "unknown",
        }
    }
}

/// Type, help and unit of a metric family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The family's type.
    pub metric_type: MetricType,
    /// Help text.
    pub help: String,
    /// Unit (may be empty).
    pub unit: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is unusable.
    #[error(transparent)]
    Dir(#[from] DirError),
}

/// The store shared by ingest and queries.
#[derive(Debug)]
pub struct Store {
    head: RwLock<Head>,
    metadata: RwLock<BTreeMap<String, Metadata>>,
    dir: DataDir,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, which it locks for its lifetime.
    pub fn open(dir: &std::path::Path) -> Result<Arc<Self>, StoreError> {
        let dir = DataDir::open(dir)?;
        Ok(Arc::new(Self {
            head: RwLock::new(Head::default()),
            metadata: RwLock::new(BTreeMap::new()),
            dir,
        }))
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Appends samples for one series. Samples at a timestamp the series already has are
    /// ignored (first write wins) and counted as duplicates.
    pub fn append(&self, labels: Labels, samples: &[Sample]) -> Result<AppendOutcome, StoreError> {
        Ok(self.head_write().append(labels, samples))
    }

    /// Records a metric family's metadata (last write wins).
    pub fn set_metadata(&self, family: String, metadata: Metadata) {
        self.metadata
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(family, metadata);
    }

    /// All metadata, by family name.
    pub fn metadata(&self) -> BTreeMap<String, Metadata> {
        self.metadata
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Series matching all `matchers`, with their samples in `[mint, maxt]` (milliseconds).
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, StoreError> {
        Ok(self.head_read().select(matchers, mint, maxt))
    }

    /// Label sets of the series matching any of `selectors` (each a conjunction of
    /// matchers) with a sample in `[mint, maxt]`; every series when `selectors` is empty.
    pub fn series(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StoreError> {
        Ok(self.head_read().series(selectors, mint, maxt))
    }

    /// Sorted label names of the series matching any of `selectors`.
    pub fn label_names(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.head_read().label_names(selectors, mint, maxt))
    }

    /// Sorted values of label `name` over the series matching any of `selectors`.
    pub fn label_values(
        &self,
        name: &str,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.head_read().label_values(name, selectors, mint, maxt))
    }

    /// Number of series and samples held.
    pub fn stats(&self) -> head::Stats {
        self.head_read().stats()
    }

    fn head_read(&self) -> std::sync::RwLockReadGuard<'_, Head> {
        // A panic while holding the lock cannot leave the head half-updated in a way readers
        // could misinterpret (appends are per-sample), so poisoning is ignored.
        self.head
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn head_write(&self) -> std::sync::RwLockWriteGuard<'_, Head> {
        self.head
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
