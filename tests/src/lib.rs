//! Harness for Sonde's end-to-end tests: starts real `sonde-aggregator` and `sonde-agent`
//! processes on free loopback ports in temporary directories, talks to them over HTTP and
//! gRPC, and tears them down (printing their logs when a test fails).
//!
//! The binaries are taken from the cargo target directory next to the test executable
//! (`cargo xtask ci` builds them first), or from `SONDE_BIN_DIR`.
//!
//! Tests that need eBPF call [`require_root`]: it panics unless the process is root, except
//! when `SONDE_SKIP_EBPF_TESTS=1` explicitly opts out (then the test returns early, loudly).

pub mod capture;
pub mod certs;
pub mod exposition;
pub mod jaeger;
mod process;
pub mod promqldiff;
pub mod promqltest;
pub mod red;
pub mod replication;
pub mod workload;

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    time::{Duration, Instant},
};

pub use process::Process;
use serde_json::Value;
use sonde_proto::v1::{Ack, Batch, ingest_client::IngestClient};

/// Directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SONDE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a built binary, with a clear message when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`, which \
         `cargo xtask ci` does) or set SONDE_BIN_DIR",
        path.display()
    );
    path
}

/// A loopback address with a currently free port.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound address")
}

/// Whether eBPF tests may run: true as root; panics otherwise unless
/// `SONDE_SKIP_EBPF_TESTS=1` explicitly skips them.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("SONDE_SKIP_EBPF_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root for eBPF (SONDE_SKIP_EBPF_TESTS=1)");
        return false;
    }
    panic!("{test} needs root (eBPF); run as root or set SONDE_SKIP_EBPF_TESTS=1 to skip it");
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Response {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `GET url`.
pub fn http_get(url: &str) -> Result<Response, ureq::Error> {
    let mut response = agent().get(url).call()?;
    Ok(Response {
        status: response.status().as_u16(),
        body: response.body_mut().read_to_string()?,
    })
}

/// `POST url` with a form-encoded body.
pub fn http_post_form(url: &str, form: &[(&str, &str)]) -> Result<Response, ureq::Error> {
    let mut response = agent().post(url).send_form(form.iter().copied())?;
    Ok(Response {
        status: response.status().as_u16(),
        body: response.body_mut().read_to_string()?,
    })
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A running `sonde-aggregator`.
#[derive(Debug)]
pub struct Aggregator {
    /// HTTP address.
    pub http: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Its data directory (inside a temporary directory removed on drop).
    pub data_dir: PathBuf,
    process: Process,
    _tmp: tempfile::TempDir,
}

impl Aggregator {
    /// Starts an aggregator with default settings and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts an aggregator with extra arguments and waits until it is ready.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on(None, args)
    }

    /// Starts an aggregator whose gRPC endpoint is `grpc` (a free one when `None`).
    pub fn start_on(grpc: Option<SocketAddr>, args: &[&str]) -> Self {
        Self::start_in(None, grpc, args)
    }

    /// Starts an aggregator on `data_dir` (kept by the caller, so a test can restart on the
    /// same data), or on a fresh one inside its temporary directory when `None`.
    pub fn start_in(
        data_dir: Option<&std::path::Path>,
        grpc: Option<SocketAddr>,
        args: &[&str],
    ) -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let data_dir = data_dir.map_or_else(|| tmp.path().join("data"), |d| d.to_owned());
        for attempt in 1..=5 {
            let (http, grpc) = (free_addr(), grpc.unwrap_or_else(free_addr));
            let mut cmd = std::process::Command::new(binary("sonde-aggregator"));
            cmd.arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-http", &http.to_string()])
                .args(["--listen-grpc", &grpc.to_string()])
                .args(["--log-level", "info,sonde_aggregator=debug"])
                .args(args);
            let mut process = Process::spawn("aggregator", &mut cmd, tmp.path());
            let ready = process.wait_until(Duration::from_secs(30), || {
                http_get(&format!("http://{http}/-/ready")).is_ok_and(|r| r.status == 200)
            });
            match ready {
                Ok(()) => {
                    return Self {
                        http,
                        grpc,
                        data_dir,
                        process,
                        _tmp: tmp,
                    };
                }
                Err(log) if log.contains("Address already in use") && attempt < 5 => continue,
                Err(log) => panic!("the aggregator did not become ready:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Starts an aggregator on fixed addresses (replicas must know each other's HTTP address
    /// before they start, and a restarted replica keeps its addresses) on `data_dir` (kept by
    /// the caller) or a fresh one. Panics unless it becomes ready.
    pub fn start_fixed(
        data_dir: Option<&std::path::Path>,
        http: SocketAddr,
        grpc: SocketAddr,
        args: &[&str],
    ) -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let data_dir = data_dir.map_or_else(|| tmp.path().join("data"), |d| d.to_owned());
        let mut cmd = std::process::Command::new(binary("sonde-aggregator"));
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-http", &http.to_string()])
            .args(["--listen-grpc", &grpc.to_string()])
            .args(["--log-level", "info,sonde_aggregator=debug"])
            .args(args);
        let mut process = Process::spawn("aggregator", &mut cmd, tmp.path());
        if let Err(log) = process.wait_until(Duration::from_secs(30), || {
            http_get(&format!("http://{http}/-/ready")).is_ok_and(|r| r.status == 200)
        }) {
            panic!("the aggregator did not become ready:\n{log}");
        }
        Self {
            http,
            grpc,
            data_dir,
            process,
            _tmp: tmp,
        }
    }

    /// `http://<http addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `http://<grpc addr>`, the URL agents push to.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `GET <path>` on the HTTP API.
    pub fn get(&self, path_and_query: &str) -> Response {
        http_get(&format!("{}{path_and_query}", self.url()))
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"))
    }

    /// Instant query at `time` (or now); panics unless it succeeds. Returns `data`.
    pub fn query(&self, query: &str, time: Option<f64>) -> Value {
        let mut path = format!("/api/v1/query?query={}", encode(query));
        if let Some(t) = time {
            path.push_str(&format!("&time={t}"));
        }
        let response = self.get(&path);
        let json = response.json();
        assert_eq!(
            (response.status, json["status"].as_str()),
            (200, Some("success")),
            "query {query:?} failed: {}",
            response.body
        );
        json["data"].clone()
    }

    /// The single value of an instant vector query, if the vector has exactly one element.
    pub fn query_one(&self, query: &str) -> Option<f64> {
        let data = self.query(query, None);
        let result = data["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Pushes batches on one stream and returns the acknowledgements.
    pub fn push(&self, batches: Vec<Batch>) -> Vec<Ack> {
        push(&self.grpc_url(), batches)
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Pushes batches to `url` on one stream; returns one ack per batch.
pub fn push(url: &str, batches: Vec<Batch>) -> Vec<Ack> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("valid URL")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let mut client = IngestClient::new(channel);
        let expected = batches.len();
        let mut acks = client
            .push(tokio_stream::iter(batches))
            .await
            .expect("open push stream")
            .into_inner();
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            match acks.message().await.expect("ack stream") {
                Some(ack) => out.push(ack),
                None => break,
            }
        }
        out
    })
}

/// A running `sonde-agent`.
#[derive(Debug)]
pub struct Agent {
    /// Address of its /metrics.
    pub metrics: SocketAddr,
    process: Process,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent sending to `aggregators` with extra arguments; waits until its
    /// /metrics answers.
    pub fn start(aggregators: &[String], args: &[&str]) -> Self {
        Self::start_with_buffer(aggregators, None, args)
    }

    /// Like [`Agent::start`], with the disk buffer in `buffer_dir` (kept across agents, for
    /// restart tests) instead of a fresh temporary directory.
    pub fn start_with_buffer(
        aggregators: &[String],
        buffer_dir: Option<&std::path::Path>,
        args: &[&str],
    ) -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let buffer =
            buffer_dir.map_or_else(|| tmp.path().join("buffer"), std::path::Path::to_owned);
        for attempt in 1..=5 {
            let metrics = free_addr();
            let mut cmd = std::process::Command::new(binary("sonde-agent"));
            for url in aggregators {
                cmd.args(["--aggregator", url]);
            }
            cmd.args(["--listen-metrics", &metrics.to_string()])
                .arg("--buffer-dir")
                .arg(&buffer)
                .args(args);
            let mut process = Process::spawn("agent", &mut cmd, tmp.path());
            let ready = process.wait_until(Duration::from_secs(30), || {
                http_get(&format!("http://{metrics}/-/healthy")).is_ok_and(|r| r.status == 200)
            });
            match ready {
                Ok(()) => {
                    return Self {
                        metrics,
                        process,
                        _tmp: tmp,
                    };
                }
                Err(log) if log.contains("Address already in use") && attempt < 5 => continue,
                Err(log) => panic!("the agent did not start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The value of one of the agent's own metrics (first line starting with `series`,
    /// e.g. `sonde_agent_buffer_batches{`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The agent's own metrics text.
    pub fn metrics_text(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics))
            .expect("agent /metrics")
            .body
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A batch from `agent_id` with one series `name{labels}` carrying `samples` (ms, value).
pub fn series_batch(
    agent_id: &str,
    sequence: u64,
    name: &str,
    labels: &[(&str, &str)],
    samples: &[(i64, f64)],
) -> Batch {
    use sonde_proto::v1::{BatchPayload, Label, Sample, Series};
    let mut all = vec![Label {
        name: "__name__".into(),
        value: name.into(),
    }];
    all.extend(labels.iter().map(|(n, v)| Label {
        name: (*n).into(),
        value: (*v).into(),
    }));
    let payload = BatchPayload {
        series: vec![Series {
            labels: all,
            samples: samples
                .iter()
                .map(|&(timestamp_ms, value)| Sample {
                    timestamp_ms,
                    value,
                })
                .collect(),
            exemplars: vec![],
        }],
        ..Default::default()
    };
    sonde_proto::codec::encode_batch(agent_id, 1, sequence, &payload, 3)
}
