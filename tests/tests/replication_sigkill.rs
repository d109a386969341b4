//! Three replicas, three writers pushing like agents (every batch to every replica that is
//! up, delivered at a write quorum of two, never resent to a replica that was down). One
//! replica is SIGKILLed while writes go on and restarted: only anti-entropy can give it
//! what it missed. After convergence every replica returns the same raw samples, exactly
//! what the writers delivered (zero loss, zero duplicates); merged reads see everything
//! even before that; the status endpoint and metrics show the catch-up.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sonde_tests::{
    eventually, http_get,
    replication::{Cluster, FAST_CONFIG, Writers, count, now_ms, raw_samples, status},
};

#[test]
fn sigkilled_replica_catches_up_from_its_peers() {
    let mut cluster = Cluster::start(3, FAST_CONFIG, |_| None);
    let up = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect::<Vec<_>>());
    let targets: Vec<String> = (0..3)
        .map(|i| format!("http://{}", cluster.slots[i].grpc))
        .collect();
    let writers = Writers::start(3, 20, Duration::from_millis(200), targets, up.clone());
    let started = now_ms();

    std::thread::sleep(Duration::from_secs(3));
    // The victim stops receiving before it dies, as an agent's stream would break.
    up[2].store(false, Ordering::Relaxed);
    cluster.kill(2);
    let killed_at = now_ms();
    std::thread::sleep(Duration::from_secs(5));

    // While it is down, a merged read on a survivor answers, with a warning naming it.
    let (merged, warnings) = raw_samples(&cluster.url(0), now_ms(), "10m", true);
    assert!(count(&merged) > 0);
    assert!(
        warnings.iter().any(|w| w.contains(&cluster.url(2))),
        "a merged read names the unreachable peer: {warnings:?}"
    );

    cluster.start_replica(2);
    // A merged read on the restarted replica right away sees everything delivered before the
    // restart, although it missed those seconds.
    let before_restart = writers.sent();
    let (merged, _) = raw_samples(&cluster.url(2), now_ms(), "10m", true);
    for (series, samples) in &before_restart {
        for (t, v) in samples {
            assert_eq!(
                merged.get(series).and_then(|s| s.get(t)),
                Some(v),
                "merged read on the restarted replica misses {series} at {t}"
            );
        }
    }
    up[2].store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let sent = writers.stop();
    let total = count(&sent);
    let missed: usize = sent
        .values()
        .map(|s| s.range(killed_at..killed_at + 5000).count())
        .sum();
    assert!(
        missed > 100,
        "the victim missed a real stretch ({missed} samples)"
    );
    assert!(total > 1000, "writers delivered {total} samples");

    let at = now_ms();
    let range = format!("{}s", (at - started) / 1000 + 60);
    let converged = eventually(Duration::from_secs(60), "replicas to converge", || {
        let views: Vec<_> = (0..3)
            .map(|i| raw_samples(&cluster.url(i), at, &range, false).0)
            .collect();
        views.iter().all(|v| *v == sent).then_some(views)
    });
    for (i, view) in converged.iter().enumerate() {
        assert_eq!(
            count(view),
            total,
            "replica {i}: total equals what was sent"
        );
    }

    // The restarted replica pulled what it missed and reports itself in sync.
    let st = status(&cluster.url(2));
    assert_eq!(st["replica_id"], "r2");
    let peers = st["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    let pulled: u64 = peers
        .iter()
        .map(|p| p["pulled_samples"].as_u64().unwrap())
        .sum();
    assert!(
        pulled as usize >= missed,
        "pulled {pulled} of {missed} missed"
    );
    eventually(Duration::from_secs(20), "lag to settle", || {
        let st = status(&cluster.url(2));
        st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| {
                p["up"] == true
                    && p["lag_seconds"]
                        .as_f64()
                        .is_some_and(|l| (0.0..10.0).contains(&l))
            })
            .then_some(())
    });
    let metrics = http_get(&format!("{}/metrics", cluster.url(2)))
        .unwrap()
        .body;
    for name in [
        "sonde_aggregator_replication_lag_seconds{peer=",
        "sonde_aggregator_replication_pulled_samples_total{peer=",
        "sonde_aggregator_replication_rounds_total{peer=",
        "sonde_aggregator_replication_errors_total{peer=",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The survivors saw the victim unreachable and counted errors while it was down.
    let st0 = status(&cluster.url(0));
    let to_victim = st0["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"] == cluster.url(2))
        .unwrap()
        .clone();
    assert!(to_victim["errors"].as_u64().unwrap() > 0, "{to_victim}");
    assert_eq!(to_victim["up"], true, "{to_victim}");
}
