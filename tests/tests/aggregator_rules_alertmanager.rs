//! End to end with the real Debian `prometheus-alertmanager`: two Sonde replicas evaluate the
//! same alerting rule over the same data and both send to one Alertmanager; it receives the
//! alert, deduplicates it (no replica label), notifies a webhook that it fires, and, once the
//! value drops, that it is resolved.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use sonde_tests::{Aggregator, Process, eventually, free_addr, http_get, series_batch};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A webhook receiver on a free port collecting the JSON bodies it is sent.
fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice::<Value>(&body)
            {
                sink.lock().unwrap().push(json);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}

fn start_alertmanager(dir: &std::path::Path, hook: &str) -> (Process, String) {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    for attempt in 1..=5 {
        let addr = free_addr();
        let mut cmd = std::process::Command::new("/usr/bin/prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=");
        let mut process = Process::spawn("alertmanager", &mut cmd, dir);
        let url = format!("http://{addr}");
        match process.wait_until(Duration::from_secs(30), || {
            http_get(&format!("{url}/-/ready")).is_ok_and(|r| r.status == 200)
        }) {
            Ok(()) => return (process, url),
            Err(log) if log.contains("address already in use") && attempt < 5 => continue,
            Err(log) => panic!("alertmanager did not start:\n{log}"),
        }
    }
    unreachable!()
}

fn notifications(received: &Mutex<Vec<Value>>, status: &str) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == status)
        .cloned()
        .collect()
}

#[test]
fn alertmanager_receives_deduplicates_and_resolves_sondes_alerts() {
    assert!(
        std::path::Path::new("/usr/bin/prometheus-alertmanager").exists(),
        "prometheus-alertmanager is missing: run `cargo xtask setup`"
    );
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = webhook();
    let (mut am, am_url) = start_alertmanager(dir.path(), &hook);
    let rules = dir.path().join("e2e.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: e2e\n    interval: 1s\n    rules:\n      - alert: E2EValueHigh\n        expr: e2e_value > 0\n        labels:\n          severity: page\n        annotations:\n          summary: 'value is {{ $value }} on {{ $labels.instance }}'\n",
    )
    .unwrap();
    let rules_arg = rules.display().to_string();
    let args = [
        "--rules",
        rules_arg.as_str(),
        "--alertmanager-url",
        am_url.as_str(),
    ];
    let replicas = [Aggregator::start_with(&args), Aggregator::start_with(&args)];
    let t0 = now_ms();
    for r in &replicas {
        let acks = r.push(vec![series_batch(
            "e2e",
            1,
            "e2e_value",
            &[("instance", "web-1")],
            &[(t0, 3.0)],
        )]);
        assert_eq!(acks.len(), 1);
    }

    // Fires: the webhook hears it once per group, with the rule's labels and annotations.
    let firing = eventually(Duration::from_secs(30), "a firing notification", || {
        notifications(&received, "firing").into_iter().next()
    });
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "E2EValueHigh");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"]["instance"], "web-1");
    assert_eq!(alert["annotations"]["summary"], "value is 3 on web-1");
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/graph?g0.expr=e2e_value")
    );

    // Both replicas sent it; Alertmanager holds one alert (identical labels, no replica label).
    for r in &replicas {
        eventually(
            Duration::from_secs(10),
            "the replica counted a sent alert",
            || {
                let text = r.get("/metrics").body;
                text.lines()
                    .any(|l| {
                        l.starts_with("sonde_aggregator_notifications_sent_total{")
                            && !l.ends_with(" 0")
                    })
                    .then_some(())
            },
        );
        let alerts = r.get("/api/v1/alerts").json();
        assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    }
    let am_alerts: Value = http_get(&format!("{am_url}/api/v2/alerts")).unwrap().json();
    let list = am_alerts.as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "Alertmanager deduplicates the replicas' alerts: {am_alerts}"
    );
    assert_eq!(list[0]["status"]["state"], "active");

    // Resolves once the value drops.
    let t1 = now_ms().max(t0 + 1);
    for r in &replicas {
        r.push(vec![series_batch(
            "e2e",
            2,
            "e2e_value",
            &[("instance", "web-1")],
            &[(t1, 0.0)],
        )]);
    }
    let resolved = eventually(Duration::from_secs(30), "a resolved notification", || {
        notifications(&received, "resolved").into_iter().next()
    });
    assert_eq!(resolved["alerts"][0]["labels"]["alertname"], "E2EValueHigh");
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    eventually(
        Duration::from_secs(10),
        "Alertmanager lists no active alert",
        || {
            let v: Value = http_get(&format!("{am_url}/api/v2/alerts")).unwrap().json();
            v.as_array().unwrap().is_empty().then_some(())
        },
    );
    am.stop(Duration::from_secs(10));
}
