//! The capture file's Arrow/Parquet schema and the conversion of [`Record`]s into Arrow
//! record batches. The layout is documented in ARCHITECTURE.md §4 ("Capture file").
//!
//! Must not: do I/O (that is `writer`/`reader`).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{
        BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, StringBuilder,
        StringDictionaryBuilder, TimestampNanosecondBuilder, UInt8Builder, UInt16Builder,
        UInt32Builder, UInt64Builder,
    },
    types::{Int8Type, Int32Type},
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use super::record::Record;
use crate::ebpf::{
    http::{BodyHint, Direction},
    tcp::TcpKind,
};

/// `sonde.capture.version` in the file's key/value metadata.
pub const FORMAT_VERSION: &str = "1";
/// Key/value metadata keys.
pub mod meta {
    /// Format version ([`super::FORMAT_VERSION`]).
    pub const VERSION: &str = "sonde.capture.version";
    /// The capturing agent's id.
    pub const AGENT_ID: &str = "sonde.capture.agent_id";
    /// The target labels the agent adds to every series (JSON object).
    pub const TARGET_LABELS: &str = "sonde.capture.target_labels";
    /// Collection interval in ms.
    pub const INTERVAL_MS: &str = "sonde.capture.interval_ms";
    /// Event sources that were live (comma-separated subset of `http,tcp,exec`): replay
    /// emits those collectors' metrics only when their source was live, like the agent.
    pub const SOURCES: &str = "sonde.capture.sources";
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns at capture start: turns the events'
    /// monotonic `start_ns`/`end_ns` into the span times the live agent would have sent.
    pub const UNIX_OFFSET_NS: &str = "sonde.capture.unix_offset_ns";
    /// The capturing host's name (`host.name` of replayed spans).
    pub const HOST_NAME: &str = "sonde.capture.host_name";
}

/// Rows per Parquet row group (the writer flushes one whenever this many are buffered).
pub const ROW_GROUP_ROWS: usize = 32 * 1024;

fn dict8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The schema, column by column.
pub fn schema() -> SchemaRef {
    let n = |name: &str, ty: DataType| Field::new(name, ty, true);
    Arc::new(Schema::new(vec![
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("kind", dict8(), false),
        n("pid", DataType::UInt32),
        n("tid", DataType::UInt32),
        n("cgroup_id", DataType::UInt64),
        n("comm", dict()),
        n("service_name", dict()),
        n("container_id", dict()),
        n("cgroup_path", dict()),
        n("pod_name", dict()),
        n("direction", dict()),
        n("tls", DataType::Boolean),
        n("method", dict()),
        n("path", DataType::Utf8),
        n("path_truncated", DataType::Boolean),
        n("status", DataType::UInt16),
        n("start_ns", DataType::UInt64),
        n("end_ns", DataType::UInt64),
        n("duration_ns", DataType::UInt64),
        n("request_bytes", DataType::UInt64),
        n("response_bytes", DataType::UInt64),
        n("request_body", dict()),
        n("request_content_length", DataType::UInt64),
        n("response_body", dict()),
        n("response_content_length", DataType::UInt64),
        n("peer_addr", dict()),
        n("peer_port", DataType::UInt16),
        n("local_addr", dict()),
        n("local_port", DataType::UInt16),
        n("tcp_event", dict()),
        n("inbound", DataType::Boolean),
        n("filename", DataType::Utf8),
        n("trace_id", DataType::FixedSizeBinary(16)),
        n("span_id", DataType::FixedSizeBinary(8)),
        n("parent_span_id", DataType::FixedSizeBinary(8)),
        n("trace_flags", DataType::UInt8),
        n("collector", dict()),
        n("metric", dict()),
        n("family", dict()),
        n("metric_type", dict()),
        n("help", dict()),
        n("unit", dict()),
        n("labels", dict()),
        n("value", DataType::Float64),
    ]))
}

/// `direction` column values.
pub fn direction_str(d: Direction) -> &'static str {
    d.as_str()
}

/// `request_body`/`response_body` column values and the content length, if any.
pub fn body_str(hint: BodyHint) -> (&'static str, Option<u64>) {
    match hint {
        BodyHint::ContentLength(n) => ("content_length", Some(n)),
        BodyHint::Chunked => ("chunked", None),
        BodyHint::NoLength => ("no_length", None),
        BodyHint::Unknown => ("unknown", None),
    }
}

