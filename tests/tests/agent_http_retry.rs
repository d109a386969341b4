//! Writes that are not one response each, on the real kernel (`tests/fixtures/http/retry.py`):
//! a server whose status-line `writev` fails (nothing sent) and is written again, as a
//! non-blocking server retries after `EAGAIN`, must count one exchange per response on both
//! sides and lose nothing (the kernel sees every write at its entry, so the status line
//! twice); a request whose connection is closed unanswered is counted, on the server and on
//! the client, as `http_request_unanswered`, not as an exchange. The client runs without
//! `OTEL_SERVICE_NAME` and is named after its script. Needs root.

use std::collections::BTreeMap;

use sonde_tests::{
    Agent, Aggregator, Process, eventually, red,
    workload::{TestCgroup, agent_config, fixture, unique, wait_http_hooks, wait_port},
};

const N: usize = 25;

#[test]
fn retried_status_lines_count_once_and_unanswered_requests_are_counted() {
    if !sonde_tests::require_root(
        "retried_status_lines_count_once_and_unanswered_requests_are_counted",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (server_id, server_cg) = cgroup.container();
    let (client_id, client_cg) = cgroup.container();
    let agg = Aggregator::start();
    let config = agent_config(dir.path(), &[&cgroup.path], &[], "");
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_http_hooks(&agent);
    assert_eq!(red::kernel_counter(&agent, "http_request_unanswered"), 0.0);

    let server_name = unique("retry-server-");
    let port_file = dir.path().join("server.port");
    let log = dir.path().join("server.log");
    let script = fixture("http/retry.py");
    let mut cmd = cgroup.command(
        &server_cg,
        "python3",
        &[
            script.to_str().unwrap(),
            "server",
            port_file.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", &server_name);
    let mut server = Process::spawn("retry-server", &mut cmd, dir.path());
    let port = wait_port(&port_file, &mut server);

    let mut cmd = cgroup.command(
        &client_cg,
        "python3",
        &[
            script.to_str().unwrap(),
            "client",
            &port.to_string(),
            &N.to_string(),
        ],
    );
    // No OTEL_SERVICE_NAME: the client is named after its script (python3 retry.py).
    cmd.env_remove("OTEL_SERVICE_NAME");
    let out = cmd.output().expect("run the client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server really wrote every retried status line twice, the first time for nothing.
    let lines = eventually(
        std::time::Duration::from_secs(10),
        "the server's log",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.lines().count() == N + 1).then_some(text)
        },
    );
    assert_eq!(
        lines.lines().filter(|l| *l == "retry 1").count(),
        N,
        "{lines}"
    );
    assert_eq!(lines.lines().filter(|l| *l == "drop").count(), 1, "{lines}");

    let expected: BTreeMap<(String, String), f64> = [
        (("/retry/{id}".to_owned(), "200".to_owned()), N as f64),
        (("/ok/{id}".to_owned(), "200".to_owned()), N as f64),
    ]
    .into();
    red::wait_counts(
        &agg,
        "http_server_request_duration_seconds",
        &format!("service_name=\"{server_name}\",container_id=\"{server_id}\""),
        &expected,
    );
    red::wait_counts(
        &agg,
        "http_client_request_duration_seconds",
        &format!("service_name=\"retry\",container_id=\"{client_id}\",server_port=\"{port}\""),
        &expected,
    );
    // /drop/1: unanswered on both ends, and no exchange.
    eventually(
        std::time::Duration::from_secs(10),
        "two unanswered requests",
        || (red::kernel_counter(&agent, "http_request_unanswered") == 2.0).then_some(()),
    );
    assert!(
        red::vector(
            &agg,
            "http_server_request_duration_seconds_count{http_route=\"/drop/{id}\"}"
        )
        .is_empty()
    );
    red::assert_nothing_lost(&agent);
}
