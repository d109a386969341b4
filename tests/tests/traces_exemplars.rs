//! Exemplars end to end: pushed by an agent on a histogram and on a plain series, and written
//! by Prometheus remote write, they come back from `/api/v1/query_exemplars` in Prometheus'
//! JSON shape for the series the query's selectors match, and survive a restart (WAL).

use std::time::Duration;

use prost::Message;
use sonde_proto::{
    prometheus::{
        Exemplar as PromExemplar, Label as PromLabel, Sample as PromSample, TimeSeries,
        WriteRequest,
    },
    v1::{
        AckStatus, BatchPayload, Exemplar, HistogramPoint, HistogramSeries, Label, Sample, Series,
    },
};
use sonde_tests::{Aggregator, encode};

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn exemplar(trace: &str, value: f64, timestamp_ms: i64) -> Exemplar {
    Exemplar {
        labels: vec![label("trace_id", trace)],
        value,
        timestamp_ms,
    }
}

const T0: i64 = 1_700_000_000_000;

fn payload() -> BatchPayload {
    BatchPayload {
        histograms: vec![HistogramSeries {
            labels: vec![
                label("__name__", "http_server_request_duration_seconds"),
                label("service_name", "api"),
            ],
            upper_bounds: vec![0.1, 1.0],
            points: vec![HistogramPoint {
                timestamp_ms: T0,
                bucket_counts: vec![1, 2],
                count: 3,
                sum: 5.55,
            }],
            exemplars: vec![
                exemplar("4bf92f3577b34da6a3ce929d0e0e4736", 0.05, T0 - 500),
                exemplar("00f067aa0ba902b700f067aa0ba902b7", 0.5, T0 - 400),
                exemplar("11111111111111111111111111111111", 5.0, T0 - 300),
            ],
        }],
        series: vec![Series {
            labels: vec![label("__name__", "jobs_total"), label("job", "w")],
            samples: vec![Sample {
                timestamp_ms: T0,
                value: 7.0,
            }],
            exemplars: vec![
                exemplar("aa", 1.0, T0 - 2_000),
                exemplar("bb", 2.0, T0 - 1_000),
                // Out of order: dropped, counted.
                exemplar("cc", 3.0, T0 - 1_500),
            ],
        }],
        ..Default::default()
    }
}

fn exemplars(agg: &Aggregator, query: &str, start: f64, end: f64) -> serde_json::Value {
    let response = agg.get(&format!(
        "/api/v1/query_exemplars?query={}&start={start}&end={end}",
        encode(query)
    ));
    assert_eq!(response.status, 200, "{}", response.body);
    let json = response.json();
    assert_eq!(json["status"], "success", "{}", response.body);
    json["data"].clone()
}

#[test]
fn exemplars_are_stored_queried_and_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agg = Aggregator::start_in(Some(&data), None, &[]);
    let batch = sonde_proto::codec::encode_batch("agent-1", 1, 1, &payload(), 3);
    let acks = agg.push(vec![batch]);
    assert_eq!(acks[0].status, AckStatus::Ok as i32, "{:?}", acks[0]);

    let t0 = T0 as f64 / 1000.0;
    let histogram_quantile = "histogram_quantile(0.9, sum by (le) (rate(http_server_request_duration_seconds_bucket[5m])))";
    let want = serde_json::json!([
        {
            "seriesLabels": {"__name__": "http_server_request_duration_seconds_bucket",
                "le": "+Inf", "service_name": "api"},
            "exemplars": [{"labels": {"trace_id": "11111111111111111111111111111111"},
                "value": "5", "timestamp": 1_699_999_999.7}]
        },
        {
            "seriesLabels": {"__name__": "http_server_request_duration_seconds_bucket",
                "le": "0.1", "service_name": "api"},
            "exemplars": [{"labels": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
                "value": "0.05", "timestamp": 1_699_999_999.5}]
        },
        {
            "seriesLabels": {"__name__": "http_server_request_duration_seconds_bucket",
                "le": "1", "service_name": "api"},
            "exemplars": [{"labels": {"trace_id": "00f067aa0ba902b700f067aa0ba902b7"},
                "value": "0.5", "timestamp": 1_699_999_999.6}]
        }
    ]);
    assert_eq!(
        exemplars(&agg, histogram_quantile, t0 - 60.0, t0 + 60.0),
        want
    );
    // The time range filters exemplars; series without any in range are left out.
    let narrow = exemplars(&agg, histogram_quantile, t0 - 0.45, t0 - 0.35);
    assert_eq!(narrow.as_array().unwrap().len(), 1, "{narrow}");
    assert_eq!(narrow[0]["seriesLabels"]["le"], "1");
    // Matchers of every selector apply; `or` of two selectors unions.
    let both = exemplars(
        &agg,
        "jobs_total{job=\"w\"} or http_server_request_duration_seconds_bucket{le=\"0.1\"}",
        t0 - 60.0,
        t0,
    );
    assert_eq!(both.as_array().unwrap().len(), 2, "{both}");
    assert_eq!(
        both[1]["exemplars"],
        serde_json::json!([
            {"labels": {"trace_id": "aa"}, "value": "1", "timestamp": 1_699_999_998},
            {"labels": {"trace_id": "bb"}, "value": "2", "timestamp": 1_699_999_999}
        ])
    );
    assert_eq!(
        exemplars(&agg, "jobs_total{job=\"other\"}", 0.0, t0),
        serde_json::json!([])
    );
    // Bad input: Prometheus' 400s.
    assert_eq!(agg.get("/api/v1/query_exemplars?query=x%7B").status, 400);
    assert_eq!(
        agg.get("/api/v1/query_exemplars?query=x&start=10&end=5")
            .status,
        400
    );
    let metrics = agg.get("/metrics").body;
    assert!(
        metrics.contains("sonde_aggregator_exemplars_dropped_total{reason=\"out_of_order\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sonde_aggregator_exemplars_in_memory 5"),
        "{metrics}"
    );

    // Remote write exemplars are kept too.
    let write = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![PromLabel {
                name: "__name__".into(),
                value: "rw_latency_bucket".into(),
            }],
            samples: vec![PromSample {
                value: 1.0,
                timestamp: T0,
            }],
            exemplars: vec![PromExemplar {
                labels: vec![PromLabel {
                    name: "trace_id".into(),
                    value: "feed".into(),
                }],
                value: 0.25,
                timestamp: T0,
            }],
            histograms: vec![],
        }],
        metadata: vec![],
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(&format!("{}/api/v1/write", agg.url()))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .send(
            &snap::raw::Encoder::new()
                .compress_vec(&write.encode_to_vec())
                .unwrap()[..],
        )
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(
        exemplars(&agg, "rw_latency_bucket", t0 - 1.0, t0 + 1.0)[0]["exemplars"],
        serde_json::json!([{"labels": {"trace_id": "feed"}, "value": "0.25",
            "timestamp": 1_700_000_000}])
    );

    // A restart replays them from the WAL.
    assert_eq!(agg.process().stop(Duration::from_secs(30)).code(), Some(0));
    drop(agg);
    let agg = Aggregator::start_in(Some(&data), None, &[]);
    assert_eq!(
        exemplars(&agg, histogram_quantile, t0 - 60.0, t0 + 60.0),
        want
    );
}
