//! Finding and, when allowed, mounting the pseudo filesystems eBPF needs: tracefs (tracepoint
//! ids and formats) and bpffs (pinning).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

/// tracefs mount points in the order the kernel documents them.
const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Where bpffs lives by convention.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Why a filesystem could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `mount(2)` failed.
    #[error("cannot mount {fstype} at {target}: {source}")]
    Mount {
        /// Filesystem type.
        fstype: &'static str,
        /// Mount point.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The mounted tracefs root, if any.
pub fn find_tracefs() -> Option<PathBuf> {
    TRACEFS_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Returns the tracefs root, mounting tracefs at `/sys/kernel/tracing` if none is mounted and
/// `mount` is allowed.
pub fn ensure_tracefs(mount: bool) -> Result<Option<PathBuf>, MountError> {
    if let Some(root) = find_tracefs() {
        return Ok(Some(root));
    }
    if !mount {
        return Ok(None);
    }
    let target = Path::new(TRACEFS_CANDIDATES[0]);
    mount_fs("tracefs", target)?;
    tracing::info!(target = %target.display(), "mounted tracefs");
    Ok(find_tracefs())
}

/// Whether bpffs is mounted at [`BPFFS`]; mounts it if not and `mount` is allowed.
pub fn ensure_bpffs(mount: bool) -> Result<bool, MountError> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(true);
    }
    if !mount {
        return Ok(false);
    }
    mount_fs("bpf", Path::new(BPFFS))?;
    tracing::info!(target = BPFFS, "mounted bpffs");
    Ok(is_bpffs(Path::new(BPFFS)))
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a properly sized out-parameter.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}

fn mount_fs(fstype: &'static str, target: &Path) -> Result<(), MountError> {
    let error = |source| MountError::Mount {
        fstype,
        target: target.to_owned(),
        source,
    };
    if !target.exists() {
        std::fs::create_dir_all(target).map_err(error)?;
    }
    let c_target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| error(std::io::Error::other(e)))?;
    let c_type = CString::new(fstype).expect("no NUL in literal");
    let c_source = CString::new("none").expect("no NUL in literal");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(error(std::io::Error::last_os_error()));
    }
    Ok(())
}
