//! Three replicas in their own network namespaces (veths into a bridge created by the test),
//! three writers pushing like agents. One replica's link is cut while writes go on, then
//! restored: it cannot be reached (nor reach its peers) meanwhile, keeps running, and after
//! the link returns it pulls what it missed; every replica then returns exactly what the
//! writers delivered.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sonde_tests::{
    eventually,
    replication::{Cluster, FAST_CONFIG, Net, Writers, count, now_ms, raw_samples, status},
    require_root,
};

#[test]
fn partitioned_replica_converges_when_the_link_returns() {
    if !require_root("partitioned_replica_converges_when_the_link_returns") {
        return;
    }
    let net = Net::create(3);
    let config = format!("{FAST_CONFIG}[grpc]\nallow_plaintext = true\n");
    let cluster = Cluster::start_in(&net, &config);
    let up = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect::<Vec<_>>());
    let targets: Vec<String> = (0..3)
        .map(|i| format!("http://{}", cluster.slots[i].grpc))
        .collect();
    let writers = Writers::start(3, 20, Duration::from_millis(200), targets, up.clone());
    let started = now_ms();
    std::thread::sleep(Duration::from_secs(3));

    up[2].store(false, Ordering::Relaxed);
    net.link(2, false);
    let cut_at = now_ms();
    std::thread::sleep(Duration::from_secs(6));
    net.link(2, true);
    up[2].store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let sent = writers.stop();
    let missed: usize = sent
        .values()
        .map(|s| s.range(cut_at..cut_at + 5000).count())
        .sum();
    assert!(
        missed > 100,
        "the partitioned replica missed a real stretch ({missed})"
    );

    let at = now_ms();
    let range = format!("{}s", (at - started) / 1000 + 60);
    eventually(Duration::from_secs(60), "replicas to converge", || {
        (0..3)
            .all(|i| raw_samples(&cluster.url(i), at, &range, false).0 == sent)
            .then_some(())
    });
    assert_eq!(
        count(&raw_samples(&cluster.url(2), at, &range, false).0),
        count(&sent)
    );
    // It kept trying its peers while cut off, then pulled from them.
    let st = status(&cluster.url(2));
    let peers = st["peers"].as_array().unwrap();
    assert!(
        peers.iter().all(|p| p["errors"].as_u64().unwrap() > 0),
        "{st}"
    );
    let pulled: u64 = peers
        .iter()
        .map(|p| p["pulled_samples"].as_u64().unwrap())
        .sum();
    assert!(pulled as usize >= missed, "pulled {pulled} of {missed}");
    drop(cluster);
    drop(net);
}
