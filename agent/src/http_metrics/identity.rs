//! Who handled an exchange: `service_name` and `container_id` for a process id, with the
//! event's comm and cgroup id as fallbacks when the process is already gone.
//!
//! `service_name` is `OTEL_SERVICE_NAME` from the process environment when set, else the
//! executable's file name, else the thread's comm. `container_id` is the 64-hex id in the
//! process's cgroup v2 path (docker, containerd, CRI-O and Kubernetes layouts), else empty.
//! Must not: block for long (every lookup is a few small /proc reads, cached per process).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// A process's identity as exported in labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// `service_name`.
    pub service_name: String,
    /// `container_id` (empty outside containers).
    pub container_id: String,
    /// The cgroup v2 path (for include/exclude rules), when known.
    pub cgroup_path: Option<String>,
}

/// How long a process's identity is trusted before it is read again (pids are reused).
const TTL: Duration = Duration::from_secs(60);
/// Entries kept at most; beyond, the oldest half is dropped.
const MAX_ENTRIES: usize = 16_384;
/// Least time between two walks of the cgroup tree for an unknown cgroup id.
const CGROUP_RESCAN: Duration = Duration::from_secs(5);

/// Resolves and caches identities.
#[derive(Debug)]
pub struct Resolver {
    proc_root: PathBuf,
    cgroup_root: Option<PathBuf>,
    cache: HashMap<u32, (Identity, Instant)>,
    cgroup_paths: HashMap<u64, String>,
    last_cgroup_scan: Option<Instant>,
}

impl Resolver {
    /// A resolver reading `<proc_root>/<pid>/…` and the cgroup v2 tree at `cgroup_root`.
    pub fn new(proc_root: &Path, cgroup_root: Option<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.to_owned(),
            cgroup_root,
            cache: HashMap::new(),
            cgroup_paths: HashMap::new(),
            last_cgroup_scan: None,
        }
    }

    /// The host's resolver: `/proc` and the mounted cgroup v2 hierarchy.
    pub fn host() -> Self {
        Self::new(Path::new("/proc"), cgroup2_mount())
    }

    /// The identity of process `tgid` (thread comm and cgroup id from the event as
    /// fallbacks).
    pub fn identify(&mut self, tgid: u32, comm: &str, cgroup_id: u64) -> Identity {
        let now = Instant::now();
        if let Some((identity, at)) = self.cache.get(&tgid)
            && now.duration_since(*at) < TTL
        {
            return identity.clone();
        }
        let identity = self.read(tgid, comm, cgroup_id);
        if self.cache.len() >= MAX_ENTRIES {
            let mut ages: Vec<Instant> = self.cache.values().map(|(_, at)| *at).collect();
            ages.sort();
            let cutoff = ages[ages.len() / 2];
            self.cache.retain(|_, (_, at)| *at > cutoff);
        }
        self.cache.insert(tgid, (identity.clone(), now));
        identity
    }

    /// Reads process `tgid`'s identity now (it was just seen opening a connection), replacing
    /// what was cached: a reused pid gets its new owner's identity.
    pub fn refresh(&mut self, tgid: u32, cgroup_id: u64) {
        let comm = std::fs::read_to_string(self.proc_root.join(tgid.to_string()).join("comm"))
            .unwrap_or_default();
        let identity = self.read(tgid, comm.trim_end(), cgroup_id);
        self.cache.insert(tgid, (identity, Instant::now()));
    }

    fn read(&mut self, tgid: u32, comm: &str, cgroup_id: u64) -> Identity {
        let dir = self.proc_root.join(tgid.to_string());
        let service_name = std::fs::read(dir.join("environ"))
            .ok()
            .and_then(|env| otel_service_name(&env))
            .or_else(|| {
                std::fs::read_link(dir.join("exe")).ok().and_then(|exe| {
                    let name = exe.file_name()?.to_string_lossy().into_owned();
                    let name = name.trim_end_matches(" (deleted)").to_owned();
                    (!name.is_empty()).then_some(name)
                })
            })
            .unwrap_or_else(|| {
                if comm.is_empty() {
                    format!("pid-{tgid}")
                } else {
                    comm.to_owned()
                }
            });
        let cgroup_path = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| unified_path(&text))
            .or_else(|| self.cgroup_path(cgroup_id));
        let container_id = cgroup_path
            .as_deref()
            .and_then(container_id)
            .unwrap_or_default();
        Identity {
            service_name,
            container_id,
            cgroup_path,
        }
    }

    /// The path of a cgroup v2 id, walking the hierarchy when it is unknown (rate-limited).
    pub fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(path) = self.cgroup_paths.get(&id) {
            return Some(path.clone());
        }
        let root = self.cgroup_root.clone()?;
        let now = Instant::now();
        if self
            .last_cgroup_scan
            .is_some_and(|at| now.duration_since(at) < CGROUP_RESCAN)
        {
            return None;
        }
        self.last_cgroup_scan = Some(now);
        self.cgroup_paths.clear();
        walk_cgroups(&root, &root, &mut self.cgroup_paths, 0);
        self.cgroup_paths.get(&id).cloned()
    }
}

