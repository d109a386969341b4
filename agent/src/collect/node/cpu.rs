//! `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}` from the
//! `cpuN` lines of `/proc/stat`, in seconds (ticks / `USER_HZ`).
//!
//! Like node_exporter, a counter that goes backwards (the kernel's idle/iowait accounting
//! can) keeps its previous value, and a CPU whose idle time drops by 3 s or more is treated as
//! hot-plugged and starts afresh.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::int;
use crate::collect::{CollectError, Collector, Emitter, Sources, sources::parse_error};

const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];
/// Idle going back by this much (seconds) means the CPU was replugged.
const JUMP_BACK_SECONDS: f64 = 3.0;

/// Reads the per-CPU lines of `/proc/stat`.
#[derive(Debug)]
pub struct CpuCollector {
    path: PathBuf,
    sources: Sources,
    user_hz: f64,
    /// Last reported values per CPU: the 8 modes then guest, guest_nice.
    last: HashMap<String, [f64; 10]>,
}

impl CpuCollector {
    /// A collector under `procfs`.
    pub fn new(procfs: &Path) -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            path: procfs.join("stat"),
            sources: Sources::new("cpu"),
            user_hz: if hz > 0 { hz as f64 } else { 100.0 },
            last: HashMap::new(),
        }
    }
}

impl Collector for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        let cpus = parse(&text, self.user_hz).map_err(|p| parse_error(&self.path, p))?;
        for (cpu, new) in cpus {
            let last = self.last.entry(cpu.clone()).or_insert([0.0; 10]);
            if last[3] - new[3] >= JUMP_BACK_SECONDS {
                tracing::debug!(
                    cpu,
                    old = last[3],
                    new = new[3],
                    "CPU idle jumped backwards; resetting its counters"
                );
                *last = [0.0; 10];
            }
            for (kept, fresh) in last.iter_mut().zip(new) {
                if fresh >= *kept {
                    *kept = fresh;
                }
            }
            for (mode, value) in MODES.iter().zip(&last[..8]) {
                out.counter(
                    "node_cpu_seconds_total",
                    "Seconds the CPUs spent in each mode.",
                    &[("cpu", &cpu), ("mode", mode)],
                    *value,
                );
            }
            for (mode, value) in ["user", "nice"].iter().zip(&last[8..]) {
                out.counter(
                    "node_cpu_guest_seconds_total",
                    "Seconds the CPUs spent in guests (VMs) for each mode.",
                    &[("cpu", &cpu), ("mode", mode)],
                    *value,
                );
            }
        }
        Ok(())
    }
}

/// Per CPU (`"0"`, `"1"`, …): user nice system idle iowait irq softirq steal guest guest_nice,
/// in seconds. Missing trailing fields (old kernels) are zero.
fn parse(text: &str, user_hz: f64) -> Result<Vec<(String, [f64; 10])>, String> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(cpu) = parts
            .next()
            .and_then(|k| k.strip_prefix("cpu"))
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let mut values = [0.0; 10];
        for (slot, field) in values.iter_mut().zip(parts) {
            *slot = int(field, &format!("cpu{cpu}"))? as f64 / user_hz;
        }
        cpus.push((cpu.to_owned(), values));
    }
    if cpus.is_empty() {
        return Err("no cpuN lines".to_owned());
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    #[test]
    fn seconds_per_mode_and_guest() {
        let text = "cpu  9 9 9 9 9 9 9 9 9 9\ncpu0 224386 0 21170 224386 1020 0 44 939 12 3\ncpu1 1 2 3 4 5 6 7 8\nintr 1\n";
        let cpus = parse(text, 100.0).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].0, "0");
        assert_eq!(cpus[0].1[0], 2243.86);
        assert_eq!(cpus[0].1[8], 0.12);
        assert_eq!(cpus[1].1[9], 0.0);
        assert!(parse("cpu0 x\n", 100.0).unwrap_err().contains("cpu0"));
    }

    #[test]
    fn counters_never_go_backwards_unless_replugged() {
        let dir = testutil::root(&[("stat", "cpu0 100 0 0 1000 50 0 0 0 0 0\n")]);
        let mut c = CpuCollector::new(dir.path());
        c.user_hz = 100.0;
        c.collect(&mut Emitter::new(0)).unwrap();
        std::fs::write(dir.path().join("stat"), "cpu0 101 0 0 999 40 0 0 0 0 0\n").unwrap();
        let mut e = Emitter::new(0);
        c.collect(&mut e).unwrap();
        let p = e.finish();
        let v = |mode| {
            testutil::value(
                &p,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", mode)],
            )
        };
        assert_eq!(v("user"), Some(1.01));
        assert_eq!(v("idle"), Some(10.0), "idle kept");
        assert_eq!(v("iowait"), Some(0.5), "iowait kept");
        std::fs::write(dir.path().join("stat"), "cpu0 1 0 0 2 0 0 0 0 0 0\n").unwrap();
        let mut e = Emitter::new(0);
        c.collect(&mut e).unwrap();
        let p = e.finish();
        assert_eq!(
            testutil::value(
                &p,
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "idle")]
            ),
            Some(0.02),
            "a 10 s jump back resets"
        );
    }
}
