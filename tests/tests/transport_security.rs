//! Agent → aggregator security: TLS, mutual TLS, bearer tokens, certificate reload without a
//! restart, and plaintext refused unless configured explicitly.

use std::{path::Path, process::Command, time::Duration};

use sonde_tests::{Agent, Aggregator, binary, certs, eventually};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn aggregator_config(dir: &Path, c: &certs::Certs, client_ca: bool, token: Option<&str>) -> String {
    let mut text = format!(
        "[grpc.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        c.server_cert, c.server_key
    );
    if client_ca {
        text.push_str(&format!("client_ca_file = {:?}\n", c.ca));
    }
    if let Some(token) = token {
        let file = write(dir, "aggregator-token", token);
        text = format!("[grpc]\nbearer_token_file = {file:?}\n\n{text}");
    }
    write(dir, "aggregator.toml", &text)
}

fn agent_config(dir: &Path, c: &certs::Certs, client_cert: bool, token: Option<&str>) -> String {
    let mut text = format!("[transport.tls]\nca_file = {:?}\n", c.ca);
    if client_cert {
        text.push_str(&format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            c.client_cert, c.client_key
        ));
    }
    if let Some(token) = token {
        let file = write(dir, "agent-token", token);
        text = format!("[transport]\nbearer_token_file = {file:?}\n\n{text}");
    }
    write(dir, "agent.toml", &text)
}

fn delivered(agg: &Aggregator) -> bool {
    agg.query_one("node_boot_time_seconds").is_some()
}

fn https(agg: &Aggregator) -> String {
    format!("https://localhost:{}", agg.grpc.port())
}

#[test]
fn mutual_tls_delivers_and_a_client_without_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::generate(dir.path());
    let agg = Aggregator::start_with(&["--config", &aggregator_config(dir.path(), &c, true, None)]);

    let anonymous_dir = tempfile::tempdir().unwrap();
    let anonymous = Agent::start(
        &[https(&agg)],
        &[
            "--no-ebpf",
            "--interval",
            "200ms",
            "--config",
            &agent_config(anonymous_dir.path(), &c, false, None),
        ],
    );
    eventually(
        Duration::from_secs(20),
        "the anonymous agent to be refused",
        || {
            anonymous
                .log()
                .contains("aggregator unavailable")
                .then_some(())
        },
    );
    assert!(
        !delivered(&agg),
        "an agent without a client certificate got data in"
    );
    drop(anonymous);

    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = Agent::start(
        &[https(&agg)],
        &[
            "--no-ebpf",
            "--interval",
            "200ms",
            "--config",
            &agent_config(agent_dir.path(), &c, true, None),
        ],
    );
    eventually(Duration::from_secs(30), "data over mutual TLS", || {
        delivered(&agg).then_some(())
    });
}

#[test]
fn bearer_token_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs::generate(dir.path());
    let agg = Aggregator::start_with(&[
        "--config",
        &aggregator_config(dir.path(), &c, false, Some("s3cret-token")),
    ]);
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong = Agent::start(
        &[https(&agg)],
        &[
            "--no-ebpf",
            "--interval",
            "200ms",
            "--config",
            &agent_config(wrong_dir.path(), &c, false, Some("guess")),
        ],
    );
    eventually(
        Duration::from_secs(20),
        "the wrong token to be refused",
        || wrong.log().contains("invalid bearer token").then_some(()),
    );
    assert!(!delivered(&agg));
    drop(wrong);

    let right_dir = tempfile::tempdir().unwrap();
    let _right = Agent::start(
        &[https(&agg)],
        &[
            "--no-ebpf",
            "--interval",
            "200ms",
            "--config",
            &agent_config(right_dir.path(), &c, false, Some("s3cret-token")),
        ],
    );
    eventually(Duration::from_secs(30), "data with the right token", || {
        delivered(&agg).then_some(())
    });
}

#[test]
fn rotated_server_certificates_are_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_dir = dir.path().join("old");
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let old = certs::generate(&old_dir);
    let new = certs::generate(&new_dir);
    // The aggregator reads its files from fixed paths, starting with the old CA's certificate.
    let live = certs::Certs {
        server_cert: dir.path().join("live.crt"),
        server_key: dir.path().join("live.key"),
        ..old.clone()
    };
    std::fs::copy(&old.server_cert, &live.server_cert).unwrap();
    std::fs::copy(&old.server_key, &live.server_key).unwrap();
    let agg = Aggregator::start_with(&[
        "--config",
        &aggregator_config(dir.path(), &live, false, None),
    ]);

    // The agent trusts only the new CA.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &[https(&agg)],
        &[
            "--no-ebpf",
            "--interval",
            "200ms",
            "--config",
            &agent_config(agent_dir.path(), &new, false, None),
        ],
    );
    eventually(Duration::from_secs(20), "the handshake to fail", || {
        agent.log().contains("aggregator unavailable").then_some(())
    });
    assert!(!delivered(&agg));

    // Rotate: key first, then certificate (a reload in between fails and keeps the old pair).
    std::fs::copy(&new.server_key, &live.server_key).unwrap();
    std::fs::copy(&new.server_cert, &live.server_cert).unwrap();
    eventually(Duration::from_secs(60), "data after the rotation", || {
        delivered(&agg).then_some(())
    });
    assert!(
        agg.log().contains("reloaded after a file change"),
        "{}",
        agg.log()
    );
}

#[test]
fn plaintext_to_other_hosts_needs_explicit_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("sonde-aggregator"))
        .env_remove("RUST_BACKTRACE")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-http", "127.0.0.1:0", "--listen-grpc", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("grpc.allow_plaintext"), "{stderr}");

    let out = Command::new(binary("sonde-agent"))
        .args(["--aggregator", "http://192.0.2.1:9181", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("transport.allow_plaintext"), "{stderr}");
}