/// `tcp_event` column values.
pub fn tcp_kind_str(kind: TcpKind) -> &'static str {
    match kind {
        TcpKind::ConnectOk => "connect_ok",
        TcpKind::ConnectFailed => "connect_failed",
        TcpKind::Closed => "closed",
        TcpKind::Retransmit => "retransmit",
    }
}

/// `metric_type` column values.
pub fn metric_type_str(ty: sonde_proto::v1::MetricType) -> &'static str {
    use sonde_proto::v1::MetricType as T;
    match ty {
        T::Unspecified => "unknown",
        T::Counter => "counter",
        T::Gauge => "gauge",
        T::Histogram => "histogram",
        T::Summary => "summary",
        T::Info => "info",
        T::Stateset => "stateset",
    }
}

/// One builder per column.
struct Builders {
    t: TimestampNanosecondBuilder,
    kind: StringDictionaryBuilder<Int8Type>,
    pid: UInt32Builder,
    tid: UInt32Builder,
    cgroup_id: UInt64Builder,
    comm: StringDictionaryBuilder<Int32Type>,
    service_name: StringDictionaryBuilder<Int32Type>,
    container_id: StringDictionaryBuilder<Int32Type>,
    cgroup_path: StringDictionaryBuilder<Int32Type>,
    pod_name: StringDictionaryBuilder<Int32Type>,
    direction: StringDictionaryBuilder<Int32Type>,
    tls: BooleanBuilder,
    method: StringDictionaryBuilder<Int32Type>,
    path: StringBuilder,
    path_truncated: BooleanBuilder,
    status: UInt16Builder,
    start_ns: UInt64Builder,
    end_ns: UInt64Builder,
    duration_ns: UInt64Builder,
    request_bytes: UInt64Builder,
    response_bytes: UInt64Builder,
    request_body: StringDictionaryBuilder<Int32Type>,
    request_content_length: UInt64Builder,
    response_body: StringDictionaryBuilder<Int32Type>,
    response_content_length: UInt64Builder,
    peer_addr: StringDictionaryBuilder<Int32Type>,
    peer_port: UInt16Builder,
    local_addr: StringDictionaryBuilder<Int32Type>,
    local_port: UInt16Builder,
    tcp_event: StringDictionaryBuilder<Int32Type>,
    inbound: BooleanBuilder,
    filename: StringBuilder,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_flags: UInt8Builder,
    collector: StringDictionaryBuilder<Int32Type>,
    metric: StringDictionaryBuilder<Int32Type>,
    family: StringDictionaryBuilder<Int32Type>,
    metric_type: StringDictionaryBuilder<Int32Type>,
    help: StringDictionaryBuilder<Int32Type>,
    unit: StringDictionaryBuilder<Int32Type>,
    labels: StringDictionaryBuilder<Int32Type>,
    value: Float64Builder,
}

fn opt_str(b: &mut StringDictionaryBuilder<Int32Type>, v: Option<&str>) {
    match v {
        Some(v) => b.append_value(v),
        None => b.append_null(),
    }
}

