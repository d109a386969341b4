//! Assembles and runs the agent: self-metrics endpoint, eBPF probes (optional), collectors,
//! the collection tick and the exporter.
//!
//! Shutdown: the tick stops, one last collection is queued, the exporter flushes within the
//! grace period (what is left is logged), then the remaining tasks stop and the eBPF programs
//! are detached.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sonde_proto::v1::BatchPayload;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    collect::{self, Collector, Emitter, exec::ExecCollector},
    config::Config,
    ebpf::{self, Probes, exec::ExecStats},
    export::{BufferOptions, Exporter},
    http, http_metrics,
    metrics::{CollectorLabels, Metrics, ProgramLabels},
};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The disk buffer could not be opened.
    #[error(transparent)]
    Buffer(#[from] crate::export::BufferError),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr} (metrics): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A started agent.
#[derive(Debug)]
pub struct Running {
    /// The bound metrics address.
    pub metrics_addr: SocketAddr,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the agent has shut down (after the shutdown token is cancelled).
    pub async fn wait(self) {
        if let Err(error) = self.done.await {
            tracing::error!(%error, "agent main loop panicked");
        }
    }
}

/// Bounds glibc's heap under load; call first in `main`, before any thread starts. One
/// arena: the eBPF reader threads allocate per event while other threads free, and an arena
/// per thread kept 20-40 MiB more resident (the RSS goal is < 50 MiB). A fixed mmap threshold:
/// large transient buffers (batch encoding, compression) go back to the kernel when freed,
/// instead of raising glibc's dynamic threshold and staying in the heap. mimalloc was
/// measured too and kept more (~130 MiB).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Starts the agent; it runs until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, AgentError> {
    let metrics = Arc::new(Metrics::new());
    let tasks = TaskTracker::new();
    // Stops helper tasks after the exporter flushed; `shutdown` only stops collection.
    let stop = CancellationToken::new();

    let listener = TcpListener::bind(config.listen_metrics)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.listen_metrics,
            source,
        })?;
    let metrics_addr = listener.local_addr().expect("bound socket has an address");
    let latest = http::Latest::default();
    let http_table = http_metrics::new_table(&config.ebpf);
    let router = http::router(metrics.clone(), latest.clone())
        .merge(http_metrics::debug::router(http_table.clone()));
    let http_stop = stop.clone();
    tasks.spawn(async move {
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "metrics server failed");
        }
    });

    let mut collectors = collect::build(&config.node, &config.containers);
    // Spans travel in batches of their own between ticks (see `SpanBatches`).
    let (span_batches, span_batches_rx) =
        tokio::sync::mpsc::channel(http_metrics::pipeline::SPAN_BATCHES_QUEUED);
    let probes = if config.ebpf.enabled {
        start_ebpf(
            &config,
            &metrics,
            &tasks,
            &stop,
            &mut collectors,
            http_table,
            None,
            Some(span_batches),
        )
    } else {
        tracing::info!("eBPF disabled by configuration");
        None
    };

    let agent_id = config.effective_agent_id();
    let exporter = Exporter::start(
        BufferOptions {
            dir: config.transport.buffer_dir.clone(),
            max_bytes: config.transport.buffer_max_bytes,
            fsync: config.transport.buffer_fsync,
            replicas: config.aggregators.clone(),
            write_quorum: config.transport.quorum(config.aggregators.len()),
            agent_id: agent_id.clone(),
            compression_level: config.compression_level,
        },
        config.target_labels(&agent_id),
        config.security(),
        metrics.clone(),
        &tasks,
        stop.clone(),
    )?;
    tracing::info!(
        %agent_id,
        %metrics_addr,
        aggregators = ?config.aggregators,
        interval = ?config.interval,
        "sonde-agent started"
    );

    let done = tokio::spawn(main_loop(
        config,
        collectors,
        exporter,
        metrics,
        probes,
        tasks,
        stop,
        shutdown,
        latest,
        span_batches_rx,
    ));
    Ok(Running { metrics_addr, done })
}

