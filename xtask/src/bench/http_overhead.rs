//! `cargo xtask bench http-overhead`: what HTTP tracing costs the traced service.
//!
//! wrk drives nginx on loopback; rounds without and with the agent alternate (the order
//! flips every round so drift on a shared machine hits both sides alike). With the agent,
//! every eBPF hook is live and both nginx (server) and wrk (client) are traced — the
//! worst case of a node where both ends are local. Reported: throughput ratio, added p50/p99,
//! the CPU nginx and wrk spend per request (the cost on the traced processes, steadier than
//! throughput on a shared machine), the aggregator's (at idle priority: it would run
//! elsewhere), the agent's own CPU per 10k req/s and RSS, and how many
//! of wrk's completed requests the agent counted. The kernel time of the eBPF programs per
//! request is measured in one extra round with `kernel.bpf_stats_enabled` (the statistics
//! cost two clock reads per program run, so the throughput rounds run without them).
//!
//! A third kind of round (unless `--no-bpftrace`) runs bpftrace attached to the tracepoints
//! the agent hooks ([`IDLE_TRACEPOINTS`]), with programs that do nothing (a pid test that
//! fails): what merely hooking them costs with a common tool. It is an upper bound of the
//! dispatch cost, not the floor itself: bpftrace attaches through perf events (the agent's
//! socket data programs are raw tracepoints, cheaper), and its programs let the kernel go
//! on to its perf-event path, which the agent's programs (returning 0) skip.

use std::{
    fmt::Write as _,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::process::{children_cpu_seconds, cpu_seconds};
use crate::{ebpf, util};

#[derive(clap::Args)]
pub struct Options {
    /// Pairs of rounds (one without, one with the agent).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Skip the idle-bpftrace rounds.
    #[arg(long)]
    no_bpftrace: bool,
}

/// The tracepoints the agent's HTTP hooks attach to on the socket data path, the default
/// where the kernel allows (`agent/src/ebpf/hooks.rs`, `loader.rs`): accept, connect and
/// close (they do not fire per request on keep-alive connections, but any syscall tracepoint
/// sends every syscall of every process through the kernel's slower tracing path) and the
/// two socket data tracepoints.
const IDLE_TRACEPOINTS: &[&str] = &[
    "syscalls:sys_enter_accept4",
    "syscalls:sys_enter_accept",
    "syscalls:sys_enter_connect",
    "syscalls:sys_exit_accept4",
    "syscalls:sys_exit_accept",
    "syscalls:sys_exit_connect",
    "syscalls:sys_enter_close",
    "sock:sock_recv_length",
    "sock:sock_send_length",
];

/// What ran beside nginx and wrk in a round.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Kind {
    /// Nothing.
    #[default]
    Off,
    /// The agent.
    Agent,
    /// bpftrace idle on the agent's tracepoints (see the module documentation).
    Bpftrace,
}

impl Kind {
    /// In the progress log.
    fn log_name(self) -> &'static str {
        match self {
            Kind::Off => "without",
            Kind::Agent => "with agent",
            Kind::Bpftrace => "idle bpftrace",
        }
    }

    /// In the report's rounds table.
    fn column(self) -> &'static str {
        match self {
            Kind::Off => "off",
            Kind::Agent => "on",
            Kind::Bpftrace => "idle bpftrace",
        }
    }
}