impl Builders {
    fn new() -> Self {
        let d = StringDictionaryBuilder::<Int32Type>::new;
        Self {
            t: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            kind: StringDictionaryBuilder::new(),
            pid: UInt32Builder::new(),
            tid: UInt32Builder::new(),
            cgroup_id: UInt64Builder::new(),
            comm: d(),
            service_name: d(),
            container_id: d(),
            cgroup_path: d(),
            pod_name: d(),
            direction: d(),
            tls: BooleanBuilder::new(),
            method: d(),
            path: StringBuilder::new(),
            path_truncated: BooleanBuilder::new(),
            status: UInt16Builder::new(),
            start_ns: UInt64Builder::new(),
            end_ns: UInt64Builder::new(),
            duration_ns: UInt64Builder::new(),
            request_bytes: UInt64Builder::new(),
            response_bytes: UInt64Builder::new(),
            request_body: d(),
            request_content_length: UInt64Builder::new(),
            response_body: d(),
            response_content_length: UInt64Builder::new(),
            peer_addr: d(),
            peer_port: UInt16Builder::new(),
            local_addr: d(),
            local_port: UInt16Builder::new(),
            tcp_event: d(),
            inbound: BooleanBuilder::new(),
            filename: StringBuilder::new(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            parent_span_id: FixedSizeBinaryBuilder::new(8),
            trace_flags: UInt8Builder::new(),
            collector: d(),
            metric: d(),
            family: d(),
            metric_type: d(),
            help: d(),
            unit: d(),
            labels: d(),
            value: Float64Builder::new(),
        }
    }

    /// Appends one row; every column gets exactly one value or null.
    fn push(&mut self, record: &Record) {
        self.t.append_value(record.t_ns());
        self.kind.append_value(record.kind());
        let mut row = Row::default();
        match record {
            Record::Http {
                exchange: x, who, ..
            } => {
                row.pid = Some(x.tgid);
                row.tid = Some(x.tid);
                row.cgroup_id = Some(x.cgroup_id);
                row.comm = Some(&x.comm);
                row.service_name = Some(&who.service_name);
                row.container_id = Some(&who.container_id);
                row.cgroup_path = who.cgroup_path.as_deref();
                row.pod_name = who.pod_name.as_deref();
                row.direction = Some(direction_str(x.direction));
                row.tls = Some(x.tls);
                row.method = Some(x.method);
                row.path = Some(&x.path);
                row.path_truncated = Some(x.path_truncated);
                row.status = Some(x.status);
                row.start_ns = Some(x.start_ns);
                row.end_ns = Some(x.end_ns);
                row.duration_ns = Some(x.duration_ns());
                row.request_bytes = Some(x.request_bytes);
                row.response_bytes = Some(x.response_bytes);
                row.request_body = Some(body_str(x.request_body));
                row.response_body = Some(body_str(x.response_body));
                row.peer = x.peer;
                row.local = x.local;
                row.trace = x.traceparent;
            }
            Record::Tcp { event, who, .. } => {
                if let Some(o) = &event.owner {
                    row.pid = Some(o.tgid);
                    row.cgroup_id = Some(o.cgroup_id);
                    row.comm = Some(&o.comm);
                    row.inbound = Some(o.inbound);
                }
                if let Some(w) = who {
                    row.service_name = Some(&w.service_name);
                    row.container_id = Some(&w.container_id);
                    row.cgroup_path = w.cgroup_path.as_deref();
                    row.pod_name = w.pod_name.as_deref();
                }
                row.tcp_event = Some(tcp_kind_str(event.kind));
                row.duration_ns = Some(event.duration_ns);
                row.peer = event.remote;
                row.local = event.local;
            }
            Record::Exec { exec, .. } => {
                row.pid = Some(exec.tgid);
                row.tid = Some(exec.pid);
                row.cgroup_id = Some(exec.cgroup_id);
                row.comm = Some(&exec.comm);
                row.filename = Some(&exec.filename);
            }
            Record::Reading { reading: r, .. } => {
                let labels = labels_json(&r.labels);
                self.push_row(&row);
                self.collector.append_value(&r.collector);
                self.metric.append_value(&r.metric);
                self.family.append_value(&r.family);
                self.metric_type
                    .append_value(metric_type_str(r.metric_type));
                self.help.append_value(&r.help);
                self.unit.append_value(&r.unit);
                self.labels.append_value(labels);
                self.value.append_value(r.value);
                return;
            }
            Record::Tick { .. } => {}
        }
        self.push_row(&row);
        for b in [
            &mut self.collector,
            &mut self.metric,
            &mut self.family,
            &mut self.metric_type,
            &mut self.help,
            &mut self.unit,
            &mut self.labels,
        ] {
            b.append_null();
        }
        self.value.append_null();
    }

    fn push_row(&mut self, row: &Row<'_>) {
        self.pid.append_option(row.pid);
        self.tid.append_option(row.tid);
        self.cgroup_id.append_option(row.cgroup_id);
        opt_str(&mut self.comm, row.comm);
        opt_str(&mut self.service_name, row.service_name);
        opt_str(&mut self.container_id, row.container_id);
        opt_str(&mut self.cgroup_path, row.cgroup_path);
        opt_str(&mut self.pod_name, row.pod_name);
        opt_str(&mut self.direction, row.direction);
        self.tls.append_option(row.tls);
        opt_str(&mut self.method, row.method);
        self.path.append_option(row.path);
        self.path_truncated.append_option(row.path_truncated);
        self.status.append_option(row.status);
        self.start_ns.append_option(row.start_ns);
        self.end_ns.append_option(row.end_ns);
        self.duration_ns.append_option(row.duration_ns);
        self.request_bytes.append_option(row.request_bytes);
        self.response_bytes.append_option(row.response_bytes);
        opt_str(&mut self.request_body, row.request_body.map(|b| b.0));
        self.request_content_length
            .append_option(row.request_body.and_then(|b| b.1));
        opt_str(&mut self.response_body, row.response_body.map(|b| b.0));
        self.response_content_length
            .append_option(row.response_body.and_then(|b| b.1));
        let ip = |a: Option<std::net::SocketAddr>| a.map(|a| a.ip().to_string());
        opt_str(&mut self.peer_addr, ip(row.peer).as_deref());
        self.peer_port.append_option(row.peer.map(|a| a.port()));
        opt_str(&mut self.local_addr, ip(row.local).as_deref());
        self.local_port.append_option(row.local.map(|a| a.port()));
        opt_str(&mut self.tcp_event, row.tcp_event);
        self.inbound.append_option(row.inbound);
        self.filename.append_option(row.filename);
        // The request's `traceparent`: its span id is the caller's, the parent of the span
        // replay builds; span ids themselves are assigned when spans are built (replay).
        match row.trace {
            Some(t) => {
                self.trace_id
                    .append_value(t.trace_id)
                    .expect("16 bytes for a 16-byte column");
                self.parent_span_id
                    .append_value(t.span_id)
                    .expect("8 bytes for an 8-byte column");
                self.trace_flags.append_value(t.flags);
            }
            None => {
                self.trace_id.append_null();
                self.parent_span_id.append_null();
                self.trace_flags.append_null();
            }
        }
        self.span_id.append_null();
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.t.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.tid.finish()),
            Arc::new(self.cgroup_id.finish()),
            Arc::new(self.comm.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.container_id.finish()),
            Arc::new(self.cgroup_path.finish()),
            Arc::new(self.pod_name.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.tls.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.path_truncated.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.start_ns.finish()),
            Arc::new(self.end_ns.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.request_bytes.finish()),
            Arc::new(self.response_bytes.finish()),
            Arc::new(self.request_body.finish()),
            Arc::new(self.request_content_length.finish()),
            Arc::new(self.response_body.finish()),
            Arc::new(self.response_content_length.finish()),
            Arc::new(self.peer_addr.finish()),
            Arc::new(self.peer_port.finish()),
            Arc::new(self.local_addr.finish()),
            Arc::new(self.local_port.finish()),
            Arc::new(self.tcp_event.finish()),
            Arc::new(self.inbound.finish()),
            Arc::new(self.filename.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_flags.finish()),
            Arc::new(self.collector.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.family.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.help.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.labels.finish()),
            Arc::new(self.value.finish()),
        ]
    }
}

