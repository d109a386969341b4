//! Spans from eBPF, end to end on the real kernel: service A (Python `http.server`, thread
//! per request) calls service B over HTTP on loopback (`tests/fixtures/spans/service.py`),
//! the agent builds one span per exchange and the aggregator's Jaeger API returns them.
//!
//! Variants, each run `CHAINS` times, all at once and beside unrelated direct requests to B:
//! - the test sends a `traceparent` into A and A forwards it to B;
//! - the test sends a `traceparent` into A and A forwards none;
//! - the test sends none (A's span starts a trace).
//!
//! In every variant: A's server span is in the header's trace with the header's parent (or
//! a root), A's client span is its child (same thread), B's server span is the child of A's
//! client span (connection 4-tuple), all one trace. The direct requests come from this test
//! process, which the agent does not trace (outside the test cgroup): their B spans must be
//! roots of their own traces. B's latency histogram carries trace ids as exemplars. Needs root.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sonde_tests::{
    Agent, Aggregator, Process, encode, eventually,
    jaeger::{self, JaegerSpan, norm},
    workload::{
        TestCgroup, agent_config, fixture, get_close, unique, wait_attached, wait_http_hooks,
        wait_port,
    },
};

/// Chains per variant.
const CHAINS: usize = 10;
/// Unrelated direct requests to B.
const DIRECT: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Forward,
    NoForward,
    NoHeader,
}

fn variant(n: usize) -> Variant {
    match n / CHAINS {
        0 => Variant::Forward,
        1 => Variant::NoForward,
        _ => Variant::NoHeader,
    }
}

/// The header sent into A for chain `n`.
fn header(n: usize) -> (String, String) {
    (
        format!("4bf92f3577b34da6a3ce929d{n:08x}"),
        format!("00f067aa{n:08x}"),
    )
}

/// Every span of the traces the Jaeger API finds for `service`, by span id.
fn spans_of(agg: &Aggregator, service: &str, into: &mut HashMap<String, JaegerSpan>) {
    for (_, spans) in jaeger::search(agg, service) {
        for span in spans {
            into.insert(span.id.clone(), span);
        }
    }
}

