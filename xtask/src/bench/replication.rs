//! `cargo xtask bench replication`: what replication costs and how fast it repairs.
//!
//! 1. Ingest throughput with 3 replicas versus 1: the same agents push the same batches to
//!    every replica (as agents do); wall time until every replica acknowledged everything, and
//!    the replicas' CPU.
//! 2. Convergence after an outage: 3 replicas, agents pushing continuously; one replica is
//!    SIGKILLed for `--outage-secs` (agents skip it, as if their buffer for it overflowed, so
//!    only anti-entropy can repair it), restarted, and timed until it holds exactly the
//!    samples the others hold for the outage, with default replication settings.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
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
    /// Concurrent agents in the throughput part.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Series per batch (one sample each).
    #[arg(long, default_value_t = 2_000)]
    series: usize,
    /// Batches per agent in the throughput part.
    #[arg(long, default_value_t = 100)]
    batches: usize,
    /// How long the replica stays down in the convergence part (the issue asks for 300).
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Series each of the 2 agents sends every second in the convergence part.
    #[arg(long, default_value_t = 1_000)]
    outage_series: usize,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Replica {
    http: u16,
    grpc: u16,
    child: Option<Child>,
}

impl Replica {
    fn start(&mut self, root: &Path, data: &Path, id: usize, peers: &[u16]) -> anyhow::Result<()> {
        let mut cmd = Command::new(root.join("target/release/sonde-aggregator"));
        cmd.arg("--data-dir")
            .arg(data.join(format!("r{id}")))
            .args(["--listen-http", &format!("127.0.0.1:{}", self.http)])
            .args(["--listen-grpc", &format!("127.0.0.1:{}", self.grpc)])
            .args(["--log-level", "warn"])
            .args(["--replica-id", &format!("r{id}")]);
        for p in peers {
            cmd.args(["--peer", &format!("http://127.0.0.1:{p}")]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the aggregator")?;
        let ready = Instant::now();
        while ureq::get(&format!("http://127.0.0.1:{}/-/ready", self.http))
            .call()
            .is_err()
        {
            if ready.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("replica r{id} did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cluster(root: &Path, data: &Path, n: usize) -> anyhow::Result<Vec<Replica>> {
    let mut replicas: Vec<Replica> = (0..n)
        .map(|_| {
            Ok(Replica {
                http: free_port()?,
                grpc: free_port()?,
                child: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let https: Vec<u16> = replicas.iter().map(|r| r.http).collect();
    for (i, r) in replicas.iter_mut().enumerate() {
        let peers: Vec<u16> = https
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| *p)
            .collect();
        r.start(root, data, i, &peers)?;
    }
    Ok(replicas)
}

fn batch(agent: &str, sequence: u64, t: i64, series: usize) -> Batch {
    let l = |n: &str, v: String| Label {
        name: n.to_owned(),
        value: v,
    };
    let payload = BatchPayload {
        series: (0..series)
            .map(|i| Series {
                labels: vec![
                    l("__name__", format!("bench_repl_{}", i % 50)),
                    l("instance", agent.to_owned()),
                    l("series", i.to_string()),
                ],
                samples: vec![Sample {
                    timestamp_ms: t,
                    value: (sequence * 100 + (i as u64 * 7919) % 97) as f64,
                }],
                exemplars: vec![],
            })
            .collect(),
        ..Default::default()
    };
    codec::encode_batch(agent, 1, sequence, &payload, 3)
}

async fn push_all(url: String, batches: Vec<Batch>) -> anyhow::Result<()> {
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
    for _ in 0..expected {
        let ack = acks.message().await?.context("stream ended early")?;
        if ack.status != AckStatus::Ok as i32 {
            bail!("batch {} not stored: {}", ack.sequence, ack.error);
        }
    }
    sender.await?;
    Ok(())
}

/// Pushes every agent's batches to every replica; returns (wall seconds, CPU seconds).
fn throughput(replicas: &[Replica], options: &Options) -> anyhow::Result<(f64, f64)> {
    let base = now_ms() - options.batches as i64 * 15_000;
    let per_agent: Vec<Vec<Batch>> = (0..options.agents)
        .map(|a| {
            (0..options.batches)
                .map(|b| {
                    batch(
                        &format!("bench-agent-{a}"),
                        b as u64 + 1,
                        base + b as i64 * 15_000,
                        options.series,
                    )
                })
                .collect()
        })
        .collect();
    let pids: Vec<u32> = replicas.iter().map(Replica::pid).collect();
    let cpu = |pids: &[u32]| -> anyhow::Result<f64> {
        pids.iter().map(|&p| process::cpu_seconds(p)).sum()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let cpu_before = cpu(&pids)?;
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for batches in &per_agent {
            for r in replicas {
                tasks.push(tokio::spawn(push_all(
                    format!("http://127.0.0.1:{}", r.grpc),
                    batches.clone(),
                )));
            }
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    let wall = started.elapsed().as_secs_f64();
    Ok((wall, cpu(&pids)? - cpu_before))
}

fn count_at(http: u16, range_s: i64, at_ms: i64) -> anyhow::Result<f64> {
    let query = format!("sum(count_over_time({{__name__=~\"bench_repl_.*\"}}[{range_s}s]))");
    let mut response = ureq::get(&format!("http://127.0.0.1:{http}/api/v1/query"))
        .query("query", &query)
        .query("time", format!("{:.3}", at_ms as f64 / 1000.0))
        .call()?;
    let json: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    Ok(json["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()?)
}

fn convergence(root: &Path, options: &Options) -> anyhow::Result<(f64, f64, u64)> {
    let data = tempfile::tempdir()?;
    let mut replicas = cluster(root, data.path(), 3)?;
    let up: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let grpcs: Vec<u16> = replicas.iter().map(|r| r.grpc).collect();
    let series = options.outage_series;
    let writers: Vec<_> = (0..2)
        .map(|a| {
            let (up, stop, grpcs) = (up.clone(), stop.clone(), grpcs.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let agent = format!("outage-agent-{a}");
                let mut sequence = 0;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    let b = batch(&agent, sequence, now_ms(), series);
                    for (i, port) in grpcs.iter().enumerate() {
                        if up[i].load(Ordering::Relaxed) {
                            let url = format!("http://127.0.0.1:{port}");
                            // A replica that is going away may fail a push: skipped, like an
                            // agent whose buffer for it overflowed.
                            let _ = runtime.block_on(push_all(url, vec![b.clone()]));
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    let down_at = now_ms();
    up[2].store(false, Ordering::Relaxed);
    replicas[2].kill();
    eprintln!("replica r2 down for {} s…", options.outage_secs);
    std::thread::sleep(Duration::from_secs(options.outage_secs));
    let peers = [replicas[0].http, replicas[1].http];
    replicas[2].start(root, data.path(), 2, &peers)?;
    let restarted = Instant::now();
    let restart_ms = now_ms();
    up[2].store(true, Ordering::Relaxed);
    // The data of the outage: everything before the restart, from before it went down.
    let range_s = (restart_ms - down_at) / 1000 + 15;
    let at = restart_ms - 1;
    std::thread::sleep(Duration::from_secs(2));
    let expected = count_at(replicas[0].http, range_s, at)?;
    let converged = loop {
        let got = count_at(replicas[2].http, range_s, at)?;
        if got == expected {
            break restarted.elapsed().as_secs_f64();
        }
        if restarted.elapsed() > Duration::from_secs(600) {
            bail!("replica r2 did not converge in 10 minutes ({got} of {expected} samples)");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let status: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!(
            "http://127.0.0.1:{}/api/v1/status/replication",
            replicas[2].http
        ))
        .call()?
        .body_mut()
        .read_to_string()?,
    )?;
    let pulled: u64 = status["data"]["peers"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| x["pulled_samples"].as_u64()).sum())
        .unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    Ok((converged, expected, pulled))
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    util::run(util::cargo().args(["build", "--release", "-p", "sonde-aggregator"]))?;
    let root = util::workspace_root();
    let samples = (options.agents * options.batches * options.series) as f64;

    let mut rows = Vec::new();
    for n in [1usize, 3] {
        let data = tempfile::tempdir()?;
        let replicas = cluster(&root, data.path(), n)?;
        eprintln!("throughput with {n} replica(s)…");
        let (wall, cpu) = throughput(&replicas, options)?;
        rows.push((n, wall, cpu));
    }
    eprintln!("convergence after a {} s outage…", options.outage_secs);
    let (converged, outage_samples, pulled) = convergence(&root, options)?;

    let mut table = String::from(
        "| replicas | wall time | distinct samples/s (all replicas acked) | replicas' CPU | CPU-s per million samples stored (all replicas) |\n|---|---|---|---|---|\n",
    );
    for (n, wall, cpu) in &rows {
        table.push_str(&format!(
            "| {n} | {wall:.2} s | {:.0} | {cpu:.2} CPU-s | {:.2} |\n",
            samples / wall,
            cpu / (samples * *n as f64) * 1e6
        ));
    }
    let markdown = format!(
        "# Replication\n\n\
         Reproduce: `cargo xtask bench replication --agents {agents} --series {series} --batches {batches} \
         --outage-secs {outage} --outage-series {outage_series}`\n\n\
         Release build, every replica on this 2-core machine (shared with the load generator and \
         other work), loopback.\n\n\
         ## Ingest throughput: 3 replicas vs 1\n\n\
         {agents} agents, {batches} batches each of {series} series × 1 sample, every batch pushed \
         to every replica (as agents do); {samples} distinct samples. Anti-entropy runs meanwhile \
         (default settings).\n\n{table}\n\
         With three replicas on one 2-core host every sample is stored three times on the same \
         cores, so distinct samples/s falls by about the replica count; on separate hosts each \
         replica does the work of a single one (the CPU per stored sample column).\n\n\
         ## Convergence after an outage\n\n\
         3 replicas, 2 agents sending {outage_series} series each every second. Replica r2 is \
         SIGKILLed for {outage} s (agents skip it, so only anti-entropy can repair it), then \
         restarted with default replication settings (`interval` 10s, `window` 5m, `settle` \
         15s). Converged = r2 returns exactly as many samples for the outage stretch as r0.\n\n\
         | figure | value |\n|---|---|\n\
         | outage | {outage} s |\n\
         | samples in the compared stretch (r0) | {outage_samples:.0} |\n\
         | samples r2 pulled from its peers | {pulled} |\n\
         | **time from restart to converged** | **{converged:.2} s** |\n",
        agents = options.agents,
        series = options.series,
        batches = options.batches,
        outage = options.outage_secs,
        outage_series = options.outage_series,
    );
    write_result("replication", &markdown)
}
