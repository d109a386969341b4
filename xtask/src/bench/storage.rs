//! `cargo xtask bench storage`: the same generated node_exporter-like data imported into
//! Sonde (`sonde-aggregator import`), Prometheus (`promtool tsdb create-blocks-from
//! openmetrics`) and VictoriaMetrics (`/api/v1/import/prometheus` on loopback) in one run;
//! reports bytes per sample on disk, import samples/s and peak RSS in
//! `bench-results/storage.md`.

mod datagen;

use std::{
    fmt::Write as _,
    io::BufWriter,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util;

#[derive(clap::Args)]
pub struct Options {
    /// Hosts (node_exporter instances) to simulate.
    #[arg(long, default_value_t = 20)]
    hosts: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 4.0)]
    hours: f64,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Where the data and the three stores go.
    #[arg(long, default_value = "target/bench-storage")]
    work_dir: PathBuf,
}

/// One tool's figures.
struct Figures {
    name: &'static str,
    bytes: u64,
    seconds: f64,
    /// CPU time of the importing process (user + system), when it is one process.
    cpu_seconds: Option<f64>,
    max_rss_kib: u64,
    note: String,
}

/// Runs `cmd` to completion; returns wall seconds, CPU seconds (user + system) and the
/// child's peak RSS (KiB).
fn measure(cmd: &mut Command) -> anyhow::Result<(f64, f64, u64)> {
    eprintln!("+ {}", util::display(cmd));
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", util::display(cmd)))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("`{}` failed (status {status})", util::display(cmd));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    Ok((seconds, cpu, usage.ru_maxrss as u64))
}

