//! `cargo xtask build-ebpf`: builds `agent-ebpf` for `bpfel-unknown-none` with the nightly
//! toolchain (`-Z build-std=core`) and bpf-linker, into `target/bpf/`, where the agent's build
//! script picks the object up.

use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::{setup, util};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build with the eBPF crate's dev profile (still optimised: the verifier needs it).
    #[arg(long)]
    pub debug: bool,
}

/// Where the object lands for a profile.
pub fn object_path(debug: bool) -> PathBuf {
    util::workspace_root()
        .join("target/bpf/bpfel-unknown-none")
        .join(if debug { "debug" } else { "release" })
        .join("sonde-agent-ebpf")
}

/// Builds the object and returns its path.
pub fn build(options: &Options) -> anyhow::Result<PathBuf> {
    setup::ensure_ebpf_toolchain()?;
    let root = util::workspace_root();
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root.join("agent-ebpf"))
        // We may run under `cargo run`, which points these at the stable toolchain.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", root.join("target/bpf"))
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core"]);
    if !options.debug {
        cmd.arg("--release");
    }
    util::run(&mut cmd).context("building the eBPF object failed")?;
    let object = object_path(options.debug);
    anyhow::ensure!(
        object.exists(),
        "the eBPF build did not produce {}",
        object.display()
    );
    eprintln!("eBPF object: {}", object.display());
    Ok(object)
}
