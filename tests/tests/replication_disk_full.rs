//! A replica whose disk fills up (a small tmpfs created by the test, unmounted even when it
//! fails) refuses writes with a clear, retryable error, keeps answering queries, and once
//! space returns accepts writes again and pulls what it refused from its peer; a SIGKILL
//! afterwards loses nothing (the failed WAL append left no hole behind).

use std::time::Duration;

use sonde_tests::{
    eventually,
    replication::{
        Cluster, FAST_CONFIG, PushResult, Sent, Tmpfs, count, data_on, multi_series_batch, now_ms,
        raw_samples, status, try_push,
    },
    require_root,
};

fn batch(sequence: u64, t: i64, series: usize, sent: &mut Sent) -> sonde_proto::v1::Batch {
    let samples: Vec<(String, i64, f64)> = (0..series)
        .map(|s| (format!("{s}"), t, (sequence * 100_000 + s as u64) as f64))
        .collect();
    for (s, t, v) in &samples {
        sent.entry(format!("w0/{s}")).or_default().insert(*t, *v);
    }
    multi_series_batch("w0", sequence, &samples)
}

#[test]
fn full_disk_refuses_writes_stays_queryable_and_recovers() {
    if !require_root("full_disk_refuses_writes_stays_queryable_and_recovers") {
        return;
    }
    let tmpfs = Tmpfs::mount("6m");
    let mut cluster = Cluster::start(2, FAST_CONFIG, |i| (i == 1).then(|| data_on(&tmpfs.path)));
    let grpc = |i: usize| format!("http://{}", cluster.slots[i].grpc);
    let mut sent = Sent::new();
    let mut not_sent_to_1 = Sent::new();

    let b1 = batch(1, now_ms() - 3000, 50, &mut sent);
    for i in 0..2 {
        assert_eq!(try_push(&grpc(i), b1.clone()), PushResult::Ok);
    }

    let filler = tmpfs.fill("filler");
    // Big enough to need fresh pages: a write into the last partly used page could succeed.
    let b2 = batch(2, now_ms() - 2000, 2000, &mut not_sent_to_1);
    match try_push(&grpc(1), b2.clone()) {
        PushResult::Refused(status, error) => {
            assert_eq!(status, 3, "RETRY, so agents keep the batch: {error}");
            assert!(
                error.contains("No space left on device"),
                "clear error: {error}"
            );
        }
        other => panic!("a full disk must refuse the batch, got {other:?}"),
    }
    assert_eq!(try_push(&grpc(0), b2), PushResult::Ok);
    for (k, v) in &not_sent_to_1 {
        sent.entry(k.clone()).or_default().extend(v);
    }

    // Still queryable: what it had before the disk filled.
    let (on_full, _) = raw_samples(&cluster.url(1), now_ms(), "10m", false);
    assert_eq!(count(&on_full), 50);
    // Anti-entropy tries to store the missing batch and reports why it cannot.
    eventually(
        Duration::from_secs(20),
        "anti-entropy to report the full disk",
        || {
            let st = status(&cluster.url(1));
            st["peers"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("No space left on device"))
                .then_some(())
        },
    );

    std::fs::remove_file(&filler).unwrap();
    let b3 = batch(3, now_ms() - 1000, 50, &mut sent);
    for i in 0..2 {
        assert_eq!(
            try_push(&grpc(i), b3.clone()),
            PushResult::Ok,
            "replica {i}"
        );
    }
    let at = now_ms();
    eventually(
        Duration::from_secs(30),
        "the recovered replica to catch up",
        || (raw_samples(&cluster.url(1), at, "10m", false).0 == sent).then_some(()),
    );
    assert_eq!(raw_samples(&cluster.url(0), at, "10m", false).0, sent);

    // Nothing of it is lost in a crash now.
    cluster.kill(1);
    cluster.start_replica(1);
    assert_eq!(raw_samples(&cluster.url(1), at, "10m", false).0, sent);
    drop(cluster);
    drop(tmpfs);
}
