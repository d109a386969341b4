//! Reads one cgroup's statistics from its v1 controller directories and/or its v2 directory
//! and emits them with cAdvisor's names and units. v1 is preferred for a controller mounted
//! there (on hybrid hosts v2 has no controllers); v2 supplies CPU usage when no v1 cpuacct
//! exists and, always, pressure stall information.
//!
//! A file that is absent is skipped (the cgroup may have just gone away, or the controller
//! is not enabled for it): its metrics are simply not emitted. Must not: log per file.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::collect::{Emitter, node::pressure};

/// Where one cgroup's files are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirs {
    /// The cgroup in the v2 hierarchy.
    pub v2: Option<PathBuf>,
    /// In the v1 `cpu` hierarchy.
    pub cpu: Option<PathBuf>,
    /// In the v1 `cpuacct` hierarchy.
    pub cpuacct: Option<PathBuf>,
    /// In the v1 `memory` hierarchy.
    pub memory: Option<PathBuf>,
    /// In the v1 `blkio` hierarchy.
    pub blkio: Option<PathBuf>,
    /// In the v1 `pids` hierarchy.
    pub pids: Option<PathBuf>,
}

/// Resolves `major:minor` to `/dev/<name>` through sysfs, cached.
#[derive(Debug)]
pub struct DeviceNames {
    sysfs: PathBuf,
    cache: HashMap<String, String>,
}

impl DeviceNames {
    /// A resolver under `sysfs`.
    pub fn new(sysfs: &Path) -> Self {
        Self {
            sysfs: sysfs.to_owned(),
            cache: HashMap::new(),
        }
    }

    /// `/dev/<name>` for `major:minor`, or `major:minor` itself when sysfs does not say.
    pub fn name(&mut self, dev: &str) -> String {
        if let Some(name) = self.cache.get(dev) {
            return name.clone();
        }
        let uevent = self.sysfs.join("dev/block").join(dev).join("uevent");
        let name = std::fs::read_to_string(uevent)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
            })
            .unwrap_or_else(|| dev.to_owned());
        self.cache.insert(dev.to_owned(), name.clone());
        name
    }
}

fn read(dir: &Option<PathBuf>, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.as_ref()?.join(file)).ok()
}

fn read_u64(dir: &Option<PathBuf>, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.stat, cpuacct.stat, memory.events, oom_control).
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// Ticks between two reads of a cgroup's limits (`container_spec_*`): they change only when
/// an operator updates a container, and re-reading four files per container per tick is a
/// quarter of the collection cost.
pub const SPEC_REFRESH_TICKS: u32 = 20;

/// A cgroup's limits, cached between reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    cpu_period: Option<u64>,
    cpu_quota: Option<i64>,
    cpu_shares: Option<u64>,
    memory_limit: Option<u64>,
    /// Ticks since read.
    age: u32,
}

impl Spec {
    fn read(dirs: &Dirs) -> Self {
        let (cpu_quota, cpu_period) = if dirs.cpu.is_some() {
            (
                read(&dirs.cpu, "cpu.cfs_quota_us").and_then(|q| q.trim().parse::<i64>().ok()),
                read_u64(&dirs.cpu, "cpu.cfs_period_us"),
            )
        } else {
            match read(&dirs.v2, "cpu.max") {
                Some(text) => {
                    let mut parts = text.split_whitespace();
                    let quota = parts.next().and_then(|q| q.parse::<i64>().ok());
                    (
                        quota.or(Some(-1)),
                        parts.next().and_then(|p| p.parse().ok()),
                    )
                }
                None => (None, None),
            }
        };
        let cpu_shares = read_u64(&dirs.cpu, "cpu.shares").or_else(|| {
            // cgroup v2 weight back to v1 shares, as cAdvisor (runc's inverse formula).
            read_u64(&dirs.v2, "cpu.weight").map(|w| 2 + (w.saturating_sub(1) * 262_142) / 9_999)
        });
        let memory_limit = if dirs.memory.is_some() {
            // v1 reports "unlimited" as a page-rounded i64::MAX: 0, like "max" in v2.
            read_u64(&dirs.memory, "memory.limit_in_bytes")
                .map(|l| if l >= (1 << 62) { 0 } else { l })
        } else {
            read(&dirs.v2, "memory.max").map(|m| m.trim().parse().unwrap_or(0))
        };
        Self {
            cpu_period,
            cpu_quota,
            cpu_shares,
            memory_limit,
            age: 0,
        }
    }
}

