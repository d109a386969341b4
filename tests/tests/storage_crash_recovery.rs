//! Crash recovery of the aggregator's storage with the real binary: SIGKILL at random points
//! mid-ingest, again and again, must lose no acknowledged sample, store none twice, and
//! always leave a store that opens; truncated WAL segments and Parquet files are repaired or
//! set aside with a log line.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use sonde_aggregator::store::{Matcher, Store, StoreOptions};
use sonde_proto::v1::{
    AckStatus, Batch, BatchPayload, Label, Sample, Series, ingest_client::IngestClient,
};
use sonde_tests::Aggregator;

const STALE: u64 = 0x7ff0_0000_0000_0002;
const SERIES: u64 = 20;
const PER_BATCH: u64 = 10;

/// Storage settings that make flushes and compactions happen every second or so.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("aggregator.toml");
    std::fs::write(
        &path,
        "[storage]\nflush_interval = \"300ms\"\nblock_duration = \"1m\"\n\
         compacted_block_duration = \"3m\"\nout_of_order_window = \"20s\"\n\
         retention_time = \"0s\"\nwal_segment_bytes = 65536\n",
    )
    .unwrap();
    path
}

/// The value batch `k` carries for series `j`, sample `i` (unique, sometimes a stale marker).
fn value(k: u64, j: u64, i: u64) -> f64 {
    if i == PER_BATCH - 1 && k.is_multiple_of(7) {
        f64::from_bits(STALE)
    } else {
        (k * 1000 + j * 10 + i) as f64 + 0.25
    }
}

fn t(k: u64, i: u64) -> i64 {
    (k * PER_BATCH + i) as i64 * 1000
}

fn batch(k: u64) -> Batch {
    let series = (0..SERIES)
        .map(|j| Series {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "crash_test".into(),
                },
                Label {
                    name: "series".into(),
                    value: j.to_string(),
                },
            ],
            samples: (0..PER_BATCH)
                .map(|i| Sample {
                    timestamp_ms: t(k, i),
                    value: value(k, j, i),
                })
                .collect(),
            exemplars: vec![],
        })
        .collect();
    let payload = BatchPayload {
        series,
        ..Default::default()
    };
    sonde_proto::codec::encode_batch("crash-agent", 7, k, &payload, 3)
}

/// Pushes batches `from..` one at a time until `deadline` or the first failure; returns the
/// sequence numbers acknowledged OK and the next unsent one.
fn push_until(url: &str, from: u64, deadline: Instant) -> (Vec<u64>, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut acked = Vec::new();
        let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
        else {
            return (acked, from);
        };
        let mut client = IngestClient::new(channel);
        let mut k = from;
        while Instant::now() < deadline {
            let sent = k;
            k += 1;
            let Ok(response) = client.push(tokio_stream::iter(vec![batch(sent)])).await else {
                break;
            };
            match response.into_inner().message().await {
                Ok(Some(ack)) if ack.status == AckStatus::Ok as i32 => acked.push(sent),
                Ok(Some(ack)) => panic!("batch {sent} not OK: {ack:?}"),
                _ => break,
            }
        }
        (acked, k)
    })
}

