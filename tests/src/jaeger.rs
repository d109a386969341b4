//! Reading the aggregator's Jaeger API answers in tests: each span with the fields the tests
//! check, ids normalised with [`norm`] (Jaeger may print them with or without leading zeros).

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::{Aggregator, encode};

/// One span of a Jaeger answer.
#[derive(Debug, Clone, PartialEq)]
pub struct JaegerSpan {
    /// Trace id.
    pub trace: String,
    /// Span id.
    pub id: String,
    /// The `CHILD_OF` reference's span id.
    pub parent: Option<String>,
    /// The span's process' service name.
    pub service: String,
    /// `span.kind` (`server`, `client`, …).
    pub kind: String,
    /// `url.path`.
    pub path: String,
    /// Start, µs since the epoch.
    pub start_us: i64,
    /// Duration, µs.
    pub duration_us: i64,
    /// Every tag as text (strings as they are, other values in their JSON form).
    pub tags: BTreeMap<String, String>,
}

impl JaegerSpan {
    /// Tag `key` as text.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// The traces of an answer, in its order: (trace id, spans).
pub fn traces(json: &Value) -> Vec<(String, Vec<JaegerSpan>)> {
    let mut out = Vec::new();
    for trace in json["data"].as_array().into_iter().flatten() {
        let processes = &trace["processes"];
        let spans = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|span| {
                let tags: BTreeMap<String, String> = span["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let value = match &t["value"] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (t["key"].as_str().unwrap_or_default().to_owned(), value)
                    })
                    .collect();
                let pid = span["processID"].as_str().expect("processID");
                JaegerSpan {
                    trace: norm(span["traceID"].as_str().expect("traceID")),
                    id: norm(span["spanID"].as_str().expect("spanID")),
                    parent: span["references"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r["refType"] == "CHILD_OF")
                        .map(|r| norm(r["spanID"].as_str().expect("spanID"))),
                    service: processes[pid]["serviceName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    kind: tags.get("span.kind").cloned().unwrap_or_default(),
                    path: tags.get("url.path").cloned().unwrap_or_default(),
                    start_us: span["startTime"].as_i64().expect("startTime"),
                    duration_us: span["duration"].as_i64().expect("duration"),
                    tags,
                }
            })
            .collect();
        out.push((norm(trace["traceID"].as_str().expect("traceID")), spans));
    }
    out
}

/// `GET /api/traces?service=…` for spans that started between `from_us` and `to_us`.
pub fn search_between(
    agg: &Aggregator,
    service: &str,
    from_us: i64,
    to_us: i64,
) -> Vec<(String, Vec<JaegerSpan>)> {
    let r = agg.get(&format!(
        "/api/traces?service={}&limit=100000&start={from_us}&end={to_us}",
        encode(service)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    traces(&r.json())
}

/// [`search_between`] over the last hour (and a minute ahead).
pub fn search(agg: &Aggregator, service: &str) -> Vec<(String, Vec<JaegerSpan>)> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64;
    search_between(agg, service, now_us - 3_600_000_000, now_us + 60_000_000)
}

/// An id without leading zeros.
pub fn norm(id: &str) -> String {
    let t = id.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}
