//! OpenSSL discovery: finds the `libssl` files processes use (the host's standard library
//! directories, and `/proc/<pid>/maps`, through `/proc/<pid>/root` so libraries inside
//! containers are found too) and attaches the TLS uprobes to each file once.
//!
//! A uprobe is per file (inode), not per process: one attach covers every process mapping
//! that file, including processes that load it later.
//! Must not: attach to a file twice, or retry a file that failed (it is logged once).

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};
use sonde_ebpf_common::programs;

use super::loader::error_chain;

/// Library directories of common distributions, searched at start-up.
const HOST_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

/// Functions probed, with the program for their entry. Every one also gets `ssl_exit` on
/// return.
const FUNCTIONS: [(&str, &str); 4] = [
    ("SSL_read", programs::SSL_READ_ENTER),
    ("SSL_read_ex", programs::SSL_READ_EX_ENTER),
    ("SSL_write", programs::SSL_WRITE_ENTER),
    ("SSL_write_ex", programs::SSL_WRITE_EX_ENTER),
];

/// Counts for self-metrics.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// libssl files with the uprobes attached.
    pub libraries: AtomicU64,
    /// libssl files that could not be probed.
    pub failures: AtomicU64,
}

/// Attaches the loaded TLS programs to libssl files as they are found.
pub struct TlsAttacher {
    ebpf: Arc<Mutex<Ebpf>>,
    proc_root: PathBuf,
    done: HashSet<(u64, u64)>,
    /// Processes already known to map a probed library: no need to read their maps again.
    covered: HashMap<u32, ()>,
    stats: Arc<TlsStats>,
}

impl std::fmt::Debug for TlsAttacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAttacher")
            .field("libraries", &self.done.len())
            .finish_non_exhaustive()
    }
}

impl TlsAttacher {
    /// An attacher over the loaded object (`/proc` is read below `proc_root`).
    pub fn new(ebpf: Arc<Mutex<Ebpf>>, proc_root: &Path, stats: Arc<TlsStats>) -> Self {
        Self {
            ebpf,
            proc_root: proc_root.to_owned(),
            done: HashSet::new(),
            covered: HashMap::new(),
            stats,
        }
    }

    /// Attaches to libssl files in the host's library directories.
    pub fn scan_host(&mut self) {
        for dir in HOST_LIB_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if is_libssl(&name.to_string_lossy()) {
                    self.consider(&entry.path());
                }
            }
        }
    }

    /// Attaches to libssl files mapped by running processes.
    pub fn scan_processes(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        let mut alive = HashSet::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            alive.insert(pid);
            if self.covered.contains_key(&pid) {
                continue;
            }
            let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
                continue;
            };
            let mut libraries: Vec<&str> = maps
                .lines()
                .filter_map(|line| line.split_whitespace().nth(5))
                .filter(|path| path.rsplit('/').next().is_some_and(is_libssl))
                .collect();
            libraries.dedup();
            for library in libraries {
                let through_root = entry
                    .path()
                    .join("root")
                    .join(library.trim_start_matches('/'));
                if self.consider(&through_root) {
                    self.covered.insert(pid, ());
                }
            }
        }
        self.covered.retain(|pid, ()| alive.contains(pid));
    }

    /// Attaches to `path` unless its file was handled before; true when it is probed.
    fn consider(&mut self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let id = (meta.dev(), meta.ino());
        if self.done.contains(&id) {
            return true;
        }
        self.done.insert(id);
        match self.attach(path) {
            Ok(functions) => {
                self.stats.libraries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(library = %path.display(), functions = ?functions, "TLS uprobes attached");
                true
            }
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(library = %path.display(), %error, "cannot probe this libssl; HTTPS through it is not measured");
                false
            }
        }
    }

    fn attach(&self, path: &Path) -> Result<Vec<&'static str>, String> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        let mut attached = Vec::new();
        let mut errors = Vec::new();
        for (function, entry) in FUNCTIONS {
            // The return probe first: an entry without it would only leave stale arguments.
            let result = attach_one(&mut ebpf, programs::SSL_EXIT, function, path)
                .and_then(|()| attach_one(&mut ebpf, entry, function, path));
            match result {
                Ok(()) => attached.push(function),
                Err(e) => errors.push(format!("{function}: {e}")),
            }
        }
        let reads = attached.iter().any(|f| f.starts_with("SSL_read"));
        let writes = attached.iter().any(|f| f.starts_with("SSL_write"));
        if reads && writes {
            Ok(attached)
        } else {
            Err(errors.join("; "))
        }
    }
}

fn attach_one(ebpf: &mut Ebpf, program: &str, function: &str, path: &Path) -> Result<(), String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?;
    let uprobe: &mut UProbe = prog
        .try_into()
        .map_err(|e| format!("program {program} is not a uprobe: {e}"))?;
    uprobe
        .attach(function, path, UProbeScope::AllProcesses)
        .map_err(|e| error_chain(&e))?;
    Ok(())
}

/// `libssl.so`, `libssl.so.3`, `libssl.so.1.1`, …
fn is_libssl(file_name: &str) -> bool {
    file_name.starts_with("libssl.so")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libssl_file_names() {
        assert!(is_libssl("libssl.so.3"));
        assert!(is_libssl("libssl.so.1.1"));
        assert!(is_libssl("libssl.so"));
        assert!(!is_libssl("libssl3.so"));
        assert!(!is_libssl("libcrypto.so.3"));
    }
}
