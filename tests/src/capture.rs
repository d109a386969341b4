//! Reading agent capture files (`sonde-agent capture`) column by column with the parquet
//! crate alone, independently of the agent's own reader, so tests can derive expected
//! series from the rows.

use std::{collections::HashMap, path::Path};

use arrow_array::{
    Array, RecordBatch,
    cast::AsArray,
    types::{Float64Type, TimestampNanosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type},
};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// One column's values, widened.
#[derive(Debug, Clone)]
pub enum Column {
    /// Utf8 or a Utf8 dictionary.
    Str(Vec<Option<String>>),
    /// Any unsigned integer.
    UInt(Vec<Option<u64>>),
    /// Timestamps (ns).
    Time(Vec<Option<i64>>),
    /// Float64.
    Float(Vec<Option<f64>>),
    /// Boolean.
    Bool(Vec<Option<bool>>),
    /// Fixed-size binary (trace and span ids).
    Bytes(Vec<Option<Vec<u8>>>),
    /// A type these tests do not read.
    Other,
}

/// A whole capture file in memory, column by column, plus its key/value metadata.
#[derive(Debug)]
pub struct CaptureFile {
    /// Rows.
    pub rows: usize,
    /// Columns by name.
    pub columns: HashMap<String, Column>,
    /// Key/value metadata.
    pub metadata: HashMap<String, String>,
}

impl CaptureFile {
    /// Reads `path`.
    pub fn read(path: &Path) -> Self {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a Parquet file");
        let metadata = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect();
        let mut columns: HashMap<String, Column> = HashMap::new();
        let mut rows = 0;
        for batch in builder.build().expect("reader") {
            let batch: RecordBatch = batch.expect("a batch");
            rows += batch.num_rows();
            for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
                let entry = columns.entry(field.name().clone());
                let column = entry.or_insert_with(|| match field.data_type() {
                    DataType::Utf8 | DataType::Dictionary(..) => Column::Str(Vec::new()),
                    DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                        Column::UInt(Vec::new())
                    }
                    DataType::Timestamp(TimeUnit::Nanosecond, _) => Column::Time(Vec::new()),
                    DataType::Float64 => Column::Float(Vec::new()),
                    DataType::Boolean => Column::Bool(Vec::new()),
                    DataType::FixedSizeBinary(_) => Column::Bytes(Vec::new()),
                    _ => Column::Other,
                });
                append(column, array.as_ref());
            }
        }
        Self {
            rows,
            columns,
            metadata,
        }
    }

    /// A string column.
    pub fn s(&self, name: &str) -> &[Option<String>] {
        match &self.columns[name] {
            Column::Str(v) => v,
            other => panic!("{name} is not a string column: {other:?}"),
        }
    }

    /// An unsigned column.
    pub fn u(&self, name: &str) -> &[Option<u64>] {
        match &self.columns[name] {
            Column::UInt(v) => v,
            _ => panic!("{name} is not an unsigned column"),
        }
    }

    /// The `t` column.
    pub fn t(&self) -> &[Option<i64>] {
        match &self.columns["t"] {
            Column::Time(v) => v,
            _ => panic!("t is not a timestamp column"),
        }
    }

    /// The `value` column.
    pub fn value(&self) -> &[Option<f64>] {
        match &self.columns["value"] {
            Column::Float(v) => v,
            _ => panic!("value is not a float column"),
        }
    }

    /// Row indices of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<usize> {
        let k = self.s("kind");
        (0..self.rows)
            .filter(|&i| k[i].as_deref() == Some(kind))
            .collect()
    }

    /// A fixed-size binary column's value at row `i` (`None` when null).
    pub fn fixed(&self, name: &str, i: usize) -> Option<Vec<u8>> {
        match &self.columns[name] {
            Column::Bytes(v) => v[i].clone(),
            _ => panic!("{name} is not a fixed-size binary column"),
        }
    }

    /// `s(name)[i]` as `&str` (empty when null).
    pub fn str_at(&self, name: &str, i: usize) -> &str {
        self.s(name)[i].as_deref().unwrap_or("")
    }
}

fn append(column: &mut Column, array: &dyn Array) {
    let valid = |i: usize| array.is_valid(i);
    let n = array.len();
    match column {
        Column::Str(v) => {
            if let Some(dict) = array.as_any_dictionary_opt() {
                if dict.values().is_empty() {
                    v.extend((0..n).map(|_| None));
                    return;
                }
                let values = dict.values().as_string::<i32>();
                let keys = dict.normalized_keys();
                v.extend((0..n).map(|i| valid(i).then(|| values.value(keys[i]).to_owned())));
            } else {
                let s = array.as_string::<i32>();
                v.extend((0..n).map(|i| valid(i).then(|| s.value(i).to_owned())));
            }
        }
        Column::UInt(v) => match array.data_type() {
            DataType::UInt8 => {
                let a = array.as_primitive::<UInt8Type>();
                v.extend((0..n).map(|i| valid(i).then(|| u64::from(a.value(i)))));
            }
            DataType::UInt16 => {
                let a = array.as_primitive::<UInt16Type>();
                v.extend((0..n).map(|i| valid(i).then(|| u64::from(a.value(i)))));
            }
            DataType::UInt32 => {
                let a = array.as_primitive::<UInt32Type>();
                v.extend((0..n).map(|i| valid(i).then(|| u64::from(a.value(i)))));
            }
            _ => {
                let a = array.as_primitive::<UInt64Type>();
                v.extend((0..n).map(|i| valid(i).then(|| a.value(i))));
            }
        },
        Column::Time(v) => {
            let a = array.as_primitive::<TimestampNanosecondType>();
            v.extend((0..n).map(|i| valid(i).then(|| a.value(i))));
        }
        Column::Float(v) => {
            let a = array.as_primitive::<Float64Type>();
            v.extend((0..n).map(|i| valid(i).then(|| a.value(i))));
        }
        Column::Bool(v) => {
            let a = array.as_boolean();
            v.extend((0..n).map(|i| valid(i).then(|| a.value(i))));
        }
        Column::Bytes(v) => {
            let a = array.as_fixed_size_binary();
            v.extend((0..n).map(|i| valid(i).then(|| a.value(i).to_vec())));
        }
        Column::Other => {}
    }
}
