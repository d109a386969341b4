//! Span files: writing one from a batch of spans, and searching one.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Int8Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
    cast::AsArray,
    types::{Int8Type, Int64Type, TimestampNanosecondType},
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::{
    arrow::{
        ArrowWriter, ProjectionMask,
        arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
    },
    basic::{Compression, ZstdLevel},
    file::{
        metadata::KeyValue,
        properties::{EnabledStatistics, WriterProperties},
    },
    schema::types::ColumnPath,
};
use serde_json::{Map, Value};

use super::{AttrValue, Span, SpanQuery};
use crate::store::BlockError;

const MIN_KEY: &str = "sonde.min_start_ns";
const MAX_KEY: &str = "sonde.max_start_ns";
/// Rows per row group (the bloom filter and statistics granularity).
const ROW_GROUP_ROWS: usize = 64 * 1024;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
        Field::new("service", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Int8, false),
        Field::new(
            "start_time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("status_code", DataType::Int8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("attributes", DataType::Utf8, false),
        Field::new("resource", DataType::Utf8, false),
    ]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn attrs_json(attrs: &[(String, AttrValue)]) -> String {
    let mut map = Map::new();
    for (k, v) in attrs {
        let value = match v {
            AttrValue::Str(s) => Value::String(s.clone()),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Int(i) => Value::from(*i),
            AttrValue::Double(d) => Value::from(*d),
            AttrValue::Bytes(b) => {
                let mut m = Map::new();
                m.insert("bytes_hex".into(), Value::String(hex(b)));
                Value::Object(m)
            }
        };
        map.insert(k.clone(), value);
    }
    Value::Object(map).to_string()
}

fn attrs_from_json(s: &str) -> Vec<(String, AttrValue)> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(s) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => AttrValue::Str(s),
                Value::Bool(b) => AttrValue::Bool(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => AttrValue::Int(i),
                    None => AttrValue::Double(n.as_f64()?),
                },
                Value::Object(m) => AttrValue::Bytes(unhex(m.get("bytes_hex")?.as_str()?)?),
                _ => return None,
            };
            Some((k, v))
        })
        .collect()
}

/// An open span file.
#[derive(Debug)]
pub struct SpanFile {
    pub(super) path: PathBuf,
    pub(super) min_start_ns: i64,
    pub(super) max_start_ns: i64,
    pub(super) bytes: u64,
    meta: ArrowReaderMetadata,
}

impl SpanFile {
    /// Opens a span file, reading its footer.
    pub fn open(path: &Path) -> Result<Self, BlockError> {
        let file = File::open(path).map_err(BlockError::io(path))?;
        let bytes = file.metadata().map_err(BlockError::io(path))?.len();
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(BlockError::parquet(path))?;
        let kv = |key: &str| -> Option<i64> {
            meta.metadata()
                .file_metadata()
                .key_value_metadata()?
                .iter()
                .find(|kv| kv.key == key)?
                .value
                .as_ref()?
                .parse()
                .ok()
        };
        let (Some(min_start_ns), Some(max_start_ns)) = (kv(MIN_KEY), kv(MAX_KEY)) else {
            return Err(BlockError::invalid(
                path,
                "missing sonde.*_start_ns metadata",
            ));
        };
        if meta.schema().fields() != schema().fields() {
            return Err(BlockError::invalid(path, "unexpected schema"));
        }
        Ok(Self {
            path: path.to_owned(),
            min_start_ns,
            max_start_ns,
            bytes,
            meta,
        })
    }

    /// Appends the spans matching `query` to `out`.
    pub fn find(&self, query: &SpanQuery, out: &mut Vec<Span>) -> Result<(), BlockError> {
        self.for_each(query, |span| out.push(span))
    }

    /// Adds the file's services and operations (reading only those columns).
    pub fn operations(&self, catalog: &mut super::Catalog) -> Result<(), BlockError> {
        let path = &self.path;
        let file = File::open(path).map_err(BlockError::io(path))?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), [3, 4, 5]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(BlockError::parquet(path))?;
        let bad = || BlockError::invalid(path, "unexpected column types");
        for batch in reader {
            let batch = batch.map_err(|e| BlockError::invalid(path, e.to_string()))?;
            let service = batch.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
            let name = batch.column(1).as_string_opt::<i32>().ok_or_else(bad)?;
            let kind = batch
                .column(2)
                .as_primitive_opt::<Int8Type>()
                .ok_or_else(bad)?;
            for i in 0..batch.num_rows() {
                let key = (name.value(i), kind.value(i) as u8);
                let ops = match catalog.get_mut(service.value(i)) {
                    Some(ops) => ops,
                    None => catalog.entry(service.value(i).to_owned()).or_default(),
                };
                if !ops.iter().any(|(n, k)| n == key.0 && *k == key.1) {
                    ops.insert((key.0.to_owned(), key.1));
                }
            }
        }
        Ok(())
    }

    /// Calls `f` with each span matching `query`.
    pub fn for_each(&self, query: &SpanQuery, mut f: impl FnMut(Span)) -> Result<(), BlockError> {
        if query.start_min_ns.is_some_and(|t| self.max_start_ns < t)
            || query.start_max_ns.is_some_and(|t| self.min_start_ns > t)
        {
            return Ok(());
        }
        let path = &self.path;
        let file = File::open(path).map_err(BlockError::io(path))?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone());
        let mut row_groups: Vec<usize> = (0..self.meta.metadata().num_row_groups()).collect();
        let wanted = query.wanted_traces();
        if !wanted.is_empty() {
            let mut kept = Vec::new();
            for rg in row_groups {
                match builder
                    .get_row_group_column_bloom_filter(rg, 0)
                    .map_err(BlockError::parquet(path))?
                {
                    Some(filter) if !wanted.iter().any(|t| filter.check(&t.to_vec())) => {}
                    _ => kept.push(rg),
                }
            }
            row_groups = kept;
        }
        if row_groups.is_empty() {
            return Ok(());
        }
        let reader = builder
            .with_row_groups(row_groups)
            .build()
            .map_err(BlockError::parquet(path))?;
        for batch in reader {
            let batch = batch.map_err(|e| BlockError::invalid(path, e.to_string()))?;
            decode_batch(&batch, path, |span| {
                if query.matches(&span) {
                    f(span);
                }
            })?;
        }
        Ok(())
    }
}

