//! `cargo xtask codegen`: regenerates `proto/src/gen/` from `proto/proto/**/*.proto`.
//!
//! The generated code is committed, so building Sonde needs neither protoc nor prost-build;
//! `--check` (run by `cargo xtask ci`) fails when the committed code is stale.

use std::{fs, path::Path};

use anyhow::{Context, bail};

use crate::{setup, util};

#[derive(clap::Args)]
pub struct Options {
    /// Fail if the committed code differs from what the .proto files generate.
    #[arg(long)]
    pub check: bool,
}

const PROTOS: &[&str] = &[
    "sonde/v1/ingest.proto",
    "prometheus/remote.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

pub fn run(options: &Options) -> anyhow::Result<()> {
    setup::ensure_packages(setup::CODEGEN_PACKAGES)?;
    let root = util::workspace_root();
    let committed = root.join("proto/src/gen");
    let scratch = tempfile::tempdir()?;
    generate(&root.join("proto/proto"), scratch.path())?;

    if options.check {
        for entry in fs::read_dir(scratch.path())? {
            let entry = entry?;
            let fresh = fs::read(entry.path())?;
            let name = entry.file_name();
            let old = fs::read(committed.join(&name)).unwrap_or_default();
            if fresh != old {
                bail!(
                    "proto/src/gen/{} is stale: run `cargo xtask codegen` and commit the result",
                    name.to_string_lossy()
                );
            }
        }
        eprintln!("codegen: proto/src/gen is current");
        return Ok(());
    }
    fs::create_dir_all(&committed)?;
    for entry in fs::read_dir(scratch.path())? {
        let entry = entry?;
        fs::copy(entry.path(), committed.join(entry.file_name()))?;
    }
    eprintln!("codegen: wrote {}", committed.display());
    Ok(())
}

fn generate(include: &Path, out: &Path) -> anyhow::Result<()> {
    let protos: Vec<_> = PROTOS.iter().map(|p| include.join(p)).collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .bytes(".sonde.v1.Batch.payload")
        .out_dir(out)
        .compile_protos(&protos, &[include.to_path_buf()])
        .context("protoc failed on proto/proto (is protobuf-compiler installed?)")
}
