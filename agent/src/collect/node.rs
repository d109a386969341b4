//! Node metrics from procfs, with node_exporter's names, types and units.
//!
//! Today: load averages (`/proc/loadavg`), and from `/proc/stat` the boot time, context
//! switches, forks and running/blocked processes.

use std::path::PathBuf;

use super::{CollectError, Collector, Emitter};

/// Reads node-wide metrics from a procfs root (normally `/proc`).
#[derive(Debug)]
pub struct NodeCollector {
    proc_root: PathBuf,
}

impl NodeCollector {
    /// A collector reading from `proc_root`.
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
        }
    }

    fn read(&self, name: &str) -> Result<(String, String), CollectError> {
        let path = self.proc_root.join(name);
        let display = path.display().to_string();
        std::fs::read_to_string(&path)
            .map(|text| (text, display.clone()))
            .map_err(|source| CollectError::Read {
                path: display,
                source,
            })
    }
}

impl Collector for NodeCollector {
    fn name(&self) -> &'static str {
        "node"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let (loadavg, path) = self.read("loadavg")?;
        let loads = parse_loadavg(&loadavg).ok_or_else(|| CollectError::Parse {
            path,
            problem: format!("expected three load averages, got {loadavg:?}"),
        })?;
        out.gauge("node_load1", "1m load average.", &[], loads[0]);
        out.gauge("node_load5", "5m load average.", &[], loads[1]);
        out.gauge("node_load15", "15m load average.", &[], loads[2]);

        let (stat, path) = self.read("stat")?;
        let stat = parse_stat(&stat).map_err(|problem| CollectError::Parse { path, problem })?;
        out.gauge(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            &[],
            stat.boot_time as f64,
        );
        out.counter(
            "node_context_switches_total",
            "Total number of context switches.",
            &[],
            stat.context_switches as f64,
        );
        out.counter(
            "node_forks_total",
            "Total number of forks.",
            &[],
            stat.forks as f64,
        );
        out.gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
            &[],
            stat.procs_running as f64,
        );
        out.gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            &[],
            stat.procs_blocked as f64,
        );
        Ok(())
    }
}

/// The three load averages, parsed as float64 like node_exporter (no f32 rounding).
fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Stat {
    boot_time: u64,
    context_switches: u64,
    forks: u64,
    procs_running: u64,
    procs_blocked: u64,
}

fn parse_stat(text: &str) -> Result<Stat, String> {
    let mut stat = Stat::default();
    let mut seen = 0;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let key = parts.next().unwrap_or("");
        let slot = match key {
            "btime" => &mut stat.boot_time,
            "ctxt" => &mut stat.context_switches,
            "processes" => &mut stat.forks,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        let value = parts.next().unwrap_or("");
        *slot = value
            .parse()
            .map_err(|_| format!("line {key:?} has a non-integer value {value:?}"))?;
        seen += 1;
    }
    if seen < 5 {
        return Err(format!(
            "expected btime, ctxt, processes, procs_running, procs_blocked; found {seen} of them"
        ));
    }
    Ok(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_is_exact() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1038 4711\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52 x"), None);
    }

    #[test]
    fn stat_fields() {
        let text = "cpu  1 2 3 4\nctxt 123\nbtime 1700000000\nprocesses 99\nprocs_running 3\nprocs_blocked 1\n";
        assert_eq!(
            parse_stat(text).unwrap(),
            Stat {
                boot_time: 1_700_000_000,
                context_switches: 123,
                forks: 99,
                procs_running: 3,
                procs_blocked: 1
            }
        );
        assert!(parse_stat("ctxt nope\n").unwrap_err().contains("ctxt"));
        assert!(parse_stat("cpu 1\n").is_err());
    }

    #[test]
    fn collects_from_a_fake_proc_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "1.5 2.5 3.5 1/2 3\n").unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "ctxt 10\nbtime 20\nprocesses 30\nprocs_running 4\nprocs_blocked 5\n",
        )
        .unwrap();
        let mut emitter = Emitter::new(0);
        NodeCollector::new(dir.path())
            .collect(&mut emitter)
            .unwrap();
        let payload = emitter.finish();
        let find = |name: &str| {
            payload
                .series
                .iter()
                .find(|s| s.labels[0].value == name)
                .map(|s| s.samples[0].value)
        };
        assert_eq!(find("node_load5"), Some(2.5));
        assert_eq!(find("node_forks_total"), Some(30.0));
        assert_eq!(find("node_procs_blocked"), Some(5.0));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = NodeCollector::new(dir.path())
            .collect(&mut Emitter::new(0))
            .unwrap_err();
        assert!(err.to_string().contains("loadavg"), "{err}");
    }
}
