//! Spans: logged in the WAL and held in an in-memory head like samples, flushed with every
//! head flush to an immutable Parquet file `spans/spans-<seq>.parquet`, found by trace id
//! (bloom filter per row group), service, name, start time and duration.
//!
//! Schema (rows sorted by `service`, `start_time`): `trace_id` FixedSizeBinary(16) with a
//! bloom filter, `span_id` FixedSizeBinary(8), `parent_span_id` FixedSizeBinary(8) nullable,
//! `service` and `name` Utf8 (dictionary-encoded), `kind` Int8 (OpenTelemetry numbers),
//! `start_time` Timestamp(ns, UTC), `duration_ns` Int64, `status_code` Int8,
//! `status_message` Utf8, `attributes` and `resource` Utf8 (JSON objects; bytes values as
//! `{"bytes_hex": "…"}`); zstd. The file's key/value metadata holds `sonde.min_start_ns`
//! and `sonde.max_start_ns` so time-range queries skip whole files.
//!
//! A catalog of services and their operations (name, kind) is kept in memory, built on open
//! from the files' `service`/`name`/`kind` columns and kept current by appends and retention.
//!
//! Must not: know the Jaeger API or gRPC.

pub mod model;
mod parquet_io;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Mutex, RwLock},
};

pub use self::model::{AttrValue, Span};
pub(crate) use self::model::{decode_span, encode_span};
use super::StoreError;

/// What to look for. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanQuery {
    /// Exactly this trace.
    pub trace_id: Option<[u8; 16]>,
    /// Any of these traces (empty: any trace).
    pub trace_ids: Vec<[u8; 16]>,
    /// This service.
    pub service: Option<String>,
    /// This operation name.
    pub name: Option<String>,
    /// Start time at or after (ns since the epoch).
    pub start_min_ns: Option<i64>,
    /// Start time at or before (ns since the epoch).
    pub start_max_ns: Option<i64>,
    /// Duration at least (ns).
    pub min_duration_ns: Option<i64>,
    /// Duration at most (ns).
    pub max_duration_ns: Option<i64>,
    /// This span kind (OpenTelemetry number).
    pub kind: Option<u8>,
    /// This status code (OpenTelemetry number).
    pub status_code: Option<u8>,
    /// Attributes that must all be present, on the span or its resource, with these values
    /// in their text form (`true`, `200`, `0.5`, bytes as lowercase hex).
    pub tags: Vec<(String, String)>,
    /// Most spans returned (0: no limit); the newest are kept.
    pub limit: usize,
}

impl SpanQuery {
    /// Whether `span` satisfies the query.
    pub fn matches(&self, span: &Span) -> bool {
        let d = span.duration_nanos();
        self.trace_id.is_none_or(|t| t == span.trace_id)
            && (self.trace_ids.is_empty() || self.trace_ids.contains(&span.trace_id))
            && self.kind.is_none_or(|k| k == span.kind)
            && self.status_code.is_none_or(|c| c == span.status_code)
            && self.service.as_ref().is_none_or(|s| *s == span.service)
            && self.name.as_ref().is_none_or(|n| *n == span.name)
            && self.start_min_ns.is_none_or(|t| span.start_unix_nano >= t)
            && self.start_max_ns.is_none_or(|t| span.start_unix_nano <= t)
            && self.min_duration_ns.is_none_or(|m| d >= m)
            && self.max_duration_ns.is_none_or(|m| d <= m)
            && self.tags.iter().all(|(k, v)| {
                span.attributes
                    .iter()
                    .chain(&span.resource)
                    .any(|(key, value)| key == k && value.text_matches(v))
            })
    }

    /// The trace ids to look up by bloom filter, if the query names any.
    pub(crate) fn wanted_traces(&self) -> Vec<[u8; 16]> {
        let mut out = self.trace_ids.clone();
        out.extend(self.trace_id);
        out
    }
}

/// Services and, per service, its operations as (name, kind).
pub type Catalog = BTreeMap<String, BTreeSet<(String, u8)>>;

/// Span storage: head and files.
#[derive(Debug)]
pub struct SpanStore {
    dir: PathBuf,
    head: Mutex<Vec<Span>>,
    files: RwLock<Vec<parquet_io::SpanFile>>,
    next_seq: Mutex<u64>,
    catalog: RwLock<Catalog>,
}

