//! `cargo xtask bench <name>`: side-by-side benchmarks against the real peers, writing
//! `bench-results/<name>.md` with the command that reproduces them.

mod promql;
mod storage;

#[derive(clap::Args)]
pub struct Options {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Subcommand)]
enum Bench {
    /// Bytes per sample, import speed and memory: Sonde vs Prometheus (promtool) vs
    /// VictoriaMetrics on generated node_exporter-like data.
    Storage(storage::Options),
    /// PromQL dashboard queries over ~10k series against Prometheus and VictoriaMetrics.
    Promql(promql::Options),
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    match &options.bench {
        Bench::Storage(o) => storage::run(o),
        Bench::Promql(o) => promql::run(o),
    }
}
