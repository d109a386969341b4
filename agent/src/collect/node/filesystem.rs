//! `node_filesystem_{size,free,avail}_bytes`, `_files`, `_files_free`, `_readonly`,
//! `_device_error` with `device`, `fstype`, `mountpoint`, for the mounts of the host (PID 1's
//! mount table under procfs, falling back to `/proc/mounts`), statfs'd under the configured
//! rootfs. Pseudo filesystems and system mount points are excluded by node_exporter's
//! default filters. Network filesystems are statfs'd on a helper thread with a time limit
//! so a hung server cannot stall collection; a mount that timed out reports
//! `device_error 1` until its statfs returns.

use std::{
    collections::HashSet,
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use regex::Regex;

use crate::collect::{
    CollectError, Collector, Emitter, Sources,
    config::{FilesystemConfig, filter},
};

/// How long a network filesystem's statfs may take.
const STATFS_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the mount table and statfs's each mount.
#[derive(Debug)]
pub struct FilesystemCollector {
    mounts: [PathBuf; 2],
    rootfs: PathBuf,
    sources: Sources,
    mount_points_exclude: Option<Regex>,
    fs_types_exclude: Option<Regex>,
    /// Mount points whose statfs has not returned yet.
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
}

/// One mount table entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Mount {
    device: String,
    mount_point: String,
    fs_type: String,
    read_only: bool,
}

/// statfs(2) results.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

impl FilesystemCollector {
    /// A collector reading mounts under `procfs` and statfs'ing under `rootfs`.
    pub fn new(procfs: &Path, rootfs: &Path, config: &FilesystemConfig) -> Self {
        Self {
            mounts: [procfs.join("1/mounts"), procfs.join("mounts")],
            rootfs: rootfs.to_owned(),
            sources: Sources::new("filesystem"),
            mount_points_exclude: filter(&config.mount_points_exclude),
            fs_types_exclude: filter(&config.fs_types_exclude),
            stuck: Arc::default(),
        }
    }

    fn mount_table(&mut self) -> Result<Option<String>, CollectError> {
        // PID 1's view is the host's; /proc/mounts is ours (hidepid can hide PID 1).
        match std::fs::read_to_string(&self.mounts[0]) {
            Ok(text) => return Ok(Some(text)),
            Err(error) => {
                tracing::trace!(%error, "PID 1's mount table unreadable; using /proc/mounts")
            }
        }
        let fallback = self.mounts[1].clone();
        self.sources.read(&fallback)
    }

    fn stat(&self, mount: &Mount) -> Option<Stats> {
        let relative = mount.mount_point.trim_start_matches('/');
        let path = self.rootfs.join(relative);
        if !is_network(&mount.fs_type) {
            return statfs(&path);
        }
        {
            let mut stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
            if stuck.contains(&path) {
                return None;
            }
            stuck.insert(path.clone());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stuck = self.stuck.clone();
        let spawned = std::thread::Builder::new()
            .name("sonde-statfs".to_owned())
            .spawn(move || {
                let result = statfs(&path);
                stuck
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&path);
                let _ = tx.send(result);
            });
        if spawned.is_err() {
            return None;
        }
        match rx.recv_timeout(STATFS_TIMEOUT) {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(mount_point = %mount.mount_point, "statfs did not return in {STATFS_TIMEOUT:?}; reporting device_error until it does");
                None
            }
        }
    }
}