fn sigkill(pid: u32) {
    // SAFETY: signalling a child process we started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Checks, with the store itself, that every acknowledged sample is present with its exact
/// bits, and every stored sample is one that was sent (so nothing is doubled or corrupted).
fn verify(data_dir: &Path, acked: &BTreeSet<u64>, sent_below: u64) {
    let store = Store::open_with(data_dir, StoreOptions::default())
        .unwrap_or_else(|e| panic!("the store must always reopen: {e}"));
    let got = store
        .select(
            &[Matcher::equal("__name__", "crash_test")],
            i64::MIN,
            i64::MAX,
        )
        .unwrap();
    let mut stored: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for s in &got {
        let j: u64 = s.labels.get("series").unwrap().parse().unwrap();
        let mut last = i64::MIN;
        for sample in &s.samples {
            assert!(
                sample.t > last,
                "series {j}: samples sorted, one per timestamp"
            );
            last = sample.t;
            stored.insert((j, sample.t), sample.v.to_bits());
        }
    }
    for &k in acked {
        for j in 0..SERIES {
            for i in 0..PER_BATCH {
                assert_eq!(
                    stored.get(&(j, t(k, i))),
                    Some(&value(k, j, i).to_bits()),
                    "acknowledged batch {k}, series {j}, sample {i} is missing or wrong"
                );
            }
        }
    }
    for (&(j, ts), &bits) in &stored {
        let k = ts as u64 / 1000 / PER_BATCH;
        let i = ts as u64 / 1000 % PER_BATCH;
        assert!(k < sent_below, "stored sample at {ts} was never sent");
        assert_eq!(
            bits,
            value(k, j, i).to_bits(),
            "series {j} at {ts}: wrong value"
        );
    }
    // Unacknowledged batches may be stored (killed after the WAL write, before the ack),
    // but only whole: a batch is one WAL record.
    for k in 1..sent_below {
        let present = (0..SERIES)
            .flat_map(|j| (0..PER_BATCH).map(move |i| (j, t(k, i))))
            .filter(|key| stored.contains_key(key))
            .count() as u64;
        assert!(
            present == 0 || present == SERIES * PER_BATCH,
            "batch {k} is partly stored ({present} samples)"
        );
    }
}

#[test]
fn sigkill_mid_ingest_loses_no_acknowledged_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path());
    let config_arg = config.to_str().unwrap();
    let mut acked = BTreeSet::new();
    let mut next = 1;
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for life in 0..6 {
        let mut agg = Aggregator::start_in(Some(&data), None, &["--config", config_arg]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = Duration::from_millis(300 + seed % 900);
        let pid = agg.process().pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            sigkill(pid);
        });
        let (ok, after) = push_until(
            &agg.grpc_url(),
            next,
            Instant::now() + Duration::from_secs(20),
        );
        killer.join().unwrap();
        assert!(
            !ok.is_empty() || life > 0,
            "no batch acknowledged in {kill_after:?}:\n{}",
            agg.log()
        );
        acked.extend(ok);
        next = after;
        drop(agg);
    }
    assert!(
        acked.len() > 20,
        "too few batches acknowledged to mean anything: {}",
        acked.len()
    );
    // After the last SIGKILL: everything from WAL + blocks.
    verify(&data, &acked, next);
    // Restart the binary, stop it cleanly (flush on shutdown), check again from blocks.
    let mut agg = Aggregator::start_in(Some(&data), None, &["--config", config_arg]);
    let status = agg.process().stop(Duration::from_secs(30));
    assert!(status.success(), "clean stop: {status:?}\n{}", agg.log());
    let blocks = std::fs::read_dir(data.join("blocks")).unwrap().count();
    let log = agg.log();
    eprintln!(
        "{} of {} batches acknowledged; {blocks} blocks; {} flushes and {} compactions in the last life",
        acked.len(),
        next - 1,
        log.matches("head flushed").count(),
        log.matches("blocks compacted").count()
    );
    assert!(blocks > 0, "flushes wrote blocks");
    verify(&data, &acked, next);
}

#[test]
fn truncated_wal_and_parquet_are_repaired_or_set_aside_with_a_log_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path());
    let config_arg = config.to_str().unwrap();
    let mut agg = Aggregator::start_in(Some(&data), None, &["--config", config_arg]);
    let (acked, _) = push_until(
        &agg.grpc_url(),
        1,
        Instant::now() + Duration::from_millis(1500),
    );
    assert!(!acked.is_empty());
    sonde_tests::eventually(Duration::from_secs(20), "a block on disk", || {
        std::fs::read_dir(data.join("blocks"))
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("blk-"))
            .then_some(())
    });
    sigkill(agg.process().pid());
    drop(agg);

    // Cut a block's samples file in half and tear the newest WAL segment.
    let block = std::fs::read_dir(data.join("blocks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("blk-"))
        .unwrap();
    let samples = block.join("samples.parquet");
    let len = std::fs::metadata(&samples).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&samples)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let mut agg = Aggregator::start_in(Some(&data), None, &["--config", config_arg]);
    let log = agg.log();
    assert!(
        log.contains("unreadable block skipped and moved aside"),
        "{log}"
    );
    assert!(log.contains("truncating the torn tail"), "{log}");
    assert!(data.join("corrupt").read_dir().unwrap().count() == 1);
    // Still ingesting after the repair.
    let (ok, _) = push_until(
        &agg.grpc_url(),
        10_000,
        Instant::now() + Duration::from_millis(200),
    );
    assert!(!ok.is_empty(), "{}", agg.log());
    assert!(agg.process().stop(Duration::from_secs(30)).success());
    Store::open(&data).expect("the repaired store opens");
}
