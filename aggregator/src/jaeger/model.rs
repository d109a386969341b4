//! Jaeger's JSON trace model (what the Jaeger UI and Grafana read), built from stored spans
//! the way Jaeger translates OpenTelemetry spans: ids in lowercase hex (a trace id whose
//! upper half is zero in 16 digits), times in µs, the parent as a `CHILD_OF` reference, the
//! span kind as tag `span.kind`, the status as `otel.status_code` (+ `error = true` and
//! `otel.status_description`), resource attributes other than `service.name` as process tags,
//! one process per distinct (service, tags) in the trace (`p1`, `p2`, … in order of first
//! appearance).

use serde::Serialize;
use serde_json::Value;

use crate::store::{AttrValue, Span};

/// The service name Jaeger shows for spans whose resource has none.
pub const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// The name shown for a stored service ("" has none).
pub fn service_name(stored: &str) -> &str {
    if stored.is_empty() {
        NO_SERVICE_NAME
    } else {
        stored
    }
}

/// The stored service for a name shown by [`service_name`].
pub fn stored_service(shown: &str) -> &str {
    if shown == NO_SERVICE_NAME { "" } else { shown }
}

/// `span.kind` value for an OpenTelemetry kind number.
pub fn kind_name(kind: u8) -> Option<&'static str> {
    match kind {
        1 => Some("internal"),
        2 => Some("server"),
        3 => Some("client"),
        4 => Some("producer"),
        5 => Some("consumer"),
        _ => None,
    }
}

/// The OpenTelemetry kind number of a `span.kind` value.
pub fn kind_number(name: &str) -> Option<u8> {
    (1..=5).find(|k| kind_name(*k) == Some(name))
}

/// A trace id as Jaeger prints it.
pub fn trace_id_hex(id: &[u8; 16]) -> String {
    let hex = hex(id);
    if id[..8].iter().all(|b| *b == 0) {
        hex[16..].to_owned()
    } else {
        hex
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A typed tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    /// Attribute key.
    pub key: String,
    /// `string`, `bool`, `int64`, `float64` or `binary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The value, typed as `type` says (binary as base64).
    pub value: Value,
}

fn tag(key: &str, value: &AttrValue) -> Tag {
    let (kind, value) = match value {
        AttrValue::Str(s) => ("string", Value::String(s.clone())),
        AttrValue::Bool(b) => ("bool", Value::Bool(*b)),
        AttrValue::Int(i) => ("int64", Value::from(*i)),
        AttrValue::Double(d) => ("float64", Value::from(*d)),
        AttrValue::Bytes(b) => ("binary", Value::String(base64(b))),
    };
    Tag {
        key: key.to_owned(),
        kind,
        value,
    }
}

/// A reference to another span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    /// Always `CHILD_OF` (the parent).
    #[serde(rename = "refType")]
    pub ref_type: &'static str,
    /// Trace id.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Parent span id.
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// One span in Jaeger's JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JaegerSpan {
    /// Trace id.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Span id (16 hex digits).
    #[serde(rename = "spanID")]
    pub span_id: String,
    /// Always 1 (sampled).
    pub flags: u32,
    /// The span name.
    #[serde(rename = "operationName")]
    pub operation_name: String,
    /// The parent, when there is one.
    pub references: Vec<Reference>,
    /// Start, µs since the epoch.
    #[serde(rename = "startTime")]
    pub start_time: i64,
    /// Duration in µs.
    pub duration: i64,
    /// Span attributes and derived tags.
    pub tags: Vec<Tag>,
    /// Always empty (no span events).
    pub logs: Vec<Value>,
    /// Key into the trace's `processes`.
    #[serde(rename = "processID")]
    pub process_id: String,
    /// Always `null`.
    pub warnings: Option<Vec<String>>,
}

/// A process (service and resource tags).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    /// The service.
    #[serde(rename = "serviceName")]
    pub service_name: String,
    /// Resource attributes other than `service.name`.
    pub tags: Vec<Tag>,
}

/// One trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// Trace id.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Its spans, by start time.
    pub spans: Vec<JaegerSpan>,
    /// Processes by id.
    pub processes: std::collections::BTreeMap<String, Process>,
    /// Always `null`.
    pub warnings: Option<Vec<String>>,
}

