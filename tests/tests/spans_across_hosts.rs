//! Spans linked across hosts by connection, end to end on the real kernel: service A on this
//! host (its own cgroup, traced by agent `host-a` only) calls service B inside a network
//! namespace with its own address (its own cgroup, traced by agent `host-b` only), on a new
//! connection per request and without forwarding any `traceparent`. Neither agent sees both
//! ends, so each sends its spans unlinked; the aggregator's Jaeger API must show every B
//! server span as the child of the A client span on the same connection, in A's trace,
//! whichever of the two traces is asked for, and the search by B's service must return the
//! whole chain. Needs root (CI runs as root).

use std::{collections::HashMap, time::Duration};

use sonde_tests::{
    Agent, Aggregator, Process, eventually,
    jaeger::{self, JaegerSpan},
    workload::{
        NetNs, TestCgroup, agent_config, fixture, get_close, unique, wait_attached,
        wait_http_hooks, wait_port,
    },
};

const REQUESTS: usize = 12;

fn search(agg: &Aggregator, service: &str) -> HashMap<String, Vec<JaegerSpan>> {
    jaeger::search(agg, service).into_iter().collect()
}

/// Checks one request's chain in a trace answer: A server → A client → B server, one trace.
fn check_chain(spans: &[JaegerSpan], n: usize, a: &str, b: &str) {
    let one = |service: &str, kind: &str, path: &str| -> &JaegerSpan {
        let found: Vec<&JaegerSpan> = spans
            .iter()
            .filter(|s| s.service == service && s.kind == kind && s.path == path)
            .collect();
        assert_eq!(found.len(), 1, "{service} {kind} {path} in {spans:#?}");
        found[0]
    };
    let a_server = one(a, "server", &format!("/chain/{n}"));
    let a_client = one(a, "client", &format!("/leaf/{n}"));
    let b_server = one(b, "server", &format!("/leaf/{n}"));
    assert_eq!(a_server.parent, None, "{a_server:?}");
    assert_eq!(a_client.parent.as_deref(), Some(a_server.id.as_str()));
    assert_eq!(
        b_server.parent.as_deref(),
        Some(a_client.id.as_str()),
        "B's server span is linked to A's client span by connection"
    );
    assert!(
        a_server.trace == a_client.trace && a_client.trace == b_server.trace,
        "one trace: {a_server:?} {a_client:?} {b_server:?}"
    );
}

#[test]
fn server_spans_on_another_host_join_their_callers_trace() {
    if !sonde_tests::require_root("server_spans_on_another_host_join_their_callers_trace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (_, a_cg) = cgroup.container();
    let (_, b_cg) = cgroup.container();
    let host_b = NetNs::new();
    let agg = Aggregator::start();
    let agent = |name: &str, cg: &str| {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        let config = agent_config(&sub, &[cg], &[], "");
        let agent = Agent::start(
            &[agg.grpc_url()],
            &["--config", config.to_str().unwrap(), "--agent-id", name],
        );
        wait_http_hooks(&agent);
        wait_attached(&agent, "inet_sock_set_state");
        agent
    };
    let _agent_a = agent("host-a", &a_cg);
    let _agent_b = agent("host-b", &b_cg);

    let (a_name, b_name) = (unique("hosts-a-"), unique("hosts-b-"));
    let script = fixture("spans/service.py");
    let b_port_file = dir.path().join("b.port");
    let mut cmd = cgroup.command(
        &b_cg,
        "ip",
        &[
            "netns",
            "exec",
            &host_b.name,
            "python3",
            script.to_str().unwrap(),
            "b",
            b_port_file.to_str().unwrap(),
        ],
    );
    cmd.env("OTEL_SERVICE_NAME", &b_name)
        .env("SERVICE_HOST", &host_b.ns_ip);
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
    cmd.env("OTEL_SERVICE_NAME", &a_name)
        .env("DOWNSTREAM_HOST", &host_b.ns_ip);
    let mut a = Process::spawn("service-a", &mut cmd, dir.path());
    let a_port = wait_port(&a_port_file, &mut a);

    for n in 0..REQUESTS {
        get_close(a_port, &format!("/chain/{n}"), None);
    }

    // Every chain, found by searching for B's service: the answer shows A's trace.
    let found = eventually(Duration::from_secs(60), "every chain linked", || {
        let found = search(&agg, &b_name);
        let complete = found.len() == REQUESTS
            && found.values().all(|spans| {
                spans.len() == 3 && spans.iter().filter(|s| s.parent.is_none()).count() == 1
            });
        complete.then_some(found)
    });
    for spans in found.values() {
        let n: usize = spans[0]
            .path
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a numbered path");
        check_chain(spans, n, &a_name, &b_name);
    }
    // B's spans arrived unlinked from their own agent: each is stored in a trace of its
    // own, and asking for that trace shows the caller's.
    let by_a = search(&agg, &a_name);
    assert_eq!(by_a.len(), REQUESTS, "one trace per request");
    for (id, spans) in &by_a {
        let b_server = spans
            .iter()
            .find(|s| s.service == b_name)
            .expect("B's span in A's trace");
        let r = agg.get(&format!("/api/traces/{id}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let answer: HashMap<String, Vec<JaegerSpan>> =
            jaeger::traces(&r.json()).into_iter().collect();
        assert_eq!(answer[id].len(), 3);
        assert_eq!(&b_server.trace, id);
    }
}
