//! The Prometheus HTTP API as Grafana calls it, end to end against a real aggregator: query
//! endpoints over GET and form POST, Prometheus' JSON (NaN/Inf as strings, seconds with
//! millisecond decimals), the empty exemplar/rules/alerts answers, `/federate`, and query
//! limits answering Prometheus-style errors without taking the process down.

use sonde_proto::v1::{BatchPayload, Label, Sample, Series};
use sonde_tests::{Aggregator, encode, http_post_form};

const T0: i64 = 1_700_000_000_000;

fn series(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    let mut all = vec![Label {
        name: "__name__".into(),
        value: name.into(),
    }];
    all.extend(labels.iter().map(|(n, v)| Label {
        name: (*n).into(),
        value: (*v).into(),
    }));
    Series {
        labels: all,
        samples: samples
            .iter()
            .map(|&(timestamp_ms, value)| Sample {
                timestamp_ms,
                value,
            })
            .collect(),
        exemplars: vec![],
    }
}

fn push(agg: &Aggregator, series: Vec<Series>) {
    // Sequence numbers never repeat, or the aggregator would take a batch for a replay.
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let batches = series
        .chunks(200)
        .map(|chunk| {
            let payload = BatchPayload {
                series: chunk.to_vec(),
                ..Default::default()
            };
            let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sonde_proto::codec::encode_batch("http-api-test", 1, sequence, &payload, 3)
        })
        .collect();
    for ack in agg.push(batches) {
        assert_eq!(ack.status, sonde_proto::v1::AckStatus::Ok as i32, "{ack:?}");
    }
}

/// A counter per instance, one sample every 15 s for 10 minutes.
fn load_counters(agg: &Aggregator, instances: usize) {
    let samples: Vec<(i64, f64)> = (0..40).map(|i| (T0 + i * 15_000, i as f64 * 3.0)).collect();
    let all = (0..instances)
        .map(|i| {
            series(
                "demo_requests_total",
                &[("instance", &format!("host-{i}")), ("job", "demo")],
                &samples,
            )
        })
        .collect();
    push(agg, all);
}

