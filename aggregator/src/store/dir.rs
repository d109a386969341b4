//! The data directory: created on open, locked exclusively (`flock`) so two aggregators can
//! never write the same files, and released when the store is dropped.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Creating or opening failed.
    #[error("cannot use data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data directory {path} is in use by another process (lock file {path}/LOCK)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and takes its lock.
    pub fn open(path: &Path) -> Result<Self, DirError> {
        let io = |source| DirError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DirError::Locked {
                    path: path.to_owned(),
                }
            } else {
                io(error)
            });
        }
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_until_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = DataDir::open(&dir).unwrap();
        let err = DataDir::open(&dir).unwrap_err();
        assert!(matches!(err, DirError::Locked { .. }), "{err}");
        drop(first);
        DataDir::open(&dir).expect("lock released on drop");
    }
}
