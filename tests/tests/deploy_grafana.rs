//! Grafana provisioning under `deploy/grafana/`: the YAML has the structure Grafana expects
//! (data sources, exemplar links, dashboard provider), the dashboards are consistent (unique
//! ids, defined variables, provisioned data sources), and every query they contain — panel
//! targets, annotations, template variables — runs against a live aggregator fed by a real
//! agent (`--no-ebpf`) plus pushed HTTP, TCP and alert series, the way Grafana sends it:
//! variables substituted (`$__rate_interval`, `$service`, regex-escaped single values and the
//! `.*` "All" value), range queries for time series, instant queries for tables, exemplar
//! queries where a target asks for them. A target whose metrics are all stored must return
//! data, unless listed in `MAY_BE_EMPTY` with the reason.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use sonde_proto::v1::{
    BatchPayload, Exemplar, HistogramPoint, HistogramSeries, Label, Sample, Series,
};
use sonde_tests::{Agent, Aggregator, Process, encode, eventually, free_addr, http_get};

const AGENT_ID: &str = "grafana-test-host";

/// Targets that may legitimately return nothing on this data, by dashboard uid and a
/// substring of the expression, with the reason.
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[
    (
        "sonde-containers",
        "container_oom_events_total",
        "no OOM kill happens during the test",
    ),
    (
        "sonde-containers",
        "container_spec_memory_limit_bytes",
        "the host's cgroups may have no memory limit",
    ),
    (
        "sonde-containers",
        "container_spec_cpu_quota",
        "the host's cgroups may have no CPU quota",
    ),
    (
        "sonde-containers",
        "container_cpu_cfs_periods_total",
        "no CFS period counters without a CPU quota",
    ),
    (
        "sonde-containers",
        "container_network_",
        "only containers in their own network namespace have network counters",
    ),
    (
        "sonde-node",
        "node_vmstat_pswpin",
        "no swap device on the test host",
    ),
    (
        "sonde-node",
        "node_disk_",
        "the test host's disks may be filtered out (virtio partitions)",
    ),
];

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

/// Parses a YAML file with PyYAML (installed with kubernetes-validate by `cargo xtask setup`).
fn yaml(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 with PyYAML");
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML output is JSON")
}

fn dashboards() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(grafana_dir().join("dashboards"))
        .expect("deploy/grafana/dashboards")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            )
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(board: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&board["panels"], &mut out);
    out
}

/// A query a dashboard sends: where it comes from and how Grafana runs it.
#[derive(Debug, Clone)]
struct Target {
    origin: String,
    expr: String,
    instant: bool,
    exemplar: bool,
}

fn targets(board: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    for panel in panels(board) {
        let title = panel["title"].as_str().unwrap_or("");
        for t in panel["targets"].as_array().into_iter().flatten() {
            if t["hide"].as_bool() == Some(true) {
                continue;
            }
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?} target {} has no expr", t["refId"]));
            out.push(Target {
                origin: format!("panel {title:?} target {}", t["refId"]),
                expr: expr.to_owned(),
                instant: t["instant"].as_bool() == Some(true) && t["range"].as_bool() != Some(true),
                exemplar: t["exemplar"].as_bool() == Some(true),
            });
        }
    }
    for a in board["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Target {
                origin: format!("annotation {}", a["name"]),
                expr: expr.to_owned(),
                instant: false,
                exemplar: false,
            });
        }
    }
    out
}

/// The query of a template variable (string, or the object newer Grafana writes).
fn variable_query(var: &Value) -> String {
    var["query"]
        .as_str()
        .or_else(|| var["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", var["name"]))
        .to_owned()
}

/// Grafana's built-in variables, as it substitutes them for a 15-minute range at the
/// data source's 15 s `timeInterval`.
const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "900s"),
    ("__range_s", "900"),
    ("__range_ms", "900000"),
];

