//! Helpers for the replication fault tests: a cluster of replicas on fixed loopback ports
//! that know each other, writers that push like agents (every batch to every replica that is
//! up, delivered at a write quorum of two), and raw-sample reads to compare replicas.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use sonde_proto::v1::{AckStatus, Batch, ingest_client::IngestClient};

use crate::{Aggregator, encode, free_addr, http_get};

/// Fast anti-entropy for tests: rounds every second, nothing held back.
pub const FAST_CONFIG: &str = "[replication]\ninterval = \"1s\"\nsettle = \"1s\"\nwindow = \"1m\"\n\
recent = \"30m\"\npeer_timeout = \"3s\"\nmax_backoff = \"2s\"\n";

/// One replica's fixed identity.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Replica id.
    pub id: String,
    /// HTTP address.
    pub http: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// Replicas that list each other as peers.
#[derive(Debug)]
pub struct Cluster {
    /// Fixed identities.
    pub slots: Vec<Slot>,
    /// Running replicas (`None` while one is down).
    pub replicas: Vec<Option<Aggregator>>,
    /// Network namespace of each replica, when they run in namespaces.
    netns: Vec<String>,
    config: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// `n` replicas; `data_dir(i)` may place a replica's data elsewhere (a tmpfs).
    pub fn start(n: usize, config: &str, data_dir: impl Fn(usize) -> Option<PathBuf>) -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let config_path = tmp.path().join("replication.toml");
        std::fs::write(&config_path, config).expect("write config");
        let slots: Vec<Slot> = (0..n)
            .map(|i| Slot {
                id: format!("r{i}"),
                http: free_addr(),
                grpc: free_addr(),
                data_dir: data_dir(i).unwrap_or_else(|| tmp.path().join(format!("data-{i}"))),
            })
            .collect();
        let mut cluster = Self {
            slots,
            replicas: (0..n).map(|_| None).collect(),
            netns: Vec::new(),
            config: config_path,
            _tmp: tmp,
        };
        for i in 0..n {
            cluster.start_replica(i);
        }
        cluster
    }

    /// Starts (or restarts) replica `i` on its addresses and data directory.
    pub fn start_replica(&mut self, i: usize) {
        let slot = self.slots[i].clone();
        let peers: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.id != slot.id)
            .map(|s| format!("http://{}", s.http))
            .collect();
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.config.display().to_string(),
            "--replica-id".into(),
            slot.id.clone(),
        ];
        for p in peers {
            args.push("--peer".into());
            args.push(p);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.replicas[i] = Some(match self.netns.get(i) {
            None => Aggregator::start_fixed(Some(&slot.data_dir), slot.http, slot.grpc, &args),
            Some(ns) => start_in_netns(ns, &slot, &args),
        });
    }

    /// `n` replicas, replica `i` in network namespace `net.namespaces[i]` listening on
    /// `net.addr(i)` (ports 9180/9181 of its own namespace).
    pub fn start_in(net: &Net, config: &str) -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let config_path = tmp.path().join("replication.toml");
        std::fs::write(&config_path, config).expect("write config");
        let n = net.namespaces.len();
        let slots: Vec<Slot> = (0..n)
            .map(|i| Slot {
                id: format!("r{i}"),
                http: SocketAddr::new(net.addr(i), 9180),
                grpc: SocketAddr::new(net.addr(i), 9181),
                data_dir: tmp.path().join(format!("data-{i}")),
            })
            .collect();
        let mut cluster = Self {
            slots,
            replicas: (0..n).map(|_| None).collect(),
            netns: net.namespaces.clone(),
            config: config_path,
            _tmp: tmp,
        };
        for i in 0..n {
            cluster.start_replica(i);
        }
        cluster
    }

    /// SIGKILLs replica `i` and waits for it to die.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut replica) = self.replicas[i].take() {
            replica.process().signal(libc::SIGKILL);
            replica.process().stop(Duration::from_secs(10));
        }
    }

    /// Replica `i` (panics when it is down).
    pub fn replica(&self, i: usize) -> &Aggregator {
        self.replicas[i].as_ref().expect("replica is running")
    }

    /// `http://<http>` of replica `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.slots[i].http)
    }
}