impl SpanStore {
    /// Opens the span files in `dir` (created if absent); unfinished ones are removed and
    /// unreadable ones moved to `dir/corrupt/`, with a log line each.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut files = Vec::new();
        let mut next_seq = 1;
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                tracing::warn!(file = %path.display(), "removing an unfinished span file");
                std::fs::remove_file(&path).map_err(io)?;
                continue;
            }
            let Some(seq) = name
                .strip_prefix("spans-")
                .and_then(|n| n.strip_suffix(".parquet"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            next_seq = next_seq.max(seq + 1);
            match parquet_io::SpanFile::open(&path) {
                Ok(file) => files.push(file),
                Err(error) => {
                    let corrupt = dir.join("corrupt");
                    std::fs::create_dir_all(&corrupt).map_err(io)?;
                    tracing::error!(file = %path.display(), %error, "unreadable span file skipped and moved aside");
                    std::fs::rename(&path, corrupt.join(&name)).map_err(io)?;
                }
            }
        }
        let store = Self {
            dir: dir.to_owned(),
            head: Mutex::new(Vec::new()),
            files: RwLock::new(files),
            next_seq: Mutex::new(next_seq),
            catalog: RwLock::new(Catalog::new()),
        };
        store.rebuild_catalog()?;
        Ok(store)
    }

    /// Recomputes the catalog from the files and the head.
    fn rebuild_catalog(&self) -> Result<(), StoreError> {
        let mut catalog = Catalog::new();
        for file in self.files.read().unwrap_or_else(|p| p.into_inner()).iter() {
            file.operations(&mut catalog)?;
        }
        for span in self.head.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            catalog
                .entry(span.service.clone())
                .or_default()
                .insert((span.name.clone(), span.kind));
        }
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = catalog;
        Ok(())
    }

    /// Services with spans, and their operations.
    pub fn catalog(&self) -> Catalog {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds spans to the in-memory head (already logged).
    pub fn add_to_head(&self, spans: Vec<Span>) {
        if !spans.is_empty() {
            {
                let mut catalog = self.catalog.write().unwrap_or_else(|p| p.into_inner());
                for span in &spans {
                    let ops = match catalog.get_mut(&span.service) {
                        Some(ops) => ops,
                        None => catalog.entry(span.service.clone()).or_default(),
                    };
                    if !ops.iter().any(|(n, k)| *n == span.name && *k == span.kind) {
                        ops.insert((span.name.clone(), span.kind));
                    }
                }
            }
            self.head
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(spans);
        }
    }

    /// Spans in the head.
    pub fn head_len(&self) -> usize {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Removes and returns the head's spans (to write them to a file).
    pub fn take_head(&self) -> Vec<Span> {
        std::mem::take(&mut *self.head.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes `spans` to a new file; on failure they go back to the head.
    pub fn write_file(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        let seq = {
            let mut next = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next - 1
        };
        match parquet_io::write(&self.dir, seq, &spans) {
            Ok(file) => {
                self.files
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(file);
                Ok(())
            }
            Err(error) => {
                self.add_to_head(spans);
                Err(error.into())
            }
        }
    }

    /// Calls `f` with every span matching `query` (head first, then files; unordered).
    pub fn for_each(&self, query: &SpanQuery, mut f: impl FnMut(Span)) -> Result<(), StoreError> {
        for span in self
            .head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| query.matches(s))
        {
            f(span.clone());
        }
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        for file in files.iter() {
            file.for_each(query, &mut f)?;
        }
        Ok(())
    }

    /// The traces with at least one span matching `query`, the most recently started
    /// first (by their newest matching span), at most `limit` (0: all). Memory is bounded by
    /// `limit` traces, not by the matching spans.
    pub fn find_trace_ids(
        &self,
        query: &SpanQuery,
        limit: usize,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let mut newest: HashMap<[u8; 16], i64> = HashMap::new();
        // Start of the oldest trace kept once `limit` are held: anything older cannot enter.
        let mut floor = i64::MIN;
        self.for_each(query, |span| {
            if limit > 0 && newest.len() >= limit && span.start_unix_nano <= floor {
                return;
            }
            let t = newest.entry(span.trace_id).or_insert(span.start_unix_nano);
            *t = (*t).max(span.start_unix_nano);
            if limit > 0 && newest.len() > limit {
                // Evict the trace with the oldest newest span (ties: highest id).
                let (&victim, _) = newest
                    .iter()
                    .min_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .expect("non-empty");
                newest.remove(&victim);
                floor = newest.values().copied().min().unwrap_or(i64::MIN);
            }
        })?;
        let mut out: Vec<([u8; 16], i64)> = newest.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out.into_iter().map(|(id, _)| id).collect())
    }

    /// Spans matching `query`, newest first, at most `query.limit`.
    pub fn find(&self, query: &SpanQuery) -> Result<Vec<Span>, StoreError> {
        let mut out: Vec<Span> = self
            .head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| query.matches(s))
            .cloned()
            .collect();
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        for file in files.iter() {
            file.find(query, &mut out)?;
        }
        out.sort_by(|a, b| {
            b.start_unix_nano
                .cmp(&a.start_unix_nano)
                .then(a.span_id.cmp(&b.span_id))
        });
        out.dedup_by(|a, b| a.trace_id == b.trace_id && a.span_id == b.span_id);
        if query.limit > 0 {
            out.truncate(query.limit);
        }
        Ok(out)
    }

    /// Deletes files whose every span started before `t_ms`.
    pub fn delete_before(&self, t_ms: i64) -> Result<(), StoreError> {
        let horizon = t_ms.saturating_mul(1_000_000);
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        let mut kept = Vec::new();
        let mut removed = false;
        for file in files.drain(..) {
            if file.max_start_ns < horizon {
                tracing::info!(file = %file.path.display(), "span file deleted by retention");
                std::fs::remove_file(&file.path).map_err(|source| StoreError::Io {
                    path: file.path.clone(),
                    source,
                })?;
                removed = true;
            } else {
                kept.push(file);
            }
        }
        *files = kept;
        drop(files);
        if removed {
            self.rebuild_catalog()?;
        }
        Ok(())
    }

    /// Bytes of span files.
    pub fn bytes(&self) -> u64 {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|f| f.bytes)
            .sum()
    }
}
