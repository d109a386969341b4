//! Kernel → agent → aggregator: `sched:sched_process_exec` events arrive through the ring
//! buffer with the right pid and file name, and the exec counter reaches the aggregator.
//! Needs root (CI runs as root).

use std::{process::Command, time::Duration};

use sonde_tests::{Agent, Aggregator, eventually, require_root};

#[test]
fn exec_events_arrive_from_the_kernel_and_reach_the_aggregator() {
    if !require_root("exec_events_arrive_from_the_kernel_and_reach_the_aggregator") {
        return;
    }
    let agg = Aggregator::start();
    let agent = Agent::start(
        &[agg.grpc_url()],
        &[
            "--interval",
            "1s",
            "--log-level",
            "info,sonde_agent::ebpf::exec=trace",
        ],
    );
    eventually(
        Duration::from_secs(20),
        "the exec program to attach",
        || {
            agent
                .metrics_text()
                .contains("sonde_agent_ebpf_program_attached{program=\"sched_process_exec\"} 1")
                .then_some(())
        },
    );
    let before = eventually(Duration::from_secs(30), "the first exec count", || {
        agg.query_one("node_process_execs_total")
    });

    // A program with a name nothing else on the machine runs.
    let dir = tempfile::tempdir().unwrap();
    let probe = dir
        .path()
        .join(format!("sonde-exec-probe-{}", std::process::id()));
    std::fs::copy("/bin/true", &probe).unwrap();
    let probe_path = probe.to_str().unwrap().to_owned();
    let mut pids = Vec::new();
    for _ in 0..5 {
        let mut child = Command::new(&probe).spawn().unwrap();
        pids.push(child.id());
        assert!(child.wait().unwrap().success());
    }

    // Each exec arrived in user space with its pid and file name.
    eventually(
        Duration::from_secs(10),
        "every exec in the agent's log",
        || {
            let log = agent.log();
            pids.iter()
                .all(|pid| {
                    log.lines().any(|line| {
                        line.contains(" exec ")
                            && line.contains(&format!("pid={pid} "))
                            && line.contains(&format!("filename={probe_path}"))
                    })
                })
                .then_some(())
        },
    );
    // And the counter reached the aggregator.
    eventually(
        Duration::from_secs(20),
        "the exec counter to grow by 5",
        || {
            agg.query_one("node_process_execs_total")
                .filter(|&now| now >= before + 5.0)
        },
    );
    let metrics = agent.metrics_text();
    assert!(
        metrics.contains("sonde_agent_ebpf_kernel_counter{counter=\"exec_read_error\"} 0"),
        "{metrics}"
    );
}
