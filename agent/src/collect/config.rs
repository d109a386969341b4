//! Collector settings: which node collectors run, where procfs/sysfs/rootfs/cgroupfs are (so
//! the agent can run in a container with the host's filesystems mounted elsewhere), the
//! node_exporter-compatible filters, and how container names are resolved.
//!
//! Owns: the `[node]` and `[containers]` tables of the agent's config file and their
//! validation. Must not: read the host (collectors do, after validation).

use std::{path::PathBuf, time::Duration};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Every node collector, in collection order (node_exporter's collector names).
pub const NODE_COLLECTORS: &[&str] = &[
    "cpu",
    "diskstats",
    "filefd",
    "filesystem",
    "loadavg",
    "meminfo",
    "netdev",
    "netstat",
    "pressure",
    "stat",
    "uname",
    "vmstat",
];

/// node_exporter 1.5's `--collector.filesystem.mount-points-exclude` default.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5's `--collector.filesystem.fs-types-exclude` default (pseudo filesystems).
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// node_exporter 1.5's `--collector.diskstats.device-exclude` default (partitions, loop, ram).
pub const DEFAULT_DISK_DEVICE_EXCLUDE: &str = "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$";
/// node_exporter 1.5's `--collector.netstat.fields` default.
pub const DEFAULT_NETSTAT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";
/// node_exporter 1.5's `--collector.vmstat.fields` default.
pub const DEFAULT_VMSTAT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";

/// Node metrics (node_exporter's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node collectors to run (any of [`NODE_COLLECTORS`]); an empty list disables node metrics.
    pub collectors: Vec<String>,
    /// procfs mount point (`/host/proc` when the agent runs in a container).
    pub procfs: PathBuf,
    /// sysfs mount point.
    pub sysfs: PathBuf,
    /// Where the host's root filesystem is visible; mount points are reported relative to it.
    pub rootfs: PathBuf,
    /// Filesystems to report.
    pub filesystem: FilesystemConfig,
    /// Block devices to report.
    pub diskstats: DiskstatsConfig,
    /// Network devices to report.
    pub netdev: NetdevConfig,
    /// `/proc/net/{netstat,snmp,snmp6}` fields to report.
    pub netstat: FieldsConfig,
    /// `/proc/vmstat` fields to report.
    pub vmstat: FieldsConfig,
}

/// Filesystem filters (regular expressions; empty means none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// Mount points not reported.
    pub mount_points_exclude: String,
    /// Filesystem types not reported.
    pub fs_types_exclude: String,
}

/// Block device filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskstatsConfig {
    /// Devices not reported (regular expression; empty means none).
    pub device_exclude: String,
}

/// Network device filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetdevConfig {
    /// Devices not reported (regular expression; empty means none).
    pub device_exclude: String,
}

/// A field filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsConfig {
    /// Fields reported (regular expression on `<Protocol>_<Field>` or the vmstat key).
    pub fields: String,
}

/// Which cgroups become `container_*` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupSelection {
    /// Every cgroup, like cAdvisor's raw handler (`id="/"`, slices, pods, containers).
    All,
    /// Only cgroups recognised as containers (docker, containerd, cri-o, podman, kubepods).
    Containers,
}

/// Container metrics (cAdvisor's names) from cgroups v1 and v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// Collect container metrics at all.
    pub enabled: bool,
    /// cgroupfs mount point: a v2 hierarchy, or a directory of v1 hierarchies (and `unified`).
    pub cgroupfs: PathBuf,
    /// Which cgroups are reported.
    pub cgroups: CgroupSelection,
    /// Docker Engine API socket, for container names and images; absent means ids only.
    pub docker_socket: PathBuf,
    /// Kubelet base URL (`http://127.0.0.1:10255`, read-only port) for pod, namespace and
    /// container names; empty disables. Unreachable means ids only.
    pub kubelet_url: String,
    /// Time limit of one name-resolution request.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            collectors: NODE_COLLECTORS.iter().map(|c| (*c).to_owned()).collect(),
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
            filesystem: FilesystemConfig::default(),
            diskstats: DiskstatsConfig::default(),
            netdev: NetdevConfig::default(),
            netstat: FieldsConfig {
                fields: DEFAULT_NETSTAT_FIELDS.to_owned(),
            },
            vmstat: FieldsConfig {
                fields: DEFAULT_VMSTAT_FIELDS.to_owned(),
            },
        }
    }
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            mount_points_exclude: DEFAULT_MOUNT_POINTS_EXCLUDE.to_owned(),
            fs_types_exclude: DEFAULT_FS_TYPES_EXCLUDE.to_owned(),
        }
    }
}

