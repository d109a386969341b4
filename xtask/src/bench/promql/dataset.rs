//! The benchmark's data: `instances` × 10 request counters (2 methods × 5 codes, with
//! occasional resets) and `instances` × 10 classic histogram buckets, one sample per scrape
//! interval with a per-instance phase, ending an hour before now. Written as OpenMetrics files
//! cut at 2 h boundaries (so promtool parses each once) and as Prometheus text with millisecond
//! timestamps for VictoriaMetrics' import.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// Bucket bounds of the histogram.
const BOUNDS: [&str; 10] = [
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// One generated series.
pub struct Series {
    /// `name{labels}` as written in the text formats.
    pub text: String,
    /// Sample values, one per scrape.
    pub values: Vec<f64>,
    /// Offset of this series' scrapes from the grid, milliseconds.
    pub phase_ms: i64,
}

/// The generated dataset.
pub struct Dataset {
    /// First scrape time (without phase), milliseconds.
    pub start_ms: i64,
    /// Scrape interval, milliseconds.
    pub interval_ms: i64,
    /// Scrapes per series.
    pub scrapes: usize,
    /// The series.
    pub series: Vec<Series>,
}

/// xorshift64*: deterministic and good enough for load generation.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Dataset {
    /// Generates `instances × 20` series over `hours` hours ending at `end_ms`.
    pub fn generate(instances: usize, hours: i64, interval_ms: i64, end_ms: i64) -> Self {
        let scrapes = usize::try_from(hours * 3_600_000 / interval_ms).unwrap_or(0) + 1;
        let start_ms = end_ms - (scrapes as i64 - 1) * interval_ms;
        let mut rng = Rng(0x5eed_cafe);
        let mut series = Vec::with_capacity(instances * 20);
        for i in 0..instances {
            let instance = format!("i-{i:04}");
            let phase_ms = (i as i64 * 977) % interval_ms;
            for method in ["GET", "POST"] {
                for code in ["200", "201", "404", "500", "503"] {
                    let rate = 0.05 + rng.unit() * if code.starts_with('2') { 50.0 } else { 2.0 };
                    let mut v = (rng.unit() * 1e4).floor();
                    let values = (0..scrapes)
                        .map(|_| {
                            if rng.unit() < 0.0005 {
                                v = 0.0;
                            }
                            v += (rate * interval_ms as f64 / 1000.0 * (0.5 + rng.unit())).round();
                            v
                        })
                        .collect();
                    series.push(Series {
                        text: format!(
                            "bench_http_requests_total{{instance=\"{instance}\",method=\"{method}\",code=\"{code}\"}}"
                        ),
                        values,
                        phase_ms,
                    });
                }
            }
            // Histogram: observations from an exponential distribution per instance.
            let scale = 0.02 + rng.unit() * 0.5;
            let mut counts = [0.0f64; BOUNDS.len()];
            let mut per_bucket: Vec<Vec<f64>> = vec![Vec::with_capacity(scrapes); BOUNDS.len()];
            for _ in 0..scrapes {
                let n = (rng.unit() * 40.0) as usize;
                for _ in 0..n {
                    let x = -scale * rng.unit().max(1e-12).ln();
                    for (b, bound) in BOUNDS.iter().enumerate() {
                        if x <= bound.parse::<f64>().unwrap_or(f64::INFINITY) {
                            counts[b] += 1.0;
                        }
                    }
                }
                for (b, c) in counts.iter().enumerate() {
                    per_bucket[b].push(*c);
                }
            }
            for (b, values) in per_bucket.into_iter().enumerate() {
                series.push(Series {
                    text: format!(
                        "bench_request_duration_seconds_bucket{{instance=\"{instance}\",le=\"{}\"}}",
                        BOUNDS[b]
                    ),
                    values,
                    phase_ms,
                });
            }
        }
        Self {
            start_ms,
            interval_ms,
            scrapes,
            series,
        }
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.series.len() * self.scrapes
    }

    /// Last sample time (without phase), milliseconds.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + (self.scrapes as i64 - 1) * self.interval_ms
    }

    /// Scrape indexes whose time falls in `[from, to)`, for a series with `phase`.
    fn window(&self, phase: i64, from: i64, to: i64) -> std::ops::Range<usize> {
        let index = |t: i64| {
            let i = (t - self.start_ms - phase + self.interval_ms - 1).div_euclid(self.interval_ms);
            usize::try_from(i.max(0)).unwrap_or(0).min(self.scrapes)
        };
        index(from)..index(to)
    }

    /// Writes OpenMetrics files, one per 2 h window aligned like Prometheus blocks.
    pub fn write_openmetrics(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        const BLOCK: i64 = 2 * 3_600_000;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut files = Vec::new();
        let first = self.start_ms.div_euclid(BLOCK) * BLOCK;
        let last = self.end_ms() + self.interval_ms;
        let mut from = first;
        while from < last {
            let to = from + BLOCK;
            let path = dir.join(format!("part-{}.om", from / 1000));
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("create {}", path.display()))?,
            );
            let mut family = "";
            let mut line = String::new();
            for s in &self.series {
                let this = if s.text.starts_with("bench_http") {
                    "# TYPE bench_http_requests counter"
                } else {
                    "# TYPE bench_request_duration_seconds histogram"
                };
                if this != family {
                    writeln!(out, "{this}")?;
                    family = this;
                }
                for i in self.window(s.phase_ms, from, to) {
                    let t = self.start_ms + s.phase_ms + i as i64 * self.interval_ms;
                    line.clear();
                    let _ = writeln!(
                        line,
                        "{} {} {}.{:03}",
                        s.text,
                        s.values[i],
                        t / 1000,
                        t % 1000
                    );
                    out.write_all(line.as_bytes())?;
                }
            }
            writeln!(out, "# EOF")?;
            out.flush()?;
            files.push(path);
            from = to;
        }
        Ok(files)
    }

    /// Prometheus text lines with millisecond timestamps for `[from, to)`, for
    /// VictoriaMetrics' `/api/v1/import/prometheus`.
    pub fn prometheus_text(&self, from: i64, to: i64) -> String {
        let mut out = String::new();
        for s in &self.series {
            for i in self.window(s.phase_ms, from, to) {
                let t = self.start_ms + s.phase_ms + i as i64 * self.interval_ms;
                let _ = writeln!(out, "{} {} {t}", s.text, s.values[i]);
            }
        }
        out
    }
}
