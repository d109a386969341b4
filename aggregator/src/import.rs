//! `sonde-aggregator import`: backfills OpenMetrics text files (what `promtool tsdb
//! create-blocks-from openmetrics` takes) into a data directory as Parquet blocks, then
//! compacts them.
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
use crate::store::{Sample, Store, StoreError, StoreOptions};

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

/// Parses `files` (all of them, before writing anything) and writes their samples as
/// blocks into the store at `data_dir`.
pub fn import(
    data_dir: &Path,
    files: &[PathBuf],
    options: StoreOptions,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let mut parser = Parser::new();
    let mut samples: Vec<Vec<Sample>> = Vec::new();
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
                    samples.resize_with(id as usize + 1, Vec::new);
                }
                samples[id as usize].push(Sample { t, v });
                summary.samples += 1;
            }
        }
        parser.finish().map_err(parse_err)?;
    }
    summary.parse_seconds = started.elapsed().as_secs_f64();
    let written = Instant::now();
    let store = Store::open_offline(data_dir, options)?;
    let mut series = Vec::with_capacity(samples.len());
    for (labels, mut s) in parser.series.into_iter().zip(samples) {
        // Stable: the first of equal timestamps stays first and survives the dedup.
        if !s.is_sorted_by_key(|x| x.t) {
            s.sort_by_key(|x| x.t);
        }
        let before = s.len();
        s.dedup_by_key(|x| x.t);
        summary.duplicates += (before - s.len()) as u64;
        series.push((labels, s));
    }
    summary.series = series.len() as u64;
    store.write_blocks(series)?;
    store.compact(true)?;
    for (family, metadata) in parser.metadata {
        store.set_metadata(family, metadata);
    }
    summary.blocks = store.disk_stats().blocks;
    summary.write_seconds = written.elapsed().as_secs_f64();
    Ok(summary)
}
