//! Reads a capture file back into [`Record`]s, one Parquet batch at a time (memory bounded by
//! the batch, not the file).
//!
//! Must not: interpret the records (replay does).

use std::{
    collections::HashMap,
    fs::File,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use arrow_array::{
    Array, ArrayAccessor, BooleanArray, DictionaryArray, FixedSizeBinaryArray, Float64Array,
    RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
    cast::AsArray,
    types::{Int8Type, Int32Type},
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use sonde_ebpf_common::http::method;
use sonde_proto::v1::MetricType;

use super::{
    CaptureError, Reading, Record,
    schema::{self, meta},
};
use crate::{
    ebpf::{
        exec::Exec,
        http::{BodyHint, Direction, Exchange},
        tcp::{Owner, TcpKind, TcpRecord},
    },
    http_metrics::identity::Identity,
    trace::context::TraceContext,
};

/// Rows decoded per batch.
const BATCH_ROWS: usize = 8192;

/// An open capture file.
pub struct CaptureReader {
    path: PathBuf,
    metadata: HashMap<String, String>,
    last_t_ns: Option<i64>,
    rows: u64,
    batches: ParquetRecordBatchReader,
    next_row: u64,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CaptureReader {
    /// Opens `path` and checks that it is a capture this version reads.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        let parquet = |source| CaptureError::Parquet {
            path: path.to_owned(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
        let file_meta = builder.metadata().file_metadata();
        let metadata: HashMap<String, String> = file_meta
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect();
        let bad = |problem: String| CaptureError::Schema {
            path: path.to_owned(),
            problem,
        };
        match metadata.get(meta::VERSION).map(String::as_str) {
            Some(schema::FORMAT_VERSION) => {}
            Some(other) => return Err(bad(format!("format version {other}, this agent reads 1"))),
            None => return Err(bad(format!("no `{}` metadata", meta::VERSION))),
        }
        let expected = schema::schema();
        let found = builder.schema().clone();
        for field in expected.fields() {
            match found.field_with_name(field.name()) {
                Ok(f) if f.data_type() == field.data_type() => {}
                Ok(f) => {
                    return Err(bad(format!(
                        "column `{}` is {}, expected {}",
                        field.name(),
                        f.data_type(),
                        field.data_type()
                    )));
                }
                // Added after the first captures: those read as without them.
                Err(_) if ["trace_flags", "pod_name"].contains(&field.name().as_str()) => {}
                Err(_) => return Err(bad(format!("no column `{}`", field.name()))),
            }
        }
        let rows = file_meta.num_rows() as u64;
        // `t` is column 0 and the writer keeps statistics: the last row's time, unread.
        let last_t_ns = builder
            .metadata()
            .row_groups()
            .iter()
            .filter_map(|rg| match rg.column(0).statistics() {
                Some(parquet::file::statistics::Statistics::Int64(s)) => s.max_opt().copied(),
                _ => None,
            })
            .max();
        let batches = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(parquet)?;
        Ok(Self {
            path: path.to_owned(),
            metadata,
            rows,
            last_t_ns,
            batches,
            next_row: 0,
        })
    }

    /// The time of the file's last row (ns since the epoch), from the row groups'
    /// statistics; `None` for an empty file.
    pub fn last_t_ns(&self) -> Option<i64> {
        self.last_t_ns
    }

    /// The file's key/value metadata (see [`schema::meta`]).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The next batch of records, in file order; `None` at the end.
    pub fn next_batch(&mut self) -> Option<Result<Vec<Record>, CaptureError>> {
        let batch = match self.batches.next()? {
            Ok(b) => b,
            Err(source) => {
                return Some(Err(CaptureError::Arrow {
                    path: self.path.clone(),
                    source,
                }));
            }
        };
        let first = self.next_row;
        self.next_row += batch.num_rows() as u64;
        Some(decode(&self.path, &batch, first))
    }
}

fn col<'a, T: 'static>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a T, CaptureError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| CaptureError::Schema {
            path: path.to_owned(),
            problem: format!("column `{name}` missing or mistyped"),
        })
}

fn prim<T: arrow_array::ArrowPrimitiveType>(
    a: &arrow_array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    a.is_valid(i).then(|| a.value(i))
}

fn boolean(a: &BooleanArray, i: usize) -> Option<bool> {
    a.is_valid(i).then(|| a.value(i))
}

fn text(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// A `Utf8` dictionary column with its typed accessor.
struct Dict<'a> {
    keys: &'a DictionaryArray<Int32Type>,
    values: &'a StringArray,
}

impl<'a> Dict<'a> {
    fn new(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<Self, CaptureError> {
        let keys = col::<DictionaryArray<Int32Type>>(path, batch, name)?;
        let values = keys
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| CaptureError::Schema {
                path: path.to_owned(),
                problem: format!("column `{name}` is not a string dictionary"),
            })?;
        Ok(Self { keys, values })
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        self.keys
            .is_valid(i)
            .then(|| self.values.value(self.keys.keys().value(i) as usize))
    }
}

fn socket(addr: Option<&str>, port: Option<u16>) -> Option<SocketAddr> {
    let ip: IpAddr = addr?.parse().ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(0)))
}

