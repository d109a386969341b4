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
//! Must not: know the Jaeger API or gRPC.

pub mod model;
mod parquet_io;

use std::{
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
    /// Most spans returned (0: no limit); the newest are kept.
    pub limit: usize,
}

impl SpanQuery {
    /// Whether `span` satisfies the query.
    pub fn matches(&self, span: &Span) -> bool {
        let d = span.duration_nanos();
        self.trace_id.is_none_or(|t| t == span.trace_id)
            && self.service.as_ref().is_none_or(|s| *s == span.service)
            && self.name.as_ref().is_none_or(|n| *n == span.name)
            && self.start_min_ns.is_none_or(|t| span.start_unix_nano >= t)
            && self.start_max_ns.is_none_or(|t| span.start_unix_nano <= t)
            && self.min_duration_ns.is_none_or(|m| d >= m)
            && self.max_duration_ns.is_none_or(|m| d <= m)
    }
}

/// Span storage: head and files.
#[derive(Debug)]
pub struct SpanStore {
    dir: PathBuf,
    head: Mutex<Vec<Span>>,
    files: RwLock<Vec<parquet_io::SpanFile>>,
    next_seq: Mutex<u64>,
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
        Ok(Self {
            dir: dir.to_owned(),
            head: Mutex::new(Vec::new()),
            files: RwLock::new(files),
            next_seq: Mutex::new(next_seq),
        })
    }

    /// Adds spans to the in-memory head (already logged).
    pub fn add_to_head(&self, spans: Vec<Span>) {
        if !spans.is_empty() {
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
        for file in files.drain(..) {
            if file.max_start_ns < horizon {
                tracing::info!(file = %file.path.display(), "span file deleted by retention");
                std::fs::remove_file(&file.path).map_err(|source| StoreError::Io {
                    path: file.path.clone(),
                    source,
                })?;
            } else {
                kept.push(file);
            }
        }
        *files = kept;
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
