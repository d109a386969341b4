//! Generates realistic node_exporter-like data: per host the usual families (CPU, memory,
//! filesystems, network, disks, load, netstat/vmstat, hwmon, scrape durations, Go runtime)
//! plus an HTTP latency histogram, scraped every interval. Counters grow by noisy
//! increments at the precision the kernel reports (CPU seconds in 1/100 s, disk times in
//! ms, bytes in whole units); gauges random-walk; constants stay constant; durations and
//! sums are full-precision floats. Deterministic for a given seed.

use std::io::Write;

/// xorshift64*: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal (sum of uniforms), mean 0, sd 1.
    pub fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.f()).sum::<f64>() * 3f64.sqrt() - 2.0 * 3f64.sqrt()
    }
}

/// How a series evolves.
#[derive(Clone, Copy)]
enum Kind {
    /// Never changes.
    Const,
    /// Counter: increment per scrape ~ max(0, mean + sd·N(0,1)), rounded to `quantum`.
    Counter { mean: f64, sd: f64, quantum: f64 },
    /// Gauge random walk in multiples of `quantum`, kept within [lo, hi].
    Walk {
        sd: f64,
        quantum: f64,
        lo: f64,
        hi: f64,
    },
    /// Gauge of independent full-precision floats around `mean`.
    Noise { mean: f64, sd: f64 },
    /// Wall-clock seconds with ns precision (node_time_seconds).
    Clock,
}

struct Series {
    text: String,
    kind: Kind,
    value: f64,
}

