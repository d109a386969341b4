//! The Parquet schemas of a block's two tables and the writer settings chosen for them.
//!
//! `samples.parquet` (format 2: sorted by time slice ([`SLICE_MS`], aligned to the epoch),
//! then `series_id`, then `t`; format 1: by `series_id`, `t`): `series_id` UInt32 (delta),
//! `t` Timestamp(ms, UTC) (delta), `v_int` Int64 nullable (delta), `v_scale` Int8
//! (dictionary/RLE), `v_float` Float64 nullable (byte-stream-split); zstd. A sample's value is
//! `v_float` when set, else `v_int / 10^v_scale`. Slicing keeps a query of a few minutes in
//! one slice's pages of a day-long block instead of every series' whole day.
//!
//! `series.parquet` (sorted by labels): `series_id` UInt32, `labels` Struct with one nullable
//! Utf8 field per label name in the block (dictionary-encoded by Parquet), `min_t`/`max_t`
//! (format 1 also has `row_start` UInt64 and `row_count` UInt32: the series' rows).
//!
//! `chunks.parquet` (format 2, in row order): `slice_start` Timestamp(ms, UTC), `series_id`
//! UInt32, `row_start` UInt64, `row_count` UInt32: where each series' rows of each slice are.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use parquet::{
    basic::{Compression, Encoding, ZstdLevel},
    file::properties::{EnabledStatistics, WriterProperties, WriterVersion},
    schema::types::ColumnPath,
};

/// Time slice of format-2 blocks: rows are grouped by `t / SLICE_MS` first.
pub const SLICE_MS: i64 = 2 * 3600 * 1000;

/// Rows per row group of `samples.parquet`.
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// Rows per data page: the granularity at which the page index lets a read skip.
pub const PAGE_ROWS: usize = 8192;
/// zstd level (measured: see bench-results/storage.md).
pub const ZSTD_LEVEL: i32 = 3;

/// The timestamp type of every time column.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of `samples.parquet`.
pub fn samples_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("t", time_type(), false),
        Field::new("v_int", DataType::Int64, true),
        Field::new("v_scale", DataType::Int8, false),
        Field::new("v_float", DataType::Float64, true),
    ]))
}

/// Schema of `series.parquet` for a block whose label names are `names` (sorted).
pub fn series_schema(names: &[Arc<str>]) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("labels", DataType::Struct(label_fields(names)), false),
        Field::new("min_t", time_type(), false),
        Field::new("max_t", time_type(), false),
    ]))
}

/// Schema of `chunks.parquet`.
pub fn chunks_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("slice_start", time_type(), false),
        Field::new("series_id", DataType::UInt32, false),
        Field::new("row_start", DataType::UInt64, false),
        Field::new("row_count", DataType::UInt32, false),
    ]))
}

/// One nullable Utf8 field per label name.
pub fn label_fields(names: &[Arc<str>]) -> Fields {
    names
        .iter()
        .map(|n| Field::new(n.as_ref(), DataType::Utf8, true))
        .collect()
}

fn zstd() -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"))
}

/// Writer settings of `samples.parquet`.
pub fn samples_properties() -> WriterProperties {
    let col = |name: &str| ColumnPath::from(name);
    let mut builder = WriterProperties::builder()
        .set_compression(zstd())
        // Data pages v2: a page whose values zstd does not shrink (a constant scale, an
        // all-null float column) is stored uncompressed, and levels are never compressed,
        // so reading it costs no decompression.
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(1024)
        .set_statistics_enabled(EnabledStatistics::Page);
    for (name, encoding) in [
        ("series_id", Encoding::DELTA_BINARY_PACKED),
        ("t", Encoding::DELTA_BINARY_PACKED),
        ("v_int", Encoding::DELTA_BINARY_PACKED),
        ("v_float", Encoding::BYTE_STREAM_SPLIT),
    ] {
        builder = builder
            .set_column_dictionary_enabled(col(name), false)
            .set_column_encoding(col(name), encoding);
    }
    for name in ["v_int", "v_scale", "v_float"] {
        builder = builder.set_column_statistics_enabled(col(name), EnabledStatistics::Chunk);
    }
    builder.build()
}

/// Writer settings of `chunks.parquet`: delta-encoded, like the samples.
pub fn chunks_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(zstd())
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for name in ["slice_start", "series_id", "row_start", "row_count"] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(name), false)
            .set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED);
    }
    builder.build()
}

/// Writer settings of `series.parquet`.
pub fn series_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(zstd())
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build()
}
