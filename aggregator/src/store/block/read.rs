//! Reads blocks: opens and checks a block directory, and decodes selected series' samples
//! using the row ranges from `chunks.parquet` (format 1: `series.parquet`), only in the time
//! slices a query overlaps (the page index lets the reader skip pages).

use std::{fs::File, ops::Range, path::Path};

use arrow_array::{
    Array, RecordBatch, StructArray,
    cast::AsArray,
    types::{Float64Type, Int8Type, Int64Type, TimestampMillisecondType, UInt32Type, UInt64Type},
};
use parquet::arrow::{
    ProjectionMask,
    arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
        ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
    },
};

use super::{Block, BlockError, BlockMeta, FORMAT_VERSION, SeriesRows, Slice, schema, values};
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
    if !(1..=FORMAT_VERSION).contains(&meta.version) {
        return Err(BlockError::invalid(
            &meta_path,
            format!(
                "format version {} is not one this version reads (1 to {FORMAT_VERSION})",
                meta.version
            ),
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
    let mut v1_ranges: Vec<(u64, u32)> = Vec::new();
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
        let v1_rows = if meta.version == 1 {
            Some((
                column(&batch, "row_start", &series_path)?
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| bad("row_start"))?,
                column(&batch, "row_count", &series_path)?
                    .as_primitive_opt::<UInt32Type>()
                    .ok_or_else(|| bad("row_count"))?,
            ))
        } else {
            None
        };
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
                min_t: min_t.value(row),
                max_t: max_t.value(row),
            });
            if let Some((start, count)) = v1_rows {
                v1_ranges.push((start.value(row), count.value(row)));
            }
        }
    }

    // Samples table: footer and page index only.
    let samples_path = dir.join("samples.parquet");
    let file = File::open(&samples_path).map_err(BlockError::io(&samples_path))?;
    let samples_meta =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))
            .map_err(BlockError::parquet(&samples_path))?;
    let file_rows = samples_meta.metadata().file_metadata().num_rows() as u64;
    let (slices, expected) = if meta.version == 1 {
        v1_slice(&series_path, &meta, &v1_ranges)?
    } else {
        read_slices(&dir.join("chunks.parquet"), rows.len())?
    };
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
        slices,
        samples_meta,
        bytes: du(dir),
    })
}

/// Format 1: every series' rows are contiguous, in series order: one slice for the block.
fn v1_slice(
    series_path: &Path,
    meta: &BlockMeta,
    ranges: &[(u64, u32)],
) -> Result<(Vec<Slice>, u64), BlockError> {
    let mut starts = Vec::with_capacity(ranges.len() + 1);
    let mut expected = 0u64;
    for &(start, count) in ranges {
        if start != expected {
            return Err(BlockError::invalid(
                series_path,
                format!("row ranges are not contiguous at row {start}"),
            ));
        }
        starts.push(relative(series_path, expected)?);
        expected += u64::from(count);
    }
    starts.push(relative(series_path, expected)?);
    let slice = Slice {
        min_t: meta.min_t,
        max_t: meta.max_t,
        row_offset: 0,
        starts,
    };
    Ok((vec![slice], expected))
}

fn relative(path: &Path, row: u64) -> Result<u32, BlockError> {
    u32::try_from(row).map_err(|_| BlockError::invalid(path, format!("row {row} beyond u32")))
}

/// Format 2: `chunks.parquet`, into one [`Slice`] per time slice; returns them and the rows
/// they cover (checked contiguous, slice after slice, series ascending within a slice).
fn read_slices(path: &Path, series: usize) -> Result<(Vec<Slice>, u64), BlockError> {
    let file = File::open(path).map_err(BlockError::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(BlockError::parquet(path))?;
    let mut slices: Vec<Slice> = Vec::new();
    let mut expected = 0u64;
    // Next series id to give a start to, in the current slice.
    let mut next_id = 0usize;
    let finish = |slice: &mut Slice, end: u64| -> Result<(), BlockError> {
        let rel = relative(path, end - slice.row_offset)?;
        slice.starts.resize(series + 1, rel);
        Ok(())
    };
    for batch in reader {
        let batch = batch.map_err(|e| BlockError::invalid(path, e.to_string()))?;
        let bad = |what: &str| BlockError::invalid(path, format!("bad column {what}"));
        let slice_start = column(&batch, "slice_start", path)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad("slice_start"))?;
        let series_id = column(&batch, "series_id", path)?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| bad("series_id"))?;
        let row_start = column(&batch, "row_start", path)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad("row_start"))?;
        let row_count = column(&batch, "row_count", path)?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| bad("row_count"))?;
        for i in 0..batch.num_rows() {
            let (start_t, id, start, count) = (
                slice_start.value(i),
                series_id.value(i) as usize,
                row_start.value(i),
                row_count.value(i),
            );
            if start != expected || id >= series {
                return Err(BlockError::invalid(
                    path,
                    format!("chunk {i} (series {id}, rows {start}+{count}) is out of order"),
                ));
            }
            match slices.last_mut() {
                Some(last) if last.min_t == start_t => {
                    if id < next_id {
                        return Err(BlockError::invalid(
                            path,
                            format!("series {id} twice or out of order in slice {start_t}"),
                        ));
                    }
                }
                Some(last) if last.min_t > start_t => {
                    return Err(BlockError::invalid(
                        path,
                        format!("slice {start_t} after slice {}", last.min_t),
                    ));
                }
                previous => {
                    if let Some(last) = previous {
                        finish(last, start)?;
                    }
                    slices.push(Slice {
                        min_t: start_t,
                        max_t: start_t.saturating_add(schema::SLICE_MS - 1),
                        row_offset: start,
                        starts: Vec::with_capacity(series + 1),
                    });
                }
            }
            let slice = slices.last_mut().expect("pushed above");
            let rel = relative(path, start - slice.row_offset)?;
            // Series without rows in this slice start (and end) where this one starts.
            slice.starts.resize(id + 1, rel);
            next_id = id + 1;
            expected += u64::from(count);
        }
    }
    if let Some(last) = slices.last_mut() {
        finish(last, expected)?;
    }
    Ok((slices, expected))
}

