//! The Jaeger query API end to end: spans pushed over gRPC (one batch, like an agent) come
//! back as Jaeger traces with parent links, processes and typed tags; searches filter by
//! service, operation, tags, duration and time and are limited in traces; errors are Jaeger's.

use sonde_proto::v1::{AckStatus, AnyValue, BatchPayload, KeyValue, Span, any_value::Value};
use sonde_tests::{Aggregator, Response};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// 1 s after this, in ns.
const BASE_NS: u64 = 1_700_000_000_000_000_000;

#[allow(clippy::too_many_arguments)]
fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    service: &str,
    name: &str,
    kind: i32,
    start_ms: u64,
    duration_ms: u64,
    status_code: i64,
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: BASE_NS + start_ms * 1_000_000,
        end_time_unix_nano: BASE_NS + (start_ms + duration_ms) * 1_000_000,
        status: if status_code >= 500 { 2 } else { 0 },
        status_message: String::new(),
        attributes: vec![
            kv("http.response.status_code", Value::IntValue(status_code)),
            kv("http.request.method", Value::StringValue("GET".into())),
        ],
        resource: vec![
            kv("service.name", Value::StringValue(service.into())),
            kv("host.name", Value::StringValue(format!("{service}-host"))),
        ],
    }
}

fn spans() -> Vec<Span> {
    vec![
        // Trace 1: frontend → (client) → backend, an error at the backend.
        span(1, 1, None, "frontend", "GET /checkout", 2, 0, 300, 200),
        span(1, 2, Some(1), "frontend", "GET", 3, 10, 250, 500),
        span(1, 3, Some(2), "backend", "GET /pay", 2, 20, 200, 500),
        // Trace 2: a fast frontend request.
        span(2, 4, None, "frontend", "GET /health", 2, 1_000, 2, 200),
        // Trace 3: a slower checkout, later.
        span(3, 5, None, "frontend", "GET /checkout", 2, 2_000, 900, 200),
    ]
}

fn json(response: &Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status, status, "{}", response.body);
    response.json()
}

fn trace_ids(response: &Response) -> Vec<String> {
    let body = json(response, 200);
    assert_eq!(body["errors"], serde_json::Value::Null, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_owned())
        .collect()
}

fn id(b: u8) -> String {
    format!("{b:02x}").repeat(16)
}

