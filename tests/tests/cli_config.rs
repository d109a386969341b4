//! Command-line interfaces: help, version, and the configuration precedence
//! defaults < file < environment < flags, for both binaries.

use std::process::{Command, Output};

use sonde_tests::{Aggregator, binary};

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