/// A reader of `columns` of `samples.parquet` over `runs` (ascending, disjoint, non-empty).
fn reader_over<'a>(
    block: &Block,
    path: &Path,
    runs: impl Iterator<Item = &'a Range<u64>>,
    columns: &[&str],
) -> Result<ParquetRecordBatchReader, BlockError> {
    let mut selectors = Vec::new();
    let mut cursor = 0u64;
    for rows in runs {
        if rows.start > cursor {
            selectors.push(RowSelector::skip((rows.start - cursor) as usize));
        }
        selectors.push(RowSelector::select((rows.end - rows.start) as usize));
        cursor = rows.end;
    }
    let file = File::open(path).map_err(BlockError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, block.samples_meta.clone());
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    builder
        .with_projection(mask)
        .with_row_selection(RowSelection::from(selectors))
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(BlockError::parquet(path))
}

/// Walks the rows of `runs` as the reader returns them, batch by batch: calls
/// `f(run index, batch, first row in the batch, rows)` for each stretch of a run within a
/// batch, in order.
fn walk_runs(
    path: &Path,
    reader: ParquetRecordBatchReader,
    runs: &[Range<u64>],
    mut f: impl FnMut(usize, &RecordBatch, usize, usize) -> Result<(), BlockError>,
) -> Result<(), BlockError> {
    let mut run = 0usize;
    // Rows of `runs[run]` already seen.
    let mut done = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| BlockError::invalid(path, e.to_string()))?;
        let mut row = 0usize;
        while row < batch.num_rows() {
            let Some(rows) = runs.get(run) else {
                return Err(BlockError::invalid(path, "more rows than selected"));
            };
            let left = rows.end - rows.start - done;
            let n = (left as usize).min(batch.num_rows() - row);
            f(run, &batch, row, n)?;
            row += n;
            done += n as u64;
            if done == rows.end - rows.start {
                run += 1;
                done = 0;
            }
        }
    }
    if run < runs.len() {
        return Err(BlockError::invalid(
            path,
            "fewer rows than the chunk table says",
        ));
    }
    Ok(())
}

/// Decodes the samples in `[mint, maxt]` of series `ids` (ascending) and calls `f` once per
/// series, in order, with its samples (empty when the series has none in the range).
///
/// Only the time slices overlapping the range are read, and in them only the selected
/// series' rows (the page index skips pages without any). Rows are read whole rather than
/// narrowed to the range within a slice: skipping rows inside a delta-encoded page costs
/// more than decoding them. Each series' samples are allocated once per slice read, to size.
pub fn read_series(
    block: &Block,
    ids: &[SeriesId],
    mint: i64,
    maxt: i64,
    mut f: impl FnMut(SeriesId, Vec<Sample>),
) -> Result<(), BlockError> {
    if ids.is_empty() {
        return Ok(());
    }
    let path = block.dir.join("samples.parquet");
    // The selected rows, ascending (slice after slice, series ascending within one).
    let mut runs: Vec<Range<u64>> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    for slice in block
        .slices
        .iter()
        .filter(|s| s.min_t <= maxt && s.max_t >= mint)
    {
        for (pos, &id) in ids.iter().enumerate() {
            let rows = slice.rows(id);
            if !rows.is_empty() {
                runs.push(rows);
                positions.push(pos);
            }
        }
    }
    let mut out: Vec<Vec<Sample>> = vec![Vec::new(); ids.len()];
    if !runs.is_empty() {
        let reader = reader_over(
            block,
            &path,
            runs.iter(),
            &["t", "v_int", "v_scale", "v_float"],
        )?;
        walk_runs(&path, reader, &runs, |run, batch, row, n| {
            let bad = |what: &str| BlockError::invalid(&path, format!("bad column {what}"));
            let t = column(batch, "t", &path)?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| bad("t"))?;
            // A run's rows are in time order: the ones in range are one stretch of it.
            let times = &t.values()[row..row + n];
            let from = row + times.partition_point(|&t| t < mint);
            let to = row + times.partition_point(|&t| t <= maxt);
            if from >= to {
                return Ok(());
            }
            let v_int = column(batch, "v_int", &path)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad("v_int"))?;
            let v_scale = column(batch, "v_scale", &path)?
                .as_primitive_opt::<Int8Type>()
                .ok_or_else(|| bad("v_scale"))?;
            let v_float = column(batch, "v_float", &path)?
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| bad("v_float"))?;
            let samples = &mut out[positions[run]];
            samples.reserve(to - from);
            for row in from..to {
                let ts = t.value(row);
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
                samples.push(Sample { t: ts, v });
            }
            Ok(())
        })?;
    }
    for (&id, samples) in ids.iter().zip(out) {
        f(id, samples);
    }
    Ok(())
}
