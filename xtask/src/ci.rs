//! `cargo xtask ci`: every check and test, as CI runs them (`.ci/run` calls exactly this).
//!
//! Order: setup → eBPF object → codegen freshness → fmt → clippy → build binaries → tests.
//! Each step's wall time is printed at the end, so a slow step is visible in CI logs.

use std::time::Instant;

use anyhow::Context;

use crate::{codegen, ebpf, setup, util};

#[derive(clap::Args)]
pub struct Options {
    /// Skip fmt, clippy and codegen checks (just build and test).
    #[arg(long)]
    tests_only: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut timings: Vec<(&str, f64)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> anyhow::Result<()>| {
        eprintln!("\n==> {name}");
        let t = Instant::now();
        let result = f().with_context(|| format!("ci step `{name}` failed"));
        timings.push((name, t.elapsed().as_secs_f64()));
        result
    };

    step("setup", &mut || setup::run(&setup::Options::default()))?;
    step("build-ebpf", &mut || {
        ebpf::build(&ebpf::Options::default()).map(|_| ())
    })?;
    if !options.tests_only {
        step("codegen --check", &mut || {
            codegen::run(&codegen::Options { check: true })
        })?;
        step("fmt", &mut || {
            util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
            util::run(util::cargo().args([
                "fmt",
                "--manifest-path",
                "agent-ebpf/Cargo.toml",
                "--",
                "--check",
            ]))
        })?;
        step("clippy", &mut || {
            util::run(util::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
    }
    step("build binaries", &mut || {
        util::run(util::cargo().args(["build", "--workspace", "--bins"]))
    })?;
    step("tests", &mut || {
        util::run(
            util::cargo()
                .args(["test", "--workspace", "--no-fail-fast", "--"])
                .args(&options.test_args),
        )
    })?;

    eprintln!(
        "\nci: all steps passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (name, secs) in &timings {
        eprintln!("  {secs:>7.1} s  {name}");
    }
    Ok(())
}
