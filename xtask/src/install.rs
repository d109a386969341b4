//! `cargo xtask install`: installs the release binaries, the systemd units and (unless already
//! present) the configuration files, under an optional alternate root.
//!
//! Layout: `<root><prefix>/bin/sonde-{agent,aggregator}`,
//! `<root>/etc/systemd/system/sonde-{agent,aggregator}.service`,
//! `<root>/etc/sonde/{agent,aggregator}.toml`. Existing configuration is never overwritten.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::{ebpf, util};

const BINARIES: [&str; 2] = ["sonde-agent", "sonde-aggregator"];
const UNITS: [&str; 2] = ["sonde-agent.service", "sonde-aggregator.service"];
const CONFIGS: [&str; 2] = ["agent.toml", "aggregator.toml"];
/// The prefix the shipped unit files name in `ExecStart`.
const UNIT_PREFIX: &str = "/usr/local";

#[derive(clap::Args)]
pub struct Options {
    /// Alternate root to install under (packaging, tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Installation prefix for the binaries.
    #[arg(long, default_value = UNIT_PREFIX)]
    pub prefix: PathBuf,
    /// Do not build; take the binaries from `--bin-dir`.
    #[arg(long)]
    pub no_build: bool,
    /// Where the built binaries are [default: target/release].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// What was installed.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Configuration files kept because they already existed.
    pub kept: Vec<PathBuf>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !options.no_build {
        ebpf::build(&ebpf::Options { debug: false })?;
        util::run(util::cargo().args([
            "build",
            "--release",
            "-p",
            "sonde-agent",
            "-p",
            "sonde-aggregator",
        ]))?;
    }
    let bin_dir = options
        .bin_dir
        .clone()
        .unwrap_or_else(|| util::workspace_root().join("target/release"));
    let report = install(
        &util::workspace_root().join("deploy"),
        &bin_dir,
        &options.root,
        &options.prefix,
    )?;
    for path in &report.written {
        println!("installed {}", path.display());
    }
    for path in &report.kept {
        println!("kept existing {}", path.display());
    }
    println!(
        "\nNext: edit /etc/sonde/*.toml (aggregator addresses, TLS), then\n  \
         systemctl daemon-reload && systemctl enable --now sonde-aggregator sonde-agent"
    );
    Ok(())
}

fn under(root: &Path, absolute: &Path) -> PathBuf {
    root.join(absolute.strip_prefix("/").unwrap_or(absolute))
}

/// Installs from `deploy` (the repository's `deploy/` folder) and `bin_dir`.
pub fn install(
    deploy: &Path,
    bin_dir: &Path,
    root: &Path,
    prefix: &Path,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let bin = under(root, &prefix.join("bin"));
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    for name in BINARIES {
        let from = bin_dir.join(name);
        let to = bin.join(name);
        // Replace atomically so a running binary is not overwritten in place.
        let tmp = bin.join(format!(".{name}.new"));
        fs::copy(&from, &tmp)
            .with_context(|| format!("cannot copy {} (build it first)", from.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &to)?;
        report.written.push(to);
    }

    let units = under(root, Path::new("/etc/systemd/system"));
    fs::create_dir_all(&units)?;
    let exec_prefix = format!("{}/bin/", prefix.display());
    for name in UNITS {
        let text = fs::read_to_string(deploy.join("systemd").join(name))?
            .replace(&format!("{UNIT_PREFIX}/bin/"), &exec_prefix);
        let to = units.join(name);
        fs::write(&to, text)?;
        report.written.push(to);
    }

    let config = under(root, Path::new("/etc/sonde"));
    fs::create_dir_all(&config)?;
    for name in CONFIGS {
        let to = config.join(name);
        if to.exists() {
            report.kept.push(to);
            continue;
        }
        fs::copy(deploy.join("etc").join(name), &to)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o640))?;
        report.written.push(to);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn fake_binaries(dir: &Path) {
        for name in BINARIES {
            fs::write(dir.join(name), "#!/bin/sh\n").unwrap();
        }
    }

    #[test]
    fn installs_units_that_systemd_accepts_and_keeps_existing_config() {
        let deploy = util::workspace_root().join("deploy");
        let bins = tempfile::tempdir().unwrap();
        fake_binaries(bins.path());
        let root = tempfile::tempdir().unwrap();
        let prefix = PathBuf::from("/opt/sonde");
        let report = install(&deploy, bins.path(), root.path(), &prefix).unwrap();
        assert_eq!(report.written.len(), 2 + 2 + 2, "{report:?}");
        let units: Vec<PathBuf> = report
            .written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "service"))
            .cloned()
            .collect();
        assert_eq!(units.len(), 2);

        // systemd-analyze verify resolves ExecStart on the host: point it at the installed
        // binaries (their absolute path is root + prefix).
        let verify_dir = tempfile::tempdir().unwrap();
        let mut copies = Vec::new();
        for unit in &units {
            let text = fs::read_to_string(unit).unwrap().replace(
                &format!("{}/bin/", prefix.display()),
                &format!("{}/bin/", under(root.path(), &prefix).display()),
            );
            let copy = verify_dir.path().join(unit.file_name().unwrap());
            fs::write(&copy, text).unwrap();
            copies.push(copy);
        }
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .args(&copies)
            .output()
            .expect("systemd-analyze (Debian package systemd) runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");

        // A second install keeps edited configuration.
        let agent_config = root.path().join("etc/sonde/agent.toml");
        fs::write(&agent_config, "# edited\n").unwrap();
        let report = install(&deploy, bins.path(), root.path(), &prefix).unwrap();
        assert!(report.kept.contains(&agent_config));
        assert_eq!(fs::read_to_string(&agent_config).unwrap(), "# edited\n");
    }

    #[test]
    fn systemd_analyze_catches_a_broken_unit() {
        // Guards the test above against a verify that accepts anything.
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("broken.service");
        fs::write(
            &unit,
            "[Service]\nExecStart=/bin/true\nNoNewPrivilegs=yes\n",
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("NoNewPrivilegs"));
    }
}