/// One wrk run.
#[derive(Debug, Clone, Default)]
struct Round {
    /// Round number (1-based; the profile round has the next one).
    n: usize,
    kind: Kind,
    rps: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// Agent user+system CPU over the run, in cores.
    agent_cores: f64,
    agent_rss_mib: f64,
    /// Peak RSS up to and including the first collection tick after the load (which ships
    /// what the load left behind).
    agent_peak_rss_mib: f64,
    /// Spans the agent built (kept or dropped by sampling/budget).
    spans_built: f64,
    /// Spans lost for lack of room (`sonde_agent_spans_dropped_total` other than
    /// `sampled_out`, `budget` and `shed`, which are policy).
    spans_lost: f64,
    /// Kernel time in the agent's eBPF programs per request, ns (profile round only).
    ebpf_ns_per_request: f64,
    /// The extra round with eBPF statistics on: not in the throughput medians.
    profile: bool,
    /// nginx's user+system CPU per request, µs.
    nginx_us: f64,
    /// wrk's user+system CPU per request, µs.
    wrk_us: f64,
    /// The aggregator's user+system CPU per request, µs (it shares this host's CPUs only
    /// because the benchmark has one machine).
    aggregator_us: f64,
    /// Requests the agent counted for nginx's route.
    counted: u64,
    /// Exchanges lost (sonde_agent_events_lost_total{program="http"}).
    lost: f64,
    /// CPU ns per `read` + `write` pair on files nobody traces (`dd`, 1-byte blocks from
    /// /dev/zero to /dev/null), measured after the load with the round's tracer still
    /// attached: what every other process on the node pays.
    untraced_pair_ns: f64,
    /// The same per `reason` (only non-zero ones).
    lost_reasons: std::collections::BTreeMap<String, f64>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("the http-overhead benchmark loads eBPF programs: run it as root");
    }
    crate::setup::ensure_packages(&["nginx-light", "wrk", "curl"])?;
    if !options.no_bpftrace {
        crate::setup::ensure_packages(&["bpftrace"])?;
    }
    if !options.no_build {
        ebpf::build(&ebpf::Options { debug: false })?;
        util::run(util::cargo().args([
            "build",
            "--release",
            "-p",
            "sonde-agent",
            "-p",
            "sonde-aggregator",
        ]))?;
    }
    let root = util::workspace_root();
    let bin = root.join("target/release");
    let tmp = tempfile::tempdir().context("temporary directory")?;

    let grpc = free_port()?;
    // In production the aggregator runs on other machines; here it shares the two CPUs, so
    // it runs at idle priority (SCHED_IDLE: only CPU time nothing else wants) and its CPU
    // is reported apart. At normal priority its flushes landed in random rounds with the
    // agent and moved their throughput by up to a third.
    let mut aggregator = Guard(
        Command::new("chrt")
            .args(["--idle", "0"])
            .arg(bin.join("sonde-aggregator"))
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["--listen-http", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--listen-grpc", &format!("127.0.0.1:{grpc}")])
            .stdout(Stdio::null())
            .stderr(log(tmp.path(), "aggregator")?)
            .spawn()
            .context("start sonde-aggregator")?,
    );
    let nginx_port = free_port()?;
    let nginx = start_nginx(tmp.path(), nginx_port)?;
    let url = format!("http://127.0.0.1:{nginx_port}/bench/1");
    let target = Target {
        url: &url,
        nginx: nginx.0.id(),
        aggregator: aggregator.0.id(),
    };
    wrk(options, &target, 2).context("warm-up run")?;

    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0")
        .context("disable kernel.bpf_stats_enabled")?;
    let mut result = rounds(options, &bin, tmp.path(), grpc, &target);
    if let Ok(rounds) = &mut result {
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
            .context("enable kernel.bpf_stats_enabled")?;
        let profile = round_with_agent(options, &bin, tmp.path(), grpc, &target);
        eprintln!(
            "profile round (eBPF statistics on): {}",
            profile.as_ref().map_or_else(
                |e| format!("failed: {e:#}"),
                |r| format!(
                    "{:.0} req/s, eBPF {:.0} ns/req",
                    r.rps, r.ebpf_ns_per_request
                )
            )
        );
        if let Ok(mut profile) = profile {
            profile.profile = true;
            profile.n = options.rounds + 1;
            rounds.push(profile);
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    drop(nginx);
    let _ = aggregator.0.kill();
    let rounds = result?;

    let report = report(options, &rounds);
    let out = root.join("bench-results/http-overhead.md");
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    std::fs::write(&out, &report).with_context(|| format!("write {}", out.display()))?;
    println!("{report}");
    eprintln!("written to {}", out.display());
    Ok(())
}

/// The load's target: the URL, nginx's pid and the aggregator's (for their CPU time).
struct Target<'a> {
    url: &'a str,
    nginx: u32,
    aggregator: u32,
}

fn rounds(
    options: &Options,
    bin: &Path,
    dir: &Path,
    grpc: u16,
    target: &Target<'_>,
) -> anyhow::Result<Vec<Round>> {
    let mut out = Vec::new();
    for i in 0..options.rounds {
        let mut order = vec![Kind::Off, Kind::Agent];
        if !options.no_bpftrace {
            order.push(Kind::Bpftrace);
        }
        if i % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let mut round = match kind {
                Kind::Agent => round_with_agent(options, bin, dir, grpc, target)?,
                Kind::Bpftrace => round_with_bpftrace(options, dir, target)?,
                Kind::Off => {
                    let mut round = wrk(options, target, options.duration)?;
                    round.untraced_pair_ns = untraced_pair_ns()?;
                    round
                }
            };
            round.n = i + 1;
            eprintln!(
                "round {} {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, CPU per request nginx {:.2} µs, wrk {:.2} µs, untraced read+write {:.0} ns{}",
                i + 1,
                kind.log_name(),
                round.rps,
                round.p50_ms,
                round.p99_ms,
                round.nginx_us,
                round.wrk_us,
                round.untraced_pair_ns,
                if kind == Kind::Agent {
                    format!(
                        ", agent {:.3} cores, {:.1} MiB, counted {}/{}",
                        round.agent_cores, round.agent_rss_mib, round.counted, round.requests
                    )
                } else {
                    String::new()
                }
            );
            out.push(round);
        }
    }
    Ok(out)
}

