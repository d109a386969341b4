//! One collection path: the samples the agent shows on `/metrics` are the samples it sent to
//! the aggregator for the same tick (same names, labels and values), node and container
//! series alike.

use std::time::Duration;

use sonde_tests::{Agent, Aggregator, eventually, exposition::Exposition, http_get};

#[test]
fn metrics_endpoint_shows_exactly_what_the_aggregator_stored() {
    let agg = Aggregator::start();
    let agent = Agent::start(&[agg.grpc_url()], &["--no-ebpf", "--interval", "1s"]);
    let url = format!("http://{}/metrics", agent.metrics);
    // Fast-moving counters make equality meaningful: they only match for the same tick.
    let probes: &[(&str, &[(&str, &str)])] = &[
        ("node_context_switches_total", &[]),
        ("node_cpu_seconds_total", &[("cpu", "0"), ("mode", "idle")]),
        ("node_memory_MemFree_bytes", &[]),
        ("node_load1", &[]),
        (
            "container_cpu_usage_seconds_total",
            &[("cpu", "total"), ("id", "/")],
        ),
    ];
    let checked = eventually(
        Duration::from_secs(40),
        "the aggregator to hold the shown tick",
        || {
            let shown = Exposition::parse(&http_get(&url).ok()?.body);
            let tick = shown.get("sonde_agent_last_collection_timestamp_seconds", &[])?;
            let mut all = Vec::new();
            for (name, labels) in probes {
                let value = shown.get(name, labels)?;
                let selector = format!(
                    "{name}{{{}}}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{v}\""))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let data = agg.query(&selector, Some(tick));
                let result = data["result"].as_array()?;
                if result.len() != 1 {
                    return None;
                }
                let stored: f64 = result[0]["value"][1].as_str()?.parse().ok()?;
                if stored != value {
                    return None;
                }
                all.push((selector, value));
            }
            Some(all)
        },
    );
    assert_eq!(checked.len(), probes.len());
    // Every node_ and container_ family shown is known to the aggregator too.
    let shown = Exposition::parse(&http_get(&url).unwrap().body);
    let names = agg.get("/api/v1/label/__name__/values").json();
    let stored: Vec<&str> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for name in shown.names() {
        if name.starts_with("node_") || name.starts_with("container_") {
            assert!(
                stored.contains(&name.as_str()),
                "{name} shown on /metrics but not stored"
            );
        }
    }
}
