//! Checking the agent's HTTP RED metrics against a workload's own timing: series read back
//! from the aggregator (exact counts, `_sum`/`_count` means) and from the agent's
//! `/debug/http` (HDR quantiles), compared per route and status.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use crate::{
    Agent, Aggregator, eventually, http_get,
    workload::{Timing, agrees, group, mean, quantile},
};

/// Labels of a series.
pub type Labels = BTreeMap<String, String>;

/// Every series of an instant vector query with its value.
pub fn vector(agg: &Aggregator, query: &str) -> Vec<(Labels, f64)> {
    let data = agg.query(query, None);
    data["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let value = s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN);
                    (labels, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The route the agent should report for a workload kind (`/fast/{id}`, `/fail/{uuid}`).
pub fn route(prefix: &str, kind: &str) -> String {
    let id = if kind == "fail" { "{uuid}" } else { "{id}" };
    format!("{prefix}/{kind}/{id}")
}

/// Expected counts per (route, status) from a timing log.
pub fn expected_counts(timings: &[Timing], prefix: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for t in timings {
        *out.entry((route(prefix, &t.kind), t.status.to_string()))
            .or_insert(0.0) += 1.0;
    }
    out
}

/// Counts per (route, status) of `<metric>_count` series matching `selector`.
pub fn counts(agg: &Aggregator, metric: &str, selector: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for (labels, value) in vector(agg, &format!("{metric}_count{{{selector}}}")) {
        *out.entry((
            labels.get("http_route").cloned().unwrap_or_default(),
            labels
                .get("http_response_status_code")
                .cloned()
                .unwrap_or_default(),
        ))
        .or_insert(0.0) += value;
    }
    out
}

/// Waits until the aggregator's counts for `selector` equal `expected` exactly; panics with
/// both after the timeout.
pub fn wait_counts(
    agg: &Aggregator,
    metric: &str,
    selector: &str,
    expected: &BTreeMap<(String, String), f64>,
) {
    let mut last = BTreeMap::new();
    let ok = (0..300).any(|_| {
        last = counts(agg, metric, selector);
        if &last == expected {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        ok,
        "{metric}{{{selector}}} counts differ from the truth\n  agent: {last:?}\n  truth: {expected:?}"
    );
}

/// Checks `_sum/_count` per series against the truth means (5% or 0.3 ms).
pub fn check_means(
    agg: &Aggregator,
    metric: &str,
    selector: &str,
    truth: &[Timing],
    prefix: &str,
) -> Vec<String> {
    let sums = vector(agg, &format!("{metric}_sum{{{selector}}}"));
    let counts = vector(agg, &format!("{metric}_count{{{selector}}}"));
    let mut report = Vec::new();
    for ((kind, status), values) in group(truth) {
        let key = (route(prefix, &kind), status.to_string());
        let pick = |v: &[(Labels, f64)]| -> f64 {
            v.iter()
                .filter(|(l, _)| {
                    l.get("http_route") == Some(&key.0)
                        && l.get("http_response_status_code") == Some(&key.1)
                })
                .map(|(_, v)| v)
                .sum()
        };
        let (sum, count) = (pick(&sums), pick(&counts));
        let measured = sum / count;
        let expected = mean(&values);
        let line = format!(
            "{metric} {} {}: mean agent {:.3} ms, truth {:.3} ms",
            key.0,
            key.1,
            measured * 1e3,
            expected * 1e3
        );
        eprintln!("{line}");
        assert!(agrees(measured, expected), "{line}");
        report.push(line);
    }
    report
}

/// The agent's `/debug/http` series.
pub fn debug_series(agent: &Agent) -> Vec<Value> {
    let body = http_get(&format!("http://{}/debug/http", agent.metrics))
        .expect("GET /debug/http")
        .body;
    let json: Value = serde_json::from_str(&body).expect("debug JSON");
    json["series"].as_array().cloned().unwrap_or_default()
}

/// Checks p50/p90/p99 from `/debug/http` against the truth (5% or 0.3 ms) for series of
/// `direction` whose labels include `must`.
pub fn check_quantiles(
    agent: &Agent,
    direction: &str,
    must: &[(&str, &str)],
    truth: &[Timing],
    prefix: &str,
) -> Vec<String> {
    let series = debug_series(agent);
    let mut report = Vec::new();
    for ((kind, status), values) in group(truth) {
        let r = route(prefix, &kind);
        let status = status.to_string();
        let found = series.iter().find(|s| {
            s["direction"] == direction
                && s["labels"]["http_route"] == r.as_str()
                && s["labels"]["http_response_status_code"] == status.as_str()
                && must.iter().all(|(k, v)| s["labels"][k] == *v)
        });
        let s = found.unwrap_or_else(|| {
            panic!("no {direction} series {r} {status} with {must:?} in /debug/http: {series:?}")
        });
        for (name, q) in [
            ("p50_seconds", 0.5),
            ("p90_seconds", 0.9),
            ("p99_seconds", 0.99),
        ] {
            let measured = s[name].as_f64().expect("quantile");
            let expected = quantile(&values, q);
            let line = format!(
                "{direction} {r} {status} {name}: agent {:.3} ms, truth {:.3} ms",
                measured * 1e3,
                expected * 1e3
            );
            eprintln!("{line}");
            assert!(agrees(measured, expected), "{line}");
            report.push(line);
        }
    }
    report
}

/// Asserts that no HTTP event was lost for any reason.
pub fn assert_nothing_lost(agent: &Agent) {
    let metrics = agent.metrics_text();
    for line in metrics.lines() {
        if line.starts_with("sonde_agent_events_lost_total{program=\"http\"") {
            assert!(line.ends_with(" 0"), "lost HTTP events: {line}\n{metrics}");
        }
    }
}

/// Waits for the agent's `/debug/http` to have at least `n` requests in series matching
/// `pred`.
pub fn wait_debug_count(agent: &Agent, n: u64, pred: impl Fn(&Value) -> bool) {
    eventually(Duration::from_secs(30), "requests in /debug/http", || {
        let total: u64 = debug_series(agent)
            .iter()
            .filter(|s| pred(s))
            .map(|s| s["count"].as_u64().unwrap_or(0))
            .sum();
        (total >= n).then_some(())
    });
}

/// The agent's kernel-side counter `name` (`sonde_agent_ebpf_kernel_counter{counter=…}`),
/// 0 when absent.
pub fn kernel_counter(agent: &Agent, name: &str) -> f64 {
    let prefix = format!("sonde_agent_ebpf_kernel_counter{{counter=\"{name}\"}} ");
    agent
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}