/// Emits every statistic available for one cgroup; `spec` caches its limits.
pub fn emit(
    out: &mut Emitter,
    labels: &[(&str, &str)],
    dirs: &Dirs,
    user_hz: f64,
    devices: &mut DeviceNames,
    spec: &mut Option<Spec>,
) {
    let current = match spec {
        Some(cached) if cached.age < SPEC_REFRESH_TICKS => {
            cached.age += 1;
            cached
        }
        _ => spec.insert(Spec::read(dirs)),
    };
    emit_spec(out, labels, current);
    cpu(out, labels, dirs, user_hz);
    memory(out, labels, dirs);
    io(out, labels, dirs, devices);
    pressure_stats(out, labels, dirs);
    if let Some(pids) =
        read_u64(&dirs.pids, "pids.current").or_else(|| read_u64(&dirs.v2, "pids.current"))
    {
        out.gauge(
            "container_processes",
            "Number of processes running inside the container.",
            labels,
            pids as f64,
        );
    }
}

fn with<'a>(
    labels: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all = labels.to_vec();
    all.extend_from_slice(extra);
    all
}

fn cpu(out: &mut Emitter, labels: &[(&str, &str)], dirs: &Dirs, user_hz: f64) {
    // With both v1 cpu controllers, v2's cpu.stat has nothing more to say.
    let v2_stat = if dirs.cpu.is_some() && dirs.cpuacct.is_some() {
        None
    } else {
        read(&dirs.v2, "cpu.stat")
    };
    let v2 = v2_stat.as_deref().map(flat_keyed).unwrap_or_default();
    let usage = read_u64(&dirs.cpuacct, "cpuacct.usage")
        .map(|ns| ns as f64 / 1e9)
        .or_else(|| v2.get("usage_usec").map(|us| *us as f64 / 1e6));
    if let Some(usage) = usage {
        out.counter(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            &with(labels, &[("cpu", "total")]),
            usage,
        );
    }
    let v1_stat = read(&dirs.cpuacct, "cpuacct.stat");
    let (user, system) = match v1_stat.as_deref().map(flat_keyed) {
        Some(s) => (
            s.get("user").map(|t| *t as f64 / user_hz),
            s.get("system").map(|t| *t as f64 / user_hz),
        ),
        None => (
            v2.get("user_usec").map(|us| *us as f64 / 1e6),
            v2.get("system_usec").map(|us| *us as f64 / 1e6),
        ),
    };
    if let Some(user) = user {
        out.counter(
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
            labels,
            user,
        );
    }
    if let Some(system) = system {
        out.counter(
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
            labels,
            system,
        );
    }

    // CFS throttling: v1 `cpu` controller, else v2 with the cpu controller enabled.
    let v1_cfs = read(&dirs.cpu, "cpu.stat");
    let (periods, throttled, throttled_seconds) = match v1_cfs.as_deref().map(flat_keyed) {
        Some(s) => (
            s.get("nr_periods").copied(),
            s.get("nr_throttled").copied(),
            s.get("throttled_time").map(|ns| *ns as f64 / 1e9),
        ),
        None => (
            v2.get("nr_periods").copied(),
            v2.get("nr_throttled").copied(),
            v2.get("throttled_usec").map(|us| *us as f64 / 1e6),
        ),
    };
    // Like cAdvisor: only containers that have run under a CFS quota have these.
    if let (Some(periods), Some(throttled), Some(seconds)) = (periods, throttled, throttled_seconds)
        && periods > 0
    {
        out.counter(
            "container_cpu_cfs_periods_total",
            "Number of elapsed enforcement period intervals.",
            labels,
            periods as f64,
        );
        out.counter(
            "container_cpu_cfs_throttled_periods_total",
            "Number of throttled period intervals.",
            labels,
            throttled as f64,
        );
        out.counter(
            "container_cpu_cfs_throttled_seconds_total",
            "Total time duration the container has been throttled.",
            labels,
            seconds,
        );
    }
}

fn emit_spec(out: &mut Emitter, labels: &[(&str, &str)], spec: &Spec) {
    if let Some(period) = spec.cpu_period {
        out.gauge(
            "container_spec_cpu_period",
            "CPU period of the container.",
            labels,
            period as f64,
        );
        if let Some(quota) = spec.cpu_quota.filter(|q| *q > 0) {
            out.gauge(
                "container_spec_cpu_quota",
                "CPU quota of the container.",
                labels,
                quota as f64,
            );
        }
    }
    if let Some(shares) = spec.cpu_shares {
        out.gauge(
            "container_spec_cpu_shares",
            "CPU share of the container.",
            labels,
            shares as f64,
        );
    }
    if let Some(limit) = spec.memory_limit {
        out.gauge(
            "container_spec_memory_limit_bytes",
            "Memory limit for the container.",
            labels,
            limit as f64,
        );
    }
}

