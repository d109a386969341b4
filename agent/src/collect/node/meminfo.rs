//! `node_memory_<Field>[_bytes]` for every line of `/proc/meminfo`, named as node_exporter
//! does: `(` becomes `_`, `)` is dropped, and kB fields are converted to bytes with `_bytes`
//! appended (fields without a unit, like `HugePages_Total`, keep their name and value).

use std::path::{Path, PathBuf};

use crate::collect::{CollectError, Collector, Emitter, Sources, sources::parse_error};

/// Reads `/proc/meminfo`.
#[derive(Debug)]
pub struct MeminfoCollector {
    path: PathBuf,
    sources: Sources,
}

impl MeminfoCollector {
    /// A collector under `procfs`.
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("meminfo"),
            sources: Sources::new("meminfo"),
        }
    }
}

impl Collector for MeminfoCollector {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        for (field, value) in parse(&text).map_err(|p| parse_error(&self.path, p))? {
            let name = format!("node_memory_{field}");
            let help = format!("Memory information field {field}.");
            out.gauge(&name, &help, &[], value);
        }
        Ok(())
    }
}

/// (metric suffix, value) per line.
fn parse(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut fields = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (key, value) = match parts.as_slice() {
            [key, value] => (key.trim_end_matches(':').to_owned(), *value),
            [key, value, "kB"] => (format!("{}_bytes", key.trim_end_matches(':')), *value),
            _ => return Err(format!("unexpected line {line:?}")),
        };
        let mut number: f64 = value
            .parse()
            .map_err(|_| format!("line {line:?}: {value:?} is not a number"))?;
        if parts.len() == 3 {
            number *= 1024.0;
        }
        fields.push((key.replace('(', "_").replace(')', ""), number));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_like_node_exporter() {
        let text = "MemTotal:       24668984 kB\nActive(anon):     123 kB\nHugePages_Total:       2\nHugepagesize:       2048 kB\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                ("MemTotal_bytes".to_owned(), 24668984.0 * 1024.0),
                ("Active_anon_bytes".to_owned(), 123.0 * 1024.0),
                ("HugePages_Total".to_owned(), 2.0),
                ("Hugepagesize_bytes".to_owned(), 2048.0 * 1024.0),
            ]
        );
        assert!(parse("MemTotal: x kB\n").unwrap_err().contains("MemTotal"));
        assert!(parse("a b c d\n").is_err());
    }
}