impl Default for DiskstatsConfig {
    fn default() -> Self {
        Self {
            device_exclude: DEFAULT_DISK_DEVICE_EXCLUDE.to_owned(),
        }
    }
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cgroupfs: PathBuf::from("/sys/fs/cgroup"),
            cgroups: CgroupSelection::All,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            kubelet_url: String::new(),
            resolve_timeout: Duration::from_secs(2),
        }
    }
}

/// Compiles an optional filter: `None` for an empty pattern. Patterns are validated at
/// config load, so a failure here means the config was not validated.
pub fn filter(pattern: &str) -> Option<Regex> {
    (!pattern.is_empty())
        .then(|| Regex::new(pattern).expect("filter patterns are validated at config load"))
}

fn check_regex(key: &'static str, pattern: &str) -> Result<(), ConfigError> {
    Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid {
            key,
            problem: format!("{pattern:?} is not a valid regular expression: {e}"),
        })
}

impl NodeConfig {
    /// Checks collector names and filters.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.collectors {
            if !NODE_COLLECTORS.contains(&name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "node.collectors",
                    problem: format!(
                        "unknown collector {name:?}; known: {}",
                        NODE_COLLECTORS.join(", ")
                    ),
                });
            }
        }
        check_regex(
            "node.filesystem.mount_points_exclude",
            &self.filesystem.mount_points_exclude,
        )?;
        check_regex(
            "node.filesystem.fs_types_exclude",
            &self.filesystem.fs_types_exclude,
        )?;
        check_regex(
            "node.diskstats.device_exclude",
            &self.diskstats.device_exclude,
        )?;
        check_regex("node.netdev.device_exclude", &self.netdev.device_exclude)?;
        check_regex("node.netstat.fields", &self.netstat.fields)?;
        check_regex("node.vmstat.fields", &self.vmstat.fields)
    }

    /// Whether collector `name` is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.collectors.iter().any(|c| c == name)
    }
}

impl ContainerConfig {
    /// Checks the kubelet URL and timeout.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.kubelet_url.is_empty() && !self.kubelet_url.starts_with("http://") {
            return Err(ConfigError::Invalid {
                key: "containers.kubelet_url",
                problem: format!(
                    "{:?} must be empty or an http:// URL (the kubelet's read-only port)",
                    self.kubelet_url
                ),
            });
        }
        if self.resolve_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "containers.resolve_timeout",
                problem: "must be positive".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_filters_match_node_exporter() {
        NodeConfig::default().validate().unwrap();
        ContainerConfig::default().validate().unwrap();
        let disks = filter(DEFAULT_DISK_DEVICE_EXCLUDE).unwrap();
        assert!(disks.is_match("sda1") && disks.is_match("loop0") && disks.is_match("nvme0n1p2"));
        assert!(!disks.is_match("sda") && !disks.is_match("nvme0n1") && !disks.is_match("vda"));
        let mounts = filter(DEFAULT_MOUNT_POINTS_EXCLUDE).unwrap();
        assert!(mounts.is_match("/dev/shm") && mounts.is_match("/var/lib/docker/overlay2/x"));
        assert!(!mounts.is_match("/") && !mounts.is_match("/home"));
        assert!(filter("").is_none());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut node = NodeConfig::default();
        node.collectors.push("bogus".into());
        assert!(
            node.validate()
                .unwrap_err()
                .to_string()
                .contains("node.collectors")
        );
        let mut node = NodeConfig::default();
        node.netdev.device_exclude = "(".into();
        assert!(
            node.validate()
                .unwrap_err()
                .to_string()
                .contains("node.netdev.device_exclude")
        );
        let containers = ContainerConfig {
            kubelet_url: "https://x".into(),
            ..ContainerConfig::default()
        };
        assert!(
            containers
                .validate()
                .unwrap_err()
                .to_string()
                .contains("containers.kubelet_url")
        );
    }
}