/// A wrk run with bpftrace attached to [`IDLE_TRACEPOINTS`], each program doing nothing (a
/// pid test that fails for every traced process).
fn round_with_bpftrace(
    options: &Options,
    dir: &Path,
    target: &Target<'_>,
) -> anyhow::Result<Round> {
    let probes: Vec<String> = IDLE_TRACEPOINTS
        .iter()
        .map(|t| format!("tracepoint:{t}"))
        .collect();
    // BEGIN runs once every probe is attached.
    let script = format!(
        "{} /pid == 1/ {{ @x = 1; }} BEGIN {{ printf(\"ready\\n\"); }}",
        probes.join(", ")
    );
    let out = dir.join("bpftrace.log");
    let mut tracer = Guard(
        Command::new("bpftrace")
            .args(["-e", &script])
            .stdout(std::fs::File::create(&out).context("bpftrace log")?)
            .stderr(log(dir, "bpftrace-stderr")?)
            .spawn()
            .context("start bpftrace")?,
    );
    wait_for(Duration::from_secs(60), "bpftrace to attach", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("ready"))
    })?;
    let mut round = wrk(options, target, options.duration)?;
    round.untraced_pair_ns = untraced_pair_ns()?;
    if let Ok(Some(status)) = tracer.0.try_wait() {
        bail!(
            "bpftrace exited during the load ({status}); see {}",
            dir.join("bpftrace-stderr.log").display()
        );
    }
    round.kind = Kind::Bpftrace;
    Ok(round)
}

