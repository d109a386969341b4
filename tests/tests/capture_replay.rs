//! Capture and replay: committed captures (`tests/fixtures/capture/`, made on a real host by
//! `sonde-agent capture`, see the README there) are replayed by `sonde-agent replay` through
//! the agent's own aggregation and exporter into a real aggregator, and the stored series
//! and histograms are checked against values derived independently from the Parquet rows.
//! Also: pyarrow reads a capture; Ctrl-C ends a capture with a valid file. No root, no eBPF.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{
    Aggregator, binary,
    capture::CaptureFile,
    jaeger::{self, JaegerSpan, norm},
};

/// The semantic-conventions duration buckets (seconds), as documented in ARCHITECTURE.md.
const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Collectors whose output the replay recomputes from events.
const EVENT_COLLECTORS: [&str; 3] = ["exec", "http", "tcp"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/capture")
        .join(name)
}

fn replay(path: &Path, aggregator: &Aggregator) {
    replay_with(path, aggregator, &[]);
}

fn replay_with(path: &Path, aggregator: &Aggregator, extra: &[&str]) {
    let out = Command::new(binary("sonde-agent"))
        .args(["--log-level", "info"])
        .arg("replay")
        .arg("--input")
        .arg(path)
        .args([
            "--aggregator",
            &aggregator.grpc_url(),
            "--as-fast-as-possible",
        ])
        .args(extra)
        .output()
        .expect("run sonde-agent replay");
    assert!(
        out.status.success(),
        "replay failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ms` as the API's time parameter (seconds with milliseconds).
fn at(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn parse_value(v: &Value) -> f64 {
    let s = v[1].as_str().expect("value string");
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().expect("a number"),
    }
}

/// Every element of an instant query: labels → value.
fn vector(agg: &Aggregator, query: &str, ms: i64) -> HashMap<BTreeMap<String, String>, f64> {
    let data = agg.query(query, Some(at(ms)));
    data["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|e| {
            let labels = e["metric"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_owned()))
                .collect();
            (labels, parse_value(&e["value"]))
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Tick times (ms) in file order, and for each tick the number of rows before it.
fn ticks(cap: &CaptureFile) -> Vec<(i64, usize)> {
    cap.of_kind("tick")
        .into_iter()
        .map(|i| (cap.t()[i].expect("t") / 1_000_000, i))
        .collect()
}

#[test]
fn replayed_fixture_gives_the_captured_readings_series_and_histograms() {
    let path = fixture("nginx.parquet");
    let size = std::fs::metadata(&path).expect("fixture").len();
    assert!(
        size < 1024 * 1024,
        "fixture is {size} bytes, must stay < 1 MiB"
    );
    let cap = CaptureFile::read(&path);
    let ticks = ticks(&cap);
    assert!(ticks.len() >= 3, "the fixture has several ticks");
    let (last_ms, _) = *ticks.last().expect("a tick");
    let sources = cap.metadata["sonde.capture.sources"].clone();
    assert!(
        sources.contains("http"),
        "the fixture was captured with eBPF: {sources}"
    );

    let agg = Aggregator::start();
    replay(&path, &agg);

    // The captured target labels are on every series.
    let targets: BTreeMap<String, String> =
        serde_json::from_str(&cap.metadata["sonde.capture.target_labels"]).expect("JSON");
    assert_eq!(
        targets.get("instance"),
        Some(&cap.metadata["sonde.capture.agent_id"])
    );

    // 1. Every collector reading of every tick is stored at that tick's time, value exact.
    let reading_rows = cap.of_kind("reading");
    let mut checked = 0;
    for &(tick_ms, _) in &ticks {
        let got = vector(&agg, r#"{__name__=~".+"}"#, tick_ms);
        for &i in &reading_rows {
            if cap.t()[i].expect("t") / 1_000_000 != tick_ms
                || EVENT_COLLECTORS.contains(&cap.str_at("collector", i))
            {
                continue;
            }
            let mut key: BTreeMap<String, String> =
                serde_json::from_str(cap.str_at("labels", i)).expect("labels JSON");
            for (k, v) in &targets {
                key.entry(k.clone()).or_insert_with(|| v.clone());
            }
            key.insert("__name__".into(), cap.str_at("metric", i).to_owned());
            let expected = cap.value()[i].expect("value");
            let value = got
                .get(&key)
                .unwrap_or_else(|| panic!("series {key:?} missing at {tick_ms}"));
            assert!(
                same(*value, expected),
                "{key:?} at {tick_ms}: {value} != {expected}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} readings checked");

    // 2. HTTP: per tick, the cumulative server count equals the exchanges recorded before
    //    that tick's row; at the last tick, every bucket of every series is exact.
    let http = cap.of_kind("http");
    let server: Vec<usize> = http
        .iter()
        .copied()
        .filter(|&i| cap.str_at("direction", i) == "server")
        .collect();
    assert!(server.len() >= 20, "the fixture has server exchanges");
    for &(tick_ms, row) in &ticks {
        let expected = server.iter().filter(|&&i| i < row).count() as f64;
        let got: f64 = vector(
            &agg,
            "sum(http_server_request_duration_seconds_count)",
            tick_ms,
        )
        .values()
        .sum();
        assert_eq!(
            got, expected,
            "server requests counted by the tick at {tick_ms}"
        );
    }
    let duration =
        |i: usize| cap.u("end_ns")[i].expect("end") - cap.u("start_ns")[i].expect("start");
    let mut buckets: HashMap<BTreeMap<String, String>, f64> = HashMap::new();
    let mut counts: HashMap<BTreeMap<String, String>, f64> = HashMap::new();
    let mut sums: HashMap<BTreeMap<String, String>, f64> = HashMap::new();
    for &i in &server {
        let route = cap.str_at("path", i);
        assert!(
            route.starts_with('/') && !route.chars().any(|c| c.is_ascii_digit()),
            "fixture paths are their own routes: {route}"
        );
        let status = cap.u("status")[i].expect("status").to_string();
        let mut key = labels(&[
            ("__name__", "http_server_request_duration_seconds_count"),
            ("service_name", cap.str_at("service_name", i)),
            ("container_id", cap.str_at("container_id", i)),
            ("http_request_method", cap.str_at("method", i)),
            ("http_response_status_code", &status),
            ("http_route", route),
        ]);
        key.extend(targets.clone());
        *counts.entry(key.clone()).or_default() += 1.0;
        key.insert(
            "__name__".into(),
            "http_server_request_duration_seconds_sum".into(),
        );
        *sums.entry(key.clone()).or_default() += duration(i) as f64 / 1e9;
        key.insert(
            "__name__".into(),
            "http_server_request_duration_seconds_bucket".into(),
        );
        for bound in DURATION_BOUNDS.iter().map(|b| Some(*b)).chain([None]) {
            let inside = bound.is_none_or(|b| duration(i) <= (b * 1e9).round() as u64);
            let le = bound.map_or("+Inf".to_owned(), |b| b.to_string());
            let mut k = key.clone();
            k.insert("le".into(), le);
            *buckets.entry(k).or_default() += f64::from(u8::from(inside));
        }
    }
    let got_counts = vector(&agg, "http_server_request_duration_seconds_count", last_ms);
    assert_eq!(got_counts, counts, "server request counts per series");
    let got_buckets = vector(&agg, "http_server_request_duration_seconds_bucket", last_ms);
    let normalise = |m: HashMap<BTreeMap<String, String>, f64>| -> BTreeMap<String, f64> {
        m.into_iter()
            .map(|(mut k, v)| {
                if let Some(le) = k.get_mut("le")
                    && le != "+Inf"
                {
                    *le = le.parse::<f64>().expect("le").to_string();
                }
                (format!("{k:?}"), v)
            })
            .collect()
    };
    assert_eq!(normalise(got_buckets), normalise(buckets), "every bucket");
    let got_sums = vector(&agg, "http_server_request_duration_seconds_sum", last_ms);
    assert_eq!(got_sums.len(), sums.len());
    for (k, v) in &sums {
        let g = got_sums[k];
        assert!((g - v).abs() <= 1e-9 * v.max(1.0), "{k:?}: sum {g} != {v}");
    }

    // Client side (curl): counts per server address and port.
    let mut client: HashMap<BTreeMap<String, String>, f64> = HashMap::new();
    for &i in http
        .iter()
        .filter(|&&i| cap.str_at("direction", i) == "client")
    {
        let status = cap.u("status")[i].expect("status").to_string();
        let port = cap.u("peer_port")[i]
            .map(|p| p.to_string())
            .unwrap_or_default();
        let mut key = labels(&[
            ("__name__", "http_client_request_duration_seconds_count"),
            ("service_name", cap.str_at("service_name", i)),
            ("container_id", cap.str_at("container_id", i)),
            ("http_request_method", cap.str_at("method", i)),
            ("http_response_status_code", &status),
            ("http_route", cap.str_at("path", i)),
            ("server_address", cap.str_at("peer_addr", i)),
            ("server_port", &port),
        ]);
        key.extend(targets.clone());
        *client.entry(key).or_default() += 1.0;
    }
    assert!(!client.is_empty(), "the fixture has client exchanges");
    assert_eq!(
        vector(&agg, "http_client_request_duration_seconds_count", last_ms),
        client,
        "client request counts per series"
    );

    // 3. TCP: successful connects per service and destination.
    let mut connects: HashMap<BTreeMap<String, String>, f64> = HashMap::new();
    for i in cap.of_kind("tcp") {
        if cap.str_at("tcp_event", i) != "connect_ok" {
            continue;
        }
        let addr = cap.str_at("peer_addr", i);
        let port = cap.u("peer_port")[i].expect("port");
        let destination = if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
        let mut key = labels(&[
            ("__name__", "container_net_tcp_successful_connects_total"),
            ("service_name", cap.str_at("service_name", i)),
            ("container_id", cap.str_at("container_id", i)),
            ("destination", &destination),
        ]);
        key.extend(targets.clone());
        *connects.entry(key).or_default() += 1.0;
    }
    assert!(!connects.is_empty(), "the fixture has TCP connects");
    assert_eq!(
        vector(&agg, "container_net_tcp_successful_connects_total", last_ms),
        connects
    );

    // 4. Execs.
    if sources.contains("exec") {
        let execs = cap.of_kind("exec").len() as f64;
        assert!(execs > 0.0, "the fixture has execs");
        let got = vector(&agg, "node_process_execs_total", last_ms);
        assert_eq!(got.values().copied().collect::<Vec<_>>(), [execs]);
    }

    // 5. The live agent's own last tick (after its readers stopped) agrees with the replay.
    let live = |metric: &str| -> f64 {
        reading_rows
            .iter()
            .filter(|&&i| {
                cap.t()[i].expect("t") / 1_000_000 == last_ms && cap.str_at("metric", i) == metric
            })
            .map(|&i| cap.value()[i].expect("value"))
            .sum()
    };
    assert_eq!(
        live("http_server_request_duration_seconds_count"),
        server.len() as f64,
        "the capture's last tick saw every recorded exchange"
    );
}

/// Every span of `service` that started between `from_us` and `to_us`, oldest first.
fn jaeger_spans(agg: &Aggregator, service: &str, from_us: i64, to_us: i64) -> Vec<JaegerSpan> {
    let mut out: Vec<JaegerSpan> = jaeger::search_between(agg, service, from_us, to_us)
        .into_iter()
        .flat_map(|(_, spans)| spans)
        .filter(|s| s.service == service)
        .collect();
    out.sort_by_key(|s| s.start_us);
    out
}

#[test]
fn replayed_fixture_gives_spans_and_alert_states() {
    let path = fixture("nginx.parquet");
    let cap = CaptureFile::read(&path);
    let offset: i64 = cap.metadata["sonde.capture.unix_offset_ns"]
        .parse()
        .expect("offset");
    let http = cap.of_kind("http");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("replay.rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
- name: replay
  interval: 1s
  rules:
  - alert: NotFoundServed
    expr: sum by (service_name) (http_server_request_duration_seconds_count{http_response_status_code="404"}) > 0
    labels: {severity: ticket}
  - alert: ServerErrorsServed
    expr: sum by (service_name) (http_server_request_duration_seconds_count{http_response_status_code=~"5.."}) > 0
  - alert: NotFoundForAnHour
    expr: sum by (service_name) (http_server_request_duration_seconds_count{http_response_status_code="404"}) > 0
    for: 1h
"#,
    )
    .expect("write rules");

    // 1. Spans: replayed as captured (at the capture's time).
    let agg = Aggregator::start_with(&["--rules", rules.to_str().expect("utf-8")]);
    replay(&path, &agg);
    let first = cap.t()[0].expect("t") / 1000;
    let last = cap.t().iter().flatten().max().expect("rows") / 1000;
    let window = |service| jaeger_spans(&agg, service, first - 60_000_000, last + 60_000_000);
    let mut spans = window("nginx");
    spans.extend(window("curl"));
    let servers: Vec<&JaegerSpan> = spans.iter().filter(|s| s.kind == "server").collect();
    let clients: Vec<&JaegerSpan> = spans.iter().filter(|s| s.kind == "client").collect();
    let rows = |direction: &str| -> Vec<usize> {
        http.iter()
            .copied()
            .filter(|&i| cap.str_at("direction", i) == direction)
            .collect()
    };
    assert_eq!(
        servers.len(),
        rows("server").len(),
        "one server span per exchange"
    );
    assert_eq!(
        clients.len(),
        rows("client").len(),
        "one client span per exchange"
    );
    // Times: the exchange's monotonic start/end plus the capture's clock offset.
    let mut expected: Vec<(i64, i64, String)> = http
        .iter()
        .map(|&i| {
            let start = cap.u("start_ns")[i].expect("start") as i64;
            let end = cap.u("end_ns")[i].expect("end") as i64;
            (
                (start + offset).div_euclid(1000),
                (end - start) / 1000,
                cap.str_at("path", i).to_owned(),
            )
        })
        .collect();
    expected.sort();
    let mut got: Vec<(i64, i64, String)> = spans
        .iter()
        .map(|s| (s.start_us, s.duration_us, s.path.clone()))
        .collect();
    got.sort();
    assert_eq!(got, expected, "span start, duration and path per exchange");

    // Linking: every nginx span is the child of the curl span on the same connection
    // (both ends on this host, matched by the 4-tuple and timing), in its trace.
    let by_id: HashMap<String, &JaegerSpan> = spans.iter().map(|s| (norm(&s.id), s)).collect();
    for server in &servers {
        let parent = server
            .parent
            .as_deref()
            .and_then(|p| by_id.get(&norm(p)))
            .unwrap_or_else(|| panic!("server span without a replayed parent: {server:?}"));
        assert_eq!(parent.kind, "client", "{server:?} under {parent:?}");
        assert_eq!(parent.path, server.path);
        assert_eq!(parent.trace, server.trace);
        assert!(
            parent.start_us <= server.start_us
                && server.start_us + server.duration_us <= parent.start_us + parent.duration_us + 1,
            "the server span lies inside its client span: {server:?} in {parent:?}"
        );
    }
    // Requests carrying a `traceparent` continue the caller's trace: curl's span (and so
    // nginx's under it) are in the header's trace, under the header's span.
    let traced: Vec<usize> = rows("client")
        .into_iter()
        .filter(|&i| cap.str_at("path", i) == "/traced")
        .collect();
    assert_eq!(traced.len(), 3, "the fixture has three traced requests");
    for i in traced {
        let trace_id = cap
            .fixed("trace_id", i)
            .expect("the row has the header's trace id");
        let parent_id = cap
            .fixed("parent_span_id", i)
            .expect("the row has the header's span id");
        let start_us = (cap.u("start_ns")[i].expect("start") as i64 + offset).div_euclid(1000);
        let client = clients
            .iter()
            .find(|s| s.start_us == start_us && s.path == "/traced")
            .expect("the traced client span");
        assert_eq!(norm(&client.trace), norm(&hex(&trace_id)), "{client:?}");
        assert_eq!(
            client.parent.as_deref().map(norm),
            Some(norm(&hex(&parent_id))),
            "{client:?}"
        );
    }
    // Untraced requests start their own traces.
    let traces: std::collections::HashSet<&str> =
        clients.iter().map(|s| s.trace.as_str()).collect();
    assert_eq!(traces.len(), clients.len(), "one trace per client request");

    // 2. Alert states: replayed so that the capture ends now, the rules evaluate on it as
    //    on live data. nginx served 404s: that alert fires; it never served a 5xx; the
    //    `for: 1h` one waits.
    let not_found = rows("server")
        .into_iter()
        .filter(|&i| cap.u("status")[i] == Some(404))
        .count();
    let agg = Aggregator::start_with(&["--rules", rules.to_str().expect("utf-8")]);
    replay_with(&path, &agg, &["--shift-to-now"]);
    // An evaluation may run while the replay is still being ingested: the alert can fire on
    // part of the 404s first and shows them all from the next evaluation on.
    let mut last_alerts = Value::Null;
    let ok = (0..100).any(|_| {
        last_alerts = agg.get("/api/v1/alerts").json();
        let alerts = last_alerts["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let state = |name: &str| {
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == name)
                .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
        };
        let value = |name: &str| {
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == name)
                .and_then(|a| a["value"].as_str()?.parse::<f64>().ok())
        };
        let done = state("NotFoundServed").as_deref() == Some("firing")
            && state("NotFoundForAnHour").as_deref() == Some("pending")
            && value("NotFoundServed") == Some(not_found as f64);
        if !done {
            std::thread::sleep(Duration::from_millis(200));
        }
        done
    });
    assert!(ok, "alerts after the replay: {last_alerts}");
    let alerts = last_alerts["data"]["alerts"].as_array().expect("alerts");
    assert!(
        alerts
            .iter()
            .all(|a| a["labels"]["alertname"] != "ServerErrorsServed"),
        "nginx never answered 5xx: {last_alerts}"
    );
    let firing = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "NotFoundServed")
        .expect("firing alert");
    assert_eq!(firing["labels"]["service_name"], "nginx");
    assert_eq!(firing["labels"]["severity"], "ticket");
    assert_eq!(
        firing["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
        Some(not_found as f64),
        "{firing}"
    );
    // The shifted spans are near now.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let shifted = jaeger_spans(&agg, "nginx", now_us - 600_000_000, now_us + 60_000_000);
    assert_eq!(shifted.len(), servers.len(), "shifted spans found near now");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn pyarrow_reads_a_capture() {
    ensure_pyarrow();
    let path = fixture("nginx.parquet");
    let script = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
meta = {k.decode(): v.decode() for k, v in pq.ParquetFile(sys.argv[1]).metadata.metadata.items() if k != b"ARROW:schema"}
cols = {f.name: str(f.type) for f in t.schema}
import pyarrow.compute as pc
http = t.filter(pc.equal(pc.cast(t["kind"], "string"), "http"))
rows = [
    [r["direction"], r["method"], r["status"], r["path"], r["service_name"], r["end_ns"] - r["start_ns"]]
    for r in http.select(["direction", "method", "status", "path", "service_name", "start_ns", "end_ns"]).to_pylist()
]
kinds = {}
for k in pc.cast(t["kind"], "string").to_pylist():
    kinds[k] = kinds.get(k, 0) + 1
print(json.dumps({"meta": meta, "cols": cols, "http": rows, "kinds": kinds, "rows": t.num_rows}))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let cols = &json["cols"];
    assert_eq!(cols["t"], "timestamp[ns, tz=UTC]");
    assert_eq!(
        cols["kind"],
        "dictionary<values=string, indices=int8, ordered=0>"
    );
    assert_eq!(
        cols["service_name"],
        "dictionary<values=string, indices=int32, ordered=0>"
    );
    assert_eq!(cols["status"], "uint16");
    assert_eq!(cols["start_ns"], "uint64");
    assert_eq!(cols["trace_id"], "fixed_size_binary[16]");
    assert_eq!(cols["parent_span_id"], "fixed_size_binary[8]");
    assert_eq!(cols["value"], "double");
    assert_eq!(json["meta"]["sonde.capture.version"], "1");

    // The same rows, read by the parquet crate.
    let cap = CaptureFile::read(&path);
    assert_eq!(json["rows"].as_u64(), Some(cap.rows as u64));
    let ours: Vec<Value> = cap
        .of_kind("http")
        .into_iter()
        .map(|i| {
            serde_json::json!([
                cap.str_at("direction", i),
                cap.str_at("method", i),
                cap.u("status")[i],
                cap.str_at("path", i),
                cap.str_at("service_name", i),
                cap.u("end_ns")[i].unwrap() - cap.u("start_ns")[i].unwrap(),
            ])
        })
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(json["http"].as_array().expect("rows"), &ours);
    for kind in ["http", "tcp", "reading", "tick"] {
        assert_eq!(
            json["kinds"][kind].as_u64(),
            Some(cap.of_kind(kind).len() as u64),
            "{kind} rows"
        );
    }
}

#[test]
fn ctrl_c_ends_a_capture_with_a_complete_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("c.parquet");
    let mut cmd = Command::new(binary("sonde-agent"));
    cmd.args(["--no-ebpf", "--interval", "500ms", "capture", "--output"])
        .arg(&output);
    let mut process = sonde_tests::Process::spawn("capture", &mut cmd, dir.path());
    let log = dir.path().join("capture.log");
    process
        .wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("capturing"))
        })
        .expect("capture starts");
    std::thread::sleep(Duration::from_millis(1600));
    process.signal(libc::SIGINT);
    let status = sonde_tests::eventually(Duration::from_secs(20), "capture exits", || {
        process.exited()
    });
    assert!(status.success(), "capture: {}", process.log());
    assert!(
        !dir.path().join("c.parquet.partial").exists(),
        "the partial file was renamed"
    );
    let cap = CaptureFile::read(&output);
    let ticks = cap.of_kind("tick").len();
    assert!(
        ticks >= 3,
        "{ticks} ticks in 1.6 s at 500 ms, plus the final one"
    );
    assert!(cap.of_kind("reading").len() > 100);
    assert_eq!(cap.of_kind("http").len(), 0, "no eBPF, no events");
    assert_eq!(cap.metadata["sonde.capture.sources"], "");
    // The last row is the final tick.
    assert_eq!(cap.str_at("kind", cap.rows - 1), "tick");
}

/// pyarrow, installed with pip when missing.
fn ensure_pyarrow() {
    let has = || {
        Command::new("python3")
            .args(["-c", "import pyarrow"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has() {
        let _ = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--break-system-packages",
                "pyarrow",
            ])
            .status();
    }
    assert!(has(), "pyarrow could not be installed");
}
