//! HTTPS through OpenSSL uprobes, on the real kernel: nginx with a self-signed certificate
//! and a Python `ssl` server (1/10/100 ms handlers, 200/404/500) that times itself, each in a
//! container-like cgroup, driven by a Python `ssl` client that times itself. Counts per route
//! and status are exact; exchanges, means and quantiles are checked as in agent_http_accuracy.rs; the client side gets
//! its server address through the socket under the `SSL *`. A curl in the same cgroup is
//! excluded by process name and must leave no trace. Needs root (CI runs as root).

use std::process::Command;

use sonde_tests::{
    Agent, Aggregator, Process, red,
    workload::{
        Nginx, TestCgroup, agent_config, fixture, plan_len, read_timings, self_signed, unique,
        wait_attached, wait_port, wait_timings,
    },
};

// Per connection (two). At least 100 of each 1 ms kind, so that p99 is not simply the
// largest value (see agent_http_accuracy.rs).
const PLAN: &str = "fast:60,medium:10,slow:3,missing:50,fail:10";

fn tls_client(cgroup: &TestCgroup, rel: &str, service: &str, port: u16, log: &std::path::Path) {
    let mut cmd: Command = cgroup.command_rt(
        rel,
        "python3",
        &[
            fixture("http/timed_client.py").to_str().unwrap(),
            "127.0.0.1",
            &port.to_string(),
            "",
            log.to_str().unwrap(),
            "2",
            PLAN,
            "tls",
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", service);
    let out = cmd.output().expect("run the TLS client");
    assert!(
        out.status.success(),
        "TLS client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_through_openssl_counts_exact_latencies_agree() {
    if !sonde_tests::require_root("https_through_openssl_counts_exact_latencies_agree") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (nginx_id, nginx_cg) = cgroup.container();
    let (server_id, server_cg) = cgroup.container();
    let (_client_id, client_cg) = cgroup.container();
    let agg = Aggregator::start();
    let config = agent_config(dir.path(), &[&cgroup.path], &["curl"], "");
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_attached(&agent, "ssl_exit");

    // Python ssl server.
    let (cert, key) = self_signed(dir.path());
    let server_name = unique("tls-server-");
    let port_file = dir.path().join("server.port");
    let server_log = dir.path().join("server.log");
    let mut cmd = cgroup.command_rt(
        &server_cg,
        "python3",
        &[
            fixture("http/timed_server.py").to_str().unwrap(),
            port_file.to_str().unwrap(),
            server_log.to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", &server_name);
    let mut server = Process::spawn("tls-server", &mut cmd, dir.path());
    let port = wait_port(&port_file, &mut server);

    // nginx with TLS.
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    let nginx = Nginx::start(
        &cgroup,
        &nginx_cg,
        &nginx_dir,
        true,
        "location /fast/ { return 200 \"fast\\n\"; }\n\
         location /medium/ { return 200 \"medium\\n\"; }\n\
         location /slow/ { return 200 \"slow\\n\"; }\n\
         location /missing/ { return 404 \"missing\\n\"; }\n\
         location /fail/ { return 500 \"fail\\n\"; }",
        "",
    );

    // The uprobes attach to the libssl file once it is found (host library directories at
    // start-up, then process scans).
    red::wait_debug_count(&agent, 0, |_| true);
    sonde_tests::eventually(
        std::time::Duration::from_secs(30),
        "a libssl to be probed",
        || {
            agent
                .metrics_text()
                .lines()
                .any(|l| l.starts_with("sonde_agent_tls_libraries_attached ") && !l.ends_with(" 0"))
                .then_some(())
        },
    );

    let client_name = unique("tls-client-");
    let to_server = dir.path().join("to-server.log");
    let to_nginx = dir.path().join("to-nginx.log");
    tls_client(&cgroup, &client_cg, &client_name, port, &to_server);
    tls_client(&cgroup, &client_cg, &client_name, nginx.port, &to_nginx);
    // curl is excluded by name, even inside the included cgroup.
    let curl = cgroup
        .command(
            &client_cg,
            "curl",
            &[
                "-sk",
                "-o",
                "/dev/null",
                &format!("https://127.0.0.1:{}/fast/1", nginx.port),
            ],
        )
        .status()
        .expect("run curl");
    assert!(curl.success());

    let client_server_truth = read_timings(&to_server);
    let client_nginx_truth = read_timings(&to_nginx);
    // The plan on both connections, after their warm-ups.
    assert_eq!(client_server_truth.len(), 2 * (plan_len(PLAN) + 1));
    let server_truth = wait_timings(&server_log, client_server_truth.len());
    assert_eq!(server_truth.len(), client_server_truth.len());

    // Python ssl server: exact counts, latencies against its own timing.
    let server_sel = format!("service_name=\"{server_name}\",container_id=\"{server_id}\"");
    red::wait_counts(
        &agg,
        "http_server_request_duration_seconds",
        &server_sel,
        &red::expected_counts(&server_truth, ""),
    );
    let mut report = red::check_side(
        &agg,
        &agent,
        &red::Side {
            direction: "server",
            service: &server_name,
            selector: &server_sel,
            debug_labels: &[("service_name", &server_name)],
            span_tags: &[],
            prefix: "",
        },
        &server_truth,
    );

    // nginx over TLS: exact counts. nginx itself is traced, so it counts curl's request
    // too; only curl's own (client) side is excluded.
    let nginx_sel = format!("container_id=\"{nginx_id}\"");
    let mut expected = red::expected_counts(&client_nginx_truth, "");
    *expected
        .entry(("/fast/{id}".to_owned(), "200".to_owned()))
        .or_insert(0.0) += 1.0;
    red::wait_counts(
        &agg,
        "http_server_request_duration_seconds",
        &nginx_sel,
        &expected,
    );

    // The TLS client, per destination (the peer comes from the socket under the SSL *).
    for (dest, truth) in [
        (port, &client_server_truth),
        (nginx.port, &client_nginx_truth),
    ] {
        let sel = format!(
            "service_name=\"{client_name}\",server_address=\"127.0.0.1\",server_port=\"{dest}\""
        );
        red::wait_counts(
            &agg,
            "http_client_request_duration_seconds",
            &sel,
            &red::expected_counts(truth, ""),
        );
        let dest = dest.to_string();
        report.extend(red::check_side(
            &agg,
            &agent,
            &red::Side {
                direction: "client",
                service: &client_name,
                selector: &sel,
                debug_labels: &[("service_name", &client_name), ("server_port", &dest)],
                span_tags: &[("server.port", &dest)],
                prefix: "",
            },
            truth,
        ));
    }
    eprintln!("{}", report.join("\n"));

    // Nothing from curl, and the kernel saw it being filtered.
    assert!(
        red::vector(
            &agg,
            "http_client_request_duration_seconds_count{service_name=\"curl\"}"
        )
        .is_empty()
    );
    let metrics = agent.metrics_text();
    let filtered = metrics
        .lines()
        .find(|l| l.starts_with("sonde_agent_ebpf_kernel_counter{counter=\"http_filtered\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        filtered >= 1.0,
        "curl was not filtered in the kernel:\n{metrics}"
    );
    red::assert_nothing_lost(&agent);
}
