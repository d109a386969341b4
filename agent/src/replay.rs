//! `sonde-agent replay`: reads a capture file and drives the agent's real aggregation
//! ([`engine`]) and real exporter (disk buffer, gRPC, acknowledgements) with it, so the
//! aggregators receive the batches the agent would have sent, stamped with the captured tick
//! times. Pacing: the captured intervals divided by `--speed`, or none
//! (`--as-fast-as-possible`).
//!
//! Must not: read the host (`/proc`, eBPF): everything comes from the file.

pub mod engine;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sonde_proto::v1::BatchPayload;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    capture::{CaptureError, reader::CaptureReader, schema::meta},
    config::Config,
    export::{BufferError, BufferOptions, Exporter},
    metrics::Metrics,
};

/// How fast captured time passes during replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Captured intervals divided by this factor (1 = real time).
    Speed(f64),
    /// No waiting between ticks.
    AsFastAsPossible,
}

/// What to replay, and where to.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The capture file.
    pub input: PathBuf,
    /// Aggregator gRPC URLs.
    pub aggregators: Vec<String>,
    /// Pacing.
    pub pace: Pace,
    /// Agent id to send as; `None`: the captured one (with the captured target labels).
    pub agent_id: Option<String>,
    /// How long to wait for acknowledgements at the end.
    pub grace: Duration,
    /// Shift the capture so its last row is at the replay's start.
    pub shift_to_now: bool,
}

/// `sonde-agent replay` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The capture file.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Aggregator gRPC URL; repeat for each replica.
    #[arg(long = "aggregator", value_name = "URL", required = true)]
    pub aggregators: Vec<String>,
    /// Replay N times faster than captured (1 = real time).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1.0,
        conflicts_with = "as_fast_as_possible"
    )]
    pub speed: f64,
    /// Do not wait between ticks.
    #[arg(long)]
    pub as_fast_as_possible: bool,
    /// Send as this agent id (and `instance`) instead of the captured one.
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
    /// How long to wait for the aggregators' acknowledgements at the end.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Move the capture in time so that its last row is now (samples, exemplars and spans
    /// alike): rules and alerts then evaluate on it as on live data.
    #[arg(long)]
    pub shift_to_now: bool,
}

