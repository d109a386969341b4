//! [`Sources`]: reads collector inputs (procfs, sysfs, cgroupfs files) so that a missing
//! source is logged once with its path and skipped, while a malformed one is an error.
//!
//! Must not: parse anything; it only hands back text.

use std::{
    collections::HashSet,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use super::CollectError;

/// Reads source files for one collector and remembers which ones were missing, so each
/// absence is logged once (and its return once).
#[derive(Debug)]
pub struct Sources {
    collector: &'static str,
    missing: HashSet<PathBuf>,
}

impl Sources {
    /// A reader for `collector` (named in the log lines).
    pub fn new(collector: &'static str) -> Self {
        Self {
            collector,
            missing: HashSet::new(),
        }
    }

    /// The file's text, or `None` when it does not exist or cannot be opened (logged once).
    /// Other I/O errors are returned.
    pub fn read(&mut self, path: &Path) -> Result<Option<String>, CollectError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                self.found(path);
                Ok(Some(text))
            }
            Err(error) if is_missing(&error) => {
                self.absent(path, &error);
                Ok(None)
            }
            Err(source) => Err(CollectError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Records that `path` could not be used because of `error` (logged once per path).
    pub fn absent(&mut self, path: &Path, error: &dyn std::fmt::Display) {
        if self.missing.insert(path.to_owned()) {
            tracing::warn!(
                collector = self.collector,
                path = %path.display(),
                %error,
                "source unavailable; its metrics are skipped until it appears (logged once)"
            );
        }
    }

    /// Records that `path` is usable (logs its return if it had been missing).
    pub fn found(&mut self, path: &Path) {
        if !self.missing.is_empty() && self.missing.remove(path) {
            tracing::info!(collector = self.collector, path = %path.display(), "source available again");
        }
    }

    /// Whether `path` is currently known to be missing.
    pub fn is_missing(&self, path: &Path) -> bool {
        self.missing.contains(path)
    }
}

/// Errors meaning "this source is not there for us" rather than "something broke".
pub fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::Unsupported
    ) || error.raw_os_error() == Some(libc::ENODEV)
        || error.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// A parse error for `path`.
pub fn parse_error(path: &Path, problem: impl Into<String>) -> CollectError {
    CollectError::Parse {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_none_and_remembered_until_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let mut sources = Sources::new("test");
        assert_eq!(sources.read(&path).unwrap(), None);
        assert!(sources.is_missing(&path));
        std::fs::write(&path, "1\n").unwrap();
        assert_eq!(sources.read(&path).unwrap().as_deref(), Some("1\n"));
        assert!(!sources.is_missing(&path));
    }

    #[test]
    fn other_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // Reading a directory is EISDIR: an error, not a missing source.
        let err = Sources::new("test").read(dir.path()).unwrap_err();
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
