//! Immutable Parquet blocks: one directory per block under `blocks/`, holding the samples of
//! a time range for every series that had samples in it.
//!
//! Layout of a block directory `blocks/blk-<seq>/`: `series.parquet`, `samples.parquet`
//! (schemas in [`schema`]) and `meta.json` ([`BlockMeta`]), written last. A block is written
//! under `blocks/.tmp-blk-<seq>/`, every file fsynced, then renamed into place, so a crash
//! leaves either a whole block or a `.tmp-` directory that the next open deletes.
//!
//! Owns: writing ([`write`]) and reading ([`read`]) blocks, the per-block series index.
//! Must not: decide when to flush or compact (the store and [`super::compact`] do).

pub mod read;
pub mod schema;
pub mod values;
pub mod write;

use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use serde::{Deserialize, Serialize};

use super::{
    Labels, Matcher, Sample, SeriesSamples,
    index::{SeriesId, SeriesIndex},
};

/// Version of the block format written by this code.
pub const FORMAT_VERSION: u32 = 1;

/// `meta.json`: what a block holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Unique, increasing block number (also its directory name).
    pub seq: u64,
    /// Oldest sample, ms.
    pub min_t: i64,
    /// Newest sample, ms.
    pub max_t: i64,
    /// Number of series.
    pub series: u64,
    /// Number of samples.
    pub samples: u64,
    /// 0 for a block flushed from the head or imported, 1 + the highest source level for a
    /// compacted one.
    pub level: u32,
    /// Blocks this one was compacted from (empty unless compacted).
    #[serde(default)]
    pub sources: Vec<u64>,
}

/// Why a block could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// File system error.
    #[error("block {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet encoding or decoding failed (a truncated or corrupt file lands here).
    #[error("block {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow data did not have the expected shape.
    #[error("block {path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl BlockError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Self + '_ {
        move |source| Self::Parquet {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, problem: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Where a series' rows are in `samples.parquet`, and their time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRows {
    /// First row.
    pub start: u64,
    /// Number of rows.
    pub count: u32,
    /// Oldest sample.
    pub min_t: i64,
    /// Newest sample.
    pub max_t: i64,
}

/// An open block: metadata, series index and the samples file's Parquet footer.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: SeriesIndex,
    rows: Vec<SeriesRows>,
    samples_meta: ArrowReaderMetadata,
    bytes: u64,
}

impl Block {
    /// Opens the block in `dir`, checking that its files are complete and consistent.
    pub fn open(dir: &Path) -> Result<Self, BlockError> {
        read::open(dir)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its metadata.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the block has samples in `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_t <= maxt && self.meta.max_t >= mint
    }

    fn in_range(&self, id: SeriesId, mint: i64, maxt: i64) -> bool {
        let rows = &self.rows[id as usize];
        rows.min_t <= maxt && rows.max_t >= mint
    }

    /// Labels of the series matching any selector (all when none) with samples in the
    /// series' time range overlapping `[mint, maxt]`.
    pub fn matching_labels(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = &Labels> {
        let ids = if self.overlaps(mint, maxt) {
            self.index.matching_any(selectors)
        } else {
            Vec::new()
        };
        ids.into_iter()
            .filter(move |&id| self.in_range(id, mint, maxt))
            .map(|id| self.index.labels(id))
    }

    /// Series matching all `matchers` with their samples in `[mint, maxt]`.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, BlockError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let ids: Vec<SeriesId> = self
            .index
            .matching(matchers)
            .into_iter()
            .filter(|&id| self.in_range(id, mint, maxt))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        read::read_series(self, &ids, mint, maxt, |id, samples| {
            if !samples.is_empty() {
                out.push(SeriesSamples {
                    labels: self.index.labels(id).clone(),
                    samples: samples.to_vec(),
                });
            }
        })?;
        Ok(out)
    }

    /// Every series with all its samples, in series order (for compaction).
    pub fn read_all(&self, mut f: impl FnMut(&Labels, &[Sample])) -> Result<(), BlockError> {
        let ids: Vec<SeriesId> = (0..self.index.len() as SeriesId).collect();
        read::read_series(self, &ids, i64::MIN, i64::MAX, |id, samples| {
            f(self.index.labels(id), samples)
        })
    }

    /// Approximate heap bytes held by the block's index.
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes() + self.rows.len() * size_of::<SeriesRows>()
    }
}

/// Directory name of block `seq`.
pub fn dir_name(seq: u64) -> String {
    format!("blk-{seq:08}")
}

/// The temporary directory name a block `seq` is written under.
pub fn tmp_dir_name(seq: u64) -> String {
    format!(".tmp-{}", dir_name(seq))
}