impl From<ReplayArgs> for ReplayOptions {
    fn from(a: ReplayArgs) -> Self {
        Self {
            input: a.input,
            aggregators: a.aggregators,
            pace: if a.as_fast_as_possible {
                Pace::AsFastAsPossible
            } else {
                Pace::Speed(a.speed)
            },
            agent_id: a.agent_id,
            grace: a.grace,
            shift_to_now: a.shift_to_now,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySummary {
    /// What was fed and emitted.
    pub counts: engine::Counts,
    /// Batches submitted to the exporter.
    pub batches: u64,
    /// First and last tick (ms since the epoch), when there was one.
    pub span_ms: Option<(i64, i64)>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The exporter's buffer could not be opened.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The replay's temporary buffer directory could not be created.
    #[error("cannot create the replay buffer directory {path}: {source}")]
    BufferDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A metadata value (target labels: a JSON object of strings; clock offset: an
    /// integer) is invalid.
    #[error("{path}: metadata `{key}` has an invalid value: {value}")]
    Metadata {
        /// The capture file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// Some batches were not acknowledged by a write quorum within the grace period.
    #[error(
        "{below_quorum} of {batches} replayed batches were not acknowledged by a write quorum within {grace:?}"
    )]
    Unacknowledged {
        /// Batches below quorum.
        below_quorum: usize,
        /// Batches sent.
        batches: u64,
        /// The grace period.
        grace: Duration,
    },
}

/// Replays `options.input` into `options.aggregators`; `config` gives the tables' limits and
/// the transport settings (TLS, compression). Stops early when `shutdown` is cancelled.
pub async fn replay(
    config: Config,
    options: ReplayOptions,
    shutdown: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let path = options.input.clone();
    let reader = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || CaptureReader::open(&path))
            .await
            .expect("opening does not panic")?
    };
    let metadata = reader.metadata().clone();
    let (agent_id, targets) = match &options.agent_id {
        Some(id) => (id.clone(), config.target_labels(id)),
        None => {
            let id = metadata
                .get(meta::AGENT_ID)
                .cloned()
                .unwrap_or_else(|| config.effective_agent_id());
            let targets = match metadata.get(meta::TARGET_LABELS) {
                Some(json) => parse_labels(json).ok_or_else(|| ReplayError::Metadata {
                    path: path.clone(),
                    key: meta::TARGET_LABELS,
                    value: json.clone(),
                })?,
                None => config.target_labels(&id),
            };
            (id, targets)
        }
    };
    let sources: Vec<String> = metadata
        .get(meta::SOURCES)
        .map(|s| {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(
        input = %path.display(),
        rows = reader.rows(),
        %agent_id,
        sources = ?sources,
        aggregators = ?options.aggregators,
        pace = ?options.pace,
        "replaying"
    );

    // A fresh buffer: a replay is its own stream, never mixed with an agent's.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let buffer_dir =
        std::env::temp_dir().join(format!("sonde-replay-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&buffer_dir).map_err(|source| ReplayError::BufferDir {
        path: buffer_dir.clone(),
        source,
    })?;
    let _cleanup = RemoveOnDrop(buffer_dir.clone());
    let metrics = Arc::new(Metrics::new());
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let exporter = Exporter::start(
        BufferOptions {
            dir: buffer_dir.clone(),
            max_bytes: config.transport.buffer_max_bytes,
            fsync: false,
            replicas: options.aggregators.clone(),
            write_quorum: config.transport.quorum(options.aggregators.len()),
            agent_id: agent_id.clone(),
            compression_level: config.compression_level,
        },
        targets,
        config.security(),
        metrics,
        &tasks,
        stop.clone(),
    )?;

    // Reading and aggregation run on the blocking pool, a few ticks ahead of the exporter.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(i64, BatchPayload)>(4);
    let ebpf = config.ebpf.clone();
    let unix_offset_ns = match metadata.get(meta::UNIX_OFFSET_NS) {
        Some(v) => Some(v.parse().map_err(|_| ReplayError::Metadata {
            path: path.clone(),
            key: meta::UNIX_OFFSET_NS,
            value: v.clone(),
        })?),
        None => None,
    };
    let spans = engine::SpanSource {
        config: config.traces.clone(),
        host_name: metadata
            .get(meta::HOST_NAME)
            .cloned()
            .unwrap_or_else(|| agent_id.clone()),
        unix_offset_ns,
    };
    let shift_ns = match (options.shift_to_now, reader.last_t_ns()) {
        (true, Some(last)) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            now - last
        }
        _ => 0,
    };
    let producer = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut engine = engine::Engine::new(&ebpf, sources, Some(spans)).shifted(shift_ns);
        while let Some(batch) = reader.next_batch() {
            for record in batch? {
                if let Some(tick) = engine.feed(record)
                    && tx.blocking_send(tick).is_err()
                {
                    return Ok(engine.counts());
                }
            }
        }
        if let Some(tick) = engine.finish() {
            let _ = tx.blocking_send(tick);
        }
        Ok::<_, CaptureError>(engine.counts())
    });

    let mut batches = 0u64;
    let mut span_ms: Option<(i64, i64)> = None;
    let started = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = rx.recv() => next,
        };
        let Some((t_ms, payload)) = next else { break };
        let first = span_ms.map_or(t_ms, |(f, _)| f);
        span_ms = Some((first, t_ms));
        if let Pace::Speed(speed) = options.pace {
            let offset = Duration::from_millis((t_ms - first).max(0) as u64).div_f64(speed);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(started + offset) => {}
            }
        }
        exporter.submit(Arc::new(payload)).await;
        batches += 1;
    }
    drop(rx);
    let counts = producer.await.expect("the replay engine does not panic")?;
    let (unacked, below_quorum) = exporter.flush(options.grace).await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    if below_quorum > 0 {
        return Err(ReplayError::Unacknowledged {
            below_quorum,
            batches,
            grace: options.grace,
        });
    }
    tracing::info!(
        batches,
        unacked,
        ticks = counts.ticks,
        http = counts.http,
        tcp = counts.tcp,
        exec = counts.exec,
        readings = counts.readings,
        spans = counts.spans,
        "replay delivered"
    );
    Ok(ReplaySummary {
        counts,
        batches,
        span_ms,
    })
}

fn parse_labels(json: &str) -> Option<Vec<(String, String)>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect()
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, dir = %self.0.display(), "cannot remove the replay buffer");
        }
    }
}
