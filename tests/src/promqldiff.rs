//! Differential testing against Prometheus: a deterministic dataset (counters with resets,
//! gauges with NaN and negative values, classic histograms, series that end early or start
//! late, several label dimensions) written as OpenMetrics text with timestamps, a Prometheus
//! server that reads it through `promtool tsdb create-blocks-from openmetrics`, and the query
//! corpus file format.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Process, free_addr, http_get};

/// First sample time of the dataset (2023-11-14T22:13:20Z), milliseconds.
pub const START_MS: i64 = 1_700_000_000_000;
/// Scrape interval, milliseconds.
pub const SCRAPE_MS: i64 = 15_000;
/// Length of the dataset, milliseconds (3 h).
pub const DURATION_MS: i64 = 3 * 3_600_000;

/// One series of the dataset.
#[derive(Debug, Clone)]
pub struct DataSeries {
    /// Metric family (OpenMetrics `# TYPE` name).
    pub family: &'static str,
    /// OpenMetrics type of the family.
    pub family_type: &'static str,
    /// Labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// Samples (milliseconds, value), in time order.
    pub samples: Vec<(i64, f64)>,
}

/// The generated dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Every series, grouped by family.
    pub series: Vec<DataSeries>,
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Scrape times of a series: every 15 s from `from` to `to` (relative to the start), offset by
/// a per-series phase so series are not aligned with each other or with query steps.
fn scrapes(phase_ms: i64, from_ms: i64, to_ms: i64) -> impl Iterator<Item = i64> {
    (0..)
        .map(move |i| START_MS + phase_ms + i * SCRAPE_MS)
        .skip_while(move |t| *t < START_MS + from_ms)
        .take_while(move |t| *t < START_MS + to_ms)
}

