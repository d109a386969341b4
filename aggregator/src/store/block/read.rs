//! Reads blocks: opens and checks a block directory, and decodes selected series' samples
//! using the row ranges from `series.parquet` (the page index lets the reader skip pages).

use std::{fs::File, path::Path};

use arrow_array::{
    Array, RecordBatch, StructArray,
    cast::AsArray,
    types::{Float64Type, Int8Type, Int64Type, TimestampMillisecondType, UInt32Type, UInt64Type},
};
use parquet::arrow::{
    ProjectionMask,
    arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
        RowSelector,
    },
};

use super::{Block, BlockError, BlockMeta, FORMAT_VERSION, SeriesRows, values};
use crate::store::{
    Labels, Sample,
    index::{SeriesId, SeriesIndex},
};

/// Rows decoded per Arrow batch.
const READ_BATCH_ROWS: usize = 8192;

fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a dyn Array, BlockError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| BlockError::invalid(path, format!("missing column {name:?}")))
}

fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Opens the block in `dir`.
pub fn open(dir: &Path) -> Result<Block, BlockError> {
    let meta_path = dir.join("meta.json");
    let json = std::fs::read(&meta_path).map_err(BlockError::io(&meta_path))?;
    let meta: BlockMeta = serde_json::from_slice(&json)
        .map_err(|e| BlockError::invalid(&meta_path, format!("bad meta.json: {e}")))?;
    if meta.version != FORMAT_VERSION {
        return Err(BlockError::invalid(
            &meta_path,
            format!("format version {} is not {FORMAT_VERSION}", meta.version),
        ));
    }

    // Series table: small, read whole.
    let series_path = dir.join("series.parquet");
    let file = File::open(&series_path).map_err(BlockError::io(&series_path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(BlockError::parquet(&series_path))?;
    let mut index = SeriesIndex::default();
    let mut rows = Vec::with_capacity(meta.series as usize);
    for batch in reader {
        let batch = batch.map_err(|e| BlockError::invalid(&series_path, e.to_string()))?;
        let bad = |what: &str| BlockError::invalid(&series_path, format!("bad column {what}"));
        let labels: &StructArray = column(&batch, "labels", &series_path)?
            .as_struct_opt()
            .ok_or_else(|| bad("labels"))?;
        let names: Vec<_> = labels.fields().iter().map(|f| f.name().clone()).collect();
        let values: Vec<_> = labels
            .columns()
            .iter()
            .map(|c| c.as_string_opt::<i32>().ok_or_else(|| bad("labels")))
            .collect::<Result<_, _>>()?;
        let row_start = column(&batch, "row_start", &series_path)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad("row_start"))?;
        let row_count = column(&batch, "row_count", &series_path)?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| bad("row_count"))?;
        let min_t = column(&batch, "min_t", &series_path)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad("min_t"))?;
        let max_t = column(&batch, "max_t", &series_path)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad("max_t"))?;
        for row in 0..batch.num_rows() {
            let pairs = names
                .iter()
                .zip(&values)
                .filter(|(_, col)| !col.is_null(row))
                .map(|(name, col)| (name.as_str(), col.value(row)));
            let labels = Labels::from_pairs(pairs);
            if index.get(&labels).is_some() {
                return Err(BlockError::invalid(
                    &series_path,
                    format!("series {labels} appears twice"),
                ));
            }
            index.insert(labels);
            rows.push(SeriesRows {
                start: row_start.value(row),
                count: row_count.value(row),
                min_t: min_t.value(row),
                max_t: max_t.value(row),
            });
        }
    }

    // Samples table: footer and page index only.
    let samples_path = dir.join("samples.parquet");
    let file = File::open(&samples_path).map_err(BlockError::io(&samples_path))?;
    let samples_meta =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))
            .map_err(BlockError::parquet(&samples_path))?;
    let file_rows = samples_meta.metadata().file_metadata().num_rows() as u64;
    let mut expected = 0u64;
    for r in &rows {
        if r.start != expected {
            return Err(BlockError::invalid(
                &series_path,
                format!("row ranges are not contiguous at row {}", r.start),
            ));
        }
        expected += u64::from(r.count);
    }
    if rows.len() as u64 != meta.series || expected != meta.samples || file_rows != meta.samples {
        return Err(BlockError::invalid(
            dir,
            format!(
                "inconsistent block: meta.json says {} series / {} samples, series.parquet \
                 {} series / {expected} rows, samples.parquet {file_rows} rows",
                meta.series,
                meta.samples,
                rows.len()
            ),
        ));
    }
    Ok(Block {
        dir: dir.to_owned(),
        meta,
        index,
        rows,
        samples_meta,
        bytes: du(dir),
    })
}

/// Decodes the samples in `[mint, maxt]` of series `ids` (ascending) and calls `f` once per
/// series, in order (with an empty slice when the series has none in the range). Values of
/// rows outside the range are not decoded.
pub fn read_series(
    block: &Block,
    ids: &[SeriesId],
    mint: i64,
    maxt: i64,
    mut f: impl FnMut(SeriesId, &[Sample]),
) -> Result<(), BlockError> {
    if ids.is_empty() {
        return Ok(());
    }
    let path = block.dir.join("samples.parquet");
    let mut selectors = Vec::new();
    let mut cursor = 0u64;
    for &id in ids {
        let rows = &block.rows[id as usize];
        if rows.start > cursor {
            selectors.push(RowSelector::skip((rows.start - cursor) as usize));
        }
        selectors.push(RowSelector::select(rows.count as usize));
        cursor = rows.start + u64::from(rows.count);
    }
    let file = File::open(&path).map_err(BlockError::io(&path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, block.samples_meta.clone());
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        ["t", "v_int", "v_scale", "v_float"],
    );
    let reader = builder
        .with_projection(mask)
        .with_row_selection(RowSelection::from(selectors))
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(BlockError::parquet(&path))?;

    let mut pending = ids.iter().copied();
    let mut current = pending.next();
    let mut buf: Vec<Sample> = Vec::new();
    let mut consumed = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| BlockError::invalid(&path, e.to_string()))?;
        let bad = |what: &str| BlockError::invalid(&path, format!("bad column {what}"));
        let t = column(&batch, "t", &path)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad("t"))?;
        let v_int = column(&batch, "v_int", &path)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad("v_int"))?;
        let v_scale = column(&batch, "v_scale", &path)?
            .as_primitive_opt::<Int8Type>()
            .ok_or_else(|| bad("v_scale"))?;
        let v_float = column(&batch, "v_float", &path)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad("v_float"))?;
        for row in 0..batch.num_rows() {
            let Some(id) = current else {
                return Err(BlockError::invalid(&path, "more rows than selected"));
            };
            consumed += 1;
            let ts = t.value(row);
            if (mint..=maxt).contains(&ts) {
                let v = if v_int.is_valid(row) {
                    let scale = v_scale.value(row);
                    if !(0..=values::MAX_SCALE).contains(&scale) {
                        return Err(BlockError::invalid(&path, format!("bad v_scale {scale}")));
                    }
                    values::decode(v_int.value(row), scale)
                } else if v_float.is_valid(row) {
                    v_float.value(row)
                } else {
                    return Err(BlockError::invalid(
                        &path,
                        "a row has neither v_int nor v_float",
                    ));
                };
                buf.push(Sample { t: ts, v });
            }
            if consumed == block.rows[id as usize].count as usize {
                f(id, &buf);
                buf.clear();
                consumed = 0;
                current = pending.next();
            }
        }
    }
    if current.is_some() {
        return Err(BlockError::invalid(
            &path,
            "fewer rows than the series table says",
        ));
    }
    Ok(())
}
