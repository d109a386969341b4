//! Pressure stall information from `/proc/pressure/{cpu,io,memory}`:
//! `node_pressure_<resource>_waiting_seconds_total` ("some" total) and
//! `node_pressure_<resource>_stalled_seconds_total` ("full" total; node_exporter 1.5 has no
//! CPU "full" line, newer versions and Sonde export it when the kernel provides it).
//! A kernel without PSI (or booted with `psi=0`) logs once and exports nothing.

use std::path::{Path, PathBuf};

use crate::collect::{CollectError, Collector, Emitter, Sources, sources::parse_error};

const RESOURCES: [(&str, &str, &str); 3] = [
    (
        "cpu",
        "Total time in seconds that processes have waited for CPU time",
        "Total time in seconds no process could make progress due to CPU congestion",
    ),
    (
        "io",
        "Total time in seconds that processes have waited due to IO congestion",
        "Total time in seconds no process could make progress due to IO congestion",
    ),
    (
        "memory",
        "Total time in seconds that processes have waited for memory",
        "Total time in seconds no process could make progress due to memory congestion",
    ),
];

/// Reads `/proc/pressure/*`.
#[derive(Debug)]
pub struct PressureCollector {
    dir: PathBuf,
    sources: Sources,
}

impl PressureCollector {
    /// A collector under `procfs`.
    pub fn new(procfs: &Path) -> Self {
        Self {
            dir: procfs.join("pressure"),
            sources: Sources::new("pressure"),
        }
    }
}

impl Collector for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        for (resource, some_help, full_help) in RESOURCES {
            let path = self.dir.join(resource);
            let Some(text) = self.sources.read(&path)? else {
                continue;
            };
            let totals = parse(&text).map_err(|p| parse_error(&path, p))?;
            if let Some(some) = totals.some {
                out.counter(
                    &format!("node_pressure_{resource}_waiting_seconds_total"),
                    some_help,
                    &[],
                    some,
                );
            }
            // The kernel prints a CPU "full" line of zeros at the system level; node_exporter
            // 1.5 ignores it, and so do we (it carries no information there).
            if let Some(full) = totals.full.filter(|_| resource != "cpu") {
                out.counter(
                    &format!("node_pressure_{resource}_stalled_seconds_total"),
                    full_help,
                    &[],
                    full,
                );
            }
        }
        Ok(())
    }
}

/// The `total=` values (µs) of the "some" and "full" lines, in seconds.
#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    /// Some tasks stalled.
    pub some: Option<f64>,
    /// All non-idle tasks stalled.
    pub full: Option<f64>,
}

/// Parses a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=123`).
pub fn parse(text: &str) -> Result<Totals, String> {
    let mut totals = Totals::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let total = parts
            .find_map(|p| p.strip_prefix("total="))
            .ok_or_else(|| format!("line {line:?} has no total="))?;
        let micros: u64 = total
            .parse()
            .map_err(|_| format!("line {line:?}: total {total:?} is not an integer"))?;
        let seconds = micros as f64 / 1e6;
        match kind {
            "some" => totals.some = Some(seconds),
            "full" => totals.full = Some(seconds),
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    #[test]
    fn totals_in_seconds() {
        let text = "some avg10=0.00 avg60=0.10 avg300=0.00 total=38503927\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=32342705\n";
        assert_eq!(
            parse(text).unwrap(),
            Totals {
                some: Some(38.503927),
                full: Some(32.342705)
            }
        );
        assert!(parse("some avg10=1\n").unwrap_err().contains("total"));
    }

    #[test]
    fn missing_resource_is_skipped() {
        let dir = testutil::root(&[(
            "pressure/io",
            "some avg10=0 avg60=0 avg300=0 total=2000000\nfull avg10=0 avg60=0 avg300=0 total=1000000\n",
        )]);
        let mut e = Emitter::new(0);
        PressureCollector::new(dir.path()).collect(&mut e).unwrap();
        let p = e.finish();
        assert_eq!(
            testutil::value(&p, "node_pressure_io_waiting_seconds_total", &[]),
            Some(2.0)
        );
        assert_eq!(
            testutil::value(&p, "node_pressure_io_stalled_seconds_total", &[]),
            Some(1.0)
        );
        assert_eq!(
            testutil::count(&p, "node_pressure_cpu_waiting_seconds_total"),
            0
        );
    }
}
