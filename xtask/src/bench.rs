//! `cargo xtask bench <name>`: whole-system benchmarks, run side by side with the real peers
//! where one exists, each writing `bench-results/<name>.md` with the command that reproduces
//! it.

pub mod agent_collect;
mod http_overhead;
mod ingest;
pub mod process;
mod promql;
mod replication;
mod storage;

use clap::Subcommand;

use crate::util;

/// The benchmarks.
#[derive(Subcommand)]
pub enum Bench {
    /// Agent collection cost with 200 containers (cgroups v1 + v2) vs node_exporter's scrapes.
    AgentCollect(agent_collect::Options),
    /// Agent → aggregator ingest throughput: samples/s per aggregator core, CPU, RSS.
    Ingest(ingest::Options),
    /// Bytes per sample, import speed and memory: Sonde vs Prometheus (promtool) vs
    /// VictoriaMetrics on generated node_exporter-like data.
    Storage(storage::Options),
    /// PromQL dashboard queries over ~10k series against Prometheus and VictoriaMetrics.
    Promql(promql::Options),
    /// HTTP tracing overhead: wrk against nginx on loopback, with and without the agent,
    /// alternating; throughput ratio, added latency, agent CPU and RSS, events counted.
    HttpOverhead(http_overhead::Options),
    /// Replication: ingest throughput at 3 replicas vs 1, convergence time after an outage.
    Replication(replication::Options),
}

pub fn run(bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::AgentCollect(options) => agent_collect::run(options),
        Bench::Ingest(options) => ingest::run(options),
        Bench::Storage(options) => storage::run(options),
        Bench::Promql(options) => promql::run(options),
        Bench::HttpOverhead(options) => http_overhead::run(options),
        Bench::Replication(options) => replication::run(options),
    }
}

/// Writes a result file under `bench-results/` and echoes it.
pub fn write_result(name: &str, markdown: &str) -> anyhow::Result<()> {
    let dir = util::workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, markdown)?;
    println!("{markdown}\nwritten to {}", path.display());
    Ok(())
}