impl Collector for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.mount_table()? else {
            return Ok(());
        };
        let mut seen = HashSet::new();
        for mut mount in parse_mounts(&text) {
            if self
                .mount_points_exclude
                .as_ref()
                .is_some_and(|r| r.is_match(&mount.mount_point))
                || self
                    .fs_types_exclude
                    .as_ref()
                    .is_some_and(|r| r.is_match(&mount.fs_type))
            {
                continue;
            }
            let read_only = mount.read_only;
            mount.read_only = false;
            if !seen.insert(mount.clone()) {
                continue;
            }
            let labels = [
                ("device", mount.device.as_str()),
                ("fstype", mount.fs_type.as_str()),
                ("mountpoint", mount.mount_point.as_str()),
            ];
            let stats = self.stat(&mount);
            out.gauge(
                "node_filesystem_device_error",
                "Whether an error occurred while getting statistics for the given device.",
                &labels,
                if stats.is_some() { 0.0 } else { 1.0 },
            );
            let Some(stats) = stats else {
                continue;
            };
            for (name, help, value) in [
                (
                    "node_filesystem_size_bytes",
                    "Filesystem size in bytes.",
                    stats.size,
                ),
                (
                    "node_filesystem_free_bytes",
                    "Filesystem free space in bytes.",
                    stats.free,
                ),
                (
                    "node_filesystem_avail_bytes",
                    "Filesystem space available to non-root users in bytes.",
                    stats.avail,
                ),
                (
                    "node_filesystem_files",
                    "Filesystem total file nodes.",
                    stats.files,
                ),
                (
                    "node_filesystem_files_free",
                    "Filesystem total free file nodes.",
                    stats.files_free,
                ),
                (
                    "node_filesystem_readonly",
                    "Filesystem read-only status.",
                    f64::from(u8::from(read_only)),
                ),
            ] {
                out.gauge(name, help, &labels, value);
            }
        }
        Ok(())
    }
}

fn is_network(fs_type: &str) -> bool {
    matches!(
        fs_type,
        "nfs" | "nfs4" | "cifs" | "smb3" | "smbfs" | "ceph" | "glusterfs" | "9p" | "afs" | "lustre"
    ) || fs_type.starts_with("fuse")
}

fn statfs(path: &Path) -> Option<Stats> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
        tracing::debug!(path = %path.display(), error = %std::io::Error::last_os_error(), "statfs failed");
        return None;
    }
    let bsize = buf.f_bsize as f64;
    Some(Stats {
        size: buf.f_blocks as f64 * bsize,
        free: buf.f_bfree as f64 * bsize,
        avail: buf.f_bavail as f64 * bsize,
        files: buf.f_files as f64,
        files_free: buf.f_ffree as f64,
    })
}

/// Undoes the octal escapes of the mount table (`\040` for space, `\011` tab, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [device, mount_point, fs_type, options, ..] = parts.as_slice() else {
                return None;
            };
            Some(Mount {
                device: unescape(device),
                mount_point: unescape(mount_point),
                fs_type: (*fs_type).to_owned(),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    #[test]
    fn mount_table_escapes_and_read_only() {
        let mounts = parse_mounts(
            "/dev/vda / ext4 rw,relatime 0 0\n/dev/sdb /mnt/my\\040disk xfs ro,noatime 0 0\nbad\n",
        );
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].mount_point, "/mnt/my disk");
        assert!(mounts[1].read_only && !mounts[0].read_only);
        assert_eq!(unescape("a\\011b\\134"), "a\tb\\");
    }

    #[test]
    fn pseudo_filesystems_excluded_and_duplicates_once() {
        let root = tempfile::tempdir().unwrap();
        let proc = testutil::root(&[(
            "1/mounts",
            "proc /proc proc rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\ncgroup2 /x cgroup2 rw 0 0\n/dev/vda / ext4 rw 0 0\n/dev/vda / ext4 rw 0 0\n/dev/gone /gone ext4 ro 0 0\n",
        )]);
        let mut e = Emitter::new(0);
        FilesystemCollector::new(proc.path(), root.path(), &FilesystemConfig::default())
            .collect(&mut e)
            .unwrap();
        let p = e.finish();
        let root_labels = [
            ("device", "/dev/vda"),
            ("fstype", "ext4"),
            ("mountpoint", "/"),
        ];
        assert_eq!(testutil::count(&p, "node_filesystem_size_bytes"), 1);
        assert!(testutil::value(&p, "node_filesystem_size_bytes", &root_labels).unwrap() > 0.0);
        assert_eq!(
            testutil::value(&p, "node_filesystem_device_error", &root_labels),
            Some(0.0)
        );
        assert_eq!(
            testutil::value(
                &p,
                "node_filesystem_device_error",
                &[("mountpoint", "/gone")]
            ),
            Some(1.0)
        );
        assert_eq!(testutil::count(&p, "node_filesystem_device_error"), 2);
    }
}
