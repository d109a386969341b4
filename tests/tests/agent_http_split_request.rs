//! A request line split over several reads, on the real kernel: a client (this test, not
//! traced) writes the method alone (`GET `), waits, then writes the rest, so the traced
//! server's first read holds only the method. Every such request must be counted, with the
//! path from the following read (regression: requests whose first read was shorter than
//! 8 bytes were not seen at all, which the span test hit now and then). Needs root.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use sonde_tests::{
    Agent, Aggregator, Process, red,
    workload::{TestCgroup, agent_config, fixture, unique, wait_http_hooks, wait_port},
};

const N: u64 = 6;

fn split_get(port: u16, method: &str, path: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(format!("{method} ").as_bytes()).unwrap();
    // Long enough for the server to read the method alone.
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(
        format!("{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.0 200"), "{method} {path}: {out:?}");
}

#[test]
fn a_method_written_alone_still_counts_the_request_with_its_path() {
    if !sonde_tests::require_root("a_method_written_alone_still_counts_the_request_with_its_path") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cgroup = TestCgroup::new();
    let (_, server_cg) = cgroup.container();
    let agg = Aggregator::start();
    let config = agent_config(dir.path(), &[&cgroup.path], &[], "");
    let agent = Agent::start(&[agg.grpc_url()], &["--config", config.to_str().unwrap()]);
    wait_http_hooks(&agent);

    let name = unique("split-");
    let port_file = dir.path().join("b.port");
    let script = fixture("spans/service.py");
    let mut cmd = cgroup.command(
        &server_cg,
        "python3",
        &[script.to_str().unwrap(), "b", port_file.to_str().unwrap()],
    );
    cmd.env("OTEL_SERVICE_NAME", &name);
    let mut server = Process::spawn("server", &mut cmd, dir.path());
    let port = wait_port(&port_file, &mut server);

    for n in 0..N {
        split_get(port, "GET", &format!("/split/{n}"));
    }
    red::wait_debug_count(&agent, N, |s| {
        s["direction"] == "server"
            && s["labels"]["service_name"] == name.as_str()
            && s["labels"]["http_route"] == "/split/{id}"
            && s["labels"]["http_request_method"] == "GET"
    });
    // Nothing else: no request counted without its path.
    let others: Vec<_> = red::debug_series(&agent)
        .into_iter()
        .filter(|s| {
            s["labels"]["service_name"] == name.as_str()
                && s["labels"]["http_route"] != "/split/{id}"
        })
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(red::kernel_counter(&agent, "http_requests"), N as f64);
    red::assert_nothing_lost(&agent);
}