/// The event columns of one row (everything but `t`, `kind` and the reading columns).
#[derive(Default)]
struct Row<'a> {
    pid: Option<u32>,
    tid: Option<u32>,
    cgroup_id: Option<u64>,
    comm: Option<&'a str>,
    service_name: Option<&'a str>,
    container_id: Option<&'a str>,
    cgroup_path: Option<&'a str>,
    pod_name: Option<&'a str>,
    direction: Option<&'static str>,
    tls: Option<bool>,
    method: Option<&'static str>,
    path: Option<&'a str>,
    path_truncated: Option<bool>,
    status: Option<u16>,
    start_ns: Option<u64>,
    end_ns: Option<u64>,
    duration_ns: Option<u64>,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    request_body: Option<(&'static str, Option<u64>)>,
    response_body: Option<(&'static str, Option<u64>)>,
    peer: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    tcp_event: Option<&'static str>,
    inbound: Option<bool>,
    filename: Option<&'a str>,
    trace: Option<crate::trace::context::TraceContext>,
}

/// Labels as a JSON object with keys in label-name order.
pub fn labels_json(labels: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The records as one Arrow batch of [`schema`].
pub fn to_batch(records: &[Record]) -> Result<RecordBatch, ArrowError> {
    let mut b = Builders::new();
    for r in records {
        b.push(r);
    }
    RecordBatch::try_new(schema(), b.finish())
}
