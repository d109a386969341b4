//! `cargo xtask bench <name>`: side-by-side benchmarks against the real peers, each writing
//! `bench-results/<name>.md` with the command that reproduces it.

mod promql;

use clap::Subcommand;

#[derive(clap::Args)]
pub struct Options {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// PromQL dashboard queries over ~10k series against Prometheus and VictoriaMetrics.
    Promql(promql::Options),
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    match &options.which {
        Which::Promql(o) => promql::run(o),
    }
}
