//! Immutable Parquet blocks: one directory per block under `blocks/`, holding the samples of
//! a time range for every series that had samples in it.
//!
//! Layout of a block directory `blocks/blk-<seq>/`: `series.parquet`, `samples.parquet`,
//! `chunks.parquet` (schemas in [`schema`]) and `meta.json` ([`BlockMeta`]), written last.
//! Format 1 blocks (no `chunks.parquet`, samples by series) are still read. A block is written
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
pub const FORMAT_VERSION: u32 = 2;

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

/// A series' time range in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRows {
    /// Oldest sample.
    pub min_t: i64,
    /// Newest sample.
    pub max_t: i64,
}

/// The rows of one time slice: series `i`'s rows are
/// `row_offset + starts[i] .. row_offset + starts[i + 1]` (format 1: one slice, the block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// First time of the slice (inclusive), ms.
    pub min_t: i64,
    /// Last time of the slice (inclusive), ms.
    pub max_t: i64,
    /// First row of the slice.
    pub row_offset: u64,
    /// Per series (and one past the last), its first row relative to `row_offset`.
    pub starts: Vec<u32>,
}

impl Slice {
    /// Rows of series `id`, absolute.
    pub fn rows(&self, id: SeriesId) -> std::ops::Range<u64> {
        let i = id as usize;
        self.row_offset + u64::from(self.starts[i])..self.row_offset + u64::from(self.starts[i + 1])
    }
}

/// An open block: metadata, series index and the samples file's Parquet footer.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: SeriesIndex,
    rows: Vec<SeriesRows>,
    slices: Vec<Slice>,
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
                    samples,
                });
            }
        })?;
        Ok(out)
    }

    /// Every series with all its samples, in series order (for compaction).
    pub fn read_all(&self, mut f: impl FnMut(&Labels, &[Sample])) -> Result<(), BlockError> {
        let ids: Vec<SeriesId> = (0..self.index.len() as SeriesId).collect();
        read::read_series(self, &ids, i64::MIN, i64::MAX, |id, samples| {
            f(self.index.labels(id), &samples)
        })
    }

    /// Approximate heap bytes held by the block's index.
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + self.rows.len() * size_of::<SeriesRows>()
            + self
                .slices
                .iter()
                .map(|s| size_of::<Slice>() + s.starts.len() * size_of::<u32>())
                .sum::<usize>()
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

#[cfg(test)]
mod tests {
    use std::{fs::File, sync::Arc};

    use arrow_array::{
        ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray, StructArray,
        TimestampMillisecondArray, UInt32Array, UInt64Array,
    };
    use parquet::arrow::ArrowWriter;

    use super::*;

    const H: i64 = 3_600_000;
    const STALE: u64 = 0x7ff0_0000_0000_0002;

    fn labels(job: &str) -> Labels {
        Labels::from_pairs([("__name__", "m"), ("job", job)])
    }

    fn every(from: i64, to: i64, step: i64) -> Vec<Sample> {
        (from..=to)
            .step_by(step as usize)
            .map(|t| Sample {
                t,
                v: t as f64 / 1000.0,
            })
            .collect()
    }

    fn data() -> Vec<(Labels, Vec<Sample>)> {
        let mut c = every(0, 2 * H - 1, 600_000);
        c.extend(every(4 * H, 6 * H - 1, 600_000));
        vec![
            // Every slice of [0, 6h], and the first instant of the fourth.
            (labels("a"), every(0, 6 * H, 600_000)),
            // The second slice only.
            (labels("b"), every(2 * H + 60_000, 4 * H - 60_000, 60_000)),
            // The first and third, none in the second.
            (labels("c"), c),
            // Floats that are not short decimals (the `v_float` column), a stale marker, and
            // samples a millisecond either side of a slice boundary.
            (
                labels("d"),
                vec![
                    Sample {
                        t: H,
                        v: std::f64::consts::PI,
                    },
                    Sample {
                        t: 2 * H - 1,
                        v: f64::from_bits(STALE),
                    },
                    Sample {
                        t: 2 * H,
                        v: -1.0 / 3.0,
                    },
                    Sample {
                        t: 2 * H + 1,
                        v: 1e300,
                    },
                ],
            ),
        ]
    }

    fn select_all(block: &Block, mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
        let m = Matcher::regex("__name__", ".+", false).unwrap();
        let mut got: Vec<(Labels, Vec<Sample>)> = block
            .select(&[m], mint, maxt)
            .unwrap()
            .into_iter()
            .map(|s| (s.labels, s.samples))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    }