fn q(v: f64, quantum: f64) -> f64 {
    if quantum >= 1.0 {
        (v / quantum).round() * quantum
    } else {
        // Round to the decimal digits of the quantum so values print as short decimals.
        let digits = (-quantum.log10()).round() as i32;
        let p = 10f64.powi(digits);
        (v * p).round() / p
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

fn host_series(host: usize, rng: &mut Rng) -> Vec<Series> {
    let instance = format!("host-{host:02}:9100");
    let base = [("instance", instance.as_str()), ("job", "node")];
    let mut out = Vec::new();
    let mut add = |name: &str, extra: &[(&str, &str)], kind: Kind, value: f64| {
        let mut pairs: Vec<(&str, &str)> = base.to_vec();
        pairs.extend_from_slice(extra);
        pairs.sort();
        out.push(Series {
            text: format!("{name}{}", labels(&pairs)),
            kind,
            value,
        });
    };
    let busy = 0.2 + rng.f() * 0.6;
    let cpus = 8;
    for cpu in 0..cpus {
        let c = cpu.to_string();
        for (mode, share, sd) in [
            ("idle", 15.0 * (1.0 - busy), 0.8),
            ("user", 15.0 * busy * 0.7, 0.6),
            ("system", 15.0 * busy * 0.25, 0.2),
            ("iowait", 0.05, 0.05),
            ("irq", 0.0, 0.0),
            ("nice", 0.01, 0.01),
            ("softirq", 0.03, 0.02),
            ("steal", 0.0, 0.0),
        ] {
            let kind = if sd == 0.0 {
                Kind::Const
            } else {
                Kind::Counter {
                    mean: share,
                    sd,
                    quantum: 0.01,
                }
            };
            add(
                "node_cpu_seconds_total",
                &[("cpu", &c), ("mode", mode)],
                kind,
                q(rng.f() * 1e6, 0.01),
            );
        }
    }
    let total = 64.0 * 1024.0 * 1024.0 * 1024.0;
    for (name, walk) in [
        ("MemTotal", false),
        ("MemFree", true),
        ("MemAvailable", true),
        ("Buffers", true),
        ("Cached", true),
        ("SwapCached", false),
        ("Active", true),
        ("Inactive", true),
        ("Active_anon", true),
        ("Inactive_anon", true),
        ("Active_file", true),
        ("Inactive_file", true),
        ("Unevictable", false),
        ("Mlocked", false),
        ("SwapTotal", false),
        ("SwapFree", false),
        ("Dirty", true),
        ("Writeback", true),
        ("AnonPages", true),
        ("Mapped", true),
        ("Shmem", true),
        ("KReclaimable", true),
        ("Slab", true),
        ("SReclaimable", true),
        ("SUnreclaim", true),
        ("KernelStack", true),
        ("PageTables", true),
        ("NFS_Unstable", false),
        ("Bounce", false),
        ("WritebackTmp", false),
        ("CommitLimit", false),
        ("Committed_AS", true),
        ("VmallocTotal", false),
        ("VmallocUsed", true),
        ("VmallocChunk", false),
        ("Percpu", false),
        ("HardwareCorrupted", false),
        ("AnonHugePages", true),
        ("HugePages_Total", false),
        ("HugePages_Free", false),
        ("Hugepagesize", false),
        ("DirectMap4k", false),
        ("DirectMap2M", false),
        ("DirectMap1G", false),
    ] {
        let v = q(rng.f() * total, 4096.0);
        let kind = if walk {
            Kind::Walk {
                sd: 4096.0 * 40.0,
                quantum: 4096.0,
                lo: 0.0,
                hi: total,
            }
        } else {
            Kind::Const
        };
        add(&format!("node_memory_{name}_bytes"), &[], kind, v);
    }
    for (dev, mount, fs) in [
        ("/dev/sda1", "/", "ext4"),
        ("/dev/sda2", "/boot", "ext4"),
        ("/dev/sdb1", "/var", "xfs"),
        ("/dev/sdc1", "/data", "xfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("tmpfs", "/dev/shm", "tmpfs"),
    ] {
        let l = [("device", dev), ("fstype", fs), ("mountpoint", mount)];
        let size = q(rng.f() * 2e12 + 1e9, 4096.0);
        let avail = q(size * (0.2 + rng.f() * 0.7), 4096.0);
        let slow = Kind::Walk {
            sd: 4096.0 * 8.0,
            quantum: 4096.0,
            lo: 0.0,
            hi: size,
        };
        add("node_filesystem_size_bytes", &l, Kind::Const, size);
        add("node_filesystem_avail_bytes", &l, slow, avail);
        add(
            "node_filesystem_free_bytes",
            &l,
            slow,
            q(avail * 1.05, 4096.0),
        );
        add(
            "node_filesystem_files",
            &l,
            Kind::Const,
            q(size / 16384.0, 1.0),
        );
        add(
            "node_filesystem_files_free",
            &l,
            Kind::Walk {
                sd: 3.0,
                quantum: 1.0,
                lo: 0.0,
                hi: 1e12,
            },
            q(size / 20000.0, 1.0),
        );
        add("node_filesystem_readonly", &l, Kind::Const, 0.0);
        add("node_filesystem_device_error", &l, Kind::Const, 0.0);
    }
    for (dev, rate) in [("lo", 2e4), ("eth0", 5e5), ("eth1", 3e4), ("docker0", 1e3)] {
        let l = [("device", dev)];
        for dir in ["receive", "transmit"] {
            for (stat, mean, sd) in [
                ("bytes", rate * 15.0, rate * 6.0),
                ("packets", rate * 15.0 / 800.0, rate * 6.0 / 800.0),
                ("errs", 0.0, 0.0),
                ("drop", 0.02, 0.15),
                ("fifo", 0.0, 0.0),
                ("frame", 0.0, 0.0),
                ("compressed", 0.0, 0.0),
                ("multicast", 0.3, 0.6),
            ] {
                let kind = if sd == 0.0 {
                    Kind::Const
                } else {
                    Kind::Counter {
                        mean,
                        sd,
                        quantum: 1.0,
                    }
                };
                add(
                    &format!("node_network_{dir}_{stat}_total"),
                    &l,
                    kind,
                    q(rng.f() * 1e9 * (mean + 1.0).log10(), 1.0),
                );
            }
        }
        add("node_network_up", &l, Kind::Const, 1.0);
        add("node_network_mtu_bytes", &l, Kind::Const, 1500.0);
    }
    for dev in ["sda", "sdb", "sdc", "nvme0n1"] {
        let l = [("device", dev)];
        let io = rng.f() * 50.0;
        for (stat, mean, sd, quantum) in [
            ("reads_completed_total", io, io * 0.5, 1.0),
            ("reads_merged_total", io * 0.1, io * 0.1, 1.0),
            (
                "read_bytes_total",
                io * 4096.0 * 8.0,
                io * 4096.0 * 4.0,
                512.0,
            ),
            ("read_time_seconds_total", io * 0.002, io * 0.001, 0.001),
            ("writes_completed_total", io * 2.0, io, 1.0),
            ("writes_merged_total", io * 0.5, io * 0.3, 1.0),
            (
                "written_bytes_total",
                io * 2.0 * 4096.0 * 16.0,
                io * 4096.0 * 10.0,
                512.0,
            ),
            ("write_time_seconds_total", io * 0.004, io * 0.002, 0.001),
            ("io_time_seconds_total", io * 0.01, io * 0.005, 0.001),
            (
                "io_time_weighted_seconds_total",
                io * 0.02,
                io * 0.01,
                0.001,
            ),
            ("discards_completed_total", 0.0, 0.0, 1.0),
            ("discards_merged_total", 0.0, 0.0, 1.0),
            ("discarded_sectors_total", 0.0, 0.0, 1.0),
            ("discard_time_seconds_total", 0.0, 0.0, 0.001),
            ("flush_requests_total", io * 0.1, io * 0.05, 1.0),
            (
                "flush_requests_time_seconds_total",
                io * 0.0005,
                io * 0.0003,
                0.001,
            ),
        ] {
            let kind = if sd == 0.0 {
                Kind::Const
            } else {
                Kind::Counter { mean, sd, quantum }
            };
            add(
                &format!("node_disk_{stat}"),
                &l,
                kind,
                q(rng.f() * 1e8, quantum),
            );
        }
        add(
            "node_disk_io_now",
            &l,
            Kind::Walk {
                sd: 1.0,
                quantum: 1.0,
                lo: 0.0,
                hi: 64.0,
            },
            0.0,
        );
    }
    let load = busy * 8.0;
    for name in ["node_load1", "node_load5", "node_load15"] {
        add(
            name,
            &[],
            Kind::Walk {
                sd: 0.15,
                quantum: 0.01,
                lo: 0.0,
                hi: 64.0,
            },
            q(load, 0.01),
        );
    }
    add(
        "node_context_switches_total",
        &[],
        Kind::Counter {
            mean: 15.0 * 4000.0,
            sd: 15.0 * 800.0,
            quantum: 1.0,
        },
        1e9,
    );
    add(
        "node_forks_total",
        &[],
        Kind::Counter {
            mean: 15.0 * 5.0,
            sd: 15.0 * 2.0,
            quantum: 1.0,
        },
        5e6,
    );
    add(
        "node_intr_total",
        &[],
        Kind::Counter {
            mean: 15.0 * 3000.0,
            sd: 15.0 * 500.0,
            quantum: 1.0,
        },
        2e9,
    );
    add(
        "node_procs_running",
        &[],
        Kind::Walk {
            sd: 1.0,
            quantum: 1.0,
            lo: 1.0,
            hi: 32.0,
        },
        3.0,
    );
    add(
        "node_procs_blocked",
        &[],
        Kind::Walk {
            sd: 0.3,
            quantum: 1.0,
            lo: 0.0,
            hi: 8.0,
        },
        0.0,
    );
    add(
        "node_boot_time_seconds",
        &[],
        Kind::Const,
        1_700_000_000.0 + (host as f64) * 1234.0,
    );
    add("node_time_seconds", &[], Kind::Clock, 0.0);
    for (name, mean) in [
        ("Tcp_ActiveOpens", 30.0),
        ("Tcp_PassiveOpens", 40.0),
        ("Tcp_CurrEstab", -1.0),
        ("Tcp_InSegs", 3000.0),
        ("Tcp_OutSegs", 2800.0),
        ("Tcp_RetransSegs", 2.0),
        ("Tcp_InErrs", 0.0),
        ("Tcp_OutRsts", 3.0),
        ("Udp_InDatagrams", 200.0),
        ("Udp_OutDatagrams", 200.0),
        ("Udp_InErrors", 0.0),
        ("Udp_NoPorts", 0.5),
        ("Udp_RcvbufErrors", 0.0),
        ("Udp_SndbufErrors", 0.0),
        ("Icmp_InMsgs", 0.2),
        ("Icmp_OutMsgs", 0.2),
        ("Icmp_InErrors", 0.0),
        ("Ip_Forwarding", -2.0),
        ("IpExt_InOctets", 900000.0),
        ("IpExt_OutOctets", 800000.0),
        ("TcpExt_ListenDrops", 0.0),
        ("TcpExt_ListenOverflows", 0.0),
        ("TcpExt_SyncookiesSent", 0.0),
        ("TcpExt_SyncookiesRecv", 0.0),
        ("TcpExt_SyncookiesFailed", 0.0),
        ("TcpExt_TCPSynRetrans", 0.3),
        ("TcpExt_TCPTimeouts", 0.5),
        ("Ip6_InOctets", 2000.0),
        ("Ip6_OutOctets", 2000.0),
        ("Udp6_InDatagrams", 3.0),
    ] {
        let name = format!("node_netstat_{name}");
        match mean {
            -1.0 => add(
                &name,
                &[],
                Kind::Walk {
                    sd: 3.0,
                    quantum: 1.0,
                    lo: 0.0,
                    hi: 1e5,
                },
                120.0,
            ),
            -2.0 => add(&name, &[], Kind::Const, 1.0),
            0.0 => add(&name, &[], Kind::Const, q(rng.f() * 10.0, 1.0)),
            m => add(
                &name,
                &[],
                Kind::Counter {
                    mean: m * 15.0 / 15.0,
                    sd: m * 0.4,
                    quantum: 1.0,
                },
                q(rng.f() * 1e8, 1.0),
            ),
        }
    }
    for (name, mean) in [
        ("pgpgin", 4000.0),
        ("pgpgout", 9000.0),
        ("pswpin", 0.0),
        ("pswpout", 0.0),
        ("pgfault", 90000.0),
        ("pgmajfault", 3.0),
        ("oom_kill", 0.0),
    ] {
        let kind = if mean == 0.0 {
            Kind::Const
        } else {
            Kind::Counter {
                mean,
                sd: mean * 0.3,
                quantum: 1.0,
            }
        };
        add(
            &format!("node_vmstat_{name}"),
            &[],
            kind,
            q(rng.f() * 1e9, 1.0),
        );
    }
    for (chip, sensor) in [
        ("platform_coretemp_0", "temp1"),
        ("platform_coretemp_0", "temp2"),
        ("platform_coretemp_0", "temp3"),
        ("platform_coretemp_0", "temp4"),
        ("platform_coretemp_0", "temp5"),
        ("pci0000:00_0000:00:18_3", "temp1"),
        ("nvme_nvme0", "temp1"),
        ("acpitz", "temp1"),
    ] {
        add(
            "node_hwmon_temp_celsius",
            &[("chip", chip), ("sensor", sensor)],
            Kind::Walk {
                sd: 0.5,
                quantum: 1.0,
                lo: 25.0,
                hi: 95.0,
            },
            q(40.0 + rng.f() * 20.0, 1.0),
        );
        add(
            "node_hwmon_temp_crit_celsius",
            &[("chip", chip), ("sensor", sensor)],
            Kind::Const,
            100.0,
        );
    }
    for collector in [
        "arp",
        "bcache",
        "bonding",
        "btrfs",
        "conntrack",
        "cpu",
        "cpufreq",
        "diskstats",
        "dmi",
        "edac",
        "entropy",
        "fibrechannel",
        "filefd",
        "filesystem",
        "hwmon",
        "infiniband",
        "ipvs",
        "loadavg",
        "mdadm",
        "meminfo",
        "netclass",
        "netdev",
        "netstat",
        "nfs",
        "nfsd",
        "nvme",
        "os",
        "powersupplyclass",
        "pressure",
        "rapl",
        "schedstat",
        "selinux",
        "sockstat",
        "softnet",
        "stat",
        "tapestats",
        "textfile",
        "thermal_zone",
        "time",
        "timex",
        "udp_queues",
        "uname",
        "vmstat",
        "xfs",
        "zfs",
    ] {
        add(
            "node_scrape_collector_duration_seconds",
            &[("collector", collector)],
            Kind::Noise {
                mean: 0.002 * (1.0 + rng.f() * 5.0),
                sd: 0.0005,
            },
            0.0,
        );
        add(
            "node_scrape_collector_success",
            &[("collector", collector)],
            Kind::Const,
            1.0,
        );
    }
    add(
        "node_uname_info",
        &[
            ("machine", "x86_64"),
            ("release", "6.1.0-18-amd64"),
            ("sysname", "Linux"),
        ],
        Kind::Const,
        1.0,
    );
    add(
        "node_exporter_build_info",
        &[("version", "1.5.0")],
        Kind::Const,
        1.0,
    );
    for handler in [
        "/metrics",
        "/api/v1/query",
        "/api/v1/query_range",
        "/api/v1/series",
        "/-/healthy",
    ] {
        let rps = 0.5 + rng.f() * 5.0;
        let mut share = 0.0;
        for le in [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
        ] {
            share = (share + (1.0 - share) * 0.45f64).min(1.0);
            let s = if le == "+Inf" { 1.0 } else { share };
            let mean = rps * 15.0 * s;
            add(
                "http_request_duration_seconds_bucket",
                &[("handler", handler), ("le", le)],
                Kind::Counter {
                    mean,
                    sd: (mean.sqrt()).max(0.3),
                    quantum: 1.0,
                },
                0.0,
            );
        }
        add(
            "http_request_duration_seconds_sum",
            &[("handler", handler)],
            Kind::Noise {
                mean: -(rps * 15.0 * 0.02),
                sd: 0.0,
            },
            0.0,
        );
        add(
            "http_request_duration_seconds_count",
            &[("handler", handler)],
            Kind::Counter {
                mean: rps * 15.0,
                sd: (rps * 15.0).sqrt(),
                quantum: 1.0,
            },
            0.0,
        );
    }
    for (name, kind, v) in [
        (
            "go_goroutines",
            Kind::Walk {
                sd: 1.0,
                quantum: 1.0,
                lo: 5.0,
                hi: 40.0,
            },
            9.0,
        ),
        (
            "go_threads",
            Kind::Walk {
                sd: 0.1,
                quantum: 1.0,
                lo: 5.0,
                hi: 20.0,
            },
            8.0,
        ),
        (
            "go_memstats_alloc_bytes",
            Kind::Walk {
                sd: 3e5,
                quantum: 8.0,
                lo: 1e6,
                hi: 3e7,
            },
            4e6,
        ),
        (
            "go_memstats_alloc_bytes_total",
            Kind::Counter {
                mean: 2e6,
                sd: 5e5,
                quantum: 8.0,
            },
            1e10,
        ),
        (
            "go_memstats_heap_alloc_bytes",
            Kind::Walk {
                sd: 3e5,
                quantum: 8.0,
                lo: 1e6,
                hi: 3e7,
            },
            4e6,
        ),
        (
            "go_memstats_heap_idle_bytes",
            Kind::Walk {
                sd: 8192.0 * 10.0,
                quantum: 8192.0,
                lo: 1e6,
                hi: 3e7,
            },
            5e6,
        ),
        (
            "go_memstats_heap_inuse_bytes",
            Kind::Walk {
                sd: 8192.0 * 10.0,
                quantum: 8192.0,
                lo: 1e6,
                hi: 3e7,
            },
            6e6,
        ),
        (
            "go_memstats_heap_objects",
            Kind::Walk {
                sd: 300.0,
                quantum: 1.0,
                lo: 1e4,
                hi: 1e6,
            },
            3e4,
        ),
        ("go_memstats_heap_sys_bytes", Kind::Const, 1.2e7),
        (
            "go_memstats_mallocs_total",
            Kind::Counter {
                mean: 2e4,
                sd: 3e3,
                quantum: 1.0,
            },
            1e8,
        ),
        (
            "go_memstats_frees_total",
            Kind::Counter {
                mean: 2e4,
                sd: 3e3,
                quantum: 1.0,
            },
            1e8,
        ),
        ("go_memstats_sys_bytes", Kind::Const, 2.4e7),
        (
            "go_memstats_next_gc_bytes",
            Kind::Walk {
                sd: 1e5,
                quantum: 8.0,
                lo: 4e6,
                hi: 2e7,
            },
            8e6,
        ),
        ("go_memstats_last_gc_time_seconds", Kind::Clock, 0.0),
        (
            "process_cpu_seconds_total",
            Kind::Counter {
                mean: 0.15,
                sd: 0.05,
                quantum: 0.01,
            },
            3000.0,
        ),
        (
            "process_resident_memory_bytes",
            Kind::Walk {
                sd: 4096.0 * 20.0,
                quantum: 4096.0,
                lo: 1e7,
                hi: 5e7,
            },
            2e7,
        ),
        ("process_virtual_memory_bytes", Kind::Const, 7.3e8),
        (
            "process_open_fds",
            Kind::Walk {
                sd: 0.5,
                quantum: 1.0,
                lo: 5.0,
                hi: 20.0,
            },
            9.0,
        ),
        ("process_max_fds", Kind::Const, 1048576.0),
        ("process_start_time_seconds", Kind::Const, 1_700_000_100.57),
    ] {
        add(name, &[], kind, v);
    }
    for quantile in ["0", "0.25", "0.5", "0.75", "1"] {
        add(
            "go_gc_duration_seconds",
            &[("quantile", quantile)],
            Kind::Noise {
                mean: 5e-5,
                sd: 2e-5,
            },
            0.0,
        );
    }
    out
}

/// What was generated.
pub struct Generated {
    pub series: u64,
    pub samples: u64,
}

/// Writes the data twice: OpenMetrics (timestamps in seconds, `# EOF`) for Sonde and
/// promtool, Prometheus text (timestamps in ms) for VictoriaMetrics.
pub fn generate(
    om: &mut impl Write,
    prom: &mut impl Write,
    hosts: usize,
    scrapes: usize,
    interval_ms: i64,
    start_ms: i64,
) -> std::io::Result<Generated> {
    let mut rng = Rng::new(0x005e_ed0f_50de);
    let mut out = Generated {
        series: 0,
        samples: 0,
    };
    let (mut line_om, mut line_prom) = (String::new(), String::new());
    for host in 0..hosts {
        let mut series = host_series(host, &mut rng);
        out.series += series.len() as u64;
        // Per host: scrape offset and timestamps (2% of scrapes miss Prometheus' timestamp
        // alignment and carry a few ms of jitter).
        let offset = (rng.next_u64() % interval_ms as u64) as i64;
        let times: Vec<i64> = (0..scrapes)
            .map(|i| {
                let jitter = if rng.f() < 0.02 {
                    3 + (rng.next_u64() % 40) as i64
                } else {
                    0
                };
                start_ms + offset + i as i64 * interval_ms + jitter
            })
            .collect();
        // Series by series (as `promtool tsdb dump` and most exports order them).
        for s in &mut series {
            for &t in &times {
                let v = match s.kind {
                    Kind::Const => s.value,
                    Kind::Counter { mean, sd, quantum } => {
                        let inc = (mean + sd * rng.normal()).max(0.0);
                        s.value = q(s.value + q(inc, quantum), quantum);
                        s.value
                    }
                    Kind::Walk {
                        sd,
                        quantum,
                        lo,
                        hi,
                    } => {
                        s.value = q((s.value + sd * rng.normal()).clamp(lo, hi), quantum);
                        s.value
                    }
                    Kind::Noise { mean, sd: _ } if mean < 0.0 => {
                        // A histogram _sum: grows by a noisy float each scrape.
                        s.value += -mean * (1.0 + 0.5 * rng.normal()).max(0.0);
                        s.value
                    }
                    Kind::Noise { mean, sd } => (mean + sd * rng.normal()).abs(),
                    Kind::Clock => t as f64 / 1000.0 + rng.f() * 1e-3,
                };
                line_om.clear();
                line_prom.clear();
                use std::fmt::Write as _;
                let _ = writeln!(line_om, "{} {} {}.{:03}", s.text, v, t / 1000, t % 1000);
                let _ = writeln!(line_prom, "{} {} {}", s.text, v, t);
                om.write_all(line_om.as_bytes())?;
                prom.write_all(line_prom.as_bytes())?;
                out.samples += 1;
            }
        }
    }
    om.write_all(b"# EOF\n")?;
    Ok(out)
}
