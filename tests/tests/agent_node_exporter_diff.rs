//! Differential test against the real `prometheus-node-exporter` (Debian's 1.5) on this host:
//! for every family both expose, the label sets are identical, the types agree, and the
//! agent's values lie within 1% of node_exporter's when sampled together.
//!
//! "Together": node_exporter is scraped, then the agent's `/metrics` is polled until it shows
//! a collection that started after that scrape ended, then node_exporter is scraped again. The
//! agent's sample was taken between the two node_exporter samples, so each agent value must
//! lie in [min, max] of the two node_exporter values, widened by 1%. Counters that move fast
//! are covered by this bracket (it moves with them). Documented tolerances beyond that, for
//! instantaneous gauges that do not move monotonically between the two scrapes:
//! - `node_procs_running`, `node_procs_blocked`, `node_disk_io_now`: instantaneous counts
//!   (runnable tasks, I/Os in flight) that jump by hundreds within a millisecond on a host
//!   where other builds run (measured: `io_now` 0, then 256, then 179). Their labels and types
//!   are compared; their values only have to be non-negative integers.
//! - `node_netstat_Tcp_CurrEstab`: the scrapes and other tests open and close connections: ±32.
//! - `node_filefd_allocated`: every open file on a busy build host: ±1% of `node_filefd_maximum`.
//! - `node_memory_*`: page cache/dirty/slab move by megabytes between samples on a host
//!   where other builds run: ±1% of `MemTotal` (1% of the memory scale, not of a small field).
//! - `node_filesystem_{free,avail}_bytes`, `files_free`: builds write to the disk: ±1% of
//!   the filesystem's size / file count.
//!
//! Families only one side has are listed, not compared: node_exporter 1.5's netlink-only
//! `node_network_receive_nohandler_total` is not exported by the agent (it reads
//! /proc/net/dev); node_exporter's own `node_scrape_*`, `go_*`, `process_*` are not node
//! metrics.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sonde_tests::{Agent, Process, eventually, exposition::Exposition, free_addr, http_get};

const COLLECTORS: &[&str] = &[
    "cpu",
    "diskstats",
    "filefd",
    "filesystem",
    "loadavg",
    "meminfo",
    "netdev",
    "netstat",
    "pressure",
    "stat",
    "uname",
    "vmstat",
];

/// The required families: the comparison must cover each of them.
const REQUIRED: &[&str] = &[
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_Active_anon_bytes",
    "node_memory_HugePages_Total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_io_time_seconds_total",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_files",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_receive_errs_total",
    "node_network_receive_drop_total",
    "node_pressure_cpu_waiting_seconds_total",
    "node_pressure_io_stalled_seconds_total",
    "node_pressure_memory_waiting_seconds_total",
    "node_boot_time_seconds",
    "node_context_switches_total",
    "node_forks_total",
    "node_procs_running",
    "node_procs_blocked",
    "node_netstat_Tcp_RetransSegs",
    "node_netstat_Tcp_ActiveOpens",
    "node_netstat_Tcp_PassiveOpens",
    "node_netstat_Tcp_CurrEstab",
    "node_filefd_allocated",
    "node_filefd_maximum",
    "node_uname_info",
];

/// Instantaneous counts whose values are not compared (see the module docs).
const INSTANTANEOUS: &[&str] = &[
    "node_procs_running",
    "node_procs_blocked",
    "node_disk_io_now",
];

/// Families node_exporter has and the agent intentionally does not (see the module docs).
const NODE_EXPORTER_ONLY: &[&str] = &["node_network_receive_nohandler_total"];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn scrape(url: &str) -> Exposition {
    let response = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status, 200, "{url}: {}", response.body);
    Exposition::parse(&response.body)
}

fn start_node_exporter(dir: &std::path::Path) -> (Process, String) {
    for _ in 0..5 {
        let addr = free_addr();
        let mut cmd = Command::new("prometheus-node-exporter");
        cmd.arg(format!("--web.listen-address={addr}"))
            .arg("--collector.disable-defaults")
            // Upstream's default (Debian's package excludes ^lo$); the agent's default too.
            .arg("--collector.netdev.device-exclude=");
        for c in COLLECTORS {
            cmd.arg(format!("--collector.{c}"));
        }
        let mut process = Process::spawn("node_exporter", &mut cmd, dir);
        let url = format!("http://{addr}/metrics");
        match process.wait_until(Duration::from_secs(20), || {
            http_get(&url).is_ok_and(|r| r.status == 200)
        }) {
            Ok(()) => return (process, url),
            Err(log) if log.contains("address already in use") => continue,
            Err(log) => panic!(
                "node_exporter did not start (is prometheus-node-exporter installed?):\n{log}"
            ),
        }
    }
    panic!("no free port for node_exporter");
}

/// Family of a sample name, by the types declared in `e`.
fn is_node_metric(name: &str) -> bool {
    name.starts_with("node_")
        && !name.starts_with("node_scrape_")
        && !name.starts_with("node_exporter_")
}

/// Allowed absolute deviation beyond the 1% bracket (see the module docs).
fn slack(name: &str, labels: &BTreeMap<String, String>, ne: &Exposition) -> f64 {
    let fs_size = |metric: &str| {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ne.get(metric, &l).unwrap_or(0.0) * 0.01
    };
    match name {
        "node_netstat_Tcp_CurrEstab" => 32.0,
        "node_filefd_allocated" => ne.get("node_filefd_maximum", &[]).unwrap_or(0.0) * 0.01,
        "node_filesystem_free_bytes" | "node_filesystem_avail_bytes" => {
            fs_size("node_filesystem_size_bytes")
        }
        "node_filesystem_files_free" => fs_size("node_filesystem_files"),
        n if n.starts_with("node_memory_") && n.ends_with("_bytes") => {
            ne.get("node_memory_MemTotal_bytes", &[]).unwrap_or(0.0) * 0.01
        }
        _ => 0.0,
    }
}

