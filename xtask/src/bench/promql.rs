//! `cargo xtask bench promql`: typical dashboard queries (rate summed by instance, a p99 over
//! classic histogram buckets, a topk) as instant queries and over 1 h at 15 s and 24 h at 60 s
//! steps, against Sonde, Prometheus and VictoriaMetrics holding the same ~10k series, in one
//! run. Each query runs once to warm up, then `--runs` times; the report gives the median and
//! fastest wall time of the HTTP request and the growth of each server's resident memory
//! during the runs, and checks that Sonde's answers equal Prometheus' (relative 1e-6).
//! Writes `bench-results/promql.md`.

mod dataset;
mod servers;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};

use self::{
    dataset::Dataset,
    servers::{Server, get, memory_kb, reset_peak},
};
use crate::util;

#[derive(clap::Args)]
pub struct Options {
    /// Instances; each has 20 series (10 counters, 10 histogram buckets).
    #[arg(long, default_value_t = 500)]
    instances: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Scrape interval, seconds.
    #[arg(long, default_value_t = 60)]
    interval: i64,
    /// Timed runs per query and system (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Report file, relative to the workspace root.
    #[arg(long, default_value = "bench-results/promql.md")]
    out: PathBuf,
}

const QUERIES: [(&str, &str); 3] = [
    (
        "rate by instance",
        "sum by (instance) (rate(bench_http_requests_total[5m]))",
    ),
    (
        "p99 latency",
        "histogram_quantile(0.99, sum by (le) (rate(bench_request_duration_seconds_bucket[5m])))",
    ),
    (
        "top 10 instances",
        "topk(10, sum by (instance) (rate(bench_http_requests_total[5m])))",
    ),
];

/// When a query runs: instant (range 0) or a range with a step.
#[derive(Clone, Copy)]
struct Shape {
    label: &'static str,
    range_ms: i64,
    step_ms: i64,
}

const SHAPES: [Shape; 3] = [
    Shape {
        label: "instant",
        range_ms: 0,
        step_ms: 0,
    },
    Shape {
        label: "1h @ 15s",
        range_ms: 3_600_000,
        step_ms: 15_000,
    },
    Shape {
        label: "24h @ 60s",
        range_ms: 24 * 3_600_000,
        step_ms: 60_000,
    },
];

fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn path_for(query: &str, shape: Shape, end_ms: i64) -> String {
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    if shape.range_ms == 0 {
        format!(
            "/api/v1/query?query={}&time={}",
            encode(query),
            secs(end_ms)
        )
    } else {
        format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(query),
            secs(end_ms - shape.range_ms),
            secs(end_ms),
            shape.step_ms / 1000
        )
    }
}

/// Result series → (timestamp ms → value), for comparing answers.
type Answer = BTreeMap<String, BTreeMap<i64, f64>>;

