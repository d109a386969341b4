//! `node_filefd_allocated` and `node_filefd_maximum` from `/proc/sys/fs/file-nr`.

use std::path::{Path, PathBuf};

use super::int;
use crate::collect::{CollectError, Collector, Emitter, Sources, sources::parse_error};

/// Reads `/proc/sys/fs/file-nr`.
#[derive(Debug)]
pub struct FilefdCollector {
    path: PathBuf,
    sources: Sources,
}

impl FilefdCollector {
    /// A collector under `procfs`.
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("sys/fs/file-nr"),
            sources: Sources::new("filefd"),
        }
    }
}

impl Collector for FilefdCollector {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        let (allocated, maximum) = parse(&text).map_err(|p| parse_error(&self.path, p))?;
        out.gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            &[],
            allocated as f64,
        );
        out.gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            &[],
            maximum as f64,
        );
        Ok(())
    }
}

fn parse(text: &str) -> Result<(u64, u64), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [allocated, _unused, maximum] = fields.as_slice() else {
        return Err(format!("expected 3 fields, got {text:?}"));
    };
    Ok((int(allocated, "allocated")?, int(maximum, "maximum")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(parse("768\t0\t2466186\n").unwrap(), (768, 2466186));
        assert!(parse("1 2\n").is_err());
    }
}