/// Replaces `$name`, `${name}` and `[[name]]`; panics on an undefined variable.
fn substitute(text: &str, vars: &BTreeMap<String, String>, origin: &str) -> String {
    let lookup = |name: &str| -> String {
        if let Some((_, v)) = BUILTINS.iter().find(|(n, _)| *n == name) {
            return (*v).to_owned();
        }
        vars.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{origin}: undefined variable ${name} in {text:?}"))
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(inner) = tail.strip_prefix("${") {
            let end = inner.find('}').expect("closing brace");
            let name = inner[..end].split(':').next().unwrap();
            out.push_str(&lookup(name));
            rest = &inner[end + 1..];
        } else if let Some(inner) = tail.strip_prefix("[[") {
            let end = inner.find("]]").expect("closing ]]");
            out.push_str(&lookup(&inner[..end]));
            rest = &inner[end + 2..];
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner.find(|c| !ident(c)).unwrap_or(inner.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&inner[..end]));
            }
            rest = &inner[end..];
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// How Grafana's Prometheus data source formats one value for a `=~` matcher: regex
/// specials escaped, inside a PromQL string (so the backslash itself doubled).
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\^$*+?.()|{}[]".contains(c) {
            out.push_str("\\\\");
        }
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Metric names selected by an expression: identifiers directly followed by `{`, outside
/// strings and label matchers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let (mut i, mut depth, mut in_string) = (0, 0, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => depth -= 1,
            c if depth == 0 && (c.is_ascii_alphabetic() || c == b'_') => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'{') {
                    names.insert(expr[start..i].to_owned());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn api(aggregator: &Aggregator, path: &str, origin: &str) -> Value {
    let response = aggregator.get(path);
    let json = response.json();
    assert_eq!(
        (response.status, json["status"].as_str()),
        (200, Some("success")),
        "{origin}: GET {path} failed: {}",
        response.body
    );
    json["data"].clone()
}

/// Runs a variable's query the way Grafana's Prometheus data source does; returns its values.
fn variable_values(aggregator: &Aggregator, query: &str, origin: &str) -> Vec<String> {
    let (start, end) = (now_s() - 900.0, now_s());
    let range = format!("&start={start:.3}&end={end:.3}");
    let strings = |data: Value| -> Vec<String> {
        data.as_array()
            .unwrap_or_else(|| panic!("{origin}: not a list: {data}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let query = query.trim();
    if let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let Some((selector, label)) = args.rsplit_once(',') else {
            let label = args.trim();
            return strings(api(
                aggregator,
                &format!("/api/v1/label/{label}/values?{}", &range[1..]),
                origin,
            ));
        };
        let (selector, label) = (selector.trim(), label.trim());
        // Grafana ≥ 9 with a Prometheus ≥ 2.24 data source asks the label values endpoint
        // with match[]; older ones read /api/v1/series. Both must agree.
        let values = strings(api(
            aggregator,
            &format!(
                "/api/v1/label/{label}/values?match[]={}{range}",
                encode(selector)
            ),
            origin,
        ));
        let series = api(
            aggregator,
            &format!("/api/v1/series?match[]={}{range}", encode(selector)),
            origin,
        );
        let from_series: BTreeSet<String> = series
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s[label].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            values.iter().cloned().collect::<BTreeSet<_>>(),
            from_series,
            "{origin}: label values and series disagree for {query}"
        );
        return values;
    }
    if query == "label_names()" {
        return strings(api(
            aggregator,
            &format!("/api/v1/labels?{}", &range[1..]),
            origin,
        ));
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let data = api(
            aggregator,
            &format!("/api/v1/query?query={}&time={end:.3}", encode(inner)),
            origin,
        );
        return data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    panic!(
        "{origin}: variable query {query:?} is not a form Grafana's Prometheus data source knows"
    );
}

// ------------------------------------------------------------------ the fed data

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut all: Vec<Label> = pairs
        .iter()
        .chain([("instance", AGENT_ID), ("job", "sonde-agent")].iter())
        .map(|(n, v)| Label {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// 20 minutes of data at 15 s, ending now: what an agent with the eBPF HTTP/TCP probes and
/// an aggregator with the rule engine would have stored.
fn representative_payload() -> BatchPayload {
    let end = (now_s() * 1000.0) as i64;
    let steps: Vec<i64> = (0..80).map(|k| end - (79 - k) * 15_000).collect();
    let mut payload = BatchPayload::default();
    let bounds = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let mut histogram = |name: &str, pairs: &[(&str, &str)], rate: u64, slow: u64| {
        let mut l = labels(pairs);
        l.push(Label {
            name: "__name__".into(),
            value: name.into(),
        });
        l.sort_by(|a, b| a.name.cmp(&b.name));
        let points = steps
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let n = (k as u64 + 1) * rate;
                // Most requests fast, `slow` per step in the 0.25–0.5 s bucket.
                let slow_n = (k as u64 + 1) * slow;
                let counts: Vec<u64> = bounds
                    .iter()
                    .map(|&b| match b {
                        b if b < 0.05 => (n / 2).min(n - slow_n),
                        b if b < 0.5 => n - slow_n,
                        _ => n,
                    })
                    .collect();
                HistogramPoint {
                    timestamp_ms: t,
                    bucket_counts: counts,
                    count: n,
                    sum: n as f64 * 0.03 + slow_n as f64 * 0.3,
                }
            })
            .collect();
        payload.histograms.push(HistogramSeries {
            labels: l,
            upper_bounds: bounds.to_vec(),
            points,
            exemplars: vec![Exemplar {
                labels: vec![Label {
                    name: "trace_id".into(),
                    value: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                }],
                value: 0.3,
                timestamp_ms: end - 30_000,
            }],
        });
    };
    for (service, route, method, status, rate, slow) in [
        ("checkout", "/api/checkout", "POST", "200", 30, 3),
        ("checkout", "/api/checkout", "POST", "500", 2, 1),
        ("checkout", "/health", "GET", "200", 4, 0),
        ("cart", "/api/cart/{id}", "GET", "200", 50, 1),
        ("cart", "/api/cart/{id}", "PUT", "404", 5, 0),
        ("cart", "/api/cart/{id}", "GET", "503", 1, 1),
    ] {
        let pairs = [
            ("service_name", service),
            ("http_route", route),
            ("http_request_method", method),
            ("http_response_status_code", status),
        ];
        histogram("http_server_request_duration_seconds", &pairs, rate, slow);
        histogram("http_server_response_body_size_bytes", &pairs, rate, 0);
    }
    for (service, route, peer, status, rate) in [
        ("checkout", "/api/cart/{id}", "10.0.0.5", "200", 50),
        ("checkout", "/api/cart/{id}", "10.0.0.5", "503", 1),
        ("cart", "/v1/items", "10.0.0.7", "200", 20),
        ("cart", "/v1/items", "10.0.0.7", "500", 1),
    ] {
        histogram(
            "http_client_request_duration_seconds",
            &[
                ("service_name", service),
                ("http_route", route),
                ("http_request_method", "GET"),
                ("http_response_status_code", status),
                ("server_address", peer),
                ("server_port", "8080"),
            ],
            rate,
            1,
        );
    }
    let outbound = [
        ("service_name", "checkout"),
        ("destination", "10.0.0.5:8080"),
    ];
    histogram(
        "container_net_tcp_connect_duration_seconds",
        &outbound,
        3,
        0,
    );
    let mut series = |name: &str, pairs: &[(&str, &str)], value: &dyn Fn(usize) -> f64| {
        let mut l = labels(pairs);
        l.push(Label {
            name: "__name__".into(),
            value: name.into(),
        });
        l.sort_by(|a, b| a.name.cmp(&b.name));
        payload.series.push(Series {
            labels: l,
            samples: steps
                .iter()
                .enumerate()
                .map(|(k, &t)| Sample {
                    timestamp_ms: t,
                    value: value(k),
                })
                .collect(),
            exemplars: vec![],
        });
    };
    series(
        "container_net_tcp_successful_connects_total",
        &outbound,
        &|k| 3.0 * k as f64,
    );
    series("container_net_tcp_failed_connects_total", &outbound, &|k| {
        (k / 10) as f64
    });
    series("container_net_tcp_active_connections", &outbound, &|_| 12.0);
    series("container_net_tcp_retransmits_total", &outbound, &|k| {
        (k / 4) as f64
    });
    for service in ["cart", "checkout"] {
        series(
            "container_net_tcp_inbound_retransmits_total",
            &[("service_name", service), ("listen_port", "8080")],
            &|k| (k / 5) as f64,
        );
    }
    let firing = [
        ("alertname", "HighErrorRate"),
        ("alertstate", "firing"),
        ("severity", "page"),
        ("service_name", "checkout"),
    ];
    series("ALERTS", &firing, &|_| 1.0);
    let for_state = [
        ("alertname", "HighErrorRate"),
        ("severity", "page"),
        ("service_name", "checkout"),
    ];
    let since = (end / 1000 - 1200) as f64;
    series("ALERTS_FOR_STATE", &for_state, &|_| since);
    let pending = [
        ("alertname", "SlowCart"),
        ("alertstate", "pending"),
        ("severity", "ticket"),
        ("service_name", "cart"),
    ];
    series("ALERTS", &pending, &|_| 1.0);
    let pending = [
        ("alertname", "HighErrorRate"),
        ("alertstate", "pending"),
        ("severity", "page"),
        ("service_name", "cart"),
    ];
    series("ALERTS", &pending, &|_| 1.0);
    payload
}

/// Runs the Debian Prometheus scraping the agent's and the aggregator's own metrics every
/// second and remote-writing the `sonde_*` ones into the aggregator; waits until both arrive.
fn scrape_self_metrics(aggregator: &Aggregator, agent: &Agent) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let config = dir.path().join("prometheus.yml");
    let keep = "    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: 'sonde_.*'\n        action: keep\n";
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: sonde-agent\n    static_configs:\n      - targets: ['{}']\n{keep}\
             \x20 - job_name: sonde-aggregator\n    static_configs:\n      - targets: ['{}']\n{keep}\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
            agent.metrics, aggregator.http, aggregator.http
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
    for name in ["sonde_agent_build_info", "sonde_aggregator_build_info"] {
        eventually(Duration::from_secs(60), name, || {
            let data = aggregator.query(&format!("count_over_time({name}[1m])"), None);
            let n: f64 = data["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n >= 5.0).then_some(())
        });
    }
    (prometheus, dir)
}

// ------------------------------------------------------------------ tests

#[test]
fn provisioning_yaml_has_the_structure_grafana_expects() {
    let ds = yaml(&grafana_dir().join("provisioning/datasources/sonde.yaml"));
    assert_eq!(ds["apiVersion"], 1);
    let list = ds["datasources"].as_array().expect("datasources list");
    let by_type = |t: &str| {
        list.iter()
            .find(|d| d["type"] == t)
            .unwrap_or_else(|| panic!("no {t} data source"))
    };
    let (prom, jaeger) = (by_type("prometheus"), by_type("jaeger"));
    for d in [prom, jaeger] {
        for key in ["name", "uid", "url", "access"] {
            assert!(d[key].is_string(), "data source {} lacks {key}", d["name"]);
        }
        assert_eq!(d["access"], "proxy");
        assert!(
            d["url"].as_str().unwrap().starts_with("http"),
            "{}",
            d["url"]
        );
    }
    // Traces are served by the same aggregator HTTP port as the Prometheus API.
    assert_eq!(prom["url"], jaeger["url"]);
    assert_eq!(prom["isDefault"], true);
    let links = prom["jsonData"]["exemplarTraceIdDestinations"]
        .as_array()
        .expect("exemplar links");
    assert!(
        links
            .iter()
            .any(|l| l["name"] == "trace_id" && l["datasourceUid"] == jaeger["uid"]),
        "exemplar trace_id must link to the Jaeger data source: {links:?}"
    );
    assert_eq!(
        jaeger["jsonData"]["tracesToMetrics"]["datasourceUid"],
        prom["uid"]
    );
    for q in jaeger["jsonData"]["tracesToMetrics"]["queries"]
        .as_array()
        .unwrap()
    {
        // `$$` is the provisioning escape for a literal `$` (Grafana's own $__tags).
        assert!(q["query"].as_str().unwrap().contains("$$__tags"), "{q}");
    }

    let providers = yaml(&grafana_dir().join("provisioning/dashboards/sonde.yaml"));
    assert_eq!(providers["apiVersion"], 1);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], "file");
    assert!(provider["options"]["path"].is_string());
    assert!(provider["folder"].is_string());
}

#[test]
fn dashboards_are_consistent() {
    let ds = yaml(&grafana_dir().join("provisioning/datasources/sonde.yaml"));
    let uids: BTreeSet<&str> = ds["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap())
        .collect();
    let boards = dashboards();
    let expected = [
        "sonde-alerts",
        "sonde-containers",
        "sonde-http",
        "sonde-node",
        "sonde-self",
        "sonde-tcp",
    ];
    let found: Vec<&str> = boards
        .iter()
        .map(|(_, b)| b["uid"].as_str().unwrap())
        .collect();
    assert_eq!(found, expected, "one dashboard per area, unique uids");
    for (file, board) in &boards {
        assert!(
            board["title"].as_str().unwrap().starts_with("Sonde / "),
            "{file}"
        );
        assert!(board["schemaVersion"].as_u64().unwrap() >= 36, "{file}");
        let vars = board["templating"]["list"].as_array().unwrap();
        let names: BTreeSet<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names.len(), vars.len(), "{file}: duplicate variable");
        let source = vars
            .iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no data source variable"));
        assert_eq!(source["query"], "prometheus", "{file}");
        assert!(
            uids.contains(source["current"]["value"].as_str().unwrap()),
            "{file}: the data source variable defaults to a provisioned data source"
        );
        let mut ids = BTreeSet::new();
        for panel in panels(board) {
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{file}: panel ids unique"
            );
            let uid = panel["datasource"]["uid"].as_str();
            if panel["type"] != "row" {
                assert!(
                    uid == Some("${datasource}") || uid.is_some_and(|u| uids.contains(u)),
                    "{file}: panel {} uses data source {uid:?}",
                    panel["title"]
                );
                let g = &panel["gridPos"];
                assert!(
                    g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                    "{file}: panel {} overflows the grid",
                    panel["title"]
                );
            }
            if let Some(repeat) = panel["repeat"].as_str() {
                assert!(names.contains(repeat), "{file}: repeat over ${repeat}");
            }
        }
        // Every variable a query uses is defined (substitute panics otherwise).
        let all: BTreeMap<String, String> = names
            .iter()
            .map(|n| ((*n).to_owned(), ".*".to_owned()))
            .collect();
        for t in targets(board) {
            substitute(&t.expr, &all, &format!("{file} {}", t.origin));
        }
        assert!(!targets(board).is_empty(), "{file}: no queries");
    }
}

