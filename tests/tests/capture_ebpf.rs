//! `sonde-agent capture` with eBPF (root): a 4 s capture while curl hits a local Python
//! server writes a valid file holding those exchanges, server and client side.

use std::{process::Command, time::Duration};

use sonde_tests::{Process, binary, capture::CaptureFile, eventually, free_addr, require_root};

#[test]
fn capture_records_the_exchanges_curl_makes() {
    if !require_root("capture_records_the_exchanges_curl_makes") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let mut server = Command::new("python3");
    server
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(addr.port().to_string())
        .current_dir(dir.path());
    let _server = Process::spawn("server", &mut server, dir.path());
    let output = dir.path().join("c.parquet");
    let mut cmd = Command::new(binary("sonde-agent"));
    cmd.args([
        "--interval",
        "1s",
        "capture",
        "--duration",
        "4s",
        "--output",
    ])
    .arg(&output);
    let mut capture = Process::spawn("capture", &mut cmd, dir.path());
    let log = dir.path().join("capture.log");
    capture
        .wait_until(Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("capturing"))
        })
        .expect("capture starts");
    let n = 12;
    for i in 0..n {
        let url = format!("http://{addr}/capture-test-{i}");
        eventually(Duration::from_secs(5), "curl", || {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", &url])
                .status()
                .ok()
                .filter(|s| s.success())
        });
    }
    let status = eventually(Duration::from_secs(30), "capture exits", || {
        capture.exited()
    });
    assert!(status.success(), "capture failed:\n{}", capture.log());

    let cap = CaptureFile::read(&output);
    let ours = |direction: &str| {
        cap.of_kind("http")
            .into_iter()
            .filter(|&i| {
                cap.str_at("direction", i) == direction
                    && cap.str_at("path", i).starts_with("/capture-test-")
                    && cap.u("status")[i] == Some(404)
            })
            .count()
    };
    assert_eq!(ours("server"), n, "server exchanges:\n{}", capture.log());
    assert_eq!(ours("client"), n, "client exchanges (curl)");
    assert!(cap.of_kind("exec").len() >= n, "each curl is an exec");
    assert!(
        cap.of_kind("tick").len() >= 4,
        "4 s at 1 s, plus the final tick"
    );
    assert_eq!(cap.metadata["sonde.capture.sources"], "exec,http,tcp");
}
