//! `cargo xtask bench <name>`: whole-system benchmarks that run Sonde side by side with the
//! real thing in one run and write `bench-results/<name>.md` with the command that
//! reproduces them.

mod http_overhead;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// HTTP tracing overhead: wrk against nginx on loopback, with and without the agent,
    /// alternating; throughput ratio, added latency, agent CPU and RSS, events counted.
    HttpOverhead(http_overhead::Options),
}

pub fn run(bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::HttpOverhead(options) => http_overhead::run(options),
    }
}