#[test]
fn query_endpoints_answer_like_prometheus() {
    let agg = Aggregator::start();
    load_counters(&agg, 3);
    push(
        &agg,
        vec![series(
            "demo_special",
            &[],
            &[(T0, f64::NAN), (T0 + 15_000, f64::INFINITY)],
        )],
    );
    let t = (T0 + 600_000) as f64 / 1000.0;

    // Instant query, GET.
    let data = agg.query("sum by (job) (rate(demo_requests_total[5m]))", Some(t));
    assert_eq!(data["resultType"], "vector");
    assert_eq!(
        data["result"][0]["metric"],
        serde_json::json!({"job": "demo"})
    );
    assert_eq!(data["result"][0]["value"][0].as_f64(), Some(t));
    let v: f64 = data["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((v - 0.6).abs() < 1e-9, "3 counters at 0.2/s: {v}");

    // Specials are strings.
    let data = agg.query("demo_special", Some((T0 + 15_000) as f64 / 1000.0));
    assert_eq!(data["result"][0]["value"][1], "+Inf");
    let data = agg.query(
        "demo_special offset 15s",
        Some((T0 + 15_000) as f64 / 1000.0),
    );
    assert_eq!(data["result"][0]["value"][1], "NaN");

    // Range query, form POST, fractional step and RFC 3339 times.
    let response = http_post_form(
        &format!("{}/api/v1/query_range", agg.url()),
        &[
            ("query", "demo_requests_total{instance=\"host-1\"}"),
            ("start", "2023-11-14T22:13:20Z"),
            ("end", "2023-11-14T22:14:20Z"),
            ("step", "30"),
        ],
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let json = response.json();
    assert_eq!(json["data"]["resultType"], "matrix");
    assert_eq!(
        json["data"]["result"][0]["values"],
        serde_json::json!([
            [1_700_000_000, "0"],
            [1_700_000_030, "6"],
            [1_700_000_060, "12"]
        ])
    );

    // Errors: Prometheus' types and codes.
    let bad = agg.get("/api/v1/query_range?query=up&start=10&end=5&step=1");
    assert_eq!(bad.status, 400, "{}", bad.body);
    let too_fine = agg.get("/api/v1/query_range?query=up&start=0&end=100000&step=1");
    assert_eq!(too_fine.status, 400);
    assert!(too_fine.body.contains("11,000 points"), "{}", too_fine.body);
    let conflict = agg.get(&format!(
        "/api/v1/query?query={}&time={t}",
        encode("demo_requests_total / ignoring(instance) demo_requests_total")
    ));
    assert_eq!(conflict.status, 422, "{}", conflict.body);
    assert_eq!(conflict.json()["errorType"], "execution");
    assert!(conflict.body.contains("many-to-many"), "{}", conflict.body);
}

#[test]
fn exemplars_rules_alerts_and_buildinfo() {
    let agg = Aggregator::start();
    let exemplars = agg.get(&format!(
        "/api/v1/query_exemplars?query={}&start=0&end=100",
        encode("rate(x[5m])")
    ));
    assert_eq!(exemplars.status, 200, "{}", exemplars.body);
    assert_eq!(
        exemplars.json(),
        serde_json::json!({"status": "success", "data": []})
    );
    let post = http_post_form(
        &format!("{}/api/v1/query_exemplars", agg.url()),
        &[("query", "x{")],
    )
    .unwrap();
    assert_eq!(post.status, 400, "{}", post.body);
    assert_eq!(
        agg.get("/api/v1/rules").json(),
        serde_json::json!({"status": "success", "data": {"groups": []}})
    );
    assert_eq!(agg.get("/api/v1/rules?type=bogus").status, 400);
    assert_eq!(
        agg.get("/api/v1/alerts").json(),
        serde_json::json!({"status": "success", "data": {"alerts": []}})
    );
    let build = agg.get("/api/v1/status/buildinfo").json();
    assert_eq!(build["status"], "success");
    assert!(build["data"]["version"].is_string());
}

#[test]
fn federate_exposes_latest_samples() {
    let agg = Aggregator::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    push(
        &agg,
        vec![
            series(
                "fed_a",
                &[("job", "x")],
                &[(now - 60_000, 1.0), (now - 30_000, 2.5)],
            ),
            series("fed_b", &[("path", "a\"b")], &[(now - 10_000, 1234567.0)]),
            series(
                "fed_stale",
                &[],
                &[
                    (now - 20_000, 1.0),
                    (now - 10_000, f64::from_bits(0x7ff0_0000_0000_0002)),
                ],
            ),
            series("fed_old", &[], &[(now - 3_600_000, 1.0)]),
        ],
    );
    let response = agg.get(&format!(
        "/federate?match[]={}&match[]={}",
        encode("{__name__=~\"fed_.*\"}"),
        encode("fed_a")
    ));
    assert_eq!(response.status, 200, "{}", response.body);
    let expected = format!(
        "# TYPE fed_a untyped\nfed_a{{job=\"x\"}} 2.5 {}\n# TYPE fed_b untyped\nfed_b{{path=\"a\\\"b\"}} 1.234567e+06 {}\n",
        now - 30_000,
        now - 10_000
    );
    assert_eq!(response.body, expected);
    assert_eq!(agg.get("/federate").status, 400);
}

#[test]
fn limits_answer_errors_and_the_process_survives() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(
        &config,
        "[query]\nmax_samples = 5000\nmax_series = 100\ntimeout = \"30s\"\n",
    )
    .unwrap();
    let agg = Aggregator::start_with(&["--config", config.to_str().unwrap()]);
    load_counters(&agg, 150);
    let end = (T0 + 600_000) as f64 / 1000.0;

    // Too many series.
    let response = agg.get(&format!(
        "/api/v1/query?query={}&time={end}",
        encode("sum(rate(demo_requests_total[5m]))")
    ));
    assert_eq!(response.status, 422, "{}", response.body);
    assert_eq!(response.json()["errorType"], "execution");
    assert!(
        response.body.contains("too many series"),
        "{}",
        response.body
    );

    // Too many samples held: 80 series × 40 samples selected.
    let response = agg.get(&format!(
        "/api/v1/query_range?query={}&start={}&end={end}&step=1",
        encode("demo_requests_total{instance=~\"host-[1-8]?[0-9]\"}"),
        T0 as f64 / 1000.0
    ));
    assert_eq!(response.status, 422, "{}", response.body);
    assert!(
        response
            .body
            .contains("query processing would load too many samples into memory"),
        "{}",
        response.body
    );

    // A deadline shorter than the evaluation: 503 timeout.
    let response = agg.get(&format!(
        "/api/v1/query_range?query={}&start={}&end={end}&step=0.1&timeout=0.000001",
        encode("count_over_time(demo_requests_total{instance=\"host-1\"}[10m])"),
        T0 as f64 / 1000.0
    ));
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.json()["errorType"], "timeout");

    // The process is fine and answers small queries.
    assert_eq!(agg.get("/-/healthy").status, 200);
    let data = agg.query("count(demo_requests_total{instance=\"host-1\"})", Some(end));
    assert_eq!(data["result"][0]["value"][1], "1");
}