fn round_with_agent(
    options: &Options,
    bin: &Path,
    dir: &Path,
    grpc: u16,
    target: &Target<'_>,
) -> anyhow::Result<Round> {
    let metrics = free_port()?;
    let mut agent = Guard(
        Command::new(bin.join("sonde-agent"))
            .args(["--aggregator", &format!("http://127.0.0.1:{grpc}")])
            .args(["--listen-metrics", &format!("127.0.0.1:{metrics}")])
            .stdout(Stdio::null())
            .stderr(log(dir, "agent")?)
            .spawn()
            .context("start sonde-agent")?,
    );
    let pid = agent.0.id();
    let base = format!("http://127.0.0.1:{metrics}");
    let attached = |m: &str, program: &str| {
        m.contains(&format!(
            "sonde_agent_ebpf_program_attached{{program=\"{program}\"}} 1"
        ))
    };
    wait_for(Duration::from_secs(30), "the agent's HTTP hooks", || {
        curl(&format!("{base}/metrics")).is_some_and(|m| {
            ["sock_recv_length", "sys_exit_read_regs", "sys_exit_io"]
                .iter()
                .any(|p| attached(&m, p))
        })
    })?;
    if !curl(&format!("{base}/metrics")).is_some_and(|m| attached(&m, "sock_recv_length")) {
        bail!(
            "the agent sees socket data through syscall tracepoints here (kernel before 6.3 \
             or unknown architecture; see {}): the benchmark measures the socket data path",
            dir.join("agent.log").display()
        );
    }
    // Let start-up work (connection seeding, libssl discovery) finish before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let progs = prog_ids(pid);
    let (cpu0, ebpf0, t0) = (cpu_seconds(pid)?, ebpf_time(&progs), Instant::now());
    let mut round = wrk(options, target, options.duration)?;
    let (cpu1, ebpf1, elapsed) = (cpu_seconds(pid)?, ebpf_time(&progs), t0.elapsed());
    round.kind = Kind::Agent;
    round.agent_cores = (cpu1 - cpu0) / elapsed.as_secs_f64();
    round.ebpf_ns_per_request = (ebpf1.saturating_sub(ebpf0)) as f64 / round.requests.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    round.agent_rss_mib = status_kib(&status, "VmRSS:") / 1024.0;
    // The peak counts the collection tick after the load too (it ships what the load left).
    let load_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    wait_for(
        Duration::from_secs(40),
        "a collection tick after the load",
        || {
            curl(&format!("{base}/metrics")).is_some_and(|m| {
                metric(&m, "sonde_agent_last_collection_timestamp_seconds")
                    .is_some_and(|t| t >= load_end)
            })
        },
    )?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    round.agent_peak_rss_mib = status_kib(&status, "VmHWM:") / 1024.0;
    // The reader drains on a 100 ms timer.
    std::thread::sleep(Duration::from_millis(500));
    let debug = curl(&format!("{base}/debug/http")).context("agent /debug/http")?;
    round.counted = counted(&debug)?;
    let metrics_text = curl(&format!("{base}/metrics")).unwrap_or_default();
    for line in metrics_text.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if line.starts_with("sonde_agent_spans_dropped_total{")
            && !line.contains("reason=\"sampled_out\"")
            && !line.contains("reason=\"budget\"")
            && !line.contains("reason=\"shed\"")
        {
            round.spans_lost += value().unwrap_or(0.0);
        } else if line.starts_with("sonde_agent_spans_linked_total{")
            && !line.contains("link=\"forced\"")
            && !line.contains("link=\"abandoned\"")
        {
            round.spans_built += value().unwrap_or(0.0);
        }
    }
    for line in metrics_text
        .lines()
        .filter(|l| l.starts_with("sonde_agent_events_lost_total{program=\"http\""))
    {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let reason = line
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        if let (Some(value), Some(reason)) = (value, reason)
            && value > 0.0
        {
            round.lost += value;
            *round.lost_reasons.entry(reason.to_owned()).or_default() += value;
        }
    }
    round.untraced_pair_ns = untraced_pair_ns()?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if agent.0.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(round)
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// nginx's requests for the benchmark route, server side, from `/debug/http`.
fn counted(debug: &str) -> anyhow::Result<u64> {
    let json: serde_json::Value = serde_json::from_str(debug).context("parse /debug/http")?;
    Ok(json["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter(|s| {
                    s["direction"] == "server"
                        && s["labels"]["service_name"] == "nginx"
                        && s["labels"]["http_route"] == "/bench/{id}"
                })
                .filter_map(|s| s["count"].as_u64())
                .sum()
        })
        .unwrap_or(0))
}

/// `read` + `write` pairs `dd` makes per measurement.
const UNTRACED_PAIRS: u64 = 500_000;

/// CPU ns per `read` + `write` pair of `dd` copying 1-byte blocks from /dev/zero to
/// /dev/null: the syscall tracepoints' cost to processes the agent does not trace.
fn untraced_pair_ns() -> anyhow::Result<f64> {
    let children0 = children_cpu_seconds();
    let status = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=1"])
        .arg(format!("count={UNTRACED_PAIRS}"))
        .stderr(Stdio::null())
        .status()
        .context("run dd")?;
    if !status.success() {
        bail!("dd failed: {status}");
    }
    // dd is the only child that ended meanwhile.
    Ok((children_cpu_seconds() - children0) * 1e9 / UNTRACED_PAIRS as f64)
}

