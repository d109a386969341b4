//! Prometheus remote write 1.0 into the aggregator: the real Prometheus (Debian) writes and
//! its data is queryable; malformed requests get the status codes senders act on.

use std::{process::Command, time::Duration};

use prost::Message;
use sonde_proto::prometheus::{Histogram, Label, Sample, TimeSeries, WriteRequest};
use sonde_tests::{Aggregator, Process, eventually, free_addr, http_get};

fn post(url: &str, body: Vec<u8>, encoding: &str, content_type: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("Content-Encoding", encoding)
        .header("Content-Type", content_type)
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(&body[..])
        .unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).unwrap()
}

fn series(name: &str, t: i64, v: f64) -> TimeSeries {
    TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "job".into(),
                value: "rw".into(),
            },
        ],
        samples: vec![Sample {
            value: v,
            timestamp: t,
        }],
        exemplars: vec![],
        histograms: vec![],
    }
}

#[test]
fn the_real_prometheus_remote_writes_into_sonde() {
    let agg = Aggregator::start();
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['{listen}']\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 1s\n",
            agg.http
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"));
    let mut prometheus = Process::spawn("prometheus", &mut cmd, dir.path());
    prometheus
        .wait_until(Duration::from_secs(30), || {
            http_get(&format!("http://{listen}/-/ready")).is_ok_and(|r| r.status == 200)
        })
        .unwrap_or_else(|log| panic!("prometheus did not start:\n{log}"));

    let up = eventually(Duration::from_secs(60), "up{job=\"self\"} in Sonde", || {
        agg.query_one("up{job=\"self\"}")
    });
    assert_eq!(up, 1.0);
    eventually(Duration::from_secs(60), "metadata in Sonde", || {
        let meta = agg
            .get("/api/v1/metadata?metric=prometheus_build_info")
            .json();
        (meta["data"]["prometheus_build_info"][0]["type"] == "gauge").then_some(())
    });
    let metrics = agg.get("/metrics").body;
    assert!(
        metrics.contains("sonde_aggregator_remote_write_requests_total{code=\"204\"}"),
        "{metrics}"
    );
}

#[test]
fn status_codes_follow_what_senders_expect() {
    let agg = Aggregator::start();
    let url = format!("{}/api/v1/write", agg.url());
    let proto = "application/x-protobuf";
    let good = WriteRequest {
        timeseries: vec![series("rw_metric", 1_700_000_000_000, 42.0)],
        metadata: vec![],
    };

    let (code, _) = post(&url, snappy(&good.encode_to_vec()), "snappy", proto);
    assert_eq!(code, 204);
    assert_eq!(
        agg.query("rw_metric", Some(1_700_000_000.0))["result"][0]["value"][1],
        "42"
    );
    // The same request again (a sender retrying): accepted, stored once.
    let (code, _) = post(&url, snappy(&good.encode_to_vec()), "snappy", proto);
    assert_eq!(code, 204);

    let (code, body) = post(&url, good.encode_to_vec(), "identity", proto);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");
    // A snappy header declaring 64 MiB+: refused before decompressing (4xx, not retried).
    let (code, body) = post(&url, b"\xff\xff\xff garbage".to_vec(), "snappy", proto);
    assert_eq!(code, 413, "{body}");
    let (code, body) = post(&url, b"\x0a\xff\xff\xff".to_vec(), "snappy", proto);
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(&url, snappy(b"\xff\xff\xff not protobuf"), "snappy", proto);
    assert_eq!(code, 400, "{body}");
    let invalid = WriteRequest {
        timeseries: vec![series("bad-name", 1, 1.0)],
        metadata: vec![],
    };
    let (code, body) = post(&url, snappy(&invalid.encode_to_vec()), "snappy", proto);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid metric name \"bad-name\""), "{body}");
    // Older than the out-of-order window: 400 (resending cannot fix it), naming the series.
    let too_old = WriteRequest {
        timeseries: vec![series("rw_metric", 1, 1.0)],
        metadata: vec![],
    };
    let (code, body) = post(&url, snappy(&too_old.encode_to_vec()), "snappy", proto);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("too old"), "{body}");
    let mut native = series("rw_native", 1_700_000_000_000, 1.0);
    native.histograms = vec![Histogram {
        timestamp: 1_700_000_000_000,
    }];
    let (code, body) = post(
        &url,
        snappy(
            &WriteRequest {
                timeseries: vec![native],
                metadata: vec![],
            }
            .encode_to_vec(),
        ),
        "snappy",
        proto,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("native histogram"), "{body}");
    let (code, _) = post(
        &url,
        snappy(&good.encode_to_vec()),
        "snappy",
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    );
    assert_eq!(code, 415);
}
