//! Metric metadata (type, help, unit per family), persisted in `metadata.json`, and the
//! head's flush watermark, persisted in `flushed.json`. Both files are replaced atomically
//! (write to a temporary file, fsync, rename, fsync the directory).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::RwLock,
};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// Prometheus metric type, as carried in metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

    /// Parses an OpenMetrics / Prometheus type name (`untyped` is `unknown`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" | "gaugehistogram" => Self::Histogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::Stateset,
            "unknown" | "untyped" => Self::Unknown,
            _ => return None,
        })
    }
}

/// Type, help and unit of a metric family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The family's type.
    #[serde(rename = "type")]
    pub metric_type: MetricType,
    /// Help text.
    pub help: String,
    /// Unit (may be empty).
    pub unit: String,
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Metadata by family, mirrored in `metadata.json`.
#[derive(Debug)]
pub struct MetadataStore {
    path: PathBuf,
    map: RwLock<BTreeMap<String, Metadata>>,
}

impl MetadataStore {
    /// Loads `metadata.json` from `dir` (an unreadable file is logged and ignored).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("metadata.json");
        let map = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %path.display(), %error, "corrupt metadata file ignored");
                BTreeMap::new()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "unreadable metadata file ignored");
                BTreeMap::new()
            }
        };
        Self {
            path,
            map: RwLock::new(map),
        }
    }

    /// Sets a family's metadata; rewrites the file only when something changed.
    pub fn set(&self, family: String, metadata: Metadata) -> Result<(), StoreError> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.get(&family) == Some(&metadata) {
            return Ok(());
        }
        map.insert(family, metadata);
        let json = serde_json::to_vec(&*map).expect("metadata serialises");
        write_atomic(&self.path, &json)
    }

    /// Everything.
    pub fn all(&self) -> BTreeMap<String, Metadata> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Serialize, Deserialize)]
struct Flushed {
    flushed_before: i64,
}

/// The head flush watermark: samples before it are in blocks. `i64::MIN` when none.
pub fn read_flushed_before(dir: &Path) -> i64 {
    let path = dir.join("flushed.json");
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Flushed>(&bytes) {
            Ok(f) => f.flushed_before,
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "corrupt flush watermark ignored; the WAL is replayed whole");
                i64::MIN
            }
        },
        Err(_) => i64::MIN,
    }
}

/// Persists the head flush watermark.
pub fn write_flushed_before(dir: &Path, t: i64) -> Result<(), StoreError> {
    let json = serde_json::to_vec(&Flushed { flushed_before: t }).expect("serialises");
    write_atomic(&dir.join("flushed.json"), &json)
}