#[allow(clippy::too_many_arguments)]
async fn main_loop(
    config: Config,
    mut collectors: Vec<Box<dyn Collector>>,
    exporter: Exporter,
    metrics: Arc<Metrics>,
    probes: Option<Probes>,
    tasks: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
    latest: http::Latest,
    mut span_batches: tokio::sync::mpsc::Receiver<Vec<sonde_proto::v1::Span>>,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
            Some(spans) = span_batches.recv() => {
                exporter.submit(Arc::new(BatchPayload { spans, ..BatchPayload::default() })).await;
                continue;
            }
        }
        let (returned, payload) = collect(collectors, metrics.clone()).await;
        collectors = returned;
        // `/metrics` shows exactly what was queued for the aggregators; the timestamp gauge
        // is set after publishing, so a scrape that sees it also sees this payload.
        let started = payload.series.first().and_then(|s| s.samples.first());
        let started = started.map(|s| s.timestamp_ms as f64 / 1000.0);
        let payload = Arc::new(payload);
        latest.publish(payload.clone());
        exporter.submit(payload).await;
        if let Some(started) = started {
            metrics.last_collection_timestamp.set(started);
        }
    }

    tracing::info!("shutting down: final collection and flush");
    // Span batches not sent yet stay in the linker for the final collection.
    span_batches.close();
    while let Ok(spans) = span_batches.try_recv() {
        exporter
            .submit(Arc::new(BatchPayload {
                spans,
                ..BatchPayload::default()
            }))
            .await;
    }
    let (_, payload) = collect(collectors, metrics.clone()).await;
    exporter.submit(Arc::new(payload)).await;
    let (unacked, below_quorum) = exporter.flush(config.shutdown_grace).await;
    if unacked > 0 {
        tracing::warn!(
            unacked,
            below_quorum,
            "batches not acknowledged by every aggregator stay in the buffer and are resent at the next start"
        );
    }
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(2), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(unfinished = tasks.len(), "tasks did not stop in time");
    }
    drop(probes);
    tracing::info!("stopped");
}

/// Runs every collector once on the blocking pool; returns them with the tick's payload.
async fn collect(
    mut collectors: Vec<Box<dyn Collector>>,
    metrics: Arc<Metrics>,
) -> (Vec<Box<dyn Collector>>, BatchPayload) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let result = tokio::task::spawn_blocking(move || {
        let mut emitter = Emitter::new(now);
        for collector in &mut collectors {
            let started = Instant::now();
            let labels = CollectorLabels {
                collector: collector.name(),
            };
            if let Err(error) = collector.collect(&mut emitter) {
                metrics.collector_errors.get_or_create(&labels).inc();
                tracing::warn!(collector = collector.name(), %error, "collection failed");
            }
            metrics
                .collect_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
        }
        metrics
            .last_collection_samples
            .set(emitter.sample_count() as i64);
        (collectors, emitter.finish())
    })
    .await;
    result.expect("collectors do not panic")
}

