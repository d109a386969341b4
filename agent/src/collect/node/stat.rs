//! From `/proc/stat`: `node_boot_time_seconds`, `node_context_switches_total`,
//! `node_forks_total`, `node_intr_total`, `node_procs_running`, `node_procs_blocked`
//! (node_exporter's `stat` collector; the per-CPU lines belong to [`super::cpu`]).

use std::path::{Path, PathBuf};

use super::int;
use crate::collect::{CollectError, Collector, Emitter, Sources, sources::parse_error};

/// Reads `/proc/stat`.
#[derive(Debug)]
pub struct StatCollector {
    path: PathBuf,
    sources: Sources,
}

impl StatCollector {
    /// A collector under `procfs`.
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("stat"),
            sources: Sources::new("stat"),
        }
    }
}

impl Collector for StatCollector {
    fn name(&self) -> &'static str {
        "stat"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        let stat = parse(&text).map_err(|problem| parse_error(&self.path, problem))?;
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
        out.counter(
            "node_intr_total",
            "Total number of interrupts serviced.",
            &[],
            stat.interrupts as f64,
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

#[derive(Debug, Default, PartialEq, Eq)]
struct Stat {
    boot_time: u64,
    context_switches: u64,
    forks: u64,
    interrupts: u64,
    procs_running: u64,
    procs_blocked: u64,
}

fn parse(text: &str) -> Result<Stat, String> {
    let mut stat = Stat::default();
    let mut seen = 0;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let key = parts.next().unwrap_or("");
        let slot = match key {
            "btime" => &mut stat.boot_time,
            "ctxt" => &mut stat.context_switches,
            "processes" => &mut stat.forks,
            "intr" => &mut stat.interrupts,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        *slot = int(parts.next().unwrap_or(""), &format!("line {key:?}"))?;
        seen += 1;
    }
    if seen < 6 {
        return Err(format!(
            "expected btime, ctxt, processes, intr, procs_running, procs_blocked; found {seen} of them"
        ));
    }
    Ok(stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    const STAT: &str = "cpu  1 2 3 4\nintr 555 1 2 3\nctxt 123\nbtime 1700000000\nprocesses 99\nprocs_running 3\nprocs_blocked 1\n";

    #[test]
    fn fields() {
        assert_eq!(
            parse(STAT).unwrap(),
            Stat {
                boot_time: 1_700_000_000,
                context_switches: 123,
                forks: 99,
                interrupts: 555,
                procs_running: 3,
                procs_blocked: 1
            }
        );
        assert!(parse("ctxt nope\n").unwrap_err().contains("ctxt"));
        assert!(parse("cpu 1\n").is_err());
        let dir = testutil::root(&[("stat", STAT)]);
        let mut e = Emitter::new(0);
        StatCollector::new(dir.path()).collect(&mut e).unwrap();
        let p = e.finish();
        assert_eq!(testutil::value(&p, "node_forks_total", &[]), Some(99.0));
        assert_eq!(testutil::value(&p, "node_intr_total", &[]), Some(555.0));
    }
}