/// The request's `traceparent` of row `i`: trace id, the caller's span id, flags.
fn trace_context(
    trace_id: &FixedSizeBinaryArray,
    parent_span_id: &FixedSizeBinaryArray,
    flags: Option<&UInt8Array>,
    i: usize,
) -> Option<TraceContext> {
    if !trace_id.is_valid(i) || !parent_span_id.is_valid(i) {
        return None;
    }
    Some(TraceContext {
        trace_id: trace_id.value(i).try_into().ok()?,
        span_id: parent_span_id.value(i).try_into().ok()?,
        flags: flags.and_then(|f| prim(f, i)).unwrap_or(0),
    })
}

fn body(kind: Option<&str>, length: Option<u64>) -> BodyHint {
    match kind {
        Some("content_length") => BodyHint::ContentLength(length.unwrap_or(0)),
        Some("chunked") => BodyHint::Chunked,
        Some("no_length") => BodyHint::NoLength,
        _ => BodyHint::Unknown,
    }
}

/// The `&'static str` the decoder uses for a method name.
fn intern_method(name: &str) -> Option<&'static str> {
    (0..=u8::MAX).find_map(|code| method::name(code).filter(|m| *m == name))
}

fn metric_type(name: &str) -> MetricType {
    [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Histogram,
        MetricType::Summary,
        MetricType::Info,
        MetricType::Stateset,
    ]
    .into_iter()
    .find(|t| schema::metric_type_str(*t) == name)
    .unwrap_or(MetricType::Unspecified)
}

