//! Finds the cgroup hierarchies under the configured cgroupfs: a pure v2 mount, or a
//! directory of v1 hierarchies (one per controller or co-mounted set, e.g. `cpu,cpuacct`)
//! plus `unified` (v2) on hybrid hosts.
//!
//! Must not: read cgroup statistics (see `stats`).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// v1 controllers whose files the collector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// `cpu.stat`, `cpu.cfs_*`, `cpu.shares`.
    Cpu,
    /// `cpuacct.usage`, `cpuacct.stat`.
    Cpuacct,
    /// `memory.*`.
    Memory,
    /// `blkio.throttle.*`.
    Blkio,
    /// `pids.current`.
    Pids,
}

/// A mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its root directory.
    pub root: PathBuf,
    /// `None` for cgroup v2; the v1 controllers otherwise.
    pub v1: Option<Vec<Controller>>,
}

impl Hierarchy {
    /// Whether this v1 hierarchy carries `controller`.
    pub fn has(&self, controller: Controller) -> bool {
        self.v1.as_ref().is_some_and(|c| c.contains(&controller))
    }
}

fn controllers(name: &str) -> Vec<Controller> {
    name.split(',')
        .filter_map(|c| match c {
            "cpu" => Some(Controller::Cpu),
            "cpuacct" => Some(Controller::Cpuacct),
            "memory" => Some(Controller::Memory),
            "blkio" => Some(Controller::Blkio),
            "pids" => Some(Controller::Pids),
            _ => None,
        })
        .collect()
}

/// The hierarchies under `cgroupfs` that carry metrics, v2 first. Empty when nothing is
/// mounted there (the caller logs that once).
pub fn detect(cgroupfs: &Path) -> Vec<Hierarchy> {
    if cgroupfs.join("cgroup.controllers").exists() {
        return vec![Hierarchy {
            root: cgroupfs.to_owned(),
            v1: None,
        }];
    }
    let Ok(entries) = std::fs::read_dir(cgroupfs) else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut names: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    for (name, path) in names {
        // `cpu` and `cpuacct` are often symlinks to `cpu,cpuacct`: one hierarchy.
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if !real.is_dir() || !seen.insert(real.clone()) {
            continue;
        }
        if real.join("cgroup.controllers").exists() {
            out.insert(
                0,
                Hierarchy {
                    root: path,
                    v1: None,
                },
            );
            continue;
        }
        let real_name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(name);
        let found = controllers(&real_name);
        if !found.is_empty() && real.join("cgroup.procs").exists() {
            out.push(Hierarchy {
                root: path,
                v1: Some(found),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_layout() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, file) in [
            ("cpu,cpuacct", "cgroup.procs"),
            ("memory", "cgroup.procs"),
            ("systemd", "cgroup.procs"),
            ("unified", "cgroup.controllers"),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join(file), "").unwrap();
        }
        std::os::unix::fs::symlink(dir.path().join("cpu,cpuacct"), dir.path().join("cpu")).unwrap();
        let found = detect(dir.path());
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].v1, None);
        assert!(found[0].root.ends_with("unified"));
        let cpu = found.iter().find(|h| h.has(Controller::Cpuacct)).unwrap();
        assert!(cpu.has(Controller::Cpu));
        assert!(found.iter().any(|h| h.has(Controller::Memory)));
    }

    #[test]
    fn pure_v2_and_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(detect(dir.path()).is_empty());
        assert!(detect(&dir.path().join("absent")).is_empty());
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(detect(dir.path()).len(), 1);
    }
}