/// Apparent size of every file under `path`.
fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .args(args)
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        bail!(
            "curl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn victoria_metrics(prom_file: &Path, data: &Path) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", data.display()))
        .arg(format!("-httpListenAddr={addr}"))
        .arg("-retentionPeriod=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start victoria-metrics (apt-get install victoria-metrics)")?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while curl(&[&format!("http://{addr}/health")]).is_err() {
            if Instant::now() > deadline {
                bail!("victoria-metrics did not become healthy on {addr}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let baseline = du(data);
        let started = Instant::now();
        curl(&[
            "-H",
            "Content-Type: text/plain",
            // -T streams the file (--data-binary would load 1 GB into memory).
            "-X",
            "POST",
            "-T",
            &prom_file.display().to_string(),
            &format!("http://{addr}/api/v1/import/prometheus"),
        ])?;
        curl(&[&format!("http://{addr}/internal/force_flush")])?;
        let seconds = started.elapsed().as_secs_f64();
        // Let background merges settle: wait until the size is stable for 10 s.
        let mut last = du(data);
        let mut stable_since = Instant::now();
        let settle_deadline = Instant::now() + Duration::from_secs(180);
        while stable_since.elapsed() < Duration::from_secs(10) && Instant::now() < settle_deadline {
            std::thread::sleep(Duration::from_secs(1));
            curl(&[&format!("http://{addr}/internal/force_flush")])?;
            let now = du(data);
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
        }
        let rss = peak_rss_kib(child.id());
        Ok(Figures {
            name: "VictoriaMetrics",
            bytes: last,
            seconds,
            cpu_seconds: None,
            max_rss_kib: rss,
            note: format!(
                "POST /api/v1/import/prometheus + force_flush; size after merges settled \
                 (empty store: {baseline} B, included)"
            ),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let root = util::workspace_root();
    util::run(util::cargo().args(["build", "--release", "-p", "sonde-aggregator"]))?;
    let sonde = root.join("target/release/sonde-aggregator");
    let work = root.join(&options.work_dir);
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let om_path = work.join("data.om");
    let prom_path = work.join("data.prom");

    let interval_ms = options.interval as i64 * 1000;
    let scrapes = (options.hours * 3600.0 / options.interval as f64).round() as usize;
    // A fixed, 2h-aligned start keeps runs comparable.
    let start_ms = 1_767_225_600_000;
    eprintln!("generating {} hosts × {scrapes} scrapes…", options.hosts);
    let generated = {
        let mut om = BufWriter::with_capacity(1 << 20, std::fs::File::create(&om_path)?);
        let mut prom = BufWriter::with_capacity(1 << 20, std::fs::File::create(&prom_path)?);
        datagen::generate(
            &mut om,
            &mut prom,
            options.hosts,
            scrapes,
            interval_ms,
            start_ms,
        )?
    };
    let samples = generated.samples;
    eprintln!("{} series, {samples} samples", generated.series);

    let mut results = Vec::new();

    let sonde_dir = work.join("sonde");
    let (seconds, cpu, rss) = measure(
        Command::new(&sonde)
            .args(["--log-level", "warn", "import", "--data-dir"])
            .arg(&sonde_dir)
            .arg(&om_path),
    )?;
    let blocks = du(&sonde_dir.join("blocks"));
    results.push(Figures {
        name: "Sonde",
        bytes: blocks,
        seconds,
        cpu_seconds: Some(cpu),
        max_rss_kib: rss,
        note: "`sonde-aggregator import` (parse, write one block per 1-day compaction window); blocks/ only"
            .to_owned(),
    });

    let prom_dir = work.join("prometheus");
    let (seconds, promtool_cpu, rss) = measure(
        Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om_path)
            .arg(&prom_dir)
            .stdout(Stdio::null()),
    )?;
    results.push(Figures {
        name: "Prometheus 2.42",
        bytes: du(&prom_dir),
        seconds,
        cpu_seconds: Some(promtool_cpu),
        max_rss_kib: rss,
        note: "`promtool tsdb create-blocks-from openmetrics` (2h blocks)".to_owned(),
    });

    results.push(victoria_metrics(
        &prom_path,
        &work.join("victoria-metrics"),
    )?);

    let inspect = util::output(
        Command::new(&sonde)
            .arg("inspect")
            .arg("--data-dir")
            .arg(&sonde_dir),
    )
    .unwrap_or_default();

    // Alternative encodings of the same samples table, measured with pyarrow (if present).
    let script = root.join("xtask/src/bench/storage/encodings.py");
    let encodings = util::output(
        Command::new("python3")
            .arg(&script)
            .arg(&sonde_dir)
            .arg(samples.to_string()),
    )
    .unwrap_or_else(|| "(pyarrow not available: `cargo xtask setup` installs it)\n".to_owned());

    let mut md = String::new();
    let _ = writeln!(md, "# Storage benchmark\n");
    let _ = writeln!(
        md,
        "Reproduce: `cargo xtask bench storage --hosts {} --hours {} --interval {}` \
         (release build; one run, same machine, tools one after another).\n",
        options.hosts, options.hours, options.interval
    );
    let _ = writeln!(
        md,
        "Data: {} node_exporter-like hosts × {} series ≈ {} series, every {} s for {} h = \
         **{samples} samples** (`xtask/src/bench/storage/datagen.rs`: CPU/memory/filesystem/network/disk \
         families, load, netstat/vmstat, hwmon, per-collector scrape durations, Go runtime, an \
         HTTP latency histogram; counters with noisy increments at kernel precision, random-walk \
         gauges, constants, full-precision float durations; 2% of scrapes carry a few ms of \
         timestamp jitter). Input: {} MB OpenMetrics.\n",
        options.hosts,
        generated.series / options.hosts.max(1) as u64,
        generated.series,
        options.interval,
        options.hours,
        du(&om_path) / 1_000_000
    );
    let _ = writeln!(
        md,
        "| store | bytes on disk | bytes/sample | import samples/s | samples per CPU-second | peak RSS | how |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|");
    for r in &results {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.0} | {} | {:.0} MiB | {} |",
            r.name,
            r.bytes,
            r.bytes as f64 / samples as f64,
            samples as f64 / r.seconds,
            r.cpu_seconds
                .map_or("-".to_owned(), |c| format!("{:.0}", samples as f64 / c)),
            r.max_rss_kib as f64 / 1024.0,
            r.note
        );
    }
    let per = |name: &str| {
        results
            .iter()
            .find(|r| r.name.starts_with(name))
            .map_or(f64::NAN, |r| r.bytes as f64 / samples as f64)
    };
    let _ = writeln!(
        md,
        "\nSonde / Prometheus: {:.2}× the bytes; Sonde / VictoriaMetrics: {:.2}× (goal: < 1, ≤ 1.5).",
        per("Sonde") / per("Prometheus"),
        per("Sonde") / per("VictoriaMetrics")
    );
    let _ = writeln!(
        md,
        "\nImport samples/s is wall time over the whole import (Sonde and promtool: the process; \
         VictoriaMetrics: the HTTP import plus a forced flush); samples per CPU-second divides by \
         the importing process' user + system time (the goal: ≥ 1M per core). Peak RSS is the process' high-water \
         mark (VictoriaMetrics: the server's). Sonde's per-column sizes:\n\n```\n{}```",
        inspect
    );
    let _ = writeln!(
        md,
        "\nThe same samples table re-encoded with other Parquet settings (pyarrow, \
         `xtask/src/bench/storage/encodings.py`; one file, so slightly smaller than the blocks):\n\n```\n{encodings}```"
    );
    let out = root.join("bench-results/storage.md");
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    std::fs::write(&out, &md)?;
    print!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}
