//! Agent → aggregator delivery: node metrics arrive with the right values, batches queued
//! while the aggregator is away are delivered when it comes up, and SIGTERM flushes a final
//! collection. These run without eBPF (`--no-ebpf`), so they need no privileges.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonde_tests::{Agent, Aggregator, eventually, free_addr};

fn btime() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn node_metrics_arrive_with_procfs_values() {
    let agg = Aggregator::start();
    let _agent = Agent::start(
        &[agg.grpc_url()],
        &["--no-ebpf", "--interval", "1s", "--agent-id", "node-a"],
    );
    let boot = eventually(Duration::from_secs(30), "node_boot_time_seconds", || {
        agg.query_one("node_boot_time_seconds")
    });
    assert_eq!(boot, btime());
    // Target labels identify the agent, as Prometheus' job/instance identify a scrape target.
    let data = agg.query("node_boot_time_seconds", None);
    assert_eq!(
        data["result"][0]["metric"],
        serde_json::json!({"__name__": "node_boot_time_seconds", "instance": "node-a", "job": "sonde-agent"})
    );
    for metric in [
        "node_load1",
        "node_load5",
        "node_load15",
        "node_forks_total",
        "node_procs_running",
    ] {
        assert!(agg.query_one(metric).is_some(), "{metric} missing");
    }
    // Without eBPF the exec counter is absent, never a misleading zero.
    let names = agg.get("/api/v1/label/__name__/values").json();
    assert!(
        !names["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "node_process_execs_total"),
        "{names}"
    );
}

#[test]
fn batches_queued_while_the_aggregator_is_down_are_delivered() {
    let grpc = free_addr();
    let started = now_s();
    let agent = Agent::start(
        &[format!("http://{grpc}")],
        &["--no-ebpf", "--interval", "1s"],
    );
    // Let several ticks queue up against a closed port.
    eventually(Duration::from_secs(20), "batches to queue up", || {
        let text = agent.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix("sonde_agent_buffer_batches{"))
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|&n| n >= 3.0)
    });
    let agg = Aggregator::start_on(Some(grpc), &[]);
    // The first tick, collected before the aggregator existed, is there: a query 0.5 s after
    // the agent started sees it.
    eventually(Duration::from_secs(30), "the buffered first tick", || {
        let data = agg.query("node_boot_time_seconds", Some(started + 1.0));
        (data["result"].as_array().unwrap().len() == 1).then_some(())
    });
    eventually(Duration::from_secs(10), "the queue to drain", || {
        agent
            .metrics_text()
            .lines()
            .any(|l| l.starts_with("sonde_agent_buffer_batches{") && l.ends_with(" 0"))
            .then_some(())
    });
}

#[test]
fn sigterm_flushes_a_final_collection() {
    let agg = Aggregator::start();
    // One tick at start, then none for an hour: only the shutdown tick can add a sample.
    let mut agent = Agent::start(&[agg.grpc_url()], &["--no-ebpf", "--interval", "1h"]);
    let first = eventually(Duration::from_secs(30), "the first tick", || {
        agg.query_one("node_forks_total")
    });
    // Fork a few processes so the counter moves.
    for _ in 0..3 {
        std::process::Command::new("true").status().unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    let status = agent.process().stop(Duration::from_secs(20));
    assert!(
        status.success(),
        "agent exited with {status}\n{}",
        agent.log()
    );
    let last = agg.query_one("node_forks_total").expect("series present");
    assert!(
        last > first,
        "final tick not delivered: {first} then {last}\n{}",
        agent.log()
    );
}
