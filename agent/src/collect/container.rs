//! Container metrics with cAdvisor's names, from cgroups v1, v2 or both (hybrid hosts).
//!
//! Each tick: apply the cgroup creations/removals inotify reported since the last tick
//! ([`discovery`]), then read every selected cgroup's files ([`stats`]) and, for containers
//! in their own network namespace, `/proc/<pid>/net/dev`. Series carry `id` (the cgroup path),
//! `container_id` and `pod_uid` parsed from the path ([`identity`]), and `name`, `image`,
//! `namespace`, `pod`, `container` once the runtime or the kubelet told us ([`resolve`]).
//!
//! Must not: rescan cgroupfs per tick (except after an inotify overflow or when watches ran
//! out), or wait on a container runtime during collection.

pub mod discovery;
pub mod hierarchy;
pub mod identity;
pub mod resolve;
pub mod stats;

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use self::{
    discovery::Discovery,
    hierarchy::{Controller, Hierarchy},
    identity::Identity,
    resolve::{Endpoints, Meta, Resolver},
    stats::{DeviceNames, Dirs},
};
use super::{
    CollectError, Collector, Emitter,
    config::{CgroupSelection, ContainerConfig},
    node::netdev,
};

/// One cgroup being reported.
#[derive(Debug)]
struct Cgroup {
    path: String,
    identity: Identity,
    dirs: Dirs,
    spec: Option<stats::Spec>,
}

/// Collects `container_*` metrics for the selected cgroups.
#[derive(Debug)]
pub struct ContainerCollector {
    cgroupfs: PathBuf,
    procfs: PathBuf,
    selection: CgroupSelection,
    hierarchies: Vec<Hierarchy>,
    discovery: Option<Discovery>,
    generation: u64,
    cgroups: Vec<Cgroup>,
    resolver: Resolver,
    devices: DeviceNames,
    user_hz: f64,
    host_netns: Option<u64>,
    logged_missing: bool,
}

impl ContainerCollector {
    /// A collector for `config`, reading processes under `procfs` and devices under `sysfs`.
    pub fn new(config: &ContainerConfig, procfs: &Path, sysfs: &Path) -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let host_netns = std::fs::metadata(procfs.join("1/ns/net"))
            .or_else(|_| std::fs::metadata(procfs.join("self/ns/net")))
            .map(|m| m.ino())
            .ok();
        let mut collector = Self {
            cgroupfs: config.cgroupfs.clone(),
            procfs: procfs.to_owned(),
            selection: config.cgroups,
            hierarchies: Vec::new(),
            discovery: None,
            generation: u64::MAX,
            cgroups: Vec::new(),
            resolver: Resolver::start(Endpoints {
                docker_socket: config.docker_socket.clone(),
                kubelet_url: config.kubelet_url.clone(),
                timeout: config.resolve_timeout,
            }),
            devices: DeviceNames::new(sysfs),
            user_hz: if hz > 0 { hz as f64 } else { 100.0 },
            host_netns,
            logged_missing: false,
        };
        collector.attach();
        collector
    }

    /// Finds the hierarchies and starts watching them (again, if none were found before).
    fn attach(&mut self) {
        let found = hierarchy::detect(&self.cgroupfs);
        if found.is_empty() {
            if !self.logged_missing {
                tracing::warn!(path = %self.cgroupfs.display(), "no cgroup hierarchy found; container metrics are skipped until one appears (logged once)");
                self.logged_missing = true;
            }
            return;
        }
        let v1 = found.iter().any(|h| h.v1.is_some());
        let v2 = found.iter().any(|h| h.v1.is_none());
        if !v1 {
            tracing::info!(path = %self.cgroupfs.display(), "no cgroup v1 hierarchy; using cgroup v2 only");
        }
        if !v2 {
            tracing::info!(path = %self.cgroupfs.display(), "no cgroup v2 hierarchy; no container pressure metrics");
        }
        for missing in [Controller::Cpuacct, Controller::Memory] {
            if v1 && !found.iter().any(|h| h.has(missing)) {
                tracing::warn!(path = %self.cgroupfs.display(), controller = ?missing, "cgroup v1 controller not mounted; its container metrics come from v2 if enabled there (logged once)");
            }
        }
        let discovery = Discovery::new(found.iter().map(|h| h.root.clone()).collect());
        tracing::info!(
            hierarchies = found.len(),
            cgroups = discovery.paths().len(),
            watches = discovery.watch_count(),
            "watching cgroups"
        );
        self.hierarchies = found;
        self.discovery = Some(discovery);
    }

    fn refresh(&mut self) {
        let Some(discovery) = &mut self.discovery else {
            return;
        };
        discovery.poll();
        if discovery.generation() == self.generation {
            return;
        }
        self.generation = discovery.generation();
        // Keep cached limits of cgroups that are still there.
        let mut specs: std::collections::HashMap<String, stats::Spec> = self
            .cgroups
            .drain(..)
            .filter_map(|c| Some((c.path, c.spec?)))
            .collect();
        let mut live = HashSet::new();
        for (path, bits) in discovery.paths() {
            let identity = identity::parse(path);
            if self.selection == CgroupSelection::Containers && !identity.is_container_or_pod() {
                continue;
            }
            let mut dirs = Dirs::default();
            for (i, h) in self.hierarchies.iter().enumerate() {
                if bits & (1 << i) == 0 {
                    continue;
                }
                let dir = h.root.join(path.trim_start_matches('/'));
                match &h.v1 {
                    None => dirs.v2 = Some(dir),
                    Some(controllers) => {
                        for c in controllers {
                            let slot = match c {
                                Controller::Cpu => &mut dirs.cpu,
                                Controller::Cpuacct => &mut dirs.cpuacct,
                                Controller::Memory => &mut dirs.memory,
                                Controller::Blkio => &mut dirs.blkio,
                                Controller::Pids => &mut dirs.pids,
                            };
                            *slot = Some(dir.clone());
                        }
                    }
                }
            }
            if let Some(key) = Resolver::key(&identity) {
                live.insert(key);
            }
            self.cgroups.push(Cgroup {
                spec: specs.remove(path),
                path: path.clone(),
                identity,
                dirs,
            });
        }
        self.resolver.retain(&live);
    }

    /// The network namespace's devices of a container not in the host's namespace.
    fn network(&self, dirs: &Dirs) -> Option<Vec<netdev::Device>> {
        let procs_dir = dirs
            .v2
            .as_ref()
            .or(dirs.cpuacct.as_ref())
            .or(dirs.memory.as_ref())
            .or(dirs.cpu.as_ref())?;
        let procs = std::fs::read_to_string(procs_dir.join("cgroup.procs")).ok()?;
        let pid = procs.lines().next()?.trim();
        let netns = std::fs::metadata(self.procfs.join(pid).join("ns/net"))
            .ok()?
            .ino();
        if Some(netns) == self.host_netns {
            return None;
        }
        let text = std::fs::read_to_string(self.procfs.join(pid).join("net/dev")).ok()?;
        let devices = netdev::parse(&text).ok()?;
        Some(
            devices
                .into_iter()
                .filter(|d| {
                    !["lo", "veth", "docker"]
                        .iter()
                        .any(|p| d.name.starts_with(p))
                })
                .collect(),
        )
    }
}

