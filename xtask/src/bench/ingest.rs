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
                l("__name__", format!("bench_metric_{}", i % 50)),
                l("cpu", (i % 16).to_string()),
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

async fn push(url: String, batches: Vec<Batch>) -> anyhow::Result<()> {
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
    let mut received = 0;
    while received < expected {
        let ack = acks.message().await?.context("stream ended early")?;
        if ack.status != AckStatus::Ok as i32 {
            bail!("batch {} not stored: {}", ack.sequence, ack.error);
        }
        received += 1;
    }
    sender.await?;
    Ok(())
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

    eprintln!("encoding {} batches…", options.agents * options.batches);
    let all: Vec<Vec<Batch>> = (0..options.agents).map(|a| batches(a, options)).collect();
    let wire_bytes: usize = all.iter().flatten().map(|b| b.payload.len()).sum();
    let samples = options.agents * options.batches * options.series;

    let runtime = tokio::runtime::Runtime::new()?;
    let rss_idle = process::status_bytes(pid, "VmRSS")?;
    let cpu_before = process::cpu_seconds(pid)?;
    let started = Instant::now();
    let result = runtime.block_on(async {
        let url = format!("http://127.0.0.1:{grpc}");
        let tasks: Vec<_> = all
            .into_iter()
            .map(|batches| tokio::spawn(push(url.clone(), batches)))
            .collect();
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = process::cpu_seconds(pid)? - cpu_before;
    let rss_peak = process::status_bytes(pid, "VmHWM")?;
    let rss_after = process::status_bytes(pid, "VmRSS")?;
    let _ = aggregator.kill();
    let _ = aggregator.wait();
    result?;

    let per_core = samples as f64 / cpu;
    let markdown = format!(
        "# Ingest throughput (agent → aggregator over gRPC)\n\n\
         Reproduce: `cargo xtask bench ingest --agents {agents} --series {series} --batches {batches}`\n\n\
         {agents} concurrent agent streams, {batches} batches each of {series} series × 1 sample \
         (zstd level 3, as the agent sends), {samples} samples in all, {mib:.1} MiB on the wire; \
         release build, one aggregator on loopback, 2-core machine shared with the load generator.\n\n\
         | figure | value |\n|---|---|\n\
         | wall time | {wall:.2} s |\n\
         | throughput (wall) | {wall_rate:.0} samples/s |\n\
         | aggregator CPU | {cpu:.2} CPU-s |\n\
         | **samples per aggregator CPU-second** | **{per_core:.0}** |\n\
         | aggregator peak RSS | {rss:.0} MiB |\n\
         | aggregator RSS idle → after the pushes | {idle:.0} → {after:.0} MiB |\n\
         | memory per active series ((after − idle) / {active} series) | {per_series:.0} B |\n\n\
         Goals: ≥ 1,000,000 samples/s per core for batched pushes (issue 6; VictoriaMetrics \
         considers ≥ 100,000 per core healthy); ≤ 2 KiB of memory per active series (issue 7). \
         Each series got {per:.0} samples here, all in the head (nothing flushed yet).\n",
        agents = options.agents,
        series = options.series,
        batches = options.batches,
        mib = wire_bytes as f64 / (1 << 20) as f64,
        wall_rate = samples as f64 / wall,
        rss = rss_peak as f64 / (1 << 20) as f64,
        idle = rss_idle as f64 / (1 << 20) as f64,
        after = rss_after as f64 / (1 << 20) as f64,
        active = options.agents * options.series,
        per_series =
            rss_after.saturating_sub(rss_idle) as f64 / (options.agents * options.series) as f64,
        per = options.batches,
    );
    write_result("ingest", &markdown)
}
