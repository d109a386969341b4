//! Event-driven cgroup discovery: one inotify instance watches every directory of every
//! hierarchy for `mkdir`/`rmdir` (`IN_CREATE`/`IN_DELETE` on directories, plus moves), so
//! the set of cgroups is kept current without rescanning. Events are drained without
//! blocking at each collection tick.
//!
//! The tree is walked once at start; a directory created under a new one before its watch
//! existed is caught by walking each new directory when its watch is added. A full rescan
//! happens only when the kernel's event queue overflowed (`IN_Q_OVERFLOW`) or a watch could
//! not be added (`fs.inotify.max_user_watches` reached, logged once); both are counted in
//! [`Discovery::rescans`].
//!
//! Must not: read cgroup statistics or interpret paths.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

const WATCH_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

/// The cgroups present in a set of hierarchies, kept current by inotify.
#[derive(Debug)]
pub struct Discovery {
    fd: Option<OwnedFd>,
    roots: Vec<PathBuf>,
    /// Watch descriptor → (hierarchy index, cgroup path).
    watches: HashMap<i32, (usize, String)>,
    /// Cgroup path (`/`, `/docker/<id>`) → bit set of the hierarchies holding it.
    paths: BTreeMap<String, u64>,
    /// True when watches are incomplete: rescan every tick.
    degraded: bool,
    /// Full rescans done since start (overflow or missing watches).
    pub rescans: u64,
    generation: u64,
    buf: Vec<u8>,
}