impl Collector for ContainerCollector {
    fn name(&self) -> &'static str {
        "container"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        if self.discovery.is_none() {
            self.attach();
        }
        self.refresh();
        let mut cgroups = std::mem::take(&mut self.cgroups);
        for cgroup in &mut cgroups {
            let meta = self.resolver.lookup(&cgroup.identity).unwrap_or_default();
            let labels = labels(&cgroup.path, &cgroup.identity, &meta);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
            stats::emit(
                out,
                &labels,
                &cgroup.dirs,
                self.user_hz,
                &mut self.devices,
                &mut cgroup.spec,
            );
            if cgroup.identity.container_id.is_some()
                && let Some(devices) = self.network(&cgroup.dirs)
            {
                for dev in devices {
                    let mut with_interface = labels.clone();
                    with_interface.push(("interface", &dev.name));
                    netdev::emit_container(out, &with_interface, &dev);
                }
            }
        }
        self.cgroups = cgroups;
        Ok(())
    }
}

/// `id`, then whatever identity and names are known (absent labels are omitted).
fn labels(path: &str, identity: &Identity, meta: &Meta) -> Vec<(&'static str, String)> {
    let mut labels = vec![("id", path.to_owned())];
    for (name, value) in [
        ("container_id", &identity.container_id),
        ("pod_uid", &identity.pod_uid),
        ("name", &meta.name),
        ("image", &meta.image),
        ("namespace", &meta.namespace),
        ("pod", &meta.pod),
        ("container", &meta.container),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            labels.push((name, value.clone()));
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    const ID: &str = "3f9a1c0e5b7d2a4c6e8f0a1b3c5d7e9f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d";

    #[test]
    fn fake_hybrid_tree_is_discovered_and_labelled() {
        let root = testutil::root(&[
            ("cpuacct/cgroup.procs", ""),
            ("memory/cgroup.procs", ""),
            ("unified/cgroup.controllers", ""),
        ]);
        let config = ContainerConfig {
            cgroupfs: root.path().to_owned(),
            cgroups: CgroupSelection::Containers,
            docker_socket: root.path().join("no-docker.sock"),
            ..ContainerConfig::default()
        };
        let mut c = ContainerCollector::new(&config, Path::new("/proc"), Path::new("/sys"));
        let mut e = Emitter::new(0);
        c.collect(&mut e).unwrap();
        assert_eq!(e.sample_count(), 0, "no containers yet");
        let dir = root.path().join(format!("cpuacct/docker/{ID}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpuacct.usage"), "1000000000\n").unwrap();
        let mem = root.path().join(format!("memory/docker/{ID}"));
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        let mut e = Emitter::new(0);
        c.collect(&mut e).unwrap();
        let p = e.finish();
        let id = format!("/docker/{ID}");
        let labels = [("id", id.as_str()), ("container_id", ID), ("cpu", "total")];
        assert_eq!(
            testutil::value(&p, "container_cpu_usage_seconds_total", &labels),
            Some(1.0)
        );
        assert_eq!(
            testutil::value(&p, "container_memory_usage_bytes", &[("id", id.as_str())]),
            Some(4096.0)
        );
        assert_eq!(
            testutil::count(&p, "container_cpu_usage_seconds_total"),
            1,
            "only the container"
        );
        assert_eq!(c.discovery.as_ref().unwrap().rescans, 0);
    }

    #[test]
    fn no_cgroupfs_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = ContainerConfig {
            cgroupfs: dir.path().join("absent"),
            ..ContainerConfig::default()
        };
        let mut c = ContainerCollector::new(&config, Path::new("/proc"), Path::new("/sys"));
        let mut e = Emitter::new(0);
        c.collect(&mut e).unwrap();
        assert_eq!(e.sample_count(), 0);
    }
}