#[test]
fn jaeger_api_serves_pushed_spans() {
    let agg = Aggregator::start();
    let payload = BatchPayload {
        spans: spans(),
        ..Default::default()
    };
    let acks = agg.push(vec![sonde_proto::codec::encode_batch(
        "agent-1", 1, 1, &payload, 3,
    )]);
    assert_eq!(acks[0].status, AckStatus::Ok as i32, "{:?}", acks[0]);
    assert_eq!(acks[0].spans_stored, 5);

    assert_eq!(
        json(&agg.get("/api/services"), 200),
        serde_json::json!({"data": ["backend", "frontend"], "total": 2, "limit": 0,
            "offset": 0, "errors": null})
    );
    assert_eq!(
        json(&agg.get("/api/services/frontend/operations"), 200)["data"],
        serde_json::json!(["GET", "GET /checkout", "GET /health"])
    );
    assert_eq!(
        json(
            &agg.get("/api/operations?service=frontend&spanKind=client"),
            200
        ),
        serde_json::json!({"data": [{"name": "GET", "spanKind": "client"}], "total": 1,
            "limit": 0, "offset": 0, "errors": null})
    );

    // One trace by id: every span, parents as CHILD_OF, one process per service.
    let body = json(&agg.get(&format!("/api/traces/{}", id(1))), 200);
    let trace = &body["data"][0];
    assert_eq!(trace["traceID"], id(1));
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    let by_id = |s: u8| {
        spans
            .iter()
            .find(|x| x["spanID"] == format!("{s:02x}").repeat(8))
            .unwrap()
    };
    assert_eq!(by_id(1)["references"], serde_json::json!([]));
    assert_eq!(
        by_id(3)["references"],
        serde_json::json!([{"refType": "CHILD_OF", "traceID": id(1),
            "spanID": "0202020202020202"}])
    );
    assert_eq!(by_id(3)["startTime"], (BASE_NS / 1000 + 20_000) as i64);
    assert_eq!(by_id(3)["duration"], 200_000);
    assert_eq!(by_id(3)["operationName"], "GET /pay");
    let backend = by_id(3)["processID"].as_str().unwrap();
    assert_eq!(trace["processes"][backend]["serviceName"], "backend");
    assert_eq!(
        trace["processes"][backend]["tags"],
        serde_json::json!([{"key": "host.name", "type": "string", "value": "backend-host"}])
    );
    assert_ne!(by_id(1)["processID"], by_id(3)["processID"]);
    let tags = by_id(3)["tags"].as_array().unwrap();
    assert!(tags.contains(&serde_json::json!(
        {"key": "http.response.status_code", "type": "int64", "value": 500})));
    assert!(tags.contains(&serde_json::json!({"key": "error", "type": "bool", "value": true})));
    assert!(tags.contains(&serde_json::json!(
        {"key": "span.kind", "type": "string", "value": "server"})));

    // Searches: whole traces, most recent first.
    let window = format!(
        "start={}&end={}",
        BASE_NS / 1000 - 1_000_000,
        BASE_NS / 1000 + 10_000_000
    );
    let search = |q: &str| agg.get(&format!("/api/traces?{window}&{q}"));
    assert_eq!(
        trace_ids(&search("service=frontend")),
        [id(3), id(2), id(1)]
    );
    assert_eq!(
        trace_ids(&search("service=frontend&limit=2")),
        [id(3), id(2)]
    );
    assert_eq!(
        trace_ids(&search("service=frontend&operation=GET%20%2Fcheckout")),
        [id(3), id(1)]
    );
    assert_eq!(
        trace_ids(&search(
            "service=frontend&minDuration=100ms&maxDuration=500ms"
        )),
        [id(1)]
    );
    assert_eq!(
        trace_ids(&search("service=frontend&maxDuration=5ms")),
        [id(2)]
    );
    let errors = search("service=backend&tags=%7B%22error%22%3A%22true%22%7D");
    let body = json(&errors, 200);
    assert_eq!(
        body["data"][0]["spans"].as_array().unwrap().len(),
        3,
        "whole trace"
    );
    assert_eq!(
        trace_ids(&search(
            "service=frontend&tag=http.response.status_code:500"
        )),
        [id(1)]
    );
    assert_eq!(
        trace_ids(&search("service=frontend&tag=span.kind:client")),
        [id(1)]
    );
    assert_eq!(
        trace_ids(&search(
            "service=frontend&tag=host.name:frontend-host&limit=1"
        )),
        [id(3)]
    );
    assert!(trace_ids(&search("service=nobody")).is_empty());
    // The time window applies to span starts.
    let late = format!(
        "/api/traces?service=frontend&start={}&end={}",
        BASE_NS / 1000 + 1_500_000,
        BASE_NS / 1000 + 10_000_000
    );
    assert_eq!(trace_ids(&agg.get(&late)), [id(3)]);
    // Explicit ids.
    assert_eq!(
        trace_ids(&agg.get(&format!("/api/traces?traceID={}&traceID={}", id(2), id(1)))),
        [id(2), id(1)]
    );

    // Errors as Jaeger returns them.
    assert_eq!(
        json(
            &agg.get("/api/traces/000000000000000000000000000000ff"),
            404
        ),
        serde_json::json!({"data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": 404, "msg": "trace not found"}]})
    );
    let bad = json(&agg.get("/api/traces/xyz"), 400);
    assert_eq!(bad["errors"][0]["code"], 400);
    assert_eq!(
        json(&agg.get("/api/traces?limit=5"), 400)["errors"][0]["msg"],
        "parameter 'service' is required"
    );
    assert_eq!(
        json(
            &agg.get("/api/traces?service=a&minDuration=2s&maxDuration=1s"),
            400
        )["errors"][0]["msg"],
        "'maxDuration' should be greater than 'minDuration'"
    );
    assert_eq!(
        json(&agg.get("/api/operations"), 400)["errors"][0]["msg"],
        "parameter 'service' is required"
    );
}