#[test]
fn spans_link_across_threads_and_connections_under_load() {
    if !sonde_tests::require_root("spans_link_across_threads_and_connections_under_load") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (_, a_cg) = cgroup.container();
    let (_, b_cg) = cgroup.container();
    let agg = Aggregator::start();
    let config = agent_config(dir.path(), &[&cgroup.path], &[], "");
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_http_hooks(&agent);
    wait_attached(&agent, "inet_sock_set_state");

    let (a_name, b_name) = (unique("spans-a-"), unique("spans-b-"));
    let script = fixture("spans/service.py");
    let b_port_file = dir.path().join("b.port");
    let mut cmd = cgroup.command(
        &b_cg,
        "python3",
        &[script.to_str().unwrap(), "b", b_port_file.to_str().unwrap()],
    );
    cmd.env("OTEL_SERVICE_NAME", &b_name);
    let mut b = Process::spawn("service-b", &mut cmd, dir.path());
    let b_port = wait_port(&b_port_file, &mut b);
    let a_port_file = dir.path().join("a.port");
    let mut cmd = cgroup.command(
        &a_cg,
        "python3",
        &[
            script.to_str().unwrap(),
            "a",
            a_port_file.to_str().unwrap(),
            &b_port.to_string(),
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", &a_name);
    let mut a = Process::spawn("service-a", &mut cmd, dir.path());
    let a_port = wait_port(&a_port_file, &mut a);

    // All chains and the unrelated direct load at once, from several threads.
    std::thread::scope(|s| {
        for worker in 0..3 {
            s.spawn(move || {
                for n in (worker..3 * CHAINS).step_by(3) {
                    let (t, p) = header(n);
                    let tp = format!("00-{t}-{p}-01");
                    let (path, tp) = match variant(n) {
                        Variant::Forward => (format!("/chain/{n}?forward=1"), Some(tp)),
                        Variant::NoForward => (format!("/chain/{n}"), Some(tp)),
                        Variant::NoHeader => (format!("/chain/{n}?forward=1"), None),
                    };
                    get_close(a_port, &path, tp.as_deref());
                }
            });
        }
        for worker in 0..2 {
            s.spawn(move || {
                for m in (worker..DIRECT).step_by(2) {
                    get_close(b_port, &format!("/direct/{m}"), None);
                }
            });
        }
    });

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let mut spans = HashMap::new();
        spans_of(&agg, &a_name, &mut spans);
        spans_of(&agg, &b_name, &mut spans);
        let count = |service: &str, kind: &str| {
            spans
                .values()
                .filter(|s| s.service == service && s.kind == kind)
                .count()
        };
        let counts = [
            count(&a_name, "server"),
            count(&a_name, "client"),
            count(&b_name, "server"),
        ];
        if counts == [3 * CHAINS, 3 * CHAINS, 3 * CHAINS + DIRECT] {
            break spans;
        }
        if std::time::Instant::now() > deadline {
            // What the agent saw and dropped, to tell a lost event from a lost span.
            let metrics: Vec<String> = agent
                .metrics_text()
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && ["lost", "dropped", "spans_linked", "http_requests"]
                            .iter()
                            .any(|k| l.contains(k))
                })
                .map(str::to_owned)
                .collect();
            let mut paths: Vec<String> = spans
                .values()
                .map(|s| format!("{} {} {}", s.service, s.kind, s.path))
                .collect();
            paths.sort();
            panic!(
                "spans (A server, A client, B server) {counts:?}, expected {:?}\n{}\n{}",
                [3 * CHAINS, 3 * CHAINS, 3 * CHAINS + DIRECT],
                metrics.join("\n"),
                paths.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let find = |service: &str, kind: &str, path: &str| -> JaegerSpan {
        let found: Vec<&JaegerSpan> = spans
            .values()
            .filter(|s| s.service == service && s.kind == kind && s.path == path)
            .collect();
        assert_eq!(found.len(), 1, "{service} {kind} {path}: {found:?}");
        found[0].clone()
    };
    let mut chain_traces = Vec::new();
    for n in 0..3 * CHAINS {
        let a_server = find(&a_name, "server", &format!("/chain/{n}"));
        let a_client = find(&a_name, "client", &format!("/leaf/{n}"));
        let b_server = find(&b_name, "server", &format!("/leaf/{n}"));
        match variant(n) {
            Variant::Forward | Variant::NoForward => {
                let (t, p) = header(n);
                assert_eq!(
                    a_server.trace,
                    norm(&t),
                    "chain {n}: A joins the header's trace"
                );
                assert_eq!(a_server.parent, Some(norm(&p)), "chain {n}: A's parent");
            }
            Variant::NoHeader => {
                assert_eq!(a_server.parent, None, "chain {n}: A starts a trace");
            }
        }
        assert_eq!(a_client.trace, a_server.trace, "chain {n}: A's call");
        assert_eq!(
            a_client.parent.as_deref(),
            Some(a_server.id.as_str()),
            "chain {n}: A's call is a child of the request its thread serves"
        );
        assert_eq!(
            b_server.trace, a_server.trace,
            "chain {n}: B joins A's trace"
        );
        assert_eq!(
            b_server.parent.as_deref(),
            Some(a_client.id.as_str()),
            "chain {n}: B's span is the child of A's call over the same connection"
        );
        chain_traces.push(a_server.trace.clone());
    }
    chain_traces.sort();
    chain_traces.dedup();
    assert_eq!(
        chain_traces.len(),
        3 * CHAINS,
        "every chain is its own trace"
    );
    for m in 0..DIRECT {
        let direct = find(&b_name, "server", &format!("/direct/{m}"));
        assert_eq!(
            direct.parent, None,
            "direct request {m} comes from an untraced process: no parent"
        );
        assert!(
            chain_traces.binary_search(&direct.trace).is_err(),
            "direct request {m} is in no chain's trace"
        );
    }

    // B's latency histogram carries trace ids of its spans as exemplars.
    let b_traces: Vec<String> = spans
        .values()
        .filter(|s| s.service == b_name)
        .map(|s| s.trace.clone())
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let query = format!("http_server_request_duration_seconds_bucket{{service_name=\"{b_name}\"}}");
    let found = eventually(Duration::from_secs(30), "exemplars of B", || {
        let r = agg.get(&format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            encode(&query),
            now - 600.0,
            now + 60.0
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        let json = r.json();
        let ids: Vec<String> = json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(norm))
            .collect();
        (!ids.is_empty()).then_some(ids)
    });
    for id in &found {
        assert!(
            b_traces.contains(id),
            "exemplar trace {id} is one of B's traces"
        );
    }
    let metrics = agent.metrics_text();
    assert!(
        metrics.contains("sonde_agent_spans_linked_total{link=\"connection\"}"),
        "{metrics}"
    );
    drop(a);
    drop(b);
}
