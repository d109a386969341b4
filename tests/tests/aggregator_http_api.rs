//! The aggregator's Prometheus HTTP API and gRPC ingest, end to end against a real process.

use sonde_proto::v1::AckStatus;
use sonde_tests::{Aggregator, encode, http_post_form, series_batch};

#[test]
fn health_readiness_and_envelopes() {
    let agg = Aggregator::start();
    let ready = agg.get("/-/ready");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(agg.get("/-/healthy").status, 200);

    // Grafana's health check: `1+1`, GET and form POST.
    let data = agg.query("1+1", Some(1000.0));
    assert_eq!(
        data,
        serde_json::json!({"resultType": "scalar", "result": [1000, "2"]})
    );
    let post = http_post_form(
        &format!("{}/api/v1/query", agg.url()),
        &[("query", "1+1"), ("time", "1000.5")],
    )
    .unwrap();
    assert_eq!(post.status, 200, "{}", post.body);
    assert_eq!(
        post.json()["data"]["result"],
        serde_json::json!([1000.5, "2"])
    );

    // Errors use Prometheus' types and codes.
    let bad = agg.get(&format!("/api/v1/query?query={}", encode("up{")));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["errorType"], "bad_data");
    let missing = agg.get("/api/v1/query");
    assert_eq!(missing.status, 400);
    assert!(missing.body.contains("query"), "{}", missing.body);
    let unsupported = agg.get(&format!(
        "/api/v1/query?query={}",
        encode("sort_by_label(up, \"job\")")
    ));
    assert_eq!(unsupported.status, 422, "{}", unsupported.body);
    assert_eq!(unsupported.json()["errorType"], "execution");
    let bad_time = agg.get("/api/v1/query?query=1&time=yesterday");
    assert_eq!(bad_time.status, 400);
    assert!(bad_time.body.contains("time"), "{}", bad_time.body);
    assert_eq!(agg.get("/api/v1/nope").status, 404);

    // Self-metrics.
    let metrics = agg.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("sonde_aggregator_http_requests_total"),
        "{}",
        metrics.body
    );
}

#[test]
fn pushed_samples_are_queryable_and_replays_do_not_double_count() {
    let agg = Aggregator::start();
    let t0 = 1_700_000_000_000i64;
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (t0 + i * 15_000, i as f64)).collect();
    let batches = vec![
        series_batch(
            "agent-a",
            1,
            "demo_requests_total",
            &[("job", "api")],
            &samples[..5],
        ),
        series_batch(
            "agent-a",
            2,
            "demo_requests_total",
            &[("job", "api")],
            &samples[5..],
        ),
        series_batch(
            "agent-a",
            3,
            "demo_temperature",
            &[("room", "lab")],
            &[(t0, 21.5)],
        ),
    ];
    let acks = agg.push(batches.clone());
    assert_eq!(acks.len(), 3);
    for ack in &acks {
        assert_eq!(ack.status, AckStatus::Ok as i32, "{}", ack.error);
    }
    assert_eq!(acks.iter().map(|a| a.samples_stored).sum::<u64>(), 11);

    // The same batches again (an agent replaying after a reconnect): acknowledged, not stored.
    let replay = agg.push(batches);
    assert!(
        replay
            .iter()
            .all(|a| a.status == AckStatus::Ok as i32 && a.samples_stored == 0)
    );

    let at = (t0 + 9 * 15_000) / 1000;
    let data = agg.query("demo_requests_total", Some(at as f64));
    assert_eq!(data["resultType"], "vector");
    assert_eq!(
        data["result"],
        serde_json::json!([{
            "metric": {"__name__": "demo_requests_total", "job": "api"},
            "value": [at, "9"]
        }])
    );
    let doubled = agg.query("demo_requests_total{job=~\"a.*\"} * 2", Some(at as f64));
    assert_eq!(doubled["result"][0]["value"][1], "18");
    assert_eq!(
        doubled["result"][0]["metric"],
        serde_json::json!({"job": "api"})
    );

    // Range query: one point per step, exactly the stored values.
    let range = agg.get(&format!(
        "/api/v1/query_range?query=demo_requests_total&start={}&end={}&step=15",
        t0 / 1000,
        (t0 + 9 * 15_000) / 1000
    ));
    assert_eq!(range.status, 200, "{}", range.body);
    let values = range.json()["data"]["result"][0]["values"].clone();
    let got: Vec<String> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());

    // Metadata-ish endpoints.
    let names = agg.get("/api/v1/label/__name__/values").json();
    assert_eq!(
        names["data"],
        serde_json::json!(["demo_requests_total", "demo_temperature"])
    );
    let labels = agg.get("/api/v1/labels").json();
    assert_eq!(
        labels["data"],
        serde_json::json!(["__name__", "job", "room"])
    );
    let series = agg
        .get(&format!(
            "/api/v1/series?match[]={}",
            encode("{room=\"lab\"}")
        ))
        .json();
    assert_eq!(
        series["data"],
        serde_json::json!([{"__name__": "demo_temperature", "room": "lab"}])
    );
}

#[test]
fn a_bad_batch_is_rejected_and_the_stream_goes_on() {
    let agg = Aggregator::start();
    let good = |seq, name| series_batch("agent-b", seq, name, &[], &[(1_000, 1.0)]);
    let mut corrupt = good(2, "x");
    corrupt.payload = bytes::Bytes::from_static(b"\x28\xb5\x2f\xfd not zstd");
    let acks = agg.push(vec![
        good(1, "first_metric"),
        corrupt,
        good(3, "bad-name"),
        good(4, "last_metric"),
    ]);
    let statuses: Vec<i32> = acks.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            AckStatus::Ok as i32,
            AckStatus::Rejected as i32,
            AckStatus::Rejected as i32,
            AckStatus::Ok as i32
        ]
    );
    assert!(acks[1].error.contains("batch 2"), "{}", acks[1].error);
    assert!(
        acks[2].error.contains("invalid metric name \"bad-name\""),
        "{}",
        acks[2].error
    );
    let names = agg.get("/api/v1/label/__name__/values").json();
    assert_eq!(
        names["data"],
        serde_json::json!(["first_metric", "last_metric"])
    );
}