fn decode(path: &Path, batch: &RecordBatch, first_row: u64) -> Result<Vec<Record>, CaptureError> {
    let t = col::<TimestampNanosecondArray>(path, batch, "t")?;
    let kind_keys = col::<DictionaryArray<Int8Type>>(path, batch, "kind")?;
    let kind = kind_keys
        .downcast_dict::<StringArray>()
        .ok_or_else(|| CaptureError::Schema {
            path: path.to_owned(),
            problem: "column `kind` is not a string dictionary".to_owned(),
        })?;
    let u32c = |n| col::<UInt32Array>(path, batch, n);
    let u64c = |n| col::<UInt64Array>(path, batch, n);
    let u16c = |n| col::<UInt16Array>(path, batch, n);
    let boolc = |n| col::<BooleanArray>(path, batch, n);
    let strc = |n| col::<StringArray>(path, batch, n);
    let dict = |n| Dict::new(path, batch, n);
    let (pid, tid, cgroup_id, comm) = (
        u32c("pid")?,
        u32c("tid")?,
        u64c("cgroup_id")?,
        dict("comm")?,
    );
    let (service_name, container_id, cgroup_path) = (
        dict("service_name")?,
        dict("container_id")?,
        dict("cgroup_path")?,
    );
    let (direction, tls, method_c, path_c, path_truncated, status) = (
        dict("direction")?,
        boolc("tls")?,
        dict("method")?,
        strc("path")?,
        boolc("path_truncated")?,
        u16c("status")?,
    );
    let (start_ns, end_ns, duration_ns, request_bytes, response_bytes) = (
        u64c("start_ns")?,
        u64c("end_ns")?,
        u64c("duration_ns")?,
        u64c("request_bytes")?,
        u64c("response_bytes")?,
    );
    let (request_body, request_len, response_body, response_len) = (
        dict("request_body")?,
        u64c("request_content_length")?,
        dict("response_body")?,
        u64c("response_content_length")?,
    );
    let (peer_addr, peer_port, local_addr, local_port) = (
        dict("peer_addr")?,
        u16c("peer_port")?,
        dict("local_addr")?,
        u16c("local_port")?,
    );
    let (tcp_event, inbound, filename) = (dict("tcp_event")?, boolc("inbound")?, strc("filename")?);
    // `pod_name` and `trace_flags` were added after the first captures, which read as
    // having none.
    let (trace_id, parent_span_id) = (
        col::<FixedSizeBinaryArray>(path, batch, "trace_id")?,
        col::<FixedSizeBinaryArray>(path, batch, "parent_span_id")?,
    );
    let pod_name = match batch.column_by_name("pod_name") {
        Some(_) => Some(dict("pod_name")?),
        None => None,
    };
    let trace_flags = match batch.column_by_name("trace_flags") {
        Some(_) => Some(col::<UInt8Array>(path, batch, "trace_flags")?),
        None => None,
    };
    let (collector, metric, family, metric_type_c, help, unit, labels) = (
        dict("collector")?,
        dict("metric")?,
        dict("family")?,
        dict("metric_type")?,
        dict("help")?,
        dict("unit")?,
        dict("labels")?,
    );
    let value = col::<Float64Array>(path, batch, "value")?;

    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let row = first_row + i as u64;
        let missing = |field: &str| CaptureError::Row {
            path: path.to_owned(),
            row,
            problem: format!("`{field}` is null"),
        };
        let t_ns = t.value(i);
        let identity = || {
            service_name.get(i).map(|s| Identity {
                service_name: s.to_owned(),
                container_id: container_id.get(i).unwrap_or_default().to_owned(),
                cgroup_path: cgroup_path.get(i).map(str::to_owned),
                pod_name: pod_name.as_ref().and_then(|p| p.get(i)).map(str::to_owned),
            })
        };
        let kind_name = if kind_keys.is_valid(i) {
            kind.value(i)
        } else {
            ""
        };
        let record = match kind_name {
            "http" => {
                let m = method_c.get(i).ok_or_else(|| missing("method"))?;
                let method = intern_method(m).ok_or_else(|| CaptureError::Row {
                    path: path.to_owned(),
                    row,
                    problem: format!("unknown method {m:?}"),
                })?;
                let direction = match direction.get(i) {
                    Some("server") => Direction::Server,
                    Some("client") => Direction::Client,
                    other => {
                        return Err(CaptureError::Row {
                            path: path.to_owned(),
                            row,
                            problem: format!("direction {other:?}"),
                        });
                    }
                };
                Record::Http {
                    t_ns,
                    exchange: Exchange {
                        direction,
                        tls: boolean(tls, i).unwrap_or(false),
                        method,
                        status: prim(status, i).ok_or_else(|| missing("status"))?,
                        path: text(path_c, i).unwrap_or_default().to_owned(),
                        path_truncated: boolean(path_truncated, i).unwrap_or(false),
                        start_ns: prim(start_ns, i).ok_or_else(|| missing("start_ns"))?,
                        end_ns: prim(end_ns, i).ok_or_else(|| missing("end_ns"))?,
                        tgid: prim(pid, i).unwrap_or(0),
                        tid: prim(tid, i).unwrap_or(0),
                        cgroup_id: prim(cgroup_id, i).unwrap_or(0),
                        comm: comm.get(i).unwrap_or_default().to_owned(),
                        peer: socket(peer_addr.get(i), prim(peer_port, i)),
                        request_bytes: prim(request_bytes, i).unwrap_or(0),
                        response_bytes: prim(response_bytes, i).unwrap_or(0),
                        request_body: body(request_body.get(i), prim(request_len, i)),
                        response_body: body(response_body.get(i), prim(response_len, i)),
                        local: socket(local_addr.get(i), prim(local_port, i)),
                        traceparent: trace_context(trace_id, parent_span_id, trace_flags, i),
                    },
                    who: identity().ok_or_else(|| missing("service_name"))?,
                }
            }
            "tcp" => {
                let kind = match tcp_event.get(i) {
                    Some("connect_ok") => TcpKind::ConnectOk,
                    Some("connect_failed") => TcpKind::ConnectFailed,
                    Some("closed") => TcpKind::Closed,
                    Some("retransmit") => TcpKind::Retransmit,
                    other => {
                        return Err(CaptureError::Row {
                            path: path.to_owned(),
                            row,
                            problem: format!("tcp_event {other:?}"),
                        });
                    }
                };
                Record::Tcp {
                    t_ns,
                    event: TcpRecord {
                        kind,
                        duration_ns: prim(duration_ns, i).unwrap_or(0),
                        owner: prim(pid, i).map(|tgid| Owner {
                            tgid,
                            cgroup_id: prim(cgroup_id, i).unwrap_or(0),
                            comm: comm.get(i).unwrap_or_default().to_owned(),
                            inbound: boolean(inbound, i).unwrap_or(false),
                        }),
                        local: socket(local_addr.get(i), prim(local_port, i)),
                        remote: socket(peer_addr.get(i), prim(peer_port, i)),
                    },
                    who: identity(),
                }
            }
            "exec" => Record::Exec {
                t_ns,
                exec: Exec {
                    tgid: prim(pid, i).ok_or_else(|| missing("pid"))?,
                    pid: prim(tid, i).unwrap_or(0),
                    cgroup_id: prim(cgroup_id, i).unwrap_or(0),
                    comm: comm.get(i).unwrap_or_default().to_owned(),
                    filename: text(filename, i).unwrap_or_default().to_owned(),
                },
            },
            "reading" => {
                let json = labels.get(i).unwrap_or("{}");
                let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                    .map_err(|e| CaptureError::Row {
                        path: path.to_owned(),
                        row,
                        problem: format!("labels {json:?}: {e}"),
                    })?;
                let mut label_pairs: Vec<(String, String)> = parsed
                    .into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect();
                label_pairs.sort();
                Record::Reading {
                    t_ns,
                    reading: Reading {
                        collector: collector.get(i).unwrap_or_default().to_owned(),
                        family: family.get(i).unwrap_or_default().to_owned(),
                        metric: metric.get(i).ok_or_else(|| missing("metric"))?.to_owned(),
                        metric_type: metric_type(metric_type_c.get(i).unwrap_or_default()),
                        help: help.get(i).unwrap_or_default().to_owned(),
                        unit: unit.get(i).unwrap_or_default().to_owned(),
                        labels: label_pairs,
                        value: prim(value, i).ok_or_else(|| missing("value"))?,
                    },
                }
            }
            "tick" => Record::Tick { t_ns },
            other => {
                return Err(CaptureError::Row {
                    path: path.to_owned(),
                    row,
                    problem: format!("unknown kind {other:?}"),
                });
            }
        };
        out.push(record);
    }
    Ok(out)
}
