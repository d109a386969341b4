//! The three systems under test, each loaded with the same dataset and serving the Prometheus
//! query API on loopback: Sonde (`sonde-aggregator import`, then serve), Prometheus (`promtool
//! tsdb create-blocks-from openmetrics`, then serve) and VictoriaMetrics (serve, then
//! `/api/v1/import/prometheus`). Processes are stopped when dropped.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::dataset::Dataset;
use crate::util;

/// A running server.
pub struct Server {
    /// Display name.
    pub name: &'static str,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[start..].to_owned()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(name: &'static str, cmd: &mut Command, dir: &Path, url: String) -> anyhow::Result<Server> {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    eprintln!("+ {}", util::display(cmd));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Server {
        name,
        url,
        child,
        log,
    })
}

/// `GET url` → (status, body).
pub fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let mut response = agent.get(url).call()?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()?;
    Ok((status, body))
}

fn wait_ready(server: &mut Server, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!(
                "{} exited with {status}:\n{}",
                server.name,
                server.log_tail()
            );
        }
        if get(&format!("{}{path}", server.url)).is_ok_and(|(s, _)| s == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "{} not ready after {timeout:?}:\n{}",
        server.name,
        server.log_tail()
    )
}

/// Imports the OpenMetrics files into a fresh data directory and serves it.
pub fn sonde(binary: &Path, files: &[PathBuf], dir: &Path) -> anyhow::Result<Server> {
    let data = dir.join("sonde-data");
    let _ = std::fs::remove_dir_all(&data);
    let started = Instant::now();
    util::run(
        Command::new(binary)
            .args(["import", "--data-dir"])
            .arg(&data)
            .args(files),
    )?;
    eprintln!(
        "sonde: import took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = free_port()?;
    let grpc = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn(
        "sonde",
        Command::new(binary)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-http", &format!("127.0.0.1:{port}")])
            .args(["--listen-grpc", &format!("127.0.0.1:{grpc}")])
            .args(["--log-level", "warn"]),
        dir,
        url,
    )?;
    wait_ready(&mut server, "/-/ready", Duration::from_secs(300))?;
    Ok(server)
}

/// Backfills the OpenMetrics files with promtool and serves the blocks.
pub fn prometheus(files: &[PathBuf], dir: &Path) -> anyhow::Result<Server> {
    let data = dir.join("prometheus-data");
    let _ = std::fs::remove_dir_all(&data);
    let started = Instant::now();
    for file in files {
        util::run(
            Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                .arg(file)
                .arg(&data),
        )?;
    }
    eprintln!(
        "prometheus: backfill took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  evaluation_interval: 1m\nscrape_configs: []\n",
    )?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .arg("--log.level=warn"),
        dir,
        url,
    )?;
    wait_ready(&mut server, "/-/ready", Duration::from_secs(300))?;
    // Let the compactor merge the backfilled 2 h blocks as a long-running server would have.
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_secs(70));
        let (_, metrics) = get(&format!("{}/metrics", server.url))?;
        let blocks: String = metrics
            .lines()
            .filter(|l| {
                l.starts_with("prometheus_tsdb_blocks_loaded")
                    || l.starts_with("prometheus_tsdb_compactions_total")
            })
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("prometheus: {blocks}");
        if blocks == last {
            break;
        }
        last = blocks;
    }
    Ok(server)
}

/// Serves an empty VictoriaMetrics and imports the dataset into it.
pub fn victoria_metrics(dataset: &Dataset, dir: &Path) -> anyhow::Result<Server> {
    let data = dir.join("victoria-data");
    let _ = std::fs::remove_dir_all(&data);
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn(
        "victoria-metrics",
        Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", data.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-loggerLevel=WARN"),
        dir,
        url.clone(),
    )?;
    wait_ready(&mut server, "/health", Duration::from_secs(120))?;
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let chunk = 3_600_000;
    let mut from = dataset.start_ms - dataset.interval_ms;
    while from <= dataset.end_ms() + dataset.interval_ms {
        let body = dataset.prometheus_text(from, from + chunk);
        let response = agent
            .post(&format!("{url}/api/v1/import/prometheus"))
            .send(body.as_bytes())?;
        if !response.status().is_success() {
            bail!("VictoriaMetrics import failed: {}", response.status());
        }
        from += chunk;
    }
    get(&format!("{url}/internal/force_flush"))?;
    eprintln!(
        "victoria-metrics: import took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(server)
}

/// Resident memory and its high-water mark (kB) of a process; writing `5` to `clear_refs`
/// resets the mark to the current size (Linux).
pub fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets a process' resident high-water mark.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}