impl Dataset {
    /// Generates the dataset; the same seed always gives the same data.
    pub fn generate(seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let mut series = Vec::new();
        let mut phase = 0i64;
        let mut next_phase = || {
            phase = (phase + 3_137) % SCRAPE_MS;
            phase
        };
        let jobs = ["api", "web"];
        let instances = ["0", "1", "2", "3"];

        // Counters with resets; api/2 starts after 1 h, web/3 ends after 2 h.
        for job in jobs {
            for instance in instances {
                let (from, to) = match (job, instance) {
                    ("api", "2") => (3_600_000, DURATION_MS),
                    ("web", "3") => (0, 2 * 3_600_000),
                    _ => (0, DURATION_MS),
                };
                for method in ["GET", "POST"] {
                    for code in ["200", "500"] {
                        let rate = rng.range(0.1, 20.0) / if code == "500" { 10.0 } else { 1.0 };
                        let mut value = rng.range(0.0, 1000.0).floor();
                        let mut samples = Vec::new();
                        for t in scrapes(next_phase(), from, to) {
                            if rng.unit() < 0.003 {
                                value = rng.range(0.0, 5.0).floor();
                            } else {
                                value += (rate * 15.0 * rng.range(0.5, 1.5)).round();
                            }
                            samples.push((t, value));
                        }
                        series.push(DataSeries {
                            family: "diff_http_requests",
                            family_type: "counter",
                            labels: labels(&[
                                ("__name__", "diff_http_requests_total"),
                                ("job", job),
                                ("instance", instance),
                                ("method", method),
                                ("code", code),
                            ]),
                            samples,
                        });
                    }
                }
            }
        }

        // Gauges: temperatures (random walks, some negative), memory (large), and a flaky
        // gauge with NaN values.
        for instance in instances {
            for zone in ["cpu", "gpu", "board"] {
                let mut value = rng.range(-5.0, 60.0);
                let samples = scrapes(next_phase(), 0, DURATION_MS)
                    .map(|t| {
                        value += rng.range(-1.0, 1.0);
                        (t, (value * 1000.0).round() / 1000.0)
                    })
                    .collect();
                series.push(DataSeries {
                    family: "diff_temperature_celsius",
                    family_type: "gauge",
                    labels: labels(&[
                        ("__name__", "diff_temperature_celsius"),
                        ("instance", instance),
                        ("zone", zone),
                    ]),
                    samples,
                });
            }
            let mut memory = rng.range(1e9, 8e9).round();
            let samples = scrapes(next_phase(), 0, DURATION_MS)
                .map(|t| {
                    memory += rng.range(-5e6, 5e6).round();
                    (t, memory)
                })
                .collect();
            series.push(DataSeries {
                family: "diff_memory_bytes",
                family_type: "gauge",
                labels: labels(&[("__name__", "diff_memory_bytes"), ("instance", instance)]),
                samples,
            });
            let samples = scrapes(next_phase(), 0, DURATION_MS)
                .map(|t| {
                    let v = if rng.unit() < 0.05 {
                        f64::NAN
                    } else {
                        rng.range(-10.0, 10.0).round()
                    };
                    (t, v)
                })
                .collect();
            series.push(DataSeries {
                family: "diff_flaky",
                family_type: "gauge",
                labels: labels(&[("__name__", "diff_flaky"), ("instance", instance)]),
                samples,
            });
        }

        // up and an info metric for joins.
        for job in jobs {
            for instance in instances {
                let samples = scrapes(next_phase(), 0, DURATION_MS)
                    .map(|t| (t, if rng.unit() < 0.05 { 0.0 } else { 1.0 }))
                    .collect();
                series.push(DataSeries {
                    family: "diff_up",
                    family_type: "gauge",
                    labels: labels(&[
                        ("__name__", "diff_up"),
                        ("job", job),
                        ("instance", instance),
                    ]),
                    samples,
                });
            }
            let samples = scrapes(next_phase(), 0, DURATION_MS)
                .map(|t| (t, 1.0))
                .collect();
            series.push(DataSeries {
                family: "diff_build_info",
                family_type: "gauge",
                labels: labels(&[
                    ("__name__", "diff_build_info"),
                    ("job", job),
                    ("version", if job == "api" { "1.2.3" } else { "2.0.0" }),
                ]),
                samples,
            });
        }

        // Classic histograms with resets (all buckets of a series reset together).
        let bounds = [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
        ];
        for job in jobs {
            for instance in instances {
                let phase = next_phase();
                let times: Vec<i64> = scrapes(phase, 0, DURATION_MS).collect();
                let mut counts = vec![0.0f64; bounds.len()];
                let mut sum = 0.0f64;
                let mut per_bucket: Vec<Vec<(i64, f64)>> = vec![Vec::new(); bounds.len()];
                let mut sums = Vec::new();
                let scale = rng.range(0.02, 0.6);
                for &t in &times {
                    if rng.unit() < 0.002 {
                        counts.iter_mut().for_each(|c| *c = 0.0);
                        sum = 0.0;
                    }
                    let observations = (rng.range(0.0, 30.0)).floor() as usize;
                    for _ in 0..observations {
                        let x = -scale * rng.unit().max(1e-12).ln();
                        sum += x;
                        for (i, b) in bounds.iter().enumerate() {
                            let upper: f64 = b.parse().unwrap_or(f64::INFINITY);
                            if x <= upper {
                                counts[i] += 1.0;
                            }
                        }
                    }
                    for (i, c) in counts.iter().enumerate() {
                        per_bucket[i].push((t, *c));
                    }
                    sums.push((t, (sum * 1e6).round() / 1e6));
                }
                for (i, b) in bounds.iter().enumerate() {
                    series.push(DataSeries {
                        family: "diff_request_duration_seconds",
                        family_type: "histogram",
                        labels: labels(&[
                            ("__name__", "diff_request_duration_seconds_bucket"),
                            ("job", job),
                            ("instance", instance),
                            ("le", b),
                        ]),
                        samples: per_bucket[i].clone(),
                    });
                }
                series.push(DataSeries {
                    family: "diff_request_duration_seconds",
                    family_type: "histogram",
                    labels: labels(&[
                        ("__name__", "diff_request_duration_seconds_sum"),
                        ("job", job),
                        ("instance", instance),
                    ]),
                    samples: sums,
                });
                series.push(DataSeries {
                    family: "diff_request_duration_seconds",
                    family_type: "histogram",
                    labels: labels(&[
                        ("__name__", "diff_request_duration_seconds_count"),
                        ("job", job),
                        ("instance", instance),
                    ]),
                    samples: per_bucket[bounds.len() - 1].clone(),
                });
            }
        }
        Self { series }
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// The dataset as OpenMetrics text with timestamps (seconds), families contiguous,
    /// terminated by `# EOF`.
    pub fn to_openmetrics(&self) -> String {
        let mut out = String::new();
        let mut family = "";
        for s in &self.series {
            if s.family != family {
                family = s.family;
                let _ = writeln!(out, "# TYPE {} {}", s.family, s.family_type);
            }
            let name = &s.labels["__name__"];
            let inner: Vec<String> = s
                .labels
                .iter()
                .filter(|(n, _)| *n != "__name__")
                .map(|(n, v)| format!("{n}=\"{v}\""))
                .collect();
            let labels = if inner.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", inner.join(","))
            };
            for &(t, v) in &s.samples {
                let value = if v.is_nan() {
                    "NaN".to_owned()
                } else {
                    format!("{v}")
                };
                let _ = writeln!(out, "{name}{labels} {value} {}.{:03}", t / 1000, t % 1000);
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A Prometheus server on loopback serving blocks built from an OpenMetrics file.
#[derive(Debug)]
pub struct Prometheus {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Backfills `openmetrics` with promtool and starts Prometheus over the blocks.
    pub fn start_with(openmetrics: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let output = std::process::Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(openmetrics)
            .arg(&data)
            .output()
            .expect("run promtool (Debian package prometheus)");
        assert!(
            output.status.success(),
            "promtool backfill failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  evaluation_interval: 1m\nscrape_configs: []\n",
        )
        .expect("write prometheus.yml");
        for attempt in 1..=5 {
            let addr = free_addr();
            let mut cmd = std::process::Command::new("prometheus");
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=100y")
                .arg("--query.lookback-delta=5m")
                .arg("--log.level=warn");
            let mut process = Process::spawn("prometheus", &mut cmd, dir.path());
            let url = format!("http://{addr}");
            let ready = process.wait_until(Duration::from_secs(60), || {
                http_get(&format!("{url}/-/ready")).is_ok_and(|r| r.status == 200)
            });
            match ready {
                Ok(()) => {
                    return Self {
                        url,
                        _process: process,
                        _dir: dir,
                    };
                }
                Err(log) if log.contains("address already in use") && attempt < 5 => continue,
                Err(log) => panic!("Prometheus did not become ready:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }
}

/// One line of the differential corpus: a query, how to compare it, or why it is skipped.
#[derive(Debug, Clone)]
pub struct CorpusQuery {
    /// Line number (1-based) in the corpus file.
    pub line: usize,
    /// The query.
    pub query: String,
    /// Compare instant results in order (`!ordered`).
    pub ordered: bool,
    /// Run only as an instant query (`!instant`, for range-vector results).
    pub instant_only: bool,
    /// A documented divergence (`!divergent <id>`): compared, but expected to differ; the id
    /// names its explanation in `tests/fixtures/promql/divergences.md`.
    pub divergent: Option<String>,
}

/// Reads the corpus: one query per line; `#` comments; prefixes `!ordered`, `!instant`,
/// `!divergent <id>` before the query.
pub fn read_corpus(path: &Path) -> Vec<CorpusQuery> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line.trim();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let mut q = CorpusQuery {
            line: i + 1,
            query: String::new(),
            ordered: false,
            instant_only: false,
            divergent: None,
        };
        loop {
            if let Some(r) = rest.strip_prefix("!ordered ") {
                q.ordered = true;
                rest = r.trim_start();
            } else if let Some(r) = rest.strip_prefix("!instant ") {
                q.instant_only = true;
                rest = r.trim_start();
            } else if let Some(r) = rest.strip_prefix("!divergent ") {
                let (id, r) = r.split_once(' ').unwrap_or((r, ""));
                q.divergent = Some(id.to_owned());
                rest = r.trim_start();
            } else {
                break;
            }
        }
        q.query = rest.to_owned();
        out.push(q);
    }
    out
}

/// `tests/fixtures/promql/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/promql")
        .join(name)
}
