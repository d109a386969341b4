//! `cargo xtask`: Sonde's developer commands.
//!
//! Owns: machine setup (toolchain pieces, Debian packages), building the eBPF object, the
//! README's two commands (`run` and `ci`), code generation and benchmarks. Must not: hold
//! product logic; everything here shells out to cargo, rustup, apt and the built binaries.

mod bench;
mod ci;
mod codegen;
mod ebpf;
mod run;
mod setup;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Sonde developer commands", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need on a fresh Debian machine (idempotent).
    Setup(setup::Options),
    /// Build the eBPF object the agent embeds (runs `setup` for the eBPF toolchain first).
    BuildEbpf(ebpf::Options),
    /// The main job: build, then run aggregator + agent on this host with local storage.
    Run(run::Options),
    /// Every check and test CI runs: fmt, clippy, codegen freshness, unit and end-to-end tests.
    Ci(ci::Options),
    /// Regenerate the Rust code for `proto/` (or check it is current with `--check`).
    Codegen(codegen::Options),
    /// Benchmarks against the real peers; results go to `bench-results/<name>.md`.
    #[command(subcommand)]
    Bench(bench::Bench),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(options) => setup::run(&options),
        Command::BuildEbpf(options) => ebpf::build(&options).map(|_| ()),
        Command::Run(options) => run::run(&options),
        Command::Ci(options) => ci::run(&options),
        Command::Codegen(options) => codegen::run(&options),
        Command::Bench(bench) => bench::run(&bench),
    }
}
