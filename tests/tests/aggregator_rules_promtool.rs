//! Differential test: `promtool test rules` (Prometheus 2.42) and `sonde-aggregator test
//! rules` run on the same promtool-format files must pass or fail alike: the default rule
//! pack's tests (`deploy/rules/tests/`) and the fixtures in `tests/fixtures/rules/`, which
//! include a file with wrong expectations that both must fail. Also: `promtool check rules`
//! and Sonde's start-up validation reject the same invalid rule file.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sonde_tests::binary;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn test_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/rules/tests", "tests/fixtures/rules"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("fixture directory") {
            let path = entry.expect("dir entry").path();
            if path.to_string_lossy().ends_with(".test.yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

struct Outcome {
    passed: bool,
    output: String,
}

fn run(program: &Path, args: &[&str], file: &Path) -> Outcome {
    let out = Command::new(program)
        .args(args)
        .arg(file.file_name().expect("file name"))
        .current_dir(file.parent().expect("parent"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    Outcome {
        passed: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn promtool_and_sonde_agree_on_every_rule_test_file() {
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "promtool is missing: run `cargo xtask setup`"
    );
    let sonde = binary("sonde-aggregator");
    let files = test_files();
    assert!(
        files.len() >= 7,
        "expected the rule pack and fixtures, found {files:?}"
    );
    let mut failing_seen = false;
    let mut disagreements = Vec::new();
    for file in &files {
        let p = run(promtool, &["test", "rules"], file);
        let s = run(&sonde, &["test", "rules"], file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!("{name}: promtool {}, sonde {}", p.passed, s.passed);
        if p.passed != s.passed {
            disagreements.push(format!(
                "{name}: promtool passed={}, sonde passed={}\n--- promtool:\n{}\n--- sonde:\n{}",
                p.passed, s.passed, p.output, s.output
            ));
        }
        if name == "failing.test.yml" {
            failing_seen = true;
            assert!(
                !p.passed && !s.passed,
                "failing.test.yml must fail in both:\n{}\n{}",
                p.output,
                s.output
            );
            assert!(
                s.output.contains("alertname: Flapping, time: 4m"),
                "{}",
                s.output
            );
        } else {
            assert!(
                p.passed,
                "{name} fails under promtool itself:\n{}",
                p.output
            );
        }
    }
    assert!(
        failing_seen,
        "the deliberately failing file is part of the comparison"
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n\n"));
}

#[test]
fn an_invalid_rule_file_is_rejected_by_both_naming_the_position() {
    let bad = root().join("tests/fixtures/rules/bad-rules.yml");
    let p = Command::new("/usr/bin/promtool")
        .args(["check", "rules"])
        .arg(&bad)
        .output()
        .expect("run promtool");
    assert!(!p.status.success());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("sonde-aggregator"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-http",
            "127.0.0.1:0",
            "--listen-grpc",
            "127.0.0.1:0",
        ])
        .arg("--rules")
        .arg(&bad)
        .output()
        .expect("run sonde-aggregator");
    assert!(
        !out.status.success(),
        "start-up must fail on an invalid rule file"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "bad-rules.yml:7: group \"broken\", rule 2 (\"Broken\"): could not parse expression"
        ),
        "{err}"
    );
}