#[test]
fn shared_families_have_identical_labels_types_and_values_within_one_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let (_node_exporter, ne_url) = start_node_exporter(tmp.path());
    // No aggregator is needed: the agent queues batches and /metrics shows each tick.
    let dead_aggregator = format!("http://{}", free_addr());
    let agent = Agent::start(&[dead_aggregator], &["--no-ebpf", "--interval", "1s"]);
    let agent_url = format!("http://{}/metrics", agent.metrics);

    let ne0 = scrape(&ne_url);
    let after = now();
    let agent_sample = eventually(
        Duration::from_secs(20),
        "an agent tick after the first scrape",
        || {
            let e = scrape(&agent_url);
            let started = e.get("sonde_agent_last_collection_timestamp_seconds", &[])?;
            (started >= after).then_some(e)
        },
    );
    let ne1 = scrape(&ne_url);

    let ne_names: BTreeSet<String> = ne0
        .names()
        .into_iter()
        .filter(|n| is_node_metric(n))
        .collect();
    let agent_names: BTreeSet<String> = agent_sample
        .names()
        .into_iter()
        .filter(|n| is_node_metric(n))
        .collect();
    let shared: BTreeSet<&String> = ne_names.intersection(&agent_names).collect();
    let ne_only: Vec<&String> = ne_names.difference(&agent_names).collect();
    let agent_only: Vec<&String> = agent_names.difference(&ne_names).collect();
    eprintln!(
        "{} shared families; node_exporter only: {ne_only:?}; agent only: {agent_only:?}",
        shared.len()
    );
    for name in REQUIRED {
        assert!(
            shared.contains(&name.to_string()),
            "{name} is not exposed by both (agent has it: {}, node_exporter: {})",
            agent_names.contains(*name),
            ne_names.contains(*name)
        );
    }
    for name in &ne_only {
        assert!(
            NODE_EXPORTER_ONLY.contains(&name.as_str()),
            "node_exporter exposes {name} and the agent does not"
        );
    }

    let mut failures = Vec::new();
    let mut compared = 0;
    for name in &shared {
        // Types: the header names the sample in the 0.0.4 format.
        assert_eq!(
            agent_sample.types.get(*name),
            ne0.types.get(*name),
            "# TYPE of {name}"
        );
        let labels_of = |e: &Exposition| -> BTreeSet<BTreeMap<String, String>> {
            e.samples
                .keys()
                .filter(|(n, _)| n == *name)
                .map(|(_, l)| l.clone())
                .collect()
        };
        let (a, b) = (labels_of(&agent_sample), labels_of(&ne0));
        if a != b {
            failures.push(format!(
                "{name}: label sets differ\n  agent only: {:?}\n  node_exporter only: {:?}",
                a.difference(&b).collect::<Vec<_>>(),
                b.difference(&a).collect::<Vec<_>>()
            ));
            continue;
        }
        for labels in a {
            let key = ((*name).clone(), labels.clone());
            let (v0, v1, got) = (
                ne0.samples[&key],
                ne1.samples.get(&key).copied().unwrap_or(ne0.samples[&key]),
                agent_sample.samples[&key],
            );
            let (lo, hi) = (v0.min(v1), v0.max(v1));
            let tolerance = 0.01 * lo.abs().max(hi.abs()) + slack(name, &labels, &ne0);
            compared += 1;
            if INSTANTANEOUS.contains(&name.as_str()) {
                if got < 0.0 || got.fract() != 0.0 {
                    failures.push(format!("{name}{labels:?}: agent {got} is not a count"));
                }
                continue;
            }
            if got < lo - tolerance || got > hi + tolerance {
                failures.push(format!("{name}{labels:?}: agent {got}, node_exporter {v0} then {v1} (tolerance {tolerance})"));
            }
        }
    }
    assert!(compared > 200, "only {compared} series compared");
    assert!(
        failures.is_empty(),
        "{} of {compared} series differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{compared} series in {} families agree", shared.len());
}

#[test]
fn agent_serves_openmetrics_on_request() {
    let dead_aggregator = format!("http://{}", free_addr());
    let agent = Agent::start(&[dead_aggregator], &["--no-ebpf", "--interval", "1s"]);
    let url = format!("http://{}/metrics", agent.metrics);
    eventually(Duration::from_secs(20), "a first tick", || {
        scrape(&url).get("node_load1", &[]).map(|_| ())
    });
    let started = Instant::now();
    let mut response = ureq::get(&url)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .call()
        .expect("openmetrics scrape");
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.body_mut().read_to_string().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "{}",
        &body[body.len().saturating_sub(200)..]
    );
    assert!(
        body.contains("# TYPE node_cpu_seconds counter\n"),
        "counter families are named without _total"
    );
    assert!(body.contains("\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} "));
    assert!(body.contains("# TYPE node_netstat_Tcp_CurrEstab unknown\n"));
    assert!(
        body.contains("# TYPE sonde_agent_build info\n"),
        "self-metrics included"
    );
    let text = http_get(&url).unwrap();
    assert!(
        text.body
            .contains("# TYPE node_cpu_seconds_total counter\n")
    );
    assert!(
        text.body
            .contains("# TYPE sonde_agent_last_collection_timestamp_seconds gauge\n")
    );
    assert!(!text.body.contains("# EOF"));
    assert!(started.elapsed() < Duration::from_secs(10));
}