/// Mounts what eBPF needs, loads the probes and starts their readers, handing every decoded
/// event the agent aggregates also to `tap` when given (`sonde-agent capture`). Every
/// failure is logged and leaves the agent running without the affected metrics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_ebpf(
    config: &Config,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    collectors: &mut Vec<Box<dyn Collector>>,
    http_table: Arc<std::sync::Mutex<http_metrics::table::HttpTable>>,
    tap: Option<Arc<dyn crate::capture::EventTap>>,
    span_batches: Option<http_metrics::pipeline::SpanBatches>,
) -> Option<Probes> {
    let mount = config.ebpf.mount_filesystems;
    let tracefs = match ebpf::fs::ensure_tracefs(mount) {
        Ok(Some(root)) => Some(root),
        Ok(None) => {
            tracing::warn!(
                "tracefs is not mounted (and mounting is disabled): tracepoints cannot attach"
            );
            None
        }
        Err(error) => {
            tracing::warn!(%error, "tracefs unavailable: tracepoints cannot attach");
            None
        }
    };
    match ebpf::fs::ensure_bpffs(mount) {
        Ok(true) => {}
        Ok(false) => tracing::info!("bpffs is not mounted at /sys/fs/bpf; nothing is pinned"),
        Err(error) => tracing::warn!(%error, "bpffs unavailable; nothing is pinned"),
    }
    let options = ebpf::LoadOptions {
        http: config.ebpf.http.enabled,
        tls: config.ebpf.http.tls,
        tcp: config.ebpf.tcp.enabled,
        max_connections: config.ebpf.http.max_connections,
        http_ring_bytes: config.ebpf.http.ring_buffer_size,
        filter: http_metrics::kernel_rules(&config.ebpf),
        data_path: config.ebpf.http.data_hooks.path(),
    };
    let mut probes = match ebpf::loader::load(tracefs.as_deref(), &options) {
        Ok(probes) => probes,
        Err(error) => {
            tracing::warn!(%error, "eBPF unavailable; continuing with procfs metrics only");
            metrics
                .ebpf_program_attached
                .get_or_create(&ProgramLabels {
                    program: sonde_ebpf_common::programs::SCHED_PROCESS_EXEC,
                })
                .set(0);
            return None;
        }
    };
    for hook in &probes.hooks {
        // A program with several hooks counts as attached when any of them is.
        let any = probes
            .hooks
            .iter()
            .any(|h| h.program == hook.program && h.attached());
        metrics
            .ebpf_program_attached
            .get_or_create(&ProgramLabels {
                program: hook.program,
            })
            .set(i64::from(any));
    }
    let exec_stats = probes.exec_events.take().map(|ring| {
        let stats = Arc::new(ExecStats::default());
        tasks.spawn(ebpf::exec::run(
            ring,
            stats.clone(),
            stop.clone(),
            tap.clone(),
        ));
        collectors.push(Box::new(ExecCollector::new(stats.clone())));
        stats
    });
    if let Some(logger) = probes.logger.take() {
        tasks.spawn(ebpf::loader::forward_logs(logger, stop.clone()));
    }
    metrics.set_ebpf_sources(probes.counters.clone(), exec_stats);
    metrics.set_hooks(&probes.hooks);
    let spans = config
        .traces
        .enabled
        .then(|| span_setup(config, metrics, tasks, stop, span_batches));
    let started = http_metrics::start(&config.ebpf, &mut probes, stop, http_table, spans, tap);
    collectors.extend(started.collectors);
    metrics.set_pipeline_source(started.stats);
    for thread in started.threads {
        tasks.spawn_blocking(move || {
            if thread.join().is_err() {
                tracing::error!("an eBPF reader thread panicked");
            }
        });
    }
    Some(probes)
}

/// What the HTTP pipeline needs to build spans; starts the OTLP export when configured (a
/// bad endpoint is logged and leaves the spans going to the aggregators only).
/// `host.name` of the spans: the agent id (by default the kernel's host name). Two agents
/// are two hosts to the aggregator's cross-host span linking.
pub(crate) fn host_name(config: &Config) -> String {
    config.effective_agent_id()
}

fn span_setup(
    config: &Config,
    metrics: &Arc<Metrics>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    batches: Option<http_metrics::pipeline::SpanBatches>,
) -> http_metrics::pipeline::SpanSetup {
    let host_name = host_name(config);
    let otlp = if config.traces.otlp.endpoint.is_empty() {
        None
    } else {
        match crate::trace::otlp::start(
            &config.traces.otlp,
            metrics.traces.drops.clone(),
            metrics.traces.otlp_exported.clone(),
            stop.clone(),
        ) {
            Ok((sender, task)) => {
                tasks.spawn(async move {
                    let _ = task.await;
                });
                Some(sender)
            }
            Err(error) => {
                tracing::error!(%error, "OTLP export disabled");
                None
            }
        }
    };
    http_metrics::pipeline::SpanSetup {
        config: config.traces.clone(),
        host_name,
        drops: metrics.traces.drops.clone(),
        links: metrics.traces.links.clone(),
        otlp,
        batches,
    }
}