fn start_in_netns(ns: &str, slot: &Slot, args: &[&str]) -> Aggregator {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(crate::binary("sonde-aggregator"))
        .arg("--data-dir")
        .arg(&slot.data_dir)
        .args(["--listen-http", &slot.http.to_string()])
        .args(["--listen-grpc", &slot.grpc.to_string()])
        .args(["--log-level", "info,sonde_aggregator=debug"])
        .args(args);
    let mut process = crate::Process::spawn("aggregator", &mut cmd, tmp.path());
    let http = slot.http;
    if let Err(log) = process.wait_until(Duration::from_secs(30), || {
        http_get(&format!("http://{http}/-/ready")).is_ok_and(|r| r.status == 200)
    }) {
        panic!("the aggregator in {ns} did not become ready:\n{log}");
    }
    Aggregator {
        http: slot.http,
        grpc: slot.grpc,
        data_dir: slot.data_dir.clone(),
        process,
        _tmp: tmp,
    }
}

/// Network namespaces for a test, one per replica, each with a veth into a bridge in the
/// root namespace that carries this test's own /24 (the bridge holds .254, so the test
/// reaches every replica). Everything is deleted on drop.
#[derive(Debug)]
pub struct Net {
    /// Namespace names.
    pub namespaces: Vec<String>,
    bridge: String,
    veths: Vec<String>,
    subnet: u8,
}

