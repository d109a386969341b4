//! Copies the eBPF object built by `cargo xtask build-ebpf` into OUT_DIR, where the agent
//! embeds it with `include_bytes_aligned!`. Set `SONDE_EBPF_OBJECT` to use another object.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=SONDE_EBPF_OBJECT");
    let object = env::var_os("SONDE_EBPF_OBJECT").map_or_else(
        || {
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../target/bpf/bpfel-unknown-none/release/sonde-agent-ebpf")
        },
        PathBuf::from,
    );
    println!("cargo::rerun-if-changed={}", object.display());
    if !object.exists() {
        panic!(
            "the eBPF object {} does not exist: run `cargo xtask build-ebpf` first \
             (or point SONDE_EBPF_OBJECT at a built object)",
            object.display()
        );
    }
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("sonde-agent-ebpf.o");
    std::fs::copy(&object, &out)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", object.display(), out.display()));
}
