//! The aggregator SIGKILLed and restarted mid-stream, several times, on the same data
//! directory: every sample the agent produced is stored exactly once, with no gap. The agent
//! resends what was not acknowledged; the aggregator acknowledges only what its WAL holds and
//! deduplicates what it had stored but not acknowledged.

use std::time::Duration;

use sonde_tests::{Agent, Aggregator, eventually, free_addr};

/// Raw samples stored per series over the last hour, summed, and the raw sample count of
/// `node_boot_time_seconds` (one per agent tick).
fn stored_samples(agg: &Aggregator) -> (u64, Vec<f64>) {
    let data = agg.query("{__name__=~\".+\"}[1h]", None);
    let mut total = 0;
    let mut ticks = Vec::new();
    for series in data["result"].as_array().expect("matrix result") {
        let values = series["values"].as_array().expect("values");
        total += values.len() as u64;
        if series["metric"]["__name__"] == "node_boot_time_seconds" {
            ticks.extend(values.iter().map(|v| v[0].as_f64().expect("timestamp")));
        }
    }
    ticks.sort_by(f64::total_cmp);
    (total, ticks)
}

#[test]
fn aggregator_killed_mid_stream_stores_every_sample_exactly_once() {
    let grpc = free_addr();
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &[format!("http://{grpc}")],
        &["--no-ebpf", "--interval", "200ms"],
    );
    let mut agg = Aggregator::start_in(Some(data.path()), Some(grpc), &[]);
    for (round, pause_ms) in [(1, 1300u64), (2, 700), (3, 1900)] {
        // Let batches flow, then kill while the agent is streaming.
        eventually(Duration::from_secs(30), "batches acknowledged", || {
            (agent.metric("sonde_agent_buffer_batches{") == Some(0.0)).then_some(())
        });
        std::thread::sleep(Duration::from_millis(pause_ms));
        agg.process().signal(libc::SIGKILL);
        eventually(Duration::from_secs(10), "the aggregator to die", || {
            agg.process().exited()
        });
        drop(agg);
        // The agent buffers while the aggregator is away.
        std::thread::sleep(Duration::from_millis(600 * round));
        agg = Aggregator::start_in(Some(data.path()), Some(grpc), &[]);
    }

    // Compare at a moment when the agent has nothing pending; it keeps producing, so retry
    // until both sides are read between two ticks.
    let (appended, batches, ticks) = eventually(
        Duration::from_secs(60),
        "everything the agent appended to be stored",
        || {
            let pending = agent.metric("sonde_agent_buffer_batches{")?;
            let appended = agent.metric("sonde_agent_buffer_appended_samples_total")?;
            let batches = agent.metric("sonde_agent_buffer_next_sequence")? - 1.0;
            let (stored, ticks) = stored_samples(&agg);
            let again = agent.metric("sonde_agent_buffer_appended_samples_total")?;
            (pending == 0.0 && appended == again && stored as f64 == appended)
                .then_some((appended, batches, ticks))
        },
    );
    assert!(appended > 0.0);
    // One node_boot_time_seconds sample per batch: no batch is missing or doubled.
    assert_eq!(ticks.len() as f64, batches, "ticks vs batches appended");
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), ticks.len(), "duplicate timestamps stored");
}
