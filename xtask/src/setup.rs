//! `cargo xtask setup`: installs, idempotently, what building and testing Sonde need on a
//! fresh Debian machine, and names precisely what it could not install.
//!
//! Each requirement is checked first (cheap: a file test or a `--version`), so a machine that
//! has everything is done in well under a second. Installs need root for apt.

use std::{path::Path, process::Command, sync::Once};

use anyhow::{Context, bail};

use crate::util::{self, output};

/// Debian packages the end-to-end tests use as peers and oracles.
pub const TEST_PACKAGES: &[&str] = &[
    // Differential oracles and peers.
    "prometheus",
    "prometheus-node-exporter",
    "prometheus-alertmanager",
    "victoria-metrics",
    // Workloads and tooling for eBPF tests.
    "nginx-light",
    "wrk",
    "iproute2",
    "curl",
    "python3",
    "python3-pip",
    // Self-signed certificates for the HTTPS tests (nginx-light has the ssl module).
    "openssl",
];

/// Python packages (PyPI) the end-to-end tests use, as `(import name, requirement)`.
pub const TEST_PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("kubernetes_validate", "kubernetes-validate==1.37.0"),
    ("pyarrow", "pyarrow"),
];

/// Debian packages `cargo xtask codegen` needs.
pub const CODEGEN_PACKAGES: &[&str] = &["protobuf-compiler"];

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only the eBPF toolchain (nightly rust-src, LLVM, bpf-linker).
    #[arg(long)]
    ebpf_only: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    ensure_ebpf_toolchain()?;
    if !options.ebpf_only {
        ensure_packages(TEST_PACKAGES)?;
        ensure_packages(CODEGEN_PACKAGES)?;
        ensure_python_packages(TEST_PYTHON_PACKAGES)?;
    }
    eprintln!("setup: everything is installed");
    Ok(())
}

/// The nightly toolchain with rust-src, and bpf-linker built against nightly's LLVM.
pub fn ensure_ebpf_toolchain() -> anyhow::Result<()> {
    let version = output(Command::new("rustc").args(["+nightly", "-vV"])).context(
        "the `nightly` toolchain is not installed (rustup cannot fetch toolchains here: \
         install one with `rustup toolchain install nightly` where the network allows)",
    )?;
    let llvm = llvm_major(&version)
        .with_context(|| format!("no `LLVM version:` line in `rustc +nightly -vV`:\n{version}"))?;

    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed")?;
    let core_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.exists() {
        util::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("could not install rust-src for nightly (needed for -Z build-std=core)")?;
    }

    if bpf_linker_llvm() != Some(llvm) {
        let prefix = format!("/usr/lib/llvm-{llvm}");
        if !Path::new(&prefix).join("bin/llvm-config").exists() {
            ensure_packages(&[&format!("llvm-{llvm}-dev"), &format!("libpolly-{llvm}-dev")])
                .with_context(|| {
                    format!("bpf-linker must be built against LLVM {llvm} (nightly's LLVM)")
                })?;
        }
        util::run(
            util::cargo()
                .env("LLVM_PREFIX", &prefix)
                .args(["install", "--locked", "bpf-linker@0.13.0", "--force"])
                .args([
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{llvm}"),
                ]),
        )
        .with_context(|| format!("could not build bpf-linker against {prefix}"))?;
        if bpf_linker_llvm() != Some(llvm) {
            bail!("bpf-linker was installed but is not linked against LLVM {llvm}");
        }
    }
    Ok(())
}

/// The LLVM major version of a `rustc -vV` output.
fn llvm_major(version: &str) -> Option<u32> {
    let line = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))?;
    line.trim().split('.').next()?.parse().ok()
}

/// The LLVM major the installed bpf-linker links against, if it runs.
fn bpf_linker_llvm() -> Option<u32> {
    output(Command::new("bpf-linker").arg("--version"))?;
    let path = output(Command::new("sh").args(["-c", "command -v bpf-linker"]))?;
    let libs = output(Command::new("ldd").arg(path.trim()))?;
    libs.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("libLLVM")?;
        // `libLLVM.so.22.1 => …` or `libLLVM-22.so => …`
        let digits = rest.trim_start_matches(['.', '-', 's', 'o']);
        digits.split(['.', '-', ' ']).next()?.parse().ok()
    })
}

/// Installs the Debian packages that are not installed yet.
pub fn ensure_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing Debian packages: {} (run `cargo xtask setup` as root, or `apt-get install -y {}`)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    static UPDATE: Once = Once::new();
    let mut update = Ok(());
    UPDATE.call_once(|| update = util::run(Command::new("apt-get").args(["update", "-qq"])));
    update.context("apt-get update failed")?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
    .with_context(|| format!("could not install Debian packages: {}", missing.join(", ")))
}

/// Installs the Python packages that cannot be imported yet.
pub fn ensure_python_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(module, _)| {
            output(Command::new("python3").args(["-c", &format!("import {module}")])).is_none()
        })
        .map(|(_, requirement)| *requirement)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let pip = |extra: &[&str]| {
        util::run(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .args(&missing),
        )
    };
    // A Debian-managed python3 refuses plain pip installs; the tests only read files.
    pip(&[])
        .or_else(|_| pip(&["--break-system-packages"]))
        .with_context(|| format!("could not install Python packages: {}", missing.join(", ")))
}

fn package_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("install ok installed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_version() {
        let v = "rustc 1.97.0-nightly\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(v), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }
}