fn decode_batch(
    batch: &RecordBatch,
    path: &Path,
    mut f: impl FnMut(Span),
) -> Result<(), BlockError> {
    let bad = || BlockError::invalid(path, "unexpected column types");
    let c = |i: usize| batch.column(i);
    let trace = c(0).as_fixed_size_binary_opt().ok_or_else(bad)?;
    let span = c(1).as_fixed_size_binary_opt().ok_or_else(bad)?;
    let parent = c(2).as_fixed_size_binary_opt().ok_or_else(bad)?;
    let service = c(3).as_string_opt::<i32>().ok_or_else(bad)?;
    let name = c(4).as_string_opt::<i32>().ok_or_else(bad)?;
    let kind = c(5).as_primitive_opt::<Int8Type>().ok_or_else(bad)?;
    let start = c(6)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(bad)?;
    let duration = c(7).as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
    let status = c(8).as_primitive_opt::<Int8Type>().ok_or_else(bad)?;
    let message = c(9).as_string_opt::<i32>().ok_or_else(bad)?;
    let attributes = c(10).as_string_opt::<i32>().ok_or_else(bad)?;
    let resource = c(11).as_string_opt::<i32>().ok_or_else(bad)?;
    for i in 0..batch.num_rows() {
        let start_ns = start.value(i);
        f(Span {
            trace_id: trace.value(i).try_into().map_err(|_| bad())?,
            span_id: span.value(i).try_into().map_err(|_| bad())?,
            parent_span_id: if parent.is_null(i) {
                None
            } else {
                Some(parent.value(i).try_into().map_err(|_| bad())?)
            },
            service: service.value(i).to_owned(),
            name: name.value(i).to_owned(),
            kind: kind.value(i) as u8,
            start_unix_nano: start_ns,
            end_unix_nano: start_ns + duration.value(i),
            status_code: status.value(i) as u8,
            status_message: message.value(i).to_owned(),
            attributes: attrs_from_json(attributes.value(i)),
            resource: attrs_from_json(resource.value(i)),
        });
    }
    Ok(())
}

/// Writes `spans` (non-empty) as `dir/spans-<seq>.parquet`.
pub fn write(dir: &Path, seq: u64, spans: &[Span]) -> Result<SpanFile, BlockError> {
    let mut order: Vec<&Span> = spans.iter().collect();
    order.sort_by(|a, b| {
        (a.service.as_str(), a.start_unix_nano).cmp(&(b.service.as_str(), b.start_unix_nano))
    });
    let min = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let max = spans.iter().map(|s| s.start_unix_nano).max().unwrap_or(0);
    let path = dir.join(format!("spans-{seq:08}.parquet"));
    let tmp = dir.join(format!("spans-{seq:08}.parquet.tmp"));
    let bad = |e: arrow_schema::ArrowError| BlockError::invalid(&tmp, e.to_string());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            FixedSizeBinaryArray::try_from_iter(order.iter().map(|s| s.trace_id)).map_err(bad)?,
        ),
        Arc::new(
            FixedSizeBinaryArray::try_from_iter(order.iter().map(|s| s.span_id)).map_err(bad)?,
        ),
        Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                order.iter().map(|s| s.parent_span_id),
                8,
            )
            .map_err(bad)?,
        ),
        Arc::new(StringArray::from_iter_values(
            order.iter().map(|s| &s.service),
        )),
        Arc::new(StringArray::from_iter_values(order.iter().map(|s| &s.name))),
        Arc::new(Int8Array::from_iter_values(
            order.iter().map(|s| s.kind as i8),
        )),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(order.iter().map(|s| s.start_unix_nano))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(
            order.iter().map(|s| s.duration_nanos()),
        )),
        Arc::new(Int8Array::from_iter_values(
            order.iter().map(|s| s.status_code as i8),
        )),
        Arc::new(StringArray::from_iter_values(
            order.iter().map(|s| &s.status_message),
        )),
        Arc::new(StringArray::from_iter_values(
            order.iter().map(|s| attrs_json(&s.attributes)),
        )),
        Arc::new(StringArray::from_iter_values(
            order.iter().map(|s| attrs_json(&s.resource)),
        )),
    ];
    let batch = RecordBatch::try_new(schema(), columns).map_err(bad)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        .set_column_dictionary_enabled(ColumnPath::from("trace_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("parent_span_id"), false)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(MIN_KEY.to_owned(), min.to_string()),
            KeyValue::new(MAX_KEY.to_owned(), max.to_string()),
        ]))
        .build();
    let file = File::create(&tmp).map_err(BlockError::io(&tmp))?;
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(props)).map_err(BlockError::parquet(&tmp))?;
    writer.write(&batch).map_err(BlockError::parquet(&tmp))?;
    let file = writer.into_inner().map_err(BlockError::parquet(&tmp))?;
    file.sync_all().map_err(BlockError::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(BlockError::io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BlockError::io(dir))?;
    SpanFile::open(&path)
}
