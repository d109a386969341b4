//! Rules through the real binary: recording-rule output and `ALERTS` queryable like ingested
//! series, `/api/v1/rules` and `/api/v1/alerts` in Prometheus' shape, reload by `POST
//! /-/reload` and SIGHUP (a bad file keeps the previous rules and names file, line, group and
//! rule), and `for` progress restored from `ALERTS_FOR_STATE` after a restart.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sonde_tests::{Aggregator, eventually, http_post_form, series_batch};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const RULES: &str = "groups:
  - name: api
    interval: 1s
    rules:
      - record: job:load:max
        expr: max by (job) (load)
      - alert: LoadHigh
        expr: job:load:max > 1
        for: 1h
        labels:
          severity: warning
        annotations:
          summary: '{{ $labels.job }} load {{ $value }}'
";

fn rules_of(agg: &Aggregator) -> Value {
    let v = agg.get("/api/v1/rules").json();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["groups"].clone()
}

#[test]
fn rules_evaluate_answer_the_api_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.yml");
    std::fs::write(&file, RULES).unwrap();
    let path = file.display().to_string();
    let mut agg = Aggregator::start_with(&["--rules", &path]);
    agg.push(vec![series_batch(
        "a",
        1,
        "load",
        &[("job", "web"), ("instance", "1")],
        &[(now_ms(), 4.0)],
    )]);

    eventually(
        Duration::from_secs(20),
        "the recording rule's output",
        || {
            agg.query_one("job:load:max{job=\"web\"}")
                .filter(|v| *v == 4.0)
        },
    );
    eventually(
        Duration::from_secs(20),
        "ALERTS written back (pending)",
        || agg.query_one("ALERTS{alertname=\"LoadHigh\", alertstate=\"pending\", job=\"web\"}"),
    );
    let groups = rules_of(&agg);
    assert_eq!(groups[0]["name"], "api");
    assert_eq!(groups[0]["file"], path.as_str());
    assert_eq!(groups[0]["interval"], 1.0);
    let rec = &groups[0]["rules"][0];
    assert_eq!(
        (rec["type"].as_str(), rec["health"].as_str()),
        (Some("recording"), Some("ok"))
    );
    let alert = &groups[0]["rules"][1];
    assert_eq!(alert["type"], "alerting");
    assert_eq!(alert["state"], "pending");
    assert_eq!(alert["duration"], 3600.0);
    assert_eq!(alert["alerts"][0]["annotations"]["summary"], "web load 4");
    assert_eq!(alert["alerts"][0]["value"], "4e+00");
    let only_alerting = agg.get("/api/v1/rules?type=alert").json();
    assert_eq!(
        only_alerting["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let alerts = agg.get("/api/v1/alerts").json();
    assert_eq!(
        alerts["data"]["alerts"][0]["labels"]["alertname"],
        "LoadHigh"
    );
    assert_eq!(alerts["data"]["alerts"][0]["state"], "pending");

    // A bad reload keeps the running rules and says where the error is.
    std::fs::write(
        &file,
        RULES.replace("max by (job) (load)", "max by (job) (load"),
    )
    .unwrap();
    let r = http_post_form(&format!("{}/-/reload", agg.url()), &[]).unwrap();
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains(
            "api.yml:5: group \"api\", rule 1 (\"job:load:max\"): could not parse expression"
        ),
        "{}",
        r.body
    );
    assert_eq!(rules_of(&agg)[0]["rules"].as_array().unwrap().len(), 2);
    assert!(
        agg.get("/metrics")
            .body
            .contains("sonde_aggregator_rule_config_last_reload_successful 0")
    );
    let alerts = agg.get("/api/v1/alerts").json();
    assert_eq!(
        alerts["data"]["alerts"].as_array().unwrap().len(),
        1,
        "alert state survives"
    );

    // SIGHUP loads a good file; the alert keeps its state across the reload.
    let active_at = alerts["data"]["alerts"][0]["activeAt"].clone();
    std::fs::write(
        &file,
        format!("{RULES}      - record: extra\n        expr: vector(7)\n"),
    )
    .unwrap();
    agg.process().signal(libc::SIGHUP);
    eventually(Duration::from_secs(20), "the reloaded rules", || {
        (rules_of(&agg)[0]["rules"].as_array().unwrap().len() == 3).then_some(())
    });
    eventually(Duration::from_secs(20), "the new rule's output", || {
        agg.query_one("extra")
    });
    let alerts = agg.get("/api/v1/alerts").json();
    assert_eq!(alerts["data"]["alerts"][0]["activeAt"], active_at);
    let metrics = agg.get("/metrics").body;
    assert!(
        metrics.contains("sonde_aggregator_rule_config_last_reload_successful 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sonde_aggregator_rule_group_rules{rule_group=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("sonde_aggregator_rule_evaluations_total{rule_group=\""),
        "{metrics}"
    );
}

#[test]
fn for_state_is_restored_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("restore.yml");
    std::fs::write(&file, RULES).unwrap();
    let config = dir.path().join("sonde.toml");
    std::fs::write(&config, "[rules]\nfor_grace_period = \"1s\"\n").unwrap();
    let data = dir.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--rules",
        file.to_str().unwrap(),
    ];
    let mut first = Aggregator::start_in(Some(&data), None, &args);
    first.push(vec![series_batch(
        "a",
        1,
        "load",
        &[("job", "web")],
        &[(now_ms(), 4.0)],
    )]);
    let active_at = |agg: &Aggregator| -> Option<f64> {
        let v = agg.get("/api/v1/alerts").json();
        let at = v["data"]["alerts"][0]["activeAt"].as_str()?.to_owned();
        chrono_like_seconds(&at)
    };
    let original = eventually(Duration::from_secs(20), "a pending alert", || {
        active_at(&first)
    });
    // Let a few evaluations write ALERTS_FOR_STATE.
    eventually(Duration::from_secs(20), "ALERTS_FOR_STATE", || {
        first.query_one("ALERTS_FOR_STATE{alertname=\"LoadHigh\"}")
    });
    std::thread::sleep(Duration::from_secs(8));
    first.process().stop(Duration::from_secs(20));
    drop(first);
    std::thread::sleep(Duration::from_secs(2));
    let restarted_at = now_ms() as f64 / 1000.0;
    let second = Aggregator::start_in(Some(&data), None, &args);
    let started = Instant::now();
    // Without restoring, activeAt would be the first evaluation after the restart. Restored,
    // it is the original activeAt shifted by the downtime: well before the restart.
    let restored = eventually(Duration::from_secs(20), "the restored activeAt", || {
        active_at(&second).filter(|t| *t < restarted_at - 2.0)
    });
    assert!(
        restored >= original,
        "restored {restored} before original {original}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        second.log().contains("'for' state restored"),
        "{}",
        second.log()
    );
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2024-01-02T03:04:05.678Z`).
fn chrono_like_seconds(text: &str) -> Option<f64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86400.0 + hh * 3600.0 + mm * 60.0 + ss)
}
