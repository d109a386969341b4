//! `sonde-agent capture`: runs the agent's collectors and eBPF readers exactly as the agent
//! does (same wiring, same identification and filtering), without exporting, and records
//! every event the tables aggregate and every reading of every tick into a capture file.
//!
//! Must not: connect to an aggregator or serve `/metrics`.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    CaptureError, EventTap, Record,
    record::readings,
    schema::meta,
    writer::{CaptureWriter, RecordSender},
};
use crate::{
    agent::start_ebpf,
    collect::{self, Collector, Emitter},
    config::Config,
    ebpf::{exec::Exec, http::Exchange, tcp::TcpRecord},
    http_metrics::{self, identity::Identity},
    metrics::Metrics,
};

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The Parquet file to write.
    pub output: PathBuf,
    /// Stop after this long; `None`: at the shutdown token only.
    pub duration: Option<Duration>,
}

/// `sonde-agent capture` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// The Parquet file to write (written as FILE.partial, renamed when complete).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// How long to capture, e.g. `30s`; without it, until SIGINT/SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

impl From<CaptureArgs> for CaptureOptions {
    fn from(a: CaptureArgs) -> Self {
        Self {
            output: a.output,
            duration: a.duration,
        }
    }
}

/// What a capture wrote.
#[derive(Debug, Clone, Copy)]
pub struct CaptureSummary {
    /// Rows in the file.
    pub rows: u64,
    /// Collection ticks.
    pub ticks: u64,
}

/// Collectors whose output is derived from the recorded events (replay recomputes it).
pub const EVENT_COLLECTORS: [&str; 3] = ["exec", "http", "tcp"];

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

struct Tap(RecordSender);

impl EventTap for Tap {
    fn http(&self, exchange: &Exchange, who: &Identity) {
        self.0.send(Record::Http {
            t_ns: now_ns(),
            exchange: exchange.clone(),
            who: who.clone(),
        });
    }

    fn tcp(&self, event: &TcpRecord, who: Option<&Identity>) {
        self.0.send(Record::Tcp {
            t_ns: now_ns(),
            event: event.clone(),
            who: who.cloned(),
        });
    }

    fn exec(&self, exec: &Exec) {
        self.0.send(Record::Exec {
            t_ns: now_ns(),
            exec: exec.clone(),
        });
    }
}

/// Captures until `options.duration` passed or `shutdown` is cancelled, then stops the
/// readers, records one last tick and writes the footer.
pub async fn capture(
    config: Config,
    options: CaptureOptions,
    shutdown: CancellationToken,
) -> Result<CaptureSummary, CaptureError> {
    let agent_id = config.effective_agent_id();
    let targets: serde_json::Map<String, serde_json::Value> = config
        .target_labels(&agent_id)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let metrics = Arc::new(Metrics::new());
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut collectors = collect::build(&config.node, &config.containers);
    let base = collectors.len();

    let http_table = http_metrics::new_table(&config.ebpf);
    let metadata = vec![
        (meta::AGENT_ID.to_owned(), agent_id.clone()),
        (
            meta::TARGET_LABELS.to_owned(),
            serde_json::Value::Object(targets).to_string(),
        ),
        (
            meta::INTERVAL_MS.to_owned(),
            config.interval.as_millis().to_string(),
        ),
        (
            meta::UNIX_OFFSET_NS.to_owned(),
            http_metrics::spans::unix_offset_ns().to_string(),
        ),
        (meta::HOST_NAME.to_owned(), crate::agent::host_name(&config)),
    ];
    // Spans are built from the recorded exchanges at replay, not while capturing.
    let mut config = config;
    config.traces.enabled = false;
    // The writer exists before the readers start, so every event they aggregate is recorded.
    let writer = CaptureWriter::create(&options.output, metadata)?;
    let probes = if config.ebpf.enabled {
        let tap: Arc<dyn EventTap> = Arc::new(Tap(writer.sender()));
        start_ebpf(
            &config,
            &metrics,
            &tasks,
            &stop,
            &mut collectors,
            http_table,
            Some(tap),
            None,
        )
    } else {
        tracing::info!("eBPF disabled by configuration: capturing collector readings only");
        None
    };
    // Which event sources are live is known only now; it goes into the footer.
    let sources: Vec<&str> = collectors[base..]
        .iter()
        .map(|c| c.name())
        .filter(|n| EVENT_COLLECTORS.contains(n))
        .collect();
    let sources = sources.join(",");
    writer
        .sender()
        .metadata(meta::SOURCES.to_owned(), sources.clone());
    tracing::info!(
        output = %options.output.display(),
        duration = ?options.duration,
        interval = ?config.interval,
        sources = %sources,
        "capturing"
    );

    let sender = writer.sender();
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = &mut until_deadline => break,
            _ = ticker.tick() => {}
        }
        collectors = tick(collectors, sender.clone()).await;
        ticks += 1;
    }

    // Stop the readers (they drain what the kernel queued), then the last tick sees every
    // recorded event.
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            unfinished = tasks.len(),
            "readers did not stop in time; events they still deliver are not in the capture"
        );
    }
    tick(collectors, sender).await;
    ticks += 1;
    drop(probes);
    let rows = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| CaptureError::Writer {
            path: options.output.clone(),
            problem: e.to_string(),
        })??;
    tracing::info!(rows, ticks, output = %options.output.display(), "capture written");
    Ok(CaptureSummary { rows, ticks })
}

/// Runs every collector once (on the blocking pool), recording each one's readings and then
/// the tick row.
async fn tick(
    mut collectors: Vec<Box<dyn Collector>>,
    sender: RecordSender,
) -> Vec<Box<dyn Collector>> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let t_ns = now_ms * 1_000_000;
    let result = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for collector in &mut collectors {
            let mut emitter = Emitter::new(now_ms);
            if let Err(error) = collector.collect(&mut emitter) {
                tracing::warn!(collector = collector.name(), %error, "collection failed");
            }
            for record in readings(collector.name(), &emitter.finish(), t_ns) {
                sender.send(record);
            }
        }
        sender.send(Record::Tick { t_ns });
        tracing::debug!(elapsed = ?started.elapsed(), "tick recorded");
        collectors
    })
    .await;
    result.expect("collectors do not panic")
}
