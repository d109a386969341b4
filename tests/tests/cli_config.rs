//! Command-line interfaces: help, version, the configuration precedence
//! defaults < file < environment < flags, structured (JSON) logs for both binaries, and the
//! README's main job (`cargo xtask run`) from start to Ctrl-C.

use std::{
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{Agent, Aggregator, Process, bin_dir, binary, eventually, free_addr, http_get};

fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("RUST_BACKTRACE")
        .output()
        .expect("binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_and_version() {
    for (name, flags) in [
        (
            "sonde-aggregator",
            &["--data-dir", "--listen-http", "--listen-grpc", "--config"][..],
        ),
        (
            "sonde-agent",
            &["--aggregator", "--listen-metrics", "--config", "--no-ebpf"][..],
        ),
    ] {
        let help = run(Command::new(binary(name)).arg("--help"));
        assert!(help.status.success());
        for flag in flags {
            assert!(stdout(&help).contains(flag), "{name} --help lacks {flag}");
        }
        assert!(
            stdout(&help).contains("precedence"),
            "{name} --help explains precedence"
        );
        let version = run(Command::new(binary(name)).arg("--version"));
        assert!(version.status.success());
        assert_eq!(
            stdout(&version).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn aggregator_precedence_file_env_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aggregator.toml");
    std::fs::write(
        &file,
        "listen_http = \"127.0.0.1:1111\"\ndata_dir = \"/file\"\n",
    )
    .unwrap();
    let print = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = Command::new(binary("sonde-aggregator"));
        cmd.env_remove("SONDE_AGGREGATOR_LISTEN_HTTP")
            .arg("--config")
            .arg(&file);
        if let Some(v) = env {
            cmd.env("SONDE_AGGREGATOR_LISTEN_HTTP", v);
        }
        if let Some(v) = flag {
            cmd.args(["--listen-http", v]);
        }
        let out = run(cmd.arg("print-config"));
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(print(None, None).contains("listen_http = \"127.0.0.1:1111\""));
    assert!(print(Some("127.0.0.1:2222"), None).contains("listen_http = \"127.0.0.1:2222\""));
    let all = print(Some("127.0.0.1:2222"), Some("127.0.0.1:3333"));
    assert!(all.contains("listen_http = \"127.0.0.1:3333\""), "{all}");
    assert!(all.contains("data_dir = \"/file\""), "{all}");
}

#[test]
fn agent_precedence_and_comma_separated_env_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "aggregators = [\"https://file:1\"]\n").unwrap();
    let print = |env: Option<&str>, flags: &[&str]| {
        let mut cmd = Command::new(binary("sonde-agent"));
        cmd.env_remove("SONDE_AGENT_AGGREGATORS")
            .arg("--config")
            .arg(&file);
        if let Some(v) = env {
            cmd.env("SONDE_AGENT_AGGREGATORS", v);
        }
        let out = run(cmd.args(flags).arg("--print-config"));
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(print(None, &[]).contains("aggregators = [\"https://file:1\"]"));
    assert!(
        print(Some("https://e:1,https://e:2"), &[])
            .contains("aggregators = [\"https://e:1\", \"https://e:2\"]")
    );
    assert!(
        print(Some("https://e:1"), &["--aggregator", "https://f:1"])
            .contains("aggregators = [\"https://f:1\"]")
    );
}

#[test]
fn configuration_errors_are_clear_and_fail_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen_htp = \"127.0.0.1:1\"\n").unwrap();
    let out = run(Command::new(binary("sonde-aggregator"))
        .arg("--config")
        .arg(&file));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("listen_htp"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("backtrace"), "{}", stderr(&out));

    let out = run(Command::new(binary("sonde-agent")).args(["--aggregator", "localhost:9181"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`aggregators`"), "{}", stderr(&out));

    let out = run(Command::new(binary("sonde-agent")).args(["--interval", "soon"]));
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(stderr(&out).contains("--interval"), "{}", stderr(&out));
}

#[test]
fn a_data_directory_is_never_shared() {
    let first = Aggregator::start();
    let out = run(Command::new(binary("sonde-aggregator"))
        .arg("--data-dir")
        .arg(&first.data_dir)
        .args([
            "--listen-http",
            "127.0.0.1:0",
            "--listen-grpc",
            "127.0.0.1:0",
        ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );
}

/// Every line of a JSON log is one object with a timestamp, a level and the event's fields.
fn json_lines(log: &str, name: &str) -> Vec<Value> {
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{name} log line is not JSON ({e}): {l}"))
        })
        .collect();
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{name}: {line}");
        assert!(line["level"].is_string(), "{name}: {line}");
    }
    lines
}

#[test]
fn json_logs_from_both_binaries() {
    let mut aggregator = Aggregator::start_with(&["--log-format", "json"]);
    let mut agent = Agent::start(
        &[aggregator.grpc_url()],
        &[
            "--no-ebpf",
            "--log-format",
            "json",
            "--agent-id",
            "json-logs",
        ],
    );
    assert!(agent.process().stop(Duration::from_secs(20)).success());
    assert!(aggregator.process().stop(Duration::from_secs(20)).success());
    let lines = json_lines(&agent.log(), "agent");
    let started = lines
        .iter()
        .find(|l| l["message"] == "sonde-agent started")
        .unwrap_or_else(|| panic!("no start event: {lines:?}"));
    // Fields are flattened into the object, not formatted into the message.
    assert_eq!(started["agent_id"], "json-logs", "{started}");
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{lines:?}");
    let lines = json_lines(&aggregator.log(), "aggregator");
    assert!(lines.iter().any(|l| l["level"] == "INFO"), "{lines:?}");
}

#[test]
fn xtask_run_serves_until_ctrl_c_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (http, grpc, metrics) = (free_addr(), free_addr(), free_addr());
    let mut cmd = Command::new(binary("xtask"));
    cmd.arg("run")
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--state-dir")
        .arg(&state)
        .args(["--http", &http.to_string()])
        .args(["--grpc", &grpc.to_string()])
        .args(["--agent-metrics", &metrics.to_string()]);
    let mut run = Process::spawn("xtask-run", &mut cmd, tmp.path());
    let log_path = tmp.path().join("xtask-run.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    run.wait_until(Duration::from_secs(60), || log().contains("Press Ctrl-C"))
        .unwrap_or_else(|log| panic!("xtask run did not come up:\n{log}"));
    let banner = log();
    for expected in [
        format!("http://{http}"),
        "query=node_load1".to_owned(),
        "deploy/grafana".to_owned(),
    ] {
        assert!(
            banner.contains(&expected),
            "banner lacks {expected}:\n{banner}"
        );
    }
    let query = format!("http://{http}/api/v1/query?query=node_load1");
    eventually(Duration::from_secs(60), "node_load1 from the agent", || {
        let body = http_get(&query).ok()?.body;
        let json: Value = serde_json::from_str(&body).ok()?;
        (!json["data"]["result"].as_array()?.is_empty()).then_some(())
    });

    // Ctrl-C: xtask stops the agent (which flushes), then the aggregator, and exits 0.
    run.signal(libc::SIGINT);
    let status = eventually(Duration::from_secs(90), "xtask run to exit", || {
        run.exited()
    });
    assert!(
        status.success(),
        "xtask run exited with {status}:\n{}",
        log()
    );
    let out = log();
    assert!(out.contains("agent stopped (exit status: 0)"), "{out}");
    assert!(out.contains("aggregator stopped (exit status: 0)"), "{out}");
    assert!(http_get(&query).is_err(), "the aggregator still answers");

    // The data is on disk: an aggregator on the same directory serves it.
    let aggregator = Aggregator::start_in(Some(&state.join("aggregator")), None, &[]);
    let data = aggregator.query("node_load1", None);
    assert!(
        !data["result"].as_array().unwrap().is_empty(),
        "node_load1 not kept: {data}"
    );
}