fn memory(out: &mut Emitter, labels: &[(&str, &str)], dirs: &Dirs) {
    struct Mem {
        usage: u64,
        max_usage: Option<u64>,
        failcnt: Option<u64>,
        rss: Option<u64>,
        cache: Option<u64>,
        mapped: Option<u64>,
        swap: Option<u64>,
        inactive_file: u64,
        faults: [(&'static str, &'static str, Option<u64>); 4],
        oom_kills: Option<u64>,
    }
    let mem = if dirs.memory.is_some() {
        let Some(usage) = read_u64(&dirs.memory, "memory.usage_in_bytes") else {
            return;
        };
        let stat_text = read(&dirs.memory, "memory.stat").unwrap_or_default();
        let stat = flat_keyed(&stat_text);
        let oom = read(&dirs.memory, "memory.oom_control").unwrap_or_default();
        Mem {
            usage,
            max_usage: read_u64(&dirs.memory, "memory.max_usage_in_bytes"),
            failcnt: read_u64(&dirs.memory, "memory.failcnt"),
            rss: stat.get("total_rss").copied(),
            cache: stat.get("total_cache").copied(),
            mapped: stat.get("total_mapped_file").copied(),
            swap: stat.get("total_swap").copied(),
            inactive_file: stat.get("total_inactive_file").copied().unwrap_or(0),
            faults: [
                ("pgfault", "container", stat.get("pgfault").copied()),
                ("pgmajfault", "container", stat.get("pgmajfault").copied()),
                ("pgfault", "hierarchy", stat.get("total_pgfault").copied()),
                (
                    "pgmajfault",
                    "hierarchy",
                    stat.get("total_pgmajfault").copied(),
                ),
            ],
            oom_kills: flat_keyed(&oom).get("oom_kill").copied(),
        }
    } else {
        let Some(usage) = read_u64(&dirs.v2, "memory.current") else {
            return;
        };
        let stat_text = read(&dirs.v2, "memory.stat").unwrap_or_default();
        let stat = flat_keyed(&stat_text);
        let events = read(&dirs.v2, "memory.events").unwrap_or_default();
        Mem {
            usage,
            max_usage: read_u64(&dirs.v2, "memory.peak"),
            failcnt: None,
            rss: stat.get("anon").copied(),
            cache: stat.get("file").copied(),
            mapped: stat.get("file_mapped").copied(),
            swap: read_u64(&dirs.v2, "memory.swap.current"),
            inactive_file: stat.get("inactive_file").copied().unwrap_or(0),
            faults: [
                ("pgfault", "container", stat.get("pgfault").copied()),
                ("pgmajfault", "container", stat.get("pgmajfault").copied()),
                ("pgfault", "hierarchy", stat.get("pgfault").copied()),
                ("pgmajfault", "hierarchy", stat.get("pgmajfault").copied()),
            ],
            oom_kills: flat_keyed(&events).get("oom_kill").copied(),
        }
    };
    out.gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        labels,
        mem.usage as f64,
    );
    out.gauge(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        labels,
        mem.usage.saturating_sub(mem.inactive_file) as f64,
    );
    for (name, help, value) in [
        (
            "container_memory_max_usage_bytes",
            "Maximum memory usage recorded in bytes",
            mem.max_usage,
        ),
        ("container_memory_rss", "Size of RSS in bytes.", mem.rss),
        (
            "container_memory_cache",
            "Number of bytes of page cache memory.",
            mem.cache,
        ),
        (
            "container_memory_mapped_file",
            "Size of memory mapped files in bytes.",
            mem.mapped,
        ),
        (
            "container_memory_swap",
            "Container swap usage in bytes.",
            mem.swap,
        ),
        (
            "container_memory_failcnt",
            "Number of memory usage hits limits",
            mem.failcnt,
        ),
    ] {
        if let Some(value) = value {
            out.gauge(name, help, labels, value as f64);
        }
    }
    for (failure_type, scope, value) in mem.faults {
        if let Some(value) = value {
            out.counter(
                "container_memory_failures_total",
                "Cumulative count of memory allocation failures.",
                &with(labels, &[("failure_type", failure_type), ("scope", scope)]),
                value as f64,
            );
        }
    }
    if let Some(kills) = mem.oom_kills {
        out.counter(
            "container_oom_events_total",
            "Count of out of memory events observed for the container",
            labels,
            kills as f64,
        );
    }
}