fn walk_cgroups(root: &Path, dir: &Path, out: &mut HashMap<u64, String>, depth: u32) {
    use std::os::unix::fs::MetadataExt;
    if depth > 32 {
        return;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let relative = dir.strip_prefix(root).unwrap_or(Path::new(""));
    out.insert(meta.ino(), format!("/{}", relative.display()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk_cgroups(root, &entry.path(), out, depth + 1);
        }
    }
}

/// `OTEL_SERVICE_NAME` from a NUL-separated environment block.
fn otel_service_name(environ: &[u8]) -> Option<String> {
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(b"OTEL_SERVICE_NAME=")?;
        let value = String::from_utf8_lossy(value).trim().to_owned();
        (!value.is_empty()).then_some(value)
    })
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the `0::` line).
pub fn unified_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
}

/// The container id in a cgroup path: the last run of exactly 64 hex digits in a component
/// (`/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `/kubepods/…/<id>`).
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let bytes = component.as_bytes();
        let mut best = None;
        let mut start = 0;
        for i in 0..=bytes.len() {
            let hex =
                i < bytes.len() && bytes[i].is_ascii_hexdigit() && !bytes[i].is_ascii_uppercase();
            if !hex {
                if i - start == 64 {
                    best = Some(component[start..i].to_owned());
                }
                start = i + 1;
            }
        }
        best
    })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_from_common_layouts() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod0f1e/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        // 63 or 65 hex digits are not an id.
        assert_eq!(container_id(&format!("/x/{}", &ID[1..])), None);
        assert_eq!(container_id(&format!("/x/{ID}0")), None);
    }

    #[test]
    fn unified_line_and_service_name() {
        let text = "12:cpu,cpuacct:/foo\n1:name=systemd:/bar\n0::/system.slice/nginx.service\n";
        assert_eq!(
            unified_path(text).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(
            otel_service_name(b"PATH=/bin\0OTEL_SERVICE_NAME=checkout\0HOME=/\0"),
            Some("checkout".to_owned())
        );
        assert_eq!(otel_service_name(b"OTEL_SERVICE_NAME=\0"), None);
    }

    #[test]
    fn resolves_from_a_fake_proc_and_falls_back_to_comm() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("77");
        std::fs::create_dir(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("environ"), b"A=1\0OTEL_SERVICE_NAME=shop\0").unwrap();
        std::fs::write(
            proc_dir.join("cgroup"),
            format!("0::/system.slice/docker-{ID}.scope\n"),
        )
        .unwrap();
        let mut r = Resolver::new(dir.path(), None);
        let id = r.identify(77, "python3", 0);
        assert_eq!(id.service_name, "shop");
        assert_eq!(id.container_id, ID);
        // A process that is gone: the comm.
        let gone = r.identify(78, "curl", 0);
        assert_eq!(gone.service_name, "curl");
        assert_eq!(gone.container_id, "");
    }
}
