//! Writes one block from series and their samples: `samples.parquet` (by time slice, series,
//! time), `chunks.parquet`, `series.parquet`, `meta.json`, each fsynced, into a temporary
//! directory that is renamed into place.

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_array::{
    ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use parquet::arrow::ArrowWriter;

use super::{BlockError, BlockMeta, FORMAT_VERSION, dir_name, schema, tmp_dir_name, values};
use crate::store::{Labels, Sample};

/// Rows buffered before they are handed to the Parquet writer.
const BATCH_ROWS: usize = 64 * 1024;

/// Column buffers for `samples.parquet`.
#[derive(Default)]
struct SampleColumns {
    series_id: Vec<u32>,
    t: Vec<i64>,
    v_int: Vec<Option<i64>>,
    v_scale: Vec<i8>,
    v_float: Vec<Option<f64>>,
}

impl SampleColumns {
    fn len(&self) -> usize {
        self.t.len()
    }

    fn push_series(&mut self, id: u32, samples: &[Sample]) {
        let scale = values::choose_scale(samples.iter().map(|s| s.v));
        for s in samples {
            self.series_id.push(id);
            self.t.push(s.t);
            let int = scale.and_then(|k| values::encode_at(s.v, k));
            self.v_int.push(int);
            self.v_scale.push(scale.unwrap_or(0));
            self.v_float
                .push(if int.is_some() { None } else { Some(s.v) });
        }
    }

    fn take_batch(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.series_id))),
            Arc::new(
                TimestampMillisecondArray::from(std::mem::take(&mut self.t)).with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(std::mem::take(&mut self.v_int))),
            Arc::new(Int8Array::from(std::mem::take(&mut self.v_scale))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.v_float))),
        ];
        RecordBatch::try_new(schema::samples_schema(), columns)
            .expect("columns match the samples schema")
    }
}

/// Column buffers for `chunks.parquet`.
#[derive(Default)]
struct ChunkColumns {
    slice_start: Vec<i64>,
    series_id: Vec<u32>,
    row_start: Vec<u64>,
    row_count: Vec<u32>,
}

impl ChunkColumns {
    fn push(&mut self, slice_start: i64, id: u32, row_start: u64, row_count: u32) {
        self.slice_start.push(slice_start);
        self.series_id.push(id);
        self.row_start.push(row_start);
        self.row_count.push(row_count);
    }

    fn into_batch(self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(self.slice_start).with_timezone("UTC")),
            Arc::new(UInt32Array::from(self.series_id)),
            Arc::new(UInt64Array::from(self.row_start)),
            Arc::new(UInt32Array::from(self.row_count)),
        ];
        RecordBatch::try_new(schema::chunks_schema(), columns)
            .expect("columns match the chunks schema")
    }
}

fn sync_dir(path: &Path) -> Result<(), BlockError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(BlockError::io(path))
}