/// Builds a trace from its spans (non-empty, one trace id).
pub fn trace(mut spans: Vec<Span>) -> Trace {
    spans.sort_by(|a, b| {
        a.start_unix_nano
            .cmp(&b.start_unix_nano)
            .then(a.span_id.cmp(&b.span_id))
    });
    let trace_id = spans
        .first()
        .map(|s| trace_id_hex(&s.trace_id))
        .unwrap_or_default();
    let mut processes: Vec<Process> = Vec::new();
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let process = Process {
            service_name: service_name(&span.service).to_owned(),
            tags: span
                .resource
                .iter()
                .filter(|(k, _)| k != "service.name")
                .map(|(k, v)| tag(k, v))
                .collect(),
        };
        let index = match processes.iter().position(|p| *p == process) {
            Some(i) => i,
            None => {
                processes.push(process);
                processes.len() - 1
            }
        };
        let mut tags: Vec<Tag> = span.attributes.iter().map(|(k, v)| tag(k, v)).collect();
        if let Some(kind) = kind_name(span.kind) {
            tags.push(tag("span.kind", &AttrValue::Str(kind.to_owned())));
        }
        match span.status_code {
            1 => tags.push(tag("otel.status_code", &AttrValue::Str("OK".to_owned()))),
            2 => {
                tags.push(tag("otel.status_code", &AttrValue::Str("ERROR".to_owned())));
                tags.push(tag("error", &AttrValue::Bool(true)));
            }
            _ => {}
        }
        if !span.status_message.is_empty() {
            tags.push(tag(
                "otel.status_description",
                &AttrValue::Str(span.status_message.clone()),
            ));
        }
        out.push(JaegerSpan {
            trace_id: trace_id.clone(),
            span_id: hex(&span.span_id),
            flags: 1,
            operation_name: span.name.clone(),
            references: span
                .parent_span_id
                .map(|p| Reference {
                    ref_type: "CHILD_OF",
                    trace_id: trace_id.clone(),
                    span_id: hex(&p),
                })
                .into_iter()
                .collect(),
            start_time: span.start_unix_nano.div_euclid(1000),
            duration: span.duration_nanos() / 1000,
            tags,
            logs: Vec::new(),
            process_id: format!("p{}", index + 1),
            warnings: None,
        });
    }
    Trace {
        trace_id,
        spans: out,
        processes: processes
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("p{}", i + 1), p))
            .collect(),
        warnings: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: u8, parent: Option<u8>, service: &str, start: i64) -> Span {
        let mut trace_id = [0u8; 16];
        trace_id[15] = 0x2a;
        Span {
            trace_id,
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            service: service.to_owned(),
            name: "GET /users/{id}".to_owned(),
            kind: 2,
            start_unix_nano: start,
            end_unix_nano: start + 1_500_000,
            status_code: 2,
            status_message: "boom".to_owned(),
            attributes: vec![
                ("http.response.status_code".to_owned(), AttrValue::Int(500)),
                ("ratio".to_owned(), AttrValue::Double(0.5)),
                ("raw".to_owned(), AttrValue::Bytes(vec![1, 2, 3, 4])),
            ],
            resource: vec![
                (
                    "service.name".to_owned(),
                    AttrValue::Str(service.to_owned()),
                ),
                ("host.name".to_owned(), AttrValue::Str("h1".to_owned())),
            ],
        }
    }

    #[test]
    fn jaeger_json_shape() {
        let t = trace(vec![
            span(2, Some(1), "db", 3_000_000),
            span(1, None, "api", 1_000_000),
            span(3, Some(1), "api", 2_000_000),
        ]);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["traceID"], "000000000000002a");
        let spans = json["spans"].as_array().unwrap();
        assert_eq!(spans[0]["spanID"], "0101010101010101");
        assert_eq!(spans[0]["references"], serde_json::json!([]));
        assert_eq!(
            spans[1]["references"],
            serde_json::json!([{"refType": "CHILD_OF", "traceID": "000000000000002a",
                "spanID": "0101010101010101"}])
        );
        assert_eq!(spans[0]["startTime"], 1000);
        assert_eq!(spans[0]["duration"], 1500);
        assert_eq!(spans[0]["processID"], "p1");
        assert_eq!(spans[1]["processID"], "p1");
        assert_eq!(spans[2]["processID"], "p2");
        assert_eq!(json["processes"]["p2"]["serviceName"], "db");
        assert_eq!(
            json["processes"]["p1"]["tags"],
            serde_json::json!([{"key": "host.name", "type": "string", "value": "h1"}])
        );
        let tags = &spans[0]["tags"];
        assert_eq!(
            tags,
            &serde_json::json!([
                {"key": "http.response.status_code", "type": "int64", "value": 500},
                {"key": "ratio", "type": "float64", "value": 0.5},
                {"key": "raw", "type": "binary", "value": "AQIDBA=="},
                {"key": "span.kind", "type": "string", "value": "server"},
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": true},
                {"key": "otel.status_description", "type": "string", "value": "boom"},
            ])
        );
        assert_eq!(spans[0]["logs"], serde_json::json!([]));
        assert_eq!(spans[0]["warnings"], Value::Null);
        assert_eq!(spans[0]["flags"], 1);
    }

    #[test]
    fn ids_kinds_and_base64() {
        assert_eq!(trace_id_hex(&[0xab; 16]), "ab".repeat(16));
        assert_eq!(kind_number("client"), Some(3));
        assert_eq!(kind_number("nope"), None);
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(service_name(""), NO_SERVICE_NAME);
        assert_eq!(stored_service(NO_SERVICE_NAME), "");
    }
}
