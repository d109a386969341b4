//! `node_vmstat_<field>` (untyped) from `/proc/vmstat`, limited to the configured fields
//! (node_exporter's default: `oom_kill`, `pgpg*`, `pswp*`, `pg*fault`).

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::collect::{
    CollectError, Collector, Emitter, Sources, config::filter, sources::parse_error,
};

/// Reads `/proc/vmstat`.
#[derive(Debug)]
pub struct VmstatCollector {
    path: PathBuf,
    sources: Sources,
    fields: Option<Regex>,
}

impl VmstatCollector {
    /// A collector under `procfs` exporting fields that match `fields`.
    pub fn new(procfs: &Path, fields: &str) -> Self {
        Self {
            path: procfs.join("vmstat"),
            sources: Sources::new("vmstat"),
            fields: filter(fields),
        }
    }
}

impl Collector for VmstatCollector {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(number)) = (parts.next(), parts.next()) else {
                return Err(parse_error(&self.path, format!("unexpected line {line:?}")));
            };
            if self.fields.as_ref().is_some_and(|r| !r.is_match(key)) {
                continue;
            }
            let value: f64 = number.parse().map_err(|_| {
                parse_error(&self.path, format!("{key}: {number:?} is not a number"))
            })?;
            out.untyped(
                &format!("node_vmstat_{key}"),
                &format!("/proc/vmstat information field {key}."),
                &[],
                value,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{config::DEFAULT_VMSTAT_FIELDS, node::testutil};

    #[test]
    fn default_fields() {
        let dir = testutil::root(&[(
            "vmstat",
            "nr_free_pages 5\npgfault 10\npgmajfault 2\noom_kill 1\npgpgin 7\n",
        )]);
        let mut e = Emitter::new(0);
        VmstatCollector::new(dir.path(), DEFAULT_VMSTAT_FIELDS)
            .collect(&mut e)
            .unwrap();
        let p = e.finish();
        assert_eq!(
            testutil::value(&p, "node_vmstat_pgmajfault", &[]),
            Some(2.0)
        );
        assert_eq!(testutil::value(&p, "node_vmstat_oom_kill", &[]), Some(1.0));
        assert_eq!(testutil::value(&p, "node_vmstat_nr_free_pages", &[]), None);
    }
}