fn wrk(options: &Options, target: &Target<'_>, seconds: u64) -> anyhow::Result<Round> {
    let nginx0 = cpu_seconds(target.nginx)?;
    let aggregator0 = cpu_seconds(target.aggregator)?;
    let children0 = children_cpu_seconds();
    let out = Command::new("wrk")
        .args(["-t", &options.threads.to_string()])
        .args(["-c", &options.connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", target.url])
        .output()
        .context("run wrk")?;
    // wrk is the only child that ended meanwhile: the children's CPU grew by its CPU.
    let wrk_cpu = children_cpu_seconds() - children0;
    let nginx_cpu = cpu_seconds(target.nginx)? - nginx0;
    let aggregator_cpu = cpu_seconds(target.aggregator)? - aggregator0;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut round = parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))?;
    round.nginx_us = nginx_cpu * 1e6 / round.requests as f64;
    round.wrk_us = wrk_cpu * 1e6 / round.requests as f64;
    round.aggregator_us = aggregator_cpu * 1e6 / round.requests as f64;
    Ok(round)
}

fn parse_wrk(text: &str) -> Option<Round> {
    let mut round = Round::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            round.rps = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            round.p50_ms = parse_duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            round.p99_ms = parse_duration_ms(v.trim())?;
        } else if line.contains(" requests in ") {
            round.requests = line.split_whitespace().next()?.parse().ok()?;
        }
    }
    (round.rps > 0.0 && round.requests > 0).then_some(round)
}