/// Writes block `seq` into `blocks_dir` from `series` (any order; samples sorted by time,
/// one per timestamp; series without samples are skipped). Returns its directory and
/// metadata, or `None` when there was nothing to write. `sources` lists the blocks a
/// compaction merged (deleted on open if still present).
pub fn write_block(
    blocks_dir: &Path,
    seq: u64,
    level: u32,
    sources: Vec<u64>,
    mut series: Vec<(Labels, Vec<Sample>)>,
) -> Result<Option<(PathBuf, BlockMeta)>, BlockError> {
    series.retain(|(_, s)| !s.is_empty());
    if series.is_empty() {
        return Ok(None);
    }
    series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let tmp = blocks_dir.join(tmp_dir_name(seq));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(BlockError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(BlockError::io(&tmp))?;

    // samples.parquet
    let samples_path = tmp.join("samples.parquet");
    let file = File::create(&samples_path).map_err(BlockError::io(&samples_path))?;
    let mut writer = ArrowWriter::try_new(
        file,
        schema::samples_schema(),
        Some(schema::samples_properties()),
    )
    .map_err(BlockError::parquet(&samples_path))?;
    // Rows by time slice, then series, then time: each series' samples are split where
    // they cross a slice boundary.
    let slice_of = |t: i64| t.div_euclid(schema::SLICE_MS);
    let mut cursors = vec![0usize; series.len()];
    let mut slices: Vec<i64> = series
        .iter()
        .flat_map(|(_, samples)| {
            [
                slice_of(samples[0].t),
                slice_of(samples[samples.len() - 1].t),
            ]
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Slices between a series' first and last are possible too.
    if let (Some(&first), Some(&last)) = (slices.first(), slices.last()) {
        slices = (first..=last).collect();
    }
    let mut columns = SampleColumns::default();
    let mut chunks = ChunkColumns::default();
    let (mut min_t, mut max_t, mut total) = (i64::MAX, i64::MIN, 0u64);
    let mut bounds = Vec::with_capacity(series.len());
    for (_, samples) in &series {
        let (first, last) = (samples[0].t, samples[samples.len() - 1].t);
        bounds.push((first, last));
        min_t = min_t.min(first);
        max_t = max_t.max(last);
    }
    for slice in slices {
        let end = (slice + 1).saturating_mul(schema::SLICE_MS);
        for (id, (_, samples)) in series.iter().enumerate() {
            let from = cursors[id];
            let to = from + samples[from..].partition_point(|s| s.t < end);
            if to == from {
                continue;
            }
            cursors[id] = to;
            chunks.push(
                slice * schema::SLICE_MS,
                id as u32,
                total,
                (to - from) as u32,
            );
            total += (to - from) as u64;
            columns.push_series(id as u32, &samples[from..to]);
            if columns.len() >= BATCH_ROWS {
                writer
                    .write(&columns.take_batch())
                    .map_err(BlockError::parquet(&samples_path))?;
            }
        }
    }
    if columns.len() > 0 {
        writer
            .write(&columns.take_batch())
            .map_err(BlockError::parquet(&samples_path))?;
    }
    let file = writer
        .into_inner()
        .map_err(BlockError::parquet(&samples_path))?;
    file.sync_all().map_err(BlockError::io(&samples_path))?;

    // chunks.parquet
    let chunks_path = tmp.join("chunks.parquet");
    let file = File::create(&chunks_path).map_err(BlockError::io(&chunks_path))?;
    let mut writer = ArrowWriter::try_new(
        file,
        schema::chunks_schema(),
        Some(schema::chunks_properties()),
    )
    .map_err(BlockError::parquet(&chunks_path))?;
    writer
        .write(&chunks.into_batch())
        .map_err(BlockError::parquet(&chunks_path))?;
    let file = writer
        .into_inner()
        .map_err(BlockError::parquet(&chunks_path))?;
    file.sync_all().map_err(BlockError::io(&chunks_path))?;

    // series.parquet
    let series_path = tmp.join("series.parquet");
    let names: Vec<Arc<str>> = series
        .iter()
        .flat_map(|(labels, _)| labels.iter().map(|l| l.name.clone()))
        .chain(std::iter::once(Arc::from(sonde_proto::names::METRIC_NAME)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let label_columns: Vec<ArrayRef> = names
        .iter()
        .map(|name| {
            Arc::new(StringArray::from_iter(
                series.iter().map(|(labels, _)| labels.get(name)),
            )) as ArrayRef
        })
        .collect();
    let labels = StructArray::new(schema::label_fields(&names), label_columns, None);
    let batch = RecordBatch::try_new(
        schema::series_schema(&names),
        vec![
            Arc::new(UInt32Array::from_iter_values(0..series.len() as u32)),
            Arc::new(labels),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(bounds.iter().map(|b| b.0))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(bounds.iter().map(|b| b.1))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .map_err(|e| BlockError::invalid(&series_path, e.to_string()))?;
    let file = File::create(&series_path).map_err(BlockError::io(&series_path))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(schema::series_properties()))
        .map_err(BlockError::parquet(&series_path))?;
    writer
        .write(&batch)
        .map_err(BlockError::parquet(&series_path))?;
    let file = writer
        .into_inner()
        .map_err(BlockError::parquet(&series_path))?;
    file.sync_all().map_err(BlockError::io(&series_path))?;

    // meta.json, last: its presence marks a complete block.
    let meta = BlockMeta {
        version: FORMAT_VERSION,
        seq,
        min_t,
        max_t,
        series: series.len() as u64,
        samples: total,
        level,
        sources,
    };
    let meta_path = tmp.join("meta.json");
    let json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
    std::fs::write(&meta_path, json)
        .and_then(|()| File::open(&meta_path)?.sync_all())
        .map_err(BlockError::io(&meta_path))?;
    sync_dir(&tmp)?;
    let dest = blocks_dir.join(dir_name(seq));
    std::fs::rename(&tmp, &dest).map_err(BlockError::io(&dest))?;
    sync_dir(blocks_dir)?;
    Ok(Some((dest, meta)))
}
