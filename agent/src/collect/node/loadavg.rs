//! `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.

use std::path::{Path, PathBuf};

use crate::collect::{CollectError, Collector, Emitter, Sources, sources::parse_error};

/// Reads `/proc/loadavg`.
#[derive(Debug)]
pub struct LoadavgCollector {
    path: PathBuf,
    sources: Sources,
}

impl LoadavgCollector {
    /// A collector under `procfs`.
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("loadavg"),
            sources: Sources::new("loadavg"),
        }
    }
}

impl Collector for LoadavgCollector {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        let loads = parse(&text).ok_or_else(|| {
            parse_error(
                &self.path,
                format!("expected three load averages, got {text:?}"),
            )
        })?;
        out.gauge("node_load1", "1m load average.", &[], loads[0]);
        out.gauge("node_load5", "5m load average.", &[], loads[1]);
        out.gauge("node_load15", "15m load average.", &[], loads[2]);
        Ok(())
    }
}

/// The three load averages, parsed as float64 like node_exporter (no f32 rounding).
fn parse(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    #[test]
    fn exact_values_and_errors() {
        assert_eq!(
            parse("0.52 0.58 0.59 2/1038 4711\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse("0.52 x"), None);
        let dir = testutil::root(&[("loadavg", "1.5 2.5 3.5 1/2 3\n")]);
        let mut e = Emitter::new(0);
        LoadavgCollector::new(dir.path()).collect(&mut e).unwrap();
        assert_eq!(testutil::value(&e.finish(), "node_load5", &[]), Some(2.5));
        let bad = testutil::root(&[("loadavg", "x\n")]);
        let err = LoadavgCollector::new(bad.path())
            .collect(&mut Emitter::new(0))
            .unwrap_err();
        assert!(err.to_string().contains("loadavg"), "{err}");
    }

    #[test]
    fn missing_file_emits_nothing_and_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Emitter::new(0);
        LoadavgCollector::new(dir.path()).collect(&mut e).unwrap();
        assert_eq!(e.sample_count(), 0);
    }
}
