//! The agent's disk buffer end to end: batches produced while the aggregator is away are
//! delivered when it returns, an agent killed with batches buffered resends them after a
//! restart, and at the size bound the oldest batches are dropped and counted — with exact
//! accounting between what the agent produced and what the aggregator stored.

use std::time::Duration;

use sonde_tests::{Agent, Aggregator, eventually, free_addr};

const BATCHES_OK: &str = "sonde_aggregator_ingest_batches_total{result=\"ok\"}";

fn aggregator_metric(agg: &Aggregator, series: &str) -> f64 {
    agg.get("/metrics")
        .body
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Raw samples of `node_boot_time_seconds` (one per agent tick) in the last hour.
fn ticks_stored(agg: &Aggregator) -> usize {
    let data = agg.query("node_boot_time_seconds[1h]", None);
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum()
}

fn config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(&path, format!("shutdown_grace = \"1s\"\n{extra}")).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn batches_buffered_while_the_aggregator_is_away_are_delivered_exactly_once() {
    let grpc = free_addr();
    let agent = Agent::start(
        &[format!("http://{grpc}")],
        &["--no-ebpf", "--interval", "100ms"],
    );
    eventually(Duration::from_secs(60), "50 buffered batches", || {
        agent
            .metric("sonde_agent_buffer_batches{")
            .filter(|&n| n >= 50.0)
    });
    let agg = Aggregator::start_on(Some(grpc), &[]);
    eventually(Duration::from_secs(30), "the buffer to drain", || {
        (agent.metric("sonde_agent_buffer_batches{") == Some(0.0)).then_some(())
    });
    // Every batch the agent ever appended was stored once: ok-batches at the aggregator equal
    // the agent's sequence count at a moment the buffer was empty (the agent keeps producing,
    // so the comparison is retried until both sides are read between two ticks).
    eventually(Duration::from_secs(10), "batch totals to agree", || {
        let appended = agent.metric("sonde_agent_buffer_next_sequence")? - 1.0;
        let stored = aggregator_metric(&agg, BATCHES_OK);
        let samples_appended = agent.metric("sonde_agent_buffer_appended_samples_total")?;
        let samples_stored = aggregator_metric(&agg, "sonde_aggregator_ingest_samples_total");
        let pending = agent.metric("sonde_agent_buffer_batches{")?;
        (pending == 0.0 && appended == stored && samples_appended == samples_stored).then_some(())
    });
    assert_eq!(
        aggregator_metric(&agg, "sonde_aggregator_ingest_duplicate_samples_total"),
        0.0
    );
    // The agent sends its series every tick, encoded the same way: after their first batch
    // they are stored by remembered head id, without decoding labels.
    let known = aggregator_metric(&agg, "sonde_aggregator_ingest_known_series_total");
    let decoded = aggregator_metric(&agg, "sonde_aggregator_ingest_decoded_series_total");
    assert!(
        known > 10.0 * decoded,
        "known {known}, decoded {decoded}: repeated series should skip label decoding"
    );
    let ticks = ticks_stored(&agg);
    assert!(ticks >= 50, "only {ticks} ticks stored");
}

#[test]
fn an_agent_killed_with_a_full_buffer_resends_it_after_restart() {
    let grpc = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let config = config(dir.path(), "");
    let args = ["--no-ebpf", "--interval", "100ms", "--config", &config];
    let mut first = Agent::start_with_buffer(&[format!("http://{grpc}")], Some(&buffer), &args);
    eventually(Duration::from_secs(60), "20 buffered batches", || {
        first
            .metric("sonde_agent_buffer_batches{")
            .filter(|&n| n >= 20.0)
    });
    first.process().signal(libc::SIGKILL);
    eventually(Duration::from_secs(10), "the first agent to die", || {
        first.process().exited()
    });
    drop(first);

    let agg = Aggregator::start_on(Some(grpc), &[]);
    let second = Agent::start_with_buffer(&[format!("http://{grpc}")], Some(&buffer), &args);
    eventually(
        Duration::from_secs(30),
        "everything from both runs delivered once",
        || {
            let appended = second.metric("sonde_agent_buffer_next_sequence")? - 1.0;
            let pending = second.metric("sonde_agent_buffer_batches{")?;
            let stored = aggregator_metric(&agg, BATCHES_OK);
            (pending == 0.0 && appended >= 20.0 && stored == appended).then_some(())
        },
    );
    assert_eq!(
        aggregator_metric(&agg, "sonde_aggregator_ingest_duplicate_samples_total"),
        0.0
    );
}

#[test]
fn at_the_bound_the_oldest_batches_are_dropped_and_counted() {
    let grpc = free_addr();
    let agent = Agent::start(
        &[format!("http://{grpc}")],
        &[
            "--no-ebpf",
            "--interval",
            "100ms",
            "--buffer-max-bytes",
            "65536",
        ],
    );
    eventually(Duration::from_secs(90), "the bound to drop batches", || {
        agent
            .metric("sonde_agent_buffer_dropped_samples_total{")
            .filter(|&n| n > 0.0)
    });
    let agg = Aggregator::start_on(Some(grpc), &[]);
    // Exact accounting: what the agent produced = what was stored + what the bound dropped.
    eventually(
        Duration::from_secs(30),
        "produced = stored + dropped",
        || {
            let pending = agent.metric("sonde_agent_buffer_batches{")?;
            let appended = agent.metric("sonde_agent_buffer_appended_samples_total")?;
            let dropped = agent.metric("sonde_agent_buffer_dropped_samples_total{")?;
            let stored = aggregator_metric(&agg, "sonde_aggregator_ingest_samples_total");
            (pending == 0.0 && appended == stored + dropped).then_some(())
        },
    );
    let log = agent.log();
    assert!(log.contains("buffer full: dropped the oldest"), "{log}");
}