/// `658.00us`, `1.21ms`, `2.00s` → milliseconds.
fn parse_duration_ms(v: &str) -> Option<f64> {
    for (suffix, scale) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3)] {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report(options: &Options, rounds: &[Round]) -> String {
    let side = |kind: Kind| rounds.iter().filter(move |r| r.kind == kind && !r.profile);
    let profile = rounds.iter().find(|r| r.profile);
    let with_bpftrace = side(Kind::Bpftrace).next().is_some();
    let m = |kind: Kind, f: fn(&Round) -> f64| median(side(kind).map(f).collect());
    let (rps_off, rps_on) = (m(Kind::Off, |r| r.rps), m(Kind::Agent, |r| r.rps));
    let ratio = rps_on / rps_off;
    let p50 = m(Kind::Agent, |r| r.p50_ms) - m(Kind::Off, |r| r.p50_ms);
    let p99 = m(Kind::Agent, |r| r.p99_ms) - m(Kind::Off, |r| r.p99_ms);
    let cpu_per_10k = median(
        side(Kind::Agent)
            .map(|r| r.agent_cores / (r.rps / 10_000.0))
            .collect(),
    );
    let rss = side(Kind::Agent)
        .map(|r| r.agent_peak_rss_mib)
        .fold(0.0, f64::max);
    let ebpf_ns = profile.map_or(f64::NAN, |r| r.ebpf_ns_per_request);
    let (nginx_off, nginx_on) = (m(Kind::Off, |r| r.nginx_us), m(Kind::Agent, |r| r.nginx_us));
    let (wrk_off, wrk_on) = (m(Kind::Off, |r| r.wrk_us), m(Kind::Agent, |r| r.wrk_us));
    let counted_min = side(Kind::Agent)
        .map(|r| r.counted as f64 / r.requests as f64)
        .fold(f64::INFINITY, f64::min);
    let lost: f64 = side(Kind::Agent).map(|r| r.lost).sum();
    let spans_built: f64 = side(Kind::Agent).map(|r| r.spans_built).sum();
    let spans_lost: f64 = side(Kind::Agent).map(|r| r.spans_lost).sum();
    let mut lost_reasons = std::collections::BTreeMap::<String, f64>::new();
    for (reason, n) in side(Kind::Agent).flat_map(|r| r.lost_reasons.iter()) {
        *lost_reasons.entry(reason.clone()).or_default() += n;
    }
    let lost_detail = if lost_reasons.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = lost_reasons
            .iter()
            .map(|(r, n)| format!("{r}: {n:.0}"))
            .collect();
        format!(
            " ({}; the agent traces every process on the host, not only nginx and wrk)",
            parts.join(", ")
        )
    };
    let check = |ok: bool| if ok { "met" } else { "**missed**" };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HTTP tracing overhead (`cargo xtask bench http-overhead`)\n"
    );
    let _ = writeln!(
        s,
        "Reproduce (as root): `cargo xtask bench http-overhead --rounds {} --duration {} \
         --connections {} --threads {}`\n",
        options.rounds, options.duration, options.connections, options.threads
    );
    let _ = writeln!(
        s,
        "wrk ({} thread, {} keep-alive connections, {} s per round) against nginx \
         (1 worker, `return 200`) on loopback; rounds without the agent, with it and with \
         bpftrace idle on the agent's tracepoints (unless `--no-bpftrace`) alternate, the \
         order flipping every round. With the agent every hook is live and both nginx \
         (server) and wrk (client) are traced: two exchanges per request. Agent: release \
         build, default configuration. Machine: Linux {}, {} CPUs, load average at the end \
         {}(the machine is shared; throughput varies between rounds).\n",
        options.threads,
        options.connections,
        options.duration,
        kernel.trim(),
        cpus,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            + " "
    );
    let _ = writeln!(s, "## Summary (medians)\n");
    let _ = writeln!(s, "| Measure | Result | Goal |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| Throughput with / without agent | {ratio:.3} ({rps_on:.0} / {rps_off:.0} req/s) | ≥ 0.97: {} |",
        check(ratio >= 0.97)
    );
    let _ = writeln!(
        s,
        "| CPU per request in the traced processes, without → with agent | nginx {nginx_off:.2} → \
         {nginx_on:.2} µs, wrk {wrk_off:.2} → {wrk_on:.2} µs (+{:.2} µs per request, both sides) | |",
        nginx_on + wrk_on - nginx_off - wrk_off
    );
    let _ = writeln!(
        s,
        "| CPU per `read` + `write` pair in a process the agent does not trace (`dd`, 1-byte \
         blocks, /dev/zero → /dev/null), without → with agent{} | {:.0} → {:.0} ns{} | |",
        if with_bpftrace {
            " (idle bpftrace)"
        } else {
            ""
        },
        m(Kind::Off, |r| r.untraced_pair_ns),
        m(Kind::Agent, |r| r.untraced_pair_ns),
        if with_bpftrace {
            format!(" ({:.0} ns)", m(Kind::Bpftrace, |r| r.untraced_pair_ns))
        } else {
            String::new()
        }
    );
    if with_bpftrace {
        let rps_bpftrace = m(Kind::Bpftrace, |r| r.rps);
        let _ = writeln!(
            s,
            "| Throughput with bpftrace idle on the same {} tracepoints (programs that do \
             nothing) / without | {:.3} ({rps_bpftrace:.0} / {rps_off:.0} req/s); nginx + wrk CPU \
             +{:.2} µs per request | |",
            IDLE_TRACEPOINTS.len(),
            rps_bpftrace / rps_off,
            m(Kind::Bpftrace, |r| r.nginx_us) + m(Kind::Bpftrace, |r| r.wrk_us)
                - nginx_off
                - wrk_off
        );
        let _ = writeln!(
            s,
            "| Throughput with agent / with idle bpftrace | {:.3} | |",
            rps_on / rps_bpftrace
        );
    }
    let _ = writeln!(
        s,
        "| Aggregator CPU per request, without → with agent (it receives the agent's metrics \
         and spans; on this host, at idle priority, only because the benchmark has one \
         machine) | {:.2} → {:.2} µs \
         | |",
        m(Kind::Off, |r| r.aggregator_us),
        m(Kind::Agent, |r| r.aggregator_us)
    );
    let _ = writeln!(s, "| Added p50 latency | {:+.3} ms | |", p50);
    let _ = writeln!(s, "| Added p99 latency | {:+.3} ms | |", p99);
    let _ = writeln!(
        s,
        "| Agent CPU per 10k req/s | {cpu_per_10k:.3} cores | ≤ 0.1: {} |",
        check(cpu_per_10k <= 0.1)
    );
    let _ = writeln!(
        s,
        "| Agent peak RSS (highest round, up to the tick after the load) | {rss:.1} MiB | < 50 MiB: {} |",
        check(rss < 50.0)
    );
    let _ = writeln!(
        s,
        "| Kernel time in the agent's eBPF programs (extra round with eBPF statistics on, {:.0} req/s) | {ebpf_ns:.0} ns per request (both sides) | |",
        profile.map_or(f64::NAN, |r| r.rps)
    );
    let _ = writeln!(
        s,
        "| nginx requests counted / wrk completed (worst round) | {:.4} | ≥ 0.99: {} |",
        counted_min,
        check(counted_min >= 0.99)
    );
    let _ = writeln!(
        s,
        "| HTTP events lost (all rounds) | {lost:.0}{lost_detail} | |"
    );
    let _ = writeln!(
        s,
        "| Spans built / lost for lack of room (all rounds; the default budget of 5000 spans/s \
         keeps the rest out by policy, most shed before linking) | {spans_built:.0} / \
         {spans_lost:.0} | 0 lost |\n"
    );
    let _ = writeln!(s, "## Rounds\n");
    let _ = writeln!(
        s,
        "| # | Agent | req/s | p50 ms | p99 ms | nginx / wrk / aggregator CPU µs per request | agent cores | RSS MiB (end of load / peak) | counted / completed |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in rounds {
        let n = if r.profile {
            "profile".to_owned()
        } else {
            r.n.to_string()
        };
        let _ = write!(
            s,
            "| {n} | {} | {:.0} | {:.3} | {:.3} | {:.2} / {:.2} / {:.2} |",
            r.kind.column(),
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.nginx_us,
            r.wrk_us,
            r.aggregator_us
        );
        let _ = if r.kind == Kind::Agent {
            writeln!(
                s,
                " {:.3} | {:.1} / {:.1} | {} / {} |",
                r.agent_cores, r.agent_rss_mib, r.agent_peak_rss_mib, r.counted, r.requests
            )
        } else {
            writeln!(s, " | | |")
        };
    }
    s
}