fn parse_answer(body: &str) -> anyhow::Result<Answer> {
    let json: serde_json::Value = serde_json::from_str(body).context("response is not JSON")?;
    if json["status"] != "success" {
        bail!("query failed: {body}");
    }
    let mut out = Answer::new();
    let value = |v: &serde_json::Value| -> f64 {
        v.as_str()
            .and_then(|s| match s {
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                "NaN" => Some(f64::NAN),
                s => s.parse().ok(),
            })
            .unwrap_or(f64::NAN)
    };
    let time = |v: &serde_json::Value| (v.as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
    for s in json["data"]["result"].as_array().into_iter().flatten() {
        let labels = s["metric"].to_string();
        let points = out.entry(labels).or_default();
        if let Some(values) = s["values"].as_array() {
            for p in values {
                points.insert(time(&p[0]), value(&p[1]));
            }
        } else {
            points.insert(time(&s["value"][0]), value(&s["value"][1]));
        }
    }
    Ok(out)
}

/// Where two answers differ by more than relative 1e-6, described; `None` if they agree.
fn differences(a: &Answer, b: &Answer) -> Option<String> {
    let close = |x: f64, y: f64| {
        (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-6 * x.abs().max(y.abs())
    };
    let mut found = Vec::new();
    for (labels, points) in a {
        for (t, v) in points {
            match b.get(labels).and_then(|p| p.get(t)) {
                Some(w) if close(*v, *w) => {}
                Some(w) => found.push(format!("{labels} at {t}: {v} vs {w}")),
                None => found.push(format!("{labels} at {t}: {v} only in Sonde's answer")),
            }
        }
    }
    for (labels, points) in b {
        for (t, w) in points {
            if a.get(labels).and_then(|p| p.get(t)).is_none() {
                found.push(format!("{labels} at {t}: {w} only in Prometheus' answer"));
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    let shown = found.len().min(4);
    Some(format!(
        "{} point(s) differ: {}",
        found.len(),
        found[..shown].join("; ")
    ))
}

/// One system's timings for one case.
struct Measured {
    median_ms: f64,
    min_ms: f64,
    peak_mb: f64,
    series: usize,
    answer: Answer,
}

fn measure(server: &Server, path: &str, runs: usize) -> anyhow::Result<Measured> {
    let url = format!("{}{path}", server.url);
    reset_peak(server.pid());
    let (rss_before, _) = memory_kb(server.pid());
    let (status, body) = get(&url)?;
    if status != 200 {
        bail!("{} answered {status}: {body}", server.name);
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let (status, _) = get(&url)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            bail!("{} answered {status}", server.name);
        }
    }
    let (_, peak) = memory_kb(server.pid());
    times.sort_by(|a, b| a.total_cmp(b));
    let answer = parse_answer(&body)?;
    Ok(Measured {
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        peak_mb: peak.saturating_sub(rss_before) as f64 / 1024.0,
        series: answer.len(),
        answer,
    })
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu})")
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    for tool in ["prometheus", "promtool", "victoria-metrics"] {
        if util::output(std::process::Command::new("which").arg(tool)).is_none() {
            bail!("{tool} is not installed (run `cargo xtask setup`)");
        }
    }
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "sonde-aggregator",
        "--bin",
        "sonde-aggregator",
    ]))?;
    let root = util::workspace_root();
    let binary = root.join("target/release/sonde-aggregator");
    let dir = root.join("target/bench-promql");
    std::fs::create_dir_all(&dir)?;

    // Data ends an hour ago (VictoriaMetrics refuses samples outside its retention window
    // around now), on a minute boundary.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let end_ms = (now - 3_600_000) / 60_000 * 60_000;
    let started = Instant::now();
    let dataset = Dataset::generate(
        options.instances,
        options.hours,
        options.interval * 1000,
        end_ms,
    );
    let files = dataset.write_openmetrics(&dir.join("openmetrics"))?;
    eprintln!(
        "dataset: {} series, {} samples, {} files in {:.1} s",
        dataset.series.len(),
        dataset.samples(),
        files.len(),
        started.elapsed().as_secs_f64()
    );

    let mut load_times = Vec::new();
    let t = Instant::now();
    let prometheus = servers::prometheus(&files, &dir)?;
    load_times.push((
        "Prometheus (promtool backfill, start, compaction)",
        t.elapsed(),
    ));
    let t = Instant::now();
    let sonde = servers::sonde(&binary, &files, &dir)?;
    load_times.push(("Sonde (`sonde-aggregator import`, start)", t.elapsed()));
    let t = Instant::now();
    let victoria = servers::victoria_metrics(&dataset, &dir)?;
    load_times.push(("VictoriaMetrics (start, HTTP import)", t.elapsed()));

    let load_before = load_average();
    let query_end = dataset.end_ms();
    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    for (name, query) in QUERIES {
        for shape in SHAPES {
            let path = path_for(query, shape, query_end);
            let mut results = Vec::new();
            for server in [&sonde, &prometheus, &victoria] {
                let measured = measure(server, &path, options.runs)
                    .with_context(|| format!("{} on {}: {query}", shape.label, server.name))?;
                eprintln!(
                    "{name:>18} {:>10} {:>16}: median {:8.1} ms, min {:8.1} ms, +{:7.1} MB, {} series",
                    shape.label,
                    server.name,
                    measured.median_ms,
                    measured.min_ms,
                    measured.peak_mb,
                    measured.series
                );
                results.push(measured);
            }
            if let Some(diff) = differences(&results[0].answer, &results[1].answer) {
                mismatches.push(format!("{name} ({}): {diff}", shape.label));
            }
            rows.push((name, query, shape, results));
        }
    }

    let load_after = load_average();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# PromQL: Sonde vs Prometheus vs VictoriaMetrics\n\n\
         Reproduce with `cargo xtask bench promql` (defaults: `--instances {} --hours {} \
         --interval {} --runs {}`).\n",
        options.instances, options.hours, options.interval, options.runs
    );
    let _ = writeln!(
        md,
        "- Machine: {}, shared with other work while measuring (1-minute load average {} \
         before the queries, {} after); all three servers run side by side and are queried \
         one request at a time over loopback.\n\
         - Versions: Sonde {} (release build), {}, {}.\n\
         - Data: {} series ({} instances × 10 counters `bench_http_requests_total` with \
         resets, × 10 classic histogram buckets `bench_request_duration_seconds_bucket`), one \
         sample per {} s over {} h = {} samples, identical in all three.\n\
         - Timing: wall time of the HTTP request (evaluation + JSON), median and fastest of {} \
         runs after one warm-up. Memory: growth of the server's resident set during those \
         runs (`VmHWM` after the runs minus `VmRSS` before, high-water mark reset first).\n\
         - VictoriaMetrics runs with `-search.disableCache` (no result cache); its `rate` \
         does not extrapolate like PromQL's, so only its timings are comparable.\n",
        machine(),
        load_before,
        load_after,
        env!("CARGO_PKG_VERSION"),
        util::output(std::process::Command::new("prometheus").arg("--version"))
            .and_then(|v| v.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "prometheus (unknown version)".into()),
        util::output(std::process::Command::new("victoria-metrics").arg("-version"))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "victoria-metrics (Debian package)".into()),
        dataset.series.len(),
        options.instances,
        options.interval,
        options.hours,
        dataset.samples(),
        options.runs,
    );
    md.push_str("Loading:\n\n");
    for (what, took) in &load_times {
        let _ = writeln!(md, "- {what}: {:.0} s", took.as_secs_f64());
    }
    md.push_str(
        "\n| query | shape | Sonde ms | Prometheus ms | VictoriaMetrics ms | Sonde ÷ Prometheus \
         | memory growth MB (Sonde / Prom / VM) | series |\n|---|---|---:|---:|---:|---:|---|---:|\n",
    );
    for (name, _, shape, r) in &rows {
        let _ = writeln!(
            md,
            "| {name} | {} | {:.1} (min {:.1}) | {:.1} (min {:.1}) | {:.1} (min {:.1}) | {:.2} | {:.0} / {:.0} / {:.0} | {} |",
            shape.label,
            r[0].median_ms,
            r[0].min_ms,
            r[1].median_ms,
            r[1].min_ms,
            r[2].median_ms,
            r[2].min_ms,
            r[0].median_ms / r[1].median_ms,
            r[0].peak_mb,
            r[1].peak_mb,
            r[2].peak_mb,
            r[0].series,
        );
    }
    md.push_str("\nQueries:\n\n");
    for (name, query) in QUERIES {
        let _ = writeln!(md, "- {name}: `{query}`");
    }
    md.push('\n');
    if mismatches.is_empty() {
        md.push_str("Sonde's answers equal Prometheus' for every case (relative 1e-6).\n");
    } else {
        md.push_str(
            "Sonde's answers equal Prometheus' (relative 1e-6) except in the cases below. A \
             `topk` point present on one side only, with the same value as the other side's, \
             is a tie that each breaks its own way (see \
             `tests/fixtures/promql/divergences.md`, topk-ties):\n\n",
        );
        for m in &mismatches {
            let _ = writeln!(md, "- {m}");
        }
    }
    let out = root.join(&options.out);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &md).with_context(|| format!("write {}", out.display()))?;
    eprintln!("\n{md}\nwritten to {}", out.display());
    drop((sonde, prometheus, victoria));
    Ok(())
}
