//! TCP connection metrics on the real kernel, against a peer in a network namespace this test
//! creates (veth pair, deleted afterwards): successful connects, refused connects, connect
//! time, active connections and retransmits (the peer's link is taken down while data is in
//! flight), per container and destination. Needs root (CI runs as root).

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use sonde_tests::{
    Agent, Aggregator, Process, eventually, red,
    workload::{NetNs, TestCgroup, agent_config, fixture, wait_attached, wait_port},
};

const OPEN: usize = 4;
const REFUSED: usize = 3;

fn value(agg: &Aggregator, query: &str) -> Option<f64> {
    let v = red::vector(agg, query);
    (!v.is_empty()).then(|| v.iter().map(|(_, x)| x).sum())
}

#[test]
fn connects_failures_active_connections_and_retransmits() {
    if !sonde_tests::require_root("connects_failures_active_connections_and_retransmits") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = NetNs::new();
    let mut cgroup = TestCgroup::new();
    let (client_id, client_cg) = cgroup.container();
    let agg = Aggregator::start();
    let config = agent_config(dir.path(), &[&cgroup.path], &[], "");
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_attached(&agent, "inet_sock_set_state");

    // The peer listens inside the namespace.
    let port_file = dir.path().join("peer.port");
    let mut cmd = ns.command(
        "python3",
        &[
            fixture("http/tcp_peer.py").to_str().unwrap(),
            "server",
            port_file.to_str().unwrap(),
            &ns.ns_ip,
            "0",
        ],
    );
    let mut peer = Process::spawn("peer", &mut cmd, dir.path());
    let port = wait_port(&port_file, &mut peer);
    let closed_port = if port == 65535 { port - 1 } else { port + 1 };

    // Connections that succeed and stay open, from a container-like cgroup.
    let mut client = cgroup
        .command(
            &client_cg,
            "python3",
            &[
                fixture("http/tcp_peer.py").to_str().unwrap(),
                "client",
                &ns.ns_ip,
                &port.to_string(),
                &OPEN.to_string(),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the TCP client");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), format!("ok {OPEN}"));

    // Connects to a port nobody listens on: refused by the peer's kernel.
    let out = cgroup
        .command(
            &client_cg,
            "python3",
            &[
                fixture("http/tcp_peer.py").to_str().unwrap(),
                "refused",
                &ns.ns_ip,
                &closed_port.to_string(),
                &REFUSED.to_string(),
            ],
        )
        .output()
        .expect("run the refused connects");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("refused {REFUSED}")
    );

    let dest = format!("{}:{port}", ns.ns_ip);
    let closed = format!("{}:{closed_port}", ns.ns_ip);
    let sel = format!("destination=\"{dest}\",container_id=\"{client_id}\"");
    eventually(Duration::from_secs(30), "connect counts", || {
        let ok = value(
            &agg,
            &format!("container_net_tcp_successful_connects_total{{{sel}}}"),
        )?;
        let active = value(
            &agg,
            &format!("container_net_tcp_active_connections{{{sel}}}"),
        )?;
        let failed = value(
            &agg,
            &format!(
                "container_net_tcp_failed_connects_total{{destination=\"{closed}\",container_id=\"{client_id}\"}}"
            ),
        )?;
        let timed = value(
            &agg,
            &format!("container_net_tcp_connect_duration_seconds_count{{{sel}}}"),
        )?;
        (ok == OPEN as f64
            && active == OPEN as f64
            && failed == REFUSED as f64
            && timed == OPEN as f64)
            .then_some(())
    });
    let connect_time = value(
        &agg,
        &format!("container_net_tcp_connect_duration_seconds_sum{{{sel}}}"),
    )
    .unwrap();
    assert!(
        connect_time > 0.0 && connect_time / (OPEN as f64) < 0.1,
        "mean connect time {connect_time} s over a veth"
    );

    // Retransmits: the peer's side of the link goes down while data is in flight, then
    // comes back; the sender's kernel retransmits.
    let peer_if = ns.host_if.replacen("sh", "sp", 1);
    let status = Command::new("ip")
        .args(["-n", &ns.name, "link", "set", &peer_if, "down"])
        .status()
        .unwrap();
    assert!(status.success());
    let stdin = client.stdin.as_mut().unwrap();
    writeln!(stdin, "send").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("ip")
        .args(["-n", &ns.name, "link", "set", &peer_if, "up"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(lines.next().unwrap().unwrap(), "sent");
    eventually(Duration::from_secs(30), "retransmits to the peer", || {
        value(
            &agg,
            &format!("container_net_tcp_retransmits_total{{{sel}}}"),
        )
        .filter(|&n| n >= 1.0)
    });

    // Closing the connections: none active any more.
    drop(client.stdin.take());
    assert!(client.wait().unwrap().success());
    eventually(Duration::from_secs(30), "no active connections", || {
        value(
            &agg,
            &format!("container_net_tcp_active_connections{{{sel}}}"),
        )
        .filter(|&n| n == 0.0)
    });
    let metrics = agent.metrics_text();
    for line in metrics.lines() {
        if line.starts_with("sonde_agent_events_lost_total{program=\"tcp\"") {
            assert!(line.ends_with(" 0"), "lost TCP events: {line}");
        }
    }
}