fn io(out: &mut Emitter, labels: &[(&str, &str)], dirs: &Dirs, devices: &mut DeviceNames) {
    // device → [read bytes, written bytes, reads, writes]
    let mut per_device: Vec<(String, [u64; 4])> = Vec::new();
    fn slot(per_device: &mut Vec<(String, [u64; 4])>, dev: &str) -> usize {
        if let Some(i) = per_device.iter().position(|(d, _)| d == dev) {
            return i;
        }
        per_device.push((dev.to_owned(), [0; 4]));
        per_device.len() - 1
    }
    if dirs.blkio.is_some() {
        for (file, offset) in [
            ("blkio.throttle.io_service_bytes_recursive", 0),
            ("blkio.throttle.io_serviced_recursive", 2),
        ] {
            for line in read(&dirs.blkio, file).unwrap_or_default().lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let [dev, op, value] = parts.as_slice() else {
                    continue;
                };
                let Ok(value) = value.parse::<u64>() else {
                    continue;
                };
                let index = match *op {
                    "Read" => offset,
                    "Write" => offset + 1,
                    _ => continue,
                };
                let i = slot(&mut per_device, dev);
                per_device[i].1[index] += value;
            }
        }
    } else {
        for line in read(&dirs.v2, "io.stat").unwrap_or_default().lines() {
            let mut parts = line.split_whitespace();
            let Some(dev) = parts.next() else { continue };
            let i = slot(&mut per_device, dev);
            for kv in parts {
                let Some((key, value)) = kv.split_once('=') else {
                    continue;
                };
                let index = match key {
                    "rbytes" => 0,
                    "wbytes" => 1,
                    "rios" => 2,
                    "wios" => 3,
                    _ => continue,
                };
                per_device[i].1[index] = value.parse().unwrap_or(0);
            }
        }
    }
    for (dev, [rbytes, wbytes, rios, wios]) in per_device {
        let name = devices.name(&dev);
        let labels = with(labels, &[("device", &name)]);
        for (metric, help, value) in [
            (
                "container_fs_reads_bytes_total",
                "Cumulative count of bytes read",
                rbytes,
            ),
            (
                "container_fs_writes_bytes_total",
                "Cumulative count of bytes written",
                wbytes,
            ),
            (
                "container_fs_reads_total",
                "Cumulative count of reads completed",
                rios,
            ),
            (
                "container_fs_writes_total",
                "Cumulative count of writes completed",
                wios,
            ),
        ] {
            out.counter(metric, help, &labels, value as f64);
        }
    }
}

