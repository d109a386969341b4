//! Node metrics with node_exporter's names, types, labels and units: one small collector per
//! node_exporter collector, each reading procfs/sysfs under the configured roots.
//!
//! Owns: building the enabled node collectors. Must not: share state between collectors
//! (each reads its own sources each tick) or read anything outside procfs/sysfs/rootfs.

pub mod cpu;
pub mod diskstats;
pub mod filefd;
pub mod filesystem;
pub mod loadavg;
pub mod meminfo;
pub mod netdev;
pub mod netstat;
pub mod pressure;
pub mod stat;
pub mod uname;
pub mod vmstat;

use super::{Collector, config::NodeConfig};

/// The enabled node collectors, in [`super::config::NODE_COLLECTORS`] order.
pub fn collectors(config: &NodeConfig) -> Vec<Box<dyn Collector>> {
    let procfs = &config.procfs;
    let mut out: Vec<Box<dyn Collector>> = Vec::new();
    for name in super::config::NODE_COLLECTORS {
        if !config.enabled(name) {
            continue;
        }
        out.push(match *name {
            "cpu" => Box::new(cpu::CpuCollector::new(procfs)),
            "diskstats" => Box::new(diskstats::DiskstatsCollector::new(
                procfs,
                &config.diskstats.device_exclude,
            )),
            "filefd" => Box::new(filefd::FilefdCollector::new(procfs)),
            "filesystem" => Box::new(filesystem::FilesystemCollector::new(
                procfs,
                &config.rootfs,
                &config.filesystem,
            )),
            "loadavg" => Box::new(loadavg::LoadavgCollector::new(procfs)),
            "meminfo" => Box::new(meminfo::MeminfoCollector::new(procfs)),
            "netdev" => Box::new(netdev::NetdevCollector::new(
                procfs,
                &config.netdev.device_exclude,
            )),
            "netstat" => Box::new(netstat::NetstatCollector::new(
                procfs,
                &config.netstat.fields,
            )),
            "pressure" => Box::new(pressure::PressureCollector::new(procfs)),
            "stat" => Box::new(stat::StatCollector::new(procfs)),
            "uname" => Box::new(uname::UnameCollector::new()),
            "vmstat" => Box::new(vmstat::VmstatCollector::new(procfs, &config.vmstat.fields)),
            other => unreachable!("NODE_COLLECTORS lists {other} without a constructor"),
        });
    }
    out
}

/// Parses an unsigned integer field, naming it in the error.
pub(crate) fn int(field: &str, what: &str) -> Result<u64, String> {
    field
        .parse()
        .map_err(|_| format!("{what}: {field:?} is not an unsigned integer"))
}

#[cfg(test)]
pub(crate) mod testutil {
    use sonde_proto::v1::BatchPayload;

    /// The value of series `name` whose labels include all of `labels`.
    pub fn value(payload: &BatchPayload, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        payload
            .series
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
                    && labels
                        .iter()
                        .all(|(n, v)| s.labels.iter().any(|l| l.name == *n && l.value == *v))
            })
            .map(|s| s.samples[0].value)
    }

    /// Number of series named `name`.
    pub fn count(payload: &BatchPayload, name: &str) -> usize {
        payload
            .series
            .iter()
            .filter(|s| {
                s.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
            })
            .count()
    }

    /// Writes `files` (relative path, content) under a new temporary directory.
    pub fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }
}
