//! Every data syscall Sonde hooks (`read`, `recvfrom`, `readv`, `recvmsg` and `write`,
//! `sendto`, `writev`, `sendmsg`), on both ends of a connection, over each way of seeing
//! socket data (`[ebpf.http] data_hooks`): `socket` (the `sock_recv_length`/
//! `sock_send_length` tracepoints, arguments from the saved registers), `syscall_exit` (read
//! exits with the arguments from the saved registers, write entries) and `enter_exit` (enter
//! hooks keep the read arguments for the exit program). A traced Python server and client
//! (`tests/fixtures/http/data_syscalls.py`) use one read/write pair per keep-alive
//! connection; every request must be counted once per side under its syscall's route.
//! Needs root.

use std::collections::BTreeMap;

use sonde_tests::{
    Agent, Aggregator, Process, red,
    workload::{TestCgroup, agent_config, attached, fixture, unique, wait_attached, wait_port},
};

const N: usize = 5;
const SYSCALLS: [&str; 4] = ["read", "recvfrom", "readv", "recvmsg"];

/// Starts the fixture's server in cgroup `cg` as service `name`; returns it and its port.
fn start_server(
    cgroup: &TestCgroup,
    cg: &str,
    dir: &std::path::Path,
    name: &str,
) -> (Process, u16) {
    let port_file = dir.join("server.port");
    let script = fixture("http/data_syscalls.py");
    let mut cmd = cgroup.command(
        cg,
        "python3",
        &[
            script.to_str().unwrap(),
            "server",
            port_file.to_str().unwrap(),
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", name);
    let mut server = Process::spawn("read-syscalls-server", &mut cmd, dir);
    let port = wait_port(&port_file, &mut server);
    (server, port)
}

/// Waits until the server's and the client's counts per route equal `expected`.
fn wait_both_sides(
    agg: &Aggregator,
    (server_name, server_id): (&str, &str),
    (client_name, client_id): (&str, &str),
    port: u16,
    expected: &BTreeMap<(String, String), f64>,
) {
    red::wait_counts(
        agg,
        "http_server_request_duration_seconds",
        &format!("service_name=\"{server_name}\",container_id=\"{server_id}\""),
        expected,
    );
    red::wait_counts(
        agg,
        "http_client_request_duration_seconds",
        &format!(
            "service_name=\"{client_name}\",container_id=\"{client_id}\",server_port=\"{port}\""
        ),
        expected,
    );
}

fn every_data_syscall_is_counted(data_hooks: &str, program: &str, others: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (server_id, server_cg) = cgroup.container();
    let (client_id, client_cg) = cgroup.container();
    let agg = Aggregator::start();
    let config = agent_config(
        dir.path(),
        &[&cgroup.path],
        &[],
        &format!("[ebpf.http]\ndata_hooks = \"{data_hooks}\"\n"),
    );
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_attached(&agent, program);
    // Only one way is attached: no data is seen twice.
    let metrics = agent.metrics_text();
    for other in others {
        assert!(
            !attached(&metrics, other),
            "{other} attached alongside {program}:\n{metrics}"
        );
    }

    let server_name = unique("reads-server-");
    let (_server, port) = start_server(&cgroup, &server_cg, dir.path(), &server_name);
    let script = fixture("http/data_syscalls.py");

    let client_name = unique("reads-client-");
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
    cmd.env("OTEL_SERVICE_NAME", &client_name);
    let out = cmd.output().expect("run the client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected: BTreeMap<(String, String), f64> = SYSCALLS
        .iter()
        .map(|s| ((format!("/{s}/{{id}}"), "200".to_owned()), N as f64))
        .collect();
    wait_both_sides(
        &agg,
        (&server_name, &server_id),
        (&client_name, &client_id),
        port,
        &expected,
    );
    red::assert_nothing_lost(&agent);
    assert_eq!(red::kernel_counter(&agent, "http_read_error"), 0.0);
    // Every socket's data was its own connection's (the socket path checks).
    assert!(
        agent
            .metrics_text()
            .contains("counter=\"http_foreign_socket\"")
    );
    assert_eq!(red::kernel_counter(&agent, "http_foreign_socket"), 0.0);
}

#[test]
fn every_data_syscall_is_counted_with_socket_hooks() {
    if !sonde_tests::require_root("every_data_syscall_is_counted_with_socket_hooks") {
        return;
    }
    every_data_syscall_is_counted(
        "socket",
        "sock_recv_length",
        &["sys_exit_read_regs", "sys_exit_io", "sys_enter_write"],
    );
}

#[test]
fn every_data_syscall_is_counted_with_exit_hooks() {
    if !sonde_tests::require_root("every_data_syscall_is_counted_with_exit_hooks") {
        return;
    }
    every_data_syscall_is_counted(
        "syscall_exit",
        "sys_exit_read_regs",
        &["sys_exit_io", "sock_recv_length", "sock_send_length"],
    );
}

#[test]
fn every_data_syscall_is_counted_with_enter_and_exit_hooks() {
    if !sonde_tests::require_root("every_data_syscall_is_counted_with_enter_and_exit_hooks") {
        return;
    }
    every_data_syscall_is_counted(
        "enter_exit",
        "sys_exit_io",
        &["sys_exit_read_regs", "sock_recv_length", "sock_send_length"],
    );
}

/// A keep-alive connection opened before the agent started (both ends): the agent seeds it
/// from /proc, and its later requests are counted on both sides (the kernel skips processes
/// it has not marked as holding sockets, so seeding must mark them too).
#[test]
fn a_connection_older_than_the_agent_is_traced() {
    if !sonde_tests::require_root("a_connection_older_than_the_agent_is_traced") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (server_id, server_cg) = cgroup.container();
    let (client_id, client_cg) = cgroup.container();
    let script = fixture("http/data_syscalls.py");

    let server_name = unique("seeded-server-");
    let (_server, port) = start_server(&cgroup, &server_cg, dir.path(), &server_name);

    let client_name = unique("seeded-client-");
    let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
    let mut cmd = cgroup.command(
        &client_cg,
        "python3",
        &[
            script.to_str().unwrap(),
            "client-after",
            &port.to_string(),
            &N.to_string(),
            ready.to_str().unwrap(),
            go.to_str().unwrap(),
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", &client_name);
    cmd.stderr(std::process::Stdio::piped());
    let client = cmd.spawn().expect("start the client");
    sonde_tests::eventually(
        std::time::Duration::from_secs(15),
        "the client's connection",
        || ready.exists().then_some(()),
    );

    let agg = Aggregator::start();
    let config = agent_config(dir.path(), &[&cgroup.path], &[], "");
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_attached(&agent, "sock_recv_length");
    // Seeding runs once the hooks are attached; its count is exported.
    sonde_tests::eventually(
        std::time::Duration::from_secs(15),
        "the connection seeded",
        || {
            agent
                .metrics_text()
                .lines()
                .any(|l| {
                    l.starts_with("sonde_agent_ebpf_seeded_connections")
                        && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0)
                })
                .then_some(())
        },
    );
    std::fs::write(&go, "").unwrap();
    let out = client.wait_with_output().expect("run the client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected: BTreeMap<(String, String), f64> =
        [(("/read/{id}".to_owned(), "200".to_owned()), N as f64)].into();
    wait_both_sides(
        &agg,
        (&server_name, &server_id),
        (&client_name, &client_id),
        port,
        &expected,
    );
    red::assert_nothing_lost(&agent);
}