fn pressure_stats(out: &mut Emitter, labels: &[(&str, &str)], dirs: &Dirs) {
    for resource in ["cpu", "memory", "io"] {
        let Some(text) = read(&dirs.v2, &format!("{resource}.pressure")) else {
            continue;
        };
        let Ok(totals) = pressure::parse(&text) else {
            continue;
        };
        if let Some(some) = totals.some {
            out.counter(
                &format!("container_pressure_{resource}_waiting_seconds_total"),
                &format!("Total time duration tasks in the container have waited due to {resource} congestion."),
                labels,
                some,
            );
        }
        if let Some(full) = totals.full {
            out.counter(
                &format!("container_pressure_{resource}_stalled_seconds_total"),
                &format!("Total time duration no tasks in the container could make progress due to {resource} congestion."),
                labels,
                full,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    #[test]
    fn v1_memory_cpu_and_blkio() {
        let dir = testutil::root(&[
            ("cpuacct/cpuacct.usage", "2500000000\n"),
            ("cpuacct/cpuacct.stat", "user 150\nsystem 50\n"),
            (
                "cpu/cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000000\n",
            ),
            ("cpu/cpu.cfs_quota_us", "50000\n"),
            ("cpu/cpu.cfs_period_us", "100000\n"),
            ("cpu/cpu.shares", "1024\n"),
            ("memory/memory.usage_in_bytes", "1000000\n"),
            ("memory/memory.max_usage_in_bytes", "2000000\n"),
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/memory.failcnt", "0\n"),
            (
                "memory/memory.stat",
                "cache 1\nrss 2\npgfault 9\ntotal_cache 300000\ntotal_rss 600000\ntotal_inactive_file 250000\ntotal_pgfault 11\n",
            ),
            (
                "memory/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            (
                "blkio/blkio.throttle.io_service_bytes_recursive",
                "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\nTotal 12288\n",
            ),
            (
                "blkio/blkio.throttle.io_serviced_recursive",
                "254:0 Read 1\n254:0 Write 2\nTotal 3\n",
            ),
            (
                "v2/cpu.pressure",
                "some avg10=0 avg60=0 avg300=0 total=1500000\nfull avg10=0 avg60=0 avg300=0 total=500000\n",
            ),
            (
                "sys/dev/block/254:0/uevent",
                "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
            ),
        ]);
        let p = dir.path();
        let dirs = Dirs {
            v2: Some(p.join("v2")),
            cpu: Some(p.join("cpu")),
            cpuacct: Some(p.join("cpuacct")),
            memory: Some(p.join("memory")),
            blkio: Some(p.join("blkio")),
            pids: None,
        };
        let mut e = Emitter::new(0);
        let mut spec = None;
        let mut devices = DeviceNames::new(&p.join("sys"));
        emit(
            &mut e,
            &[("id", "/x")],
            &dirs,
            100.0,
            &mut devices,
            &mut spec,
        );
        assert_eq!(spec.as_ref().map(|s| s.cpu_quota), Some(Some(50000)));
        let pl = e.finish();
        // Limits are cached: a changed file shows after SPEC_REFRESH_TICKS ticks.
        std::fs::write(p.join("cpu/cpu.cfs_quota_us"), "20000\n").unwrap();
        for _ in 0..SPEC_REFRESH_TICKS {
            emit(
                &mut Emitter::new(0),
                &[],
                &dirs,
                100.0,
                &mut devices,
                &mut spec,
            );
        }
        assert_eq!(spec.as_ref().map(|s| s.cpu_quota), Some(Some(50000)));
        emit(
            &mut Emitter::new(0),
            &[],
            &dirs,
            100.0,
            &mut devices,
            &mut spec,
        );
        assert_eq!(spec.as_ref().map(|s| s.cpu_quota), Some(Some(20000)));
        let v = |n, l: &[(&str, &str)]| testutil::value(&pl, n, l);
        assert_eq!(
            v("container_cpu_usage_seconds_total", &[("cpu", "total")]),
            Some(2.5)
        );
        assert_eq!(v("container_cpu_user_seconds_total", &[]), Some(1.5));
        assert_eq!(
            v("container_cpu_cfs_throttled_seconds_total", &[]),
            Some(2.0)
        );
        assert_eq!(v("container_spec_cpu_quota", &[]), Some(50000.0));
        assert_eq!(v("container_memory_working_set_bytes", &[]), Some(750000.0));
        assert_eq!(v("container_memory_rss", &[]), Some(600000.0));
        assert_eq!(v("container_memory_cache", &[]), Some(300000.0));
        assert_eq!(v("container_spec_memory_limit_bytes", &[]), Some(0.0));
        assert_eq!(v("container_oom_events_total", &[]), Some(2.0));
        assert_eq!(
            v(
                "container_memory_failures_total",
                &[("failure_type", "pgfault"), ("scope", "hierarchy")]
            ),
            Some(11.0)
        );
        assert_eq!(
            v("container_fs_reads_bytes_total", &[("device", "/dev/vda")]),
            Some(4096.0)
        );
        assert_eq!(
            v("container_fs_writes_total", &[("device", "/dev/vda")]),
            Some(2.0)
        );
        assert_eq!(
            v("container_pressure_cpu_stalled_seconds_total", &[]),
            Some(0.5)
        );
    }

    #[test]
    fn v2_only_without_controllers_has_cpu_and_pressure_but_no_memory() {
        let dir = testutil::root(&[
            (
                "cpu.stat",
                "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
            ),
            (
                "memory.pressure",
                "some avg10=0 avg60=0 avg300=0 total=10\nfull avg10=0 avg60=0 avg300=0 total=5\n",
            ),
        ]);
        let dirs = Dirs {
            v2: Some(dir.path().to_owned()),
            ..Dirs::default()
        };
        let mut e = Emitter::new(0);
        emit(
            &mut e,
            &[("id", "/x")],
            &dirs,
            100.0,
            &mut DeviceNames::new(dir.path()),
            &mut None,
        );
        let pl = e.finish();
        assert_eq!(
            testutil::value(&pl, "container_cpu_usage_seconds_total", &[]),
            Some(3.0)
        );
        assert_eq!(
            testutil::value(&pl, "container_cpu_system_seconds_total", &[]),
            Some(1.0)
        );
        assert_eq!(testutil::count(&pl, "container_memory_usage_bytes"), 0);
        assert_eq!(testutil::count(&pl, "container_cpu_cfs_periods_total"), 0);
        assert_eq!(
            testutil::value(&pl, "container_pressure_memory_waiting_seconds_total", &[]),
            Some(0.00001)
        );
    }
}