/// A child killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(dir: &Path, port: u16) -> anyhow::Result<Guard> {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"hello\\n\"; }}\n  }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx")?;
    let guard = Guard(child);
    wait_for(Duration::from_secs(10), "nginx", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok(guard)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

fn curl(url: &str) -> Option<String> {
    util::output(Command::new("curl").args(["-sf", "--max-time", "10", url]))
}

fn status_kib(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Ids of the eBPF programs a process holds (from its fds' fdinfo).
fn prog_ids(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        if let Ok(info) = std::fs::read_to_string(fd.path())
            && let Some(id) = info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Total kernel run time (ns) of the given programs (`kernel.bpf_stats_enabled`).
fn ebpf_time(ids: &[u64]) -> u64 {
    let Some(json) = util::output(Command::new("bpftool").args(["prog", "show", "-j"])) else {
        return 0;
    };
    let Ok(serde_json::Value::Array(progs)) = serde_json::from_str::<serde_json::Value>(&json)
    else {
        return 0;
    };
    progs
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .filter_map(|p| p["run_time_ns"].as_u64())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 3s test @ http://127.0.0.1:1/bench/1
  1 threads and 50 connections
  Latency Distribution
     50%  658.00us
     75%    0.87ms
     90%    3.18ms
     99%    5.67ms
  121432 requests in 3.02s, 17.72MB read
Requests/sec:  40257.11
";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 121432);
        assert!((r.rps - 40257.11).abs() < 1e-6);
        assert!((r.p50_ms - 0.658).abs() < 1e-9);
        assert!((r.p99_ms - 5.67).abs() < 1e-9);
        assert_eq!(parse_duration_ms("2.00s"), Some(2000.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn every_rounds_row_has_the_tables_columns() {
        let options = Options {
            rounds: 1,
            duration: 10,
            connections: 50,
            threads: 1,
            no_build: true,
            no_bpftrace: false,
        };
        let rounds: Vec<Round> = [Kind::Off, Kind::Agent, Kind::Bpftrace]
            .into_iter()
            .map(|kind| Round {
                n: 1,
                kind,
                rps: 1000.0,
                requests: 10_000,
                counted: 10_000,
                ..Round::default()
            })
            .collect();
        let report = report(&options, &rounds);
        let table: Vec<&str> = report
            .split("## Rounds")
            .nth(1)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('|'))
            .collect();
        let columns = table[0].matches('|').count();
        assert_eq!(table.len(), 2 + rounds.len(), "{report}");
        for row in &table {
            assert_eq!(row.matches('|').count(), columns, "{row}");
        }
        assert!(table[3].contains("| 10000 / 10000 |"), "{}", table[3]);
    }
}