impl Discovery {
    /// Watches `roots` (hierarchy roots; at most 64) and walks them once.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        // SAFETY: inotify_init1 has no preconditions.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        let fd = if raw >= 0 {
            // SAFETY: `raw` is a new descriptor we own.
            Some(unsafe { OwnedFd::from_raw_fd(raw) })
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "inotify unavailable; cgroups are rescanned every tick");
            None
        };
        let mut discovery = Self {
            degraded: fd.is_none(),
            fd,
            roots: roots.into_iter().take(64).collect(),
            watches: HashMap::new(),
            paths: BTreeMap::new(),
            rescans: 0,
            generation: 0,
            buf: vec![0; 64 * 1024],
        };
        discovery.scan_all();
        discovery
    }

    /// Applies pending events (or rescans when degraded). Returns whether the set changed.
    pub fn poll(&mut self) -> bool {
        let before = self.generation;
        if self.degraded {
            self.rescans += 1;
            self.scan_all();
            return true;
        }
        let Some(fd) = self.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return false;
        };
        loop {
            // SAFETY: reading into our own buffer of the given length.
            let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n <= 0 {
                break;
            }
            let events = parse_events(&self.buf[..n as usize]);
            for (wd, mask, name) in events {
                self.apply(wd, mask, &name);
            }
        }
        self.generation != before
    }

    /// Cgroup paths with the bit set of hierarchies (by index in the roots given to `new`)
    /// that hold them.
    pub fn paths(&self) -> &BTreeMap<String, u64> {
        &self.paths
    }

    /// Changes every time the set changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of directories watched.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    fn apply(&mut self, wd: i32, mask: u32, name: &str) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            tracing::info!("inotify queue overflowed; rescanning cgroups once");
            self.rescans += 1;
            self.scan_all();
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            self.watches.remove(&wd);
            return;
        }
        if mask & libc::IN_ISDIR == 0 {
            return;
        }
        let Some((h, parent)) = self.watches.get(&wd).cloned() else {
            return;
        };
        let child = join(&parent, name);
        if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
            self.add_tree(h, &child);
        } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
            self.remove_tree(h, &child);
        }
    }

    fn scan_all(&mut self) {
        if let Some(fd) = &self.fd {
            for wd in self.watches.keys() {
                // SAFETY: removing a watch we added; a stale one just fails.
                unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), *wd) };
            }
        }
        self.watches.clear();
        self.paths.clear();
        self.degraded = self.fd.is_none();
        for h in 0..self.roots.len() {
            self.add_tree(h, "/");
        }
        self.generation += 1;
    }

    /// Watches and records `path` in hierarchy `h` and everything below it.
    fn add_tree(&mut self, h: usize, path: &str) {
        let dir = self.roots[h].join(path.trim_start_matches('/'));
        if !dir.is_dir() {
            return;
        }
        self.watch(h, path, &dir);
        *self.paths.entry(path.to_owned()).or_insert(0) |= 1 << h;
        self.generation += 1;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let child = join(path, &entry.file_name().to_string_lossy());
                self.add_tree(h, &child);
            }
        }
    }

    fn watch(&mut self, h: usize, path: &str, dir: &Path) {
        let Some(fd) = &self.fd else {
            return;
        };
        let Ok(c_dir) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a valid inotify descriptor and C string.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_dir.as_ptr(), WATCH_MASK) };
        if wd >= 0 {
            self.watches.insert(wd, (h, path.to_owned()));
            return;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOSPC) && !self.degraded {
            tracing::warn!(path = %dir.display(), "inotify watch limit reached (sysctl fs.inotify.max_user_watches); cgroups are rescanned every tick instead");
            self.degraded = true;
        }
    }

    fn remove_tree(&mut self, h: usize, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let doomed: Vec<String> = self
            .paths
            .range(path.to_owned()..)
            .take_while(|(p, _)| p.as_str() == path || p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            if let Some(bits) = self.paths.get_mut(&p) {
                *bits &= !(1 << h);
                if *bits == 0 {
                    self.paths.remove(&p);
                }
            }
        }
        self.generation += 1;
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Splits a buffer of `struct inotify_event` records into (wd, mask, name).
fn parse_events(buf: &[u8]) -> Vec<(i32, u32, String)> {
    const HEADER: usize = 16;
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let word =
            |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().expect("4 bytes"));
        let wd = word(0) as i32;
        let mask = word(4);
        let len = word(12) as usize;
        let end = (at + HEADER + len).min(buf.len());
        let name_bytes = &buf[at + HEADER..end];
        let name_len = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        out.push((
            wd,
            mask,
            String::from_utf8_lossy(&name_bytes[..name_len]).into_owned(),
        ));
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_mkdir_and_rmdir_without_rescans() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("docker")).unwrap();
        let mut d = Discovery::new(vec![a.path().to_owned(), b.path().to_owned()]);
        assert_eq!(d.paths().get("/"), Some(&0b11));
        assert_eq!(d.paths().get("/docker"), Some(&0b01));
        assert!(!d.poll());
        std::fs::create_dir_all(a.path().join("docker/c1/nested")).unwrap();
        std::fs::create_dir_all(b.path().join("docker/c1")).unwrap();
        assert!(d.poll());
        assert_eq!(d.paths().get("/docker/c1"), Some(&0b11));
        assert_eq!(d.paths().get("/docker/c1/nested"), Some(&0b01));
        std::fs::remove_dir_all(a.path().join("docker/c1")).unwrap();
        assert!(d.poll());
        assert_eq!(d.paths().get("/docker/c1"), Some(&0b10));
        assert_eq!(d.paths().get("/docker/c1/nested"), None);
        assert_eq!(d.rescans, 0);
        // Watches of removed directories are released (IN_IGNORED).
        let watched = d.watch_count();
        assert_eq!(
            watched, 5,
            "/ and /docker in a; /, /docker, /docker/c1 in b"
        );
    }

    #[test]
    fn event_records_are_split() {
        let mut buf = Vec::new();
        for (wd, mask, name) in [
            (1i32, libc::IN_CREATE | libc::IN_ISDIR, "abc"),
            (2, libc::IN_IGNORED, ""),
        ] {
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            let padded = if name.is_empty() { 0 } else { 16 };
            buf.extend_from_slice(&(padded as u32).to_ne_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(padded, 0);
            buf.extend_from_slice(&n);
        }
        assert_eq!(
            parse_events(&buf),
            vec![
                (1, libc::IN_CREATE | libc::IN_ISDIR, "abc".to_owned()),
                (2, libc::IN_IGNORED, String::new())
            ]
        );
    }
}
