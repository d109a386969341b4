//! `sonde-aggregator import`: backfills OpenMetrics text files (what `promtool tsdb
//! create-blocks-from openmetrics` takes) into a data directory as Parquet blocks, then
//! compacts them with any blocks already there.
//!
//! The aggregator must not be running on the directory (the store's lock enforces it).
//! Must not: go through the WAL; imported data lands directly in blocks.

pub mod openmetrics;

use std::{
    io::BufRead,
    path::{Path, PathBuf},
    time::Instant,
};

use self::openmetrics::{Line, ParseError, Parser};
use crate::store::{Sample, Store, StoreError, StoreOptions, head::MemSeries};

/// Why an import failed. Nothing is written unless every file parses.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid OpenMetrics.
    #[error("{}:{}: {}", path.display(), source.line, source.message)]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error with its line.
        #[source]
        source: ParseError,
    },
    /// Writing the blocks failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImportSummary {
    /// Lines read.
    pub lines: u64,
    /// Samples parsed.
    pub samples: u64,
    /// Samples dropped as duplicates (same series and timestamp; the first wins).
    pub duplicates: u64,
    /// Distinct series.
    pub series: u64,
    /// Blocks after import and compaction.
    pub blocks: usize,
    /// Seconds spent parsing.
    pub parse_seconds: f64,
    /// Seconds spent writing blocks and compacting.
    pub write_seconds: f64,
}

fn options_window(store: &Store) -> i64 {
    store.options().compacted_block_duration.as_millis().max(1) as i64
}

/// Parses `files` (all of them, before writing anything) and writes their samples as
/// blocks into the store at `data_dir`.
pub fn import(
    data_dir: &Path,
    files: &[PathBuf],
    options: StoreOptions,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let mut parser = Parser::new();
    // Compressed per-series buffers (~2 B/sample instead of 16), first write wins.
    let mut samples: Vec<MemSeries> = Vec::new();
    let mut summary = ImportSummary::default();
    for path in files {
        let read_err = |source| ImportError::Read {
            path: path.clone(),
            source,
        };
        let parse_err = |source| ImportError::Parse {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(256);
        parser.start_input();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(read_err)?;
            if n == 0 {
                break;
            }
            summary.lines += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if let Line::Sample { id, t, v } = parser.line(text).map_err(parse_err)? {
                if samples.len() <= id as usize {
                    samples.resize_with(id as usize + 1, MemSeries::default);
                }
                if !samples[id as usize].push(Sample { t, v }) {
                    summary.duplicates += 1;
                }
                summary.samples += 1;
            }
        }
        parser.finish().map_err(parse_err)?;
    }
    summary.parse_seconds = started.elapsed().as_secs_f64();
    let written = Instant::now();
    let store = Store::open_offline(data_dir, options)?;
    summary.series = parser.series.len() as u64;
    // One block per compaction window (what compaction would produce), decoded from the
    // compressed buffers one window at a time to bound memory.
    let window = options_window(&store);
    let min_t = samples.iter().filter_map(MemSeries::min_t).min();
    let max_t = samples.iter().filter_map(MemSeries::max_t).max();
    if let (Some(min_t), Some(max_t)) = (min_t, max_t) {
        let mut start = min_t.div_euclid(window) * window;
        while start <= max_t {
            let end = start.saturating_add(window - 1);
            let part: Vec<_> = parser
                .series
                .iter()
                .zip(&samples)
                .filter_map(|(labels, buffer)| {
                    let s = buffer.range(start, end);
                    (!s.is_empty()).then(|| (labels.clone(), s))
                })
                .collect();
            store.write_block(part)?;
            start = start.saturating_add(window);
        }
    }
    // Merge with blocks that were already there.
    store.compact(true)?;
    for (family, metadata) in parser.metadata {
        store.set_metadata(family, metadata);
    }
    summary.blocks = store.disk_stats().blocks;
    summary.write_seconds = written.elapsed().as_secs_f64();
    Ok(summary)
}
