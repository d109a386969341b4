//! `cargo xtask bench ingest`: how many samples per second one aggregator ingests from
//! several agents pushing batches over gRPC, and at what CPU and memory cost.
//!
//! Batches are encoded (protobuf + zstd, as the agent does) before the clock starts, so the
//! load generator spends its time sending; the aggregator's CPU time comes from
//! `/proc/<pid>/stat`, so the figure is samples per aggregator CPU-second regardless of what
//! else the machine runs.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sonde_proto::{
    codec,
    v1::{AckStatus, Batch, BatchPayload, Label, Sample, Series, ingest_client::IngestClient},
};

use super::{process, write_result};
use crate::util;

#[derive(clap::Args)]
pub struct Options {
    /// Concurrent agent streams.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Series per batch (one sample each).
    #[arg(long, default_value_t = 5_000)]
    series: usize,
    /// Batches per agent.
    #[arg(long, default_value_t = 200)]
    batches: usize,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A node-exporter-like series set for one agent.
fn labels(agent: usize, series: usize) -> Vec<Vec<Label>> {
    let l = |n: &str, v: String| Label {
        name: n.to_owned(),
        value: v,
    };
    (0..series)
        .map(|i| {
            vec![
                // (i % 50, i / 50 % 16, i / 800) is unique per i: every series distinct.
                l("__name__", format!("bench_metric_{}", i % 50)),
                l("cpu", (i / 50 % 16).to_string()),
                l("instance", format!("host-{agent}:9100")),
                l("job", "node".to_owned()),
                l("series", (i / 800).to_string()),
            ]
        })
        .collect()
}

fn batches(agent: usize, options: &Options) -> Vec<Batch> {
    let labels = labels(agent, options.series);
    let start = 1_700_000_000_000i64;
    (0..options.batches)
        .map(|b| {
            let t = start + b as i64 * 15_000;
            let payload = BatchPayload {
                series: labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Series {
                        labels: l.clone(),
                        samples: vec![Sample {
                            timestamp_ms: t,
                            // Counter-like values with noise, like real node metrics.
                            value: (b * 100 + (i * 7919 + b * 104_729) % 97) as f64,
                        }],
                        exemplars: vec![],
                    })
                    .collect(),
                ..Default::default()
            };
            codec::encode_batch(
                &format!("bench-agent-{agent}"),
                1,
                b as u64 + 1,
                &payload,
                3,
            )
        })
        .collect()
}