#[test]
fn every_dashboard_query_runs_against_a_live_aggregator() {
    let aggregator = Aggregator::start();
    let agent = Agent::start(
        &[aggregator.grpc_url()],
        &["--no-ebpf", "--interval", "1s", "--agent-id", AGENT_ID],
    );
    let batch =
        sonde_proto::codec::encode_batch("grafana-test-feed", 1, 1, &representative_payload(), 3);
    let acks = aggregator.push(vec![batch]);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].status,
        sonde_proto::v1::AckStatus::Ok as i32,
        "{:?}",
        acks[0]
    );
    // The self-monitoring series reach the aggregator the way the README says: a Prometheus
    // scrapes both processes' /metrics, keeps sonde_*, and remote-writes them.
    let _prometheus = scrape_self_metrics(&aggregator, &agent);
    // Enough agent ticks for rate() over the 1m $__rate_interval to have two points.
    eventually(
        Duration::from_secs(60),
        "agent node and container metrics",
        || {
            let data = aggregator.query(
                &format!("count_over_time(node_load1{{instance=\"{AGENT_ID}\"}}[1m])"),
                None,
            );
            let n: f64 = data["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n >= 5.0).then_some(())
        },
    );
    let stored: BTreeSet<String> = api(&aggregator, "/api/v1/label/__name__/values", "names")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();

    let mut ran = 0;
    let mut checked_non_empty = 0;
    let mut failures = Vec::new();
    for (file, board) in dashboards() {
        let uid = board["uid"].as_str().unwrap().to_owned();
        // Resolve the variables in order, as Grafana does: each query sees the ones before.
        let mut all = BTreeMap::new();
        let mut first = BTreeMap::new();
        for var in board["templating"]["list"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap().to_owned();
            match var["type"].as_str().unwrap() {
                "datasource" => {
                    all.insert(name.clone(), "sonde-prometheus".to_owned());
                    first.insert(name, "sonde-prometheus".to_owned());
                }
                "custom" => {
                    let value = var["current"]["value"].as_str().unwrap().to_owned();
                    all.insert(name.clone(), value.clone());
                    first.insert(name, value);
                }
                "query" => {
                    let origin = format!("{file} variable ${name}");
                    let query = variable_query(var);
                    let values_all =
                        variable_values(&aggregator, &substitute(&query, &all, &origin), &origin);
                    let values_first =
                        variable_values(&aggregator, &substitute(&query, &first, &origin), &origin);
                    ran += 2;
                    if !["namespace", "severity"].contains(&name.as_str()) {
                        assert!(
                            !values_all.is_empty(),
                            "{origin}: {query} returned no values on the fed data"
                        );
                    }
                    assert!(
                        values_first.iter().all(|v| values_all.contains(v)),
                        "{origin}: narrowing the earlier variables widened the values"
                    );
                    let all_value = var["allValue"].as_str().unwrap_or(".*").to_owned();
                    all.insert(name.clone(), all_value.clone());
                    let pick = values_first.first().map_or(all_value, |v| regex_escape(v));
                    first.insert(name, pick);
                }
                other => panic!("{file}: variable type {other} not handled"),
            }
        }
        for target in targets(&board) {
            let origin = format!("{file} {}", target.origin);
            let names = metric_names(&target.expr);
            let must_have_data = !names.is_empty()
                && names.iter().all(|n| stored.contains(n))
                && !MAY_BE_EMPTY
                    .iter()
                    .any(|(b, s, _)| *b == uid && target.expr.contains(s));
            for (label, vars) in [("All", &all), ("first value", &first)] {
                let expr = substitute(&target.expr, vars, &origin);
                let end = now_s();
                let path = if target.instant {
                    format!("/api/v1/query?query={}&time={end:.3}", encode(&expr))
                } else {
                    format!(
                        "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step=15",
                        encode(&expr),
                        end - 900.0
                    )
                };
                let response = aggregator.get(&path);
                ran += 1;
                let json: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
                if response.status != 200 || json["status"] != "success" {
                    failures.push(format!(
                        "{origin} ({label}): {expr}\n  → {} {}",
                        response.status, response.body
                    ));
                    continue;
                }
                if must_have_data && json["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                    failures.push(format!(
                        "{origin} ({label}): {expr}\n  → no data, though {names:?} are stored"
                    ));
                }
                if target.exemplar {
                    let path = format!(
                        "/api/v1/query_exemplars?query={}&start={:.3}&end={end:.3}",
                        encode(&expr),
                        end - 900.0
                    );
                    api(&aggregator, &path, &origin);
                }
            }
            if must_have_data {
                checked_non_empty += 1;
            } else {
                eprintln!(
                    "not checked for data: {origin}: {:?}",
                    names.difference(&stored).collect::<Vec<_>>()
                );
            }
        }
    }
    eprintln!("{ran} queries ran, {checked_non_empty} targets checked for data");
    assert!(
        failures.is_empty(),
        "{} dashboard queries failed:\n{}\n\naggregator log:\n{}\nagent log:\n{}",
        failures.len(),
        failures.join("\n"),
        aggregator.log(),
        agent.log()
    );
    assert!(
        checked_non_empty >= 60,
        "only {checked_non_empty} targets checked for data"
    );
}

#[test]
fn the_extractors_see_what_grafana_sees() {
    assert_eq!(
        metric_names(r#"sum by (le) (rate(a_b{x=~"c{d}", y="}"}[1m])) / on (i) b{} or vector(0)"#),
        ["a_b", "b"].map(String::from).into()
    );
    let vars = BTreeMap::from([("service".to_owned(), "x".to_owned())]);
    assert_eq!(
        substitute(
            "rate(m{s=~\"$service\"}[$__rate_interval]) ${service} [[service]] [1m]",
            &vars,
            "t"
        ),
        "rate(m{s=~\"x\"}[1m]) x x [1m]"
    );
    assert_eq!(regex_escape("/api/cart/{id}"), r"/api/cart/\\{id\\}");
    let result = std::panic::catch_unwind(|| substitute("$nope", &BTreeMap::new(), "t"));
    assert!(result.is_err(), "an undefined variable is an error");
}