    fn expected(mint: i64, maxt: i64) -> Vec<(Labels, Vec<Sample>)> {
        data()
            .into_iter()
            .map(|(l, s)| {
                let s: Vec<Sample> = s
                    .into_iter()
                    .filter(|s| (mint..=maxt).contains(&s.t))
                    .collect();
                (l, s)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// Samples as (time, value bits): stale markers are NaNs, equal only bit for bit.
    fn bits(series: Vec<(Labels, Vec<Sample>)>) -> Vec<(Labels, Vec<(i64, u64)>)> {
        series
            .into_iter()
            .map(|(l, s)| (l, s.iter().map(|s| (s.t, s.v.to_bits())).collect()))
            .collect()
    }

    fn check_ranges(block: &Block) {
        for (mint, maxt) in [
            (i64::MIN, i64::MAX),
            (6 * H - 5 * 60_000, 6 * H),
            (2 * H - 5 * 60_000, 2 * H + 5 * 60_000),
            (3 * H, 3 * H + 30 * 60_000),
            (H, 5 * H),
            (7 * H, 8 * H),
            (2 * H - 1, 2 * H),
            (2 * H, 2 * H),
        ]
        .into_iter()
        // Instant-query windows of five minutes swept over every slice and past the end.
        .chain((0..70).map(|i| (i * 7 * 60_000 - 5 * 60_000, i * 7 * 60_000)))
        {
            assert_eq!(
                bits(select_all(block, mint, maxt)),
                bits(expected(mint, maxt)),
                "[{mint}, {maxt}]"
            );
        }
    }

    #[test]
    fn rows_are_sliced_by_time_and_any_range_reads_back_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, meta) = write::write_block(tmp.path(), 1, 0, Vec::new(), data())
            .unwrap()
            .unwrap();
        assert_eq!(meta.version, FORMAT_VERSION);
        let block = Block::open(&dir).unwrap();
        assert_eq!(block.slices.len(), 4);
        // A few minutes at the end touch only the last slices' rows.
        let last = &block.slices[3];
        assert_eq!(last.rows(0).end - last.rows(0).start, 1, "a at 6h");
        assert!(last.rows(1).is_empty() && last.rows(2).is_empty());
        assert!(
            block.slices[1].rows(2).is_empty(),
            "c has no rows in 2h..4h"
        );
        check_ranges(&block);
        let mut all = Vec::new();
        block
            .read_all(|l, s| all.push((l.clone(), s.to_vec())))
            .unwrap();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(bits(all), bits(expected(i64::MIN, i64::MAX)));
    }

    /// A block as format 1 wrote it: rows by series, ranges in `series.parquet`.
    fn write_v1(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let mut series = data();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let rows: Vec<(u32, &Sample)> = series
            .iter()
            .enumerate()
            .flat_map(|(id, (_, s))| s.iter().map(move |s| (id as u32, s)))
            .collect();
        let samples = RecordBatch::try_new(
            schema::samples_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1.t))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(vec![None::<i64>; rows.len()])),
                Arc::new(Int8Array::from(vec![0i8; rows.len()])),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1.v))),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(
            File::create(dir.join("samples.parquet")).unwrap(),
            samples.schema(),
            None,
        )
        .unwrap();
        w.write(&samples).unwrap();
        w.close().unwrap();
        let names: Vec<Arc<str>> = vec!["__name__".into(), "job".into()];
        let label_columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(series.iter().map(|_| "m"))),
            Arc::new(StringArray::from_iter(
                series.iter().map(|(l, _)| l.get("job")),
            )),
        ];
        let mut start = 0u64;
        let mut starts = Vec::new();
        for (_, s) in &series {
            starts.push(start);
            start += s.len() as u64;
        }
        let time = |f: fn(&[Sample]) -> i64| {
            Arc::new(
                TimestampMillisecondArray::from_iter_values(series.iter().map(|(_, s)| f(s)))
                    .with_timezone("UTC"),
            ) as ArrayRef
        };
        let fields = vec![
            arrow_schema::Field::new("series_id", arrow_schema::DataType::UInt32, false),
            arrow_schema::Field::new(
                "labels",
                arrow_schema::DataType::Struct(schema::label_fields(&names)),
                false,
            ),
            arrow_schema::Field::new("row_start", arrow_schema::DataType::UInt64, false),
            arrow_schema::Field::new("row_count", arrow_schema::DataType::UInt32, false),
            arrow_schema::Field::new("min_t", schema::time_type(), false),
            arrow_schema::Field::new("max_t", schema::time_type(), false),
        ];
        let batch = RecordBatch::try_new(
            Arc::new(arrow_schema::Schema::new(fields)),
            vec![
                Arc::new(UInt32Array::from_iter_values(0..series.len() as u32)),
                Arc::new(StructArray::new(
                    schema::label_fields(&names),
                    label_columns,
                    None,
                )),
                Arc::new(UInt64Array::from(starts)),
                Arc::new(UInt32Array::from_iter_values(
                    series.iter().map(|(_, s)| s.len() as u32),
                )),
                time(|s| s[0].t),
                time(|s| s[s.len() - 1].t),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(
            File::create(dir.join("series.parquet")).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let meta = BlockMeta {
            version: 1,
            seq: 1,
            min_t: 0,
            max_t: 6 * H,
            series: series.len() as u64,
            samples: rows.len() as u64,
            level: 0,
            sources: Vec::new(),
        };
        std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    }

    #[test]
    fn format_1_blocks_are_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(dir_name(1));
        write_v1(&dir);
        let block = Block::open(&dir).unwrap();
        assert_eq!(block.slices.len(), 1);
        check_ranges(&block);
    }
}