/// Pushes `batches` on one stream; returns the samples the aggregator says it stored.
async fn push(url: String, batches: Vec<Batch>) -> anyhow::Result<u64> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let mut client = IngestClient::new(channel).max_encoding_message_size(64 << 20);
    let expected = batches.len();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let sender = tokio::spawn(async move {
        for batch in batches {
            if tx.send(batch).await.is_err() {
                break;
            }
        }
    });
    let mut acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut received, mut stored) = (0, 0);
    while received < expected {
        let ack = acks.message().await?.context("stream ended early")?;
        if ack.status != AckStatus::Ok as i32 {
            bail!("batch {} not stored: {}", ack.sequence, ack.error);
        }
        received += 1;
        stored += ack.samples_stored;
    }
    sender.await?;
    Ok(stored)
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    util::run(util::cargo().args(["build", "--release", "-p", "sonde-aggregator"]))?;
    let root = util::workspace_root();
    let data = tempfile::tempdir()?;
    let (http, grpc) = (free_port()?, free_port()?);
    let mut aggregator = Command::new(root.join("target/release/sonde-aggregator"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen-http", &format!("127.0.0.1:{http}")])
        .args(["--listen-grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the aggregator")?;
    let pid = aggregator.id();
    let ready = Instant::now();
    while ureq::get(&format!("http://127.0.0.1:{http}/-/ready"))
        .call()
        .is_err()
    {
        if ready.elapsed() > Duration::from_secs(30) {
            let _ = aggregator.kill();
            bail!("the aggregator did not become ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Two rounds of `agents` streams with distinct series: the first is the throughput run;
    // the second adds as many series again, so the memory it adds is the marginal cost of
    // an active series (without the fixed cost of buffers, threads and allocator arenas).
    eprintln!("encoding {} batches…", 2 * options.agents * options.batches);
    let mut rounds: Vec<Vec<Vec<Batch>>> = (0..2)
        .map(|round| {
            (0..options.agents)
                .map(|a| batches(round * options.agents + a, options))
                .collect()
        })
        .collect();
    let wire_bytes: usize = rounds[0].iter().flatten().map(|b| b.payload.len()).sum();
    let samples = options.agents * options.batches * options.series;

    let runtime = tokio::runtime::Runtime::new()?;
    let push_round = |round: Vec<Vec<Batch>>| -> anyhow::Result<(f64, f64)> {
        let cpu_before = process::cpu_seconds(pid)?;
        let started = Instant::now();
        let stored = runtime.block_on(async {
            let url = format!("http://127.0.0.1:{grpc}");
            let tasks: Vec<_> = round
                .into_iter()
                .map(|batches| tokio::spawn(push(url.clone(), batches)))
                .collect();
            let mut stored = 0;
            for task in tasks {
                stored += task.await??;
            }
            anyhow::Ok(stored)
        })?;
        // Every sample is distinct (own series, own timestamp): all must be stored, none
        // taken for a duplicate, or the figures would describe less work than claimed.
        if stored != samples as u64 {
            bail!("the aggregator stored {stored} of the {samples} samples sent");
        }
        Ok((
            started.elapsed().as_secs_f64(),
            process::cpu_seconds(pid)? - cpu_before,
        ))
    };
    let rss_idle = process::status_bytes(pid, "VmRSS")?;
    let second = rounds.pop().expect("two rounds");
    let first = push_round(rounds.pop().expect("two rounds"));
    let rss_first = process::status_bytes(pid, "VmRSS");
    let second = first.is_ok().then(|| push_round(second));
    let rss_peak = process::status_bytes(pid, "VmHWM");
    let rss_after = process::status_bytes(pid, "VmRSS");
    let _ = aggregator.kill();
    let _ = aggregator.wait();
    let (wall, cpu) = first?;
    let (wall2, cpu2) = second.expect("ran after a good first round")?;
    let (rss_first, rss_peak, rss_after) = (rss_first?, rss_peak?, rss_after?);
    let per_core = samples as f64 / cpu;
    let per_core2 = samples as f64 / cpu2;
    let active = options.agents * options.series;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let markdown = format!(
        "# Ingest throughput (agent → aggregator over gRPC)\n\n\
         Reproduce: `cargo xtask bench ingest --agents {agents} --series {series} --batches {batches}`\n\n\
         Two rounds, each of {agents} concurrent agent streams pushing {batches} batches of \
         {series} distinct series × 1 sample (zstd level 3, as the agent sends): {samples} samples, \
         {wire:.1} MiB on the wire per round; the second round's series are new ones (other \
         agents). Every sample must be acknowledged as stored. Release build, one aggregator \
         on loopback, 2-core machine shared with the load generator.\n\n\
         | figure | round 1 | round 2 |\n|---|---|---|\n\
         | wall time | {wall:.2} s | {wall2:.2} s |\n\
         | throughput (wall) | {wall_rate:.0} samples/s | {wall_rate2:.0} samples/s |\n\
         | aggregator CPU | {cpu:.2} CPU-s | {cpu2:.2} CPU-s |\n\
         | **samples per aggregator CPU-second** | **{per_core:.0}** | **{per_core2:.0}** |\n\
         | aggregator RSS after the round | {first:.0} MiB (idle before: {idle:.0} MiB) | {after:.0} MiB (peak {peak:.0} MiB) |\n\n\
         **Memory per active series**: {marginal:.0} B (RSS added by round 2's {active} new \
         series, {per} samples each in the head), {whole:.0} B counting everything above idle \
         ((RSS after round 2 − idle) / {both} series).\n\n\
         Goals: ≥ 1,000,000 samples/s per core for batched pushes (issue 6; VictoriaMetrics \
         considers ≥ 100,000 per core healthy); ≤ 2 KiB of memory per active series (issue 7).\n",
        agents = options.agents,
        series = options.series,
        batches = options.batches,
        wire = mib(wire_bytes as u64),
        wall_rate = samples as f64 / wall,
        wall_rate2 = samples as f64 / wall2,
        first = mib(rss_first),
        idle = mib(rss_idle),
        after = mib(rss_after),
        peak = mib(rss_peak),
        marginal = rss_after.saturating_sub(rss_first) as f64 / active as f64,
        whole = rss_after.saturating_sub(rss_idle) as f64 / (2 * active) as f64,
        both = 2 * active,
        per = options.batches,
    );
    write_result("ingest", &markdown)
}