fn ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Net {
    /// Creates `n` namespaces (needs root).
    pub fn create(n: usize) -> Self {
        let pid = std::process::id();
        let subnet = (pid % 200 + 20) as u8;
        let mut net = Self {
            namespaces: Vec::new(),
            bridge: format!("sbr{pid}"),
            veths: Vec::new(),
            subnet,
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.231.{subnet}.254/24"),
            "dev",
            &net.bridge,
        ]);
        ip(&["link", "set", &net.bridge, "up"]);
        for i in 0..n {
            let ns = format!("sonde-part-{pid}-{i}");
            ip(&["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let (outer, inner) = (format!("sv{pid}r{i}"), format!("sv{pid}n{i}"));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            net.veths.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &net.bridge]);
            ip(&["link", "set", &outer, "up"]);
            let addr = format!("{}/24", net.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// Replica `i`'s address.
    pub fn addr(&self, i: usize) -> std::net::IpAddr {
        std::net::IpAddr::from([10, 231, self.subnet, i as u8 + 1])
    }

    /// Cuts (`false`) or restores (`true`) replica `i`'s link to everyone.
    pub fn link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.veths[i],
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
        for veth in &self.veths {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", veth])
                .output();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Outcome of pushing one batch to one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Stored (or already stored).
    Ok,
    /// Refused: status and error text.
    Refused(i32, String),
    /// Not reachable or the stream broke.
    Failed(String),
}

/// Pushes one batch on its own stream, never panicking.
pub fn try_push(url: &str, batch: Batch) -> PushResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let attempt = async {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut client = IngestClient::new(channel);
            let mut acks = client
                .push(tokio_stream::iter(vec![batch]))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            match acks.message().await.map_err(|e| e.to_string())? {
                Some(ack) if ack.status == AckStatus::Ok as i32 => Ok(PushResult::Ok),
                Some(ack) => Ok(PushResult::Refused(ack.status, ack.error)),
                None => Err("stream ended without an ack".to_owned()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => PushResult::Failed(e),
            Err(_) => PushResult::Failed("timed out".to_owned()),
        }
    })
}

/// What the writers delivered: series name label `writer` → (timestamp → value).
pub type Sent = BTreeMap<String, BTreeMap<i64, f64>>;

/// Writers pushing like agents until stopped.
#[derive(Debug)]
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sent: Arc<Mutex<Sent>>,
    /// Batches delivered (quorum reached).
    pub delivered: Arc<AtomicU64>,
}

impl Writers {
    /// `n` writers (agent ids `w0`…), each pushing one sample of `repl_test{writer, s}` for
    /// `series` series every `period` to the gRPC URLs `targets` whose `up` flag is set;
    /// a batch counts as sent once two replicas acknowledged it (it is retried until then).
    pub fn start(
        n: usize,
        series: usize,
        period: Duration,
        targets: Vec<String>,
        up: Arc<Vec<AtomicBool>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Sent::new()));
        let delivered = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|w| {
                let (stop, sent, delivered, targets, up) = (
                    stop.clone(),
                    sent.clone(),
                    delivered.clone(),
                    targets.clone(),
                    up.clone(),
                );
                std::thread::spawn(move || {
                    let agent = format!("w{w}");
                    let mut sequence = 0u64;
                    let mut last_t = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        let t = now_ms().max(last_t + 1);
                        last_t = t;
                        let mut payload_series = Vec::new();
                        for s in 0..series {
                            let v = (sequence * 1000 + s as u64) as f64;
                            payload_series.push((format!("{s}"), t, v));
                        }
                        let batch = multi_series_batch(&agent, sequence, &payload_series);
                        // Quorum of two, retried like an agent would.
                        loop {
                            let acked = targets
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| up[*i].load(Ordering::Relaxed))
                                .filter(|(_, url)| try_push(url, batch.clone()) == PushResult::Ok)
                                .count();
                            if acked >= 2 || stop.load(Ordering::Relaxed) && acked >= 1 {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        {
                            let mut sent = sent.lock().unwrap();
                            for (s, t, v) in payload_series {
                                sent.entry(format!("{agent}/{s}")).or_default().insert(t, v);
                            }
                        }
                        delivered.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(period);
                    }
                })
            })
            .collect();
        Self {
            stop,
            threads,
            sent,
            delivered,
        }
    }

    /// Stops the writers and returns what they delivered.
    pub fn stop(mut self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("writer thread");
        }
        self.sent.lock().unwrap().clone()
    }

    /// What was delivered so far.
    pub fn sent(&self) -> Sent {
        self.sent.lock().unwrap().clone()
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Now in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch with one sample for each `(s, t, v)` of `repl_test{writer=agent, s}`.
pub fn multi_series_batch(agent: &str, sequence: u64, samples: &[(String, i64, f64)]) -> Batch {
    use sonde_proto::v1::{BatchPayload, Label, Sample, Series};
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let payload = BatchPayload {
        series: samples
            .iter()
            .map(|(s, t, v)| Series {
                labels: vec![
                    label("__name__", "repl_test"),
                    label("writer", agent),
                    label("s", s),
                ],
                samples: vec![Sample {
                    timestamp_ms: *t,
                    value: *v,
                }],
                exemplars: vec![],
            })
            .collect(),
        ..Default::default()
    };
    sonde_proto::codec::encode_batch(agent, 1, sequence, &payload, 3)
}

/// Raw samples of `repl_test` over the last `range` as a replica returns them (a range
/// selector at `time`), keyed like [`Sent`]; `merge` adds `merge=true`. Returns the
/// response's warnings too.
pub fn raw_samples(url: &str, time_ms: i64, range: &str, merge: bool) -> (Sent, Vec<String>) {
    let mut path = format!(
        "{url}/api/v1/query?query={}&time={}",
        encode(&format!("repl_test[{range}]")),
        time_ms as f64 / 1000.0
    );
    if merge {
        path.push_str("&merge=true");
    }
    let response = http_get(&path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let json = response.json();
    assert_eq!(json["status"], "success", "{}", response.body);
    let mut out = Sent::new();
    for series in json["data"]["result"].as_array().expect("matrix") {
        let key = format!(
            "{}/{}",
            series["metric"]["writer"].as_str().unwrap(),
            series["metric"]["s"].as_str().unwrap()
        );
        let samples = out.entry(key).or_default();
        for pair in series["values"].as_array().unwrap() {
            let t = (pair[0].as_f64().unwrap() * 1000.0).round() as i64;
            let v: f64 = pair[1].as_str().unwrap().parse().unwrap();
            assert!(samples.insert(t, v).is_none(), "duplicate sample at {t}");
        }
    }
    let warnings = json["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|x| x.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    (out, warnings)
}

/// Total samples in `sent`.
pub fn count(sent: &Sent) -> usize {
    sent.values().map(BTreeMap::len).sum()
}

/// A small tmpfs mounted for a test and unmounted (lazily, so it never stays) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"4m"`); needs root.
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "sonde-test"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Self { path, _dir: dir }
    }

    /// Fills the file system with a file `name` until it is full.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let small = [0u8; 512];
        while matches!(file.write(&small), Ok(n) if n > 0) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Replica data directory on `mount` (helper for [`Cluster::start`]).
pub fn data_on(mount: &Path) -> PathBuf {
    mount.join("data")
}

/// Reads `/api/v1/status/replication` of `url`.
pub fn status(url: &str) -> serde_json::Value {
    let response = http_get(&format!("{url}/api/v1/status/replication")).expect("status");
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["data"].clone()
}
