//! `cargo xtask bench <name>`: side-by-side benchmarks against the real peers, each writing
//! `bench-results/<name>.md` with the command that reproduces it.

pub mod agent_collect;

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// Agent collection cost with 200 containers (cgroups v1 + v2) vs node_exporter's scrapes.
    AgentCollect(agent_collect::Options),
}

pub fn run(bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::AgentCollect(options) => agent_collect::run(options),
    }
}
