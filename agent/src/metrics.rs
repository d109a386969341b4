//! The agent's own metrics (`sonde_agent_*`), declared in one place and exposed on the
//! agent's `/metrics` in the OpenMetrics text format.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{
    ebpf::{HookStatus, KernelCounters, exec::ExecStats},
    http_metrics::PipelineStats,
};

/// `aggregator` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregatorLabels {
    /// Aggregator URL.
    pub aggregator: String,
}

/// `aggregator` and `result` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// Aggregator URL.
    pub aggregator: String,
    /// `ok`, `rejected` or `retry`.
    pub result: &'static str,
}

/// `collector` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabels {
    /// Collector name.
    pub collector: &'static str,
}

/// `program` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    /// eBPF program name.
    pub program: &'static str,
}

/// `counter` label of kernel-side counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KernelCounterLabels {
    /// Counter name.
    pub counter: &'static str,
}

/// `program` and `reason` of lost events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LostLabels {
    /// Which events: `exec`, `http`, `tcp`.
    pub program: &'static str,
    /// Why they were lost, e.g. `ringbuf_full`.
    pub reason: &'static str,
}

/// `program` and `hook` of one attachment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// eBPF program name.
    pub program: &'static str,
    /// Where it attaches.
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Sources read at scrape time.
#[derive(Debug, Default)]
struct Sources {
    kernel: Option<Arc<KernelCounters>>,
    exec: Option<Arc<ExecStats>>,
    pipeline: Option<Arc<PipelineStats>>,
    /// Lost totals already added to `events_lost`, per labels.
    lost_seen: HashMap<(&'static str, &'static str), u64>,
}

/// Every metric the agent exports about itself.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    batches: Family<BatchLabels, Counter>,
    buffer_batches: Family<AggregatorLabels, Gauge>,
    buffer_dropped_batches: Family<AggregatorLabels, Counter>,
    buffer_dropped_samples: Family<AggregatorLabels, Counter>,
    connected: Family<AggregatorLabels, Gauge>,
    buffer_bytes: Gauge,
    buffer_write_failed_samples: Counter,
    delivered: Counter,
    appended_samples: Counter,
    next_sequence: Gauge,
    /// Collection time per collector.
    pub collect_duration: Family<CollectorLabels, Histogram>,
    /// Collection failures per collector.
    pub collector_errors: Family<CollectorLabels, Counter>,
    /// 1 when an eBPF program is attached, 0 when it could not be.
    pub ebpf_program_attached: Family<ProgramLabels, Gauge>,
    ebpf_events: Family<ProgramLabels, Gauge>,
    ebpf_kernel: Family<KernelCounterLabels, Gauge>,
    /// Unix time at which the last collection tick started (its samples' timestamp).
    pub last_collection_timestamp: Gauge<f64, AtomicU64>,
    /// Samples in the last collection tick.
    pub last_collection_samples: Gauge,
    /// Events lost anywhere between the kernel and the tables, by program and reason.
    pub events_lost: Family<LostLabels, Counter>,
    ebpf_hook_attached: Family<HookLabels, Gauge>,
    http_series: Gauge,
    http_route_overflow: Gauge,
    http_filtered: Family<ProgramLabels, Gauge>,
    tls_libraries: Gauge,
    seeded_connections: Gauge,
    sources: Mutex<Sources>,
    /// Span drop and export counts (`sonde_agent_spans_dropped_total{reason}`, …).
    pub traces: TraceMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sonde_agent");
        let batches = Family::<BatchLabels, Counter>::default();
        registry.register(
            "batches",
            "Batches acknowledged by aggregators, by result",
            batches.clone(),
        );
        let buffer_batches = Family::<AggregatorLabels, Gauge>::default();
        registry.register(
            "buffer_batches",
            "Buffered batches the aggregator has not acknowledged",
            buffer_batches.clone(),
        );
        let buffer_dropped_batches = Family::<AggregatorLabels, Counter>::default();
        registry.register(
            "buffer_dropped_batches",
            "Batches dropped by the disk buffer's size bound before the aggregator acknowledged them",
            buffer_dropped_batches.clone(),
        );
        let buffer_dropped_samples = Family::<AggregatorLabels, Counter>::default();
        registry.register(
            "buffer_dropped_samples",
            "Samples dropped by the disk buffer's size bound before the aggregator acknowledged them",
            buffer_dropped_samples.clone(),
        );
        let connected = Family::<AggregatorLabels, Gauge>::default();
        registry.register(
            "aggregator_connected",
            "1 while a push stream to the aggregator is open",
            connected.clone(),
        );
        let buffer_bytes = Gauge::default();
        registry.register_with_unit(
            "buffer",
            "Size of the disk buffer's segment files",
            Unit::Bytes,
            buffer_bytes.clone(),
        );
        let buffer_write_failed_samples = Counter::default();
        registry.register(
            "buffer_write_failed_samples",
            "Samples lost because their batch could not be written to the disk buffer",
            buffer_write_failed_samples.clone(),
        );
        let delivered = Counter::default();
        registry.register(
            "batches_delivered",
            "Batches acknowledged by the write quorum of aggregators",
            delivered.clone(),
        );
        let appended_samples = Counter::default();
        registry.register(
            "buffer_appended_samples",
            "Samples written to the disk buffer (everything the agent produced for delivery)",
            appended_samples.clone(),
        );
        let next_sequence = Gauge::default();
        registry.register(
            "buffer_next_sequence",
            "Sequence number the next batch will get (batches ever appended + 1; survives restarts)",
            next_sequence.clone(),
        );
        let collect_duration = Family::<CollectorLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 9))
        });
        registry.register_with_unit(
            "collect_duration",
            "Time a collector took",
            Unit::Seconds,
            collect_duration.clone(),
        );
        let collector_errors = Family::<CollectorLabels, Counter>::default();
        registry.register(
            "collector_errors",
            "Collection ticks a collector failed",
            collector_errors.clone(),
        );
        let ebpf_program_attached = Family::<ProgramLabels, Gauge>::default();
        registry.register(
            "ebpf_program_attached",
            "1 when the eBPF program is attached, 0 when the kernel refused it",
            ebpf_program_attached.clone(),
        );
        let ebpf_events = Family::<ProgramLabels, Gauge>::default();
        registry.register(
            "ebpf_events_received",
            "Events read from the program's ring buffer since start",
            ebpf_events.clone(),
        );
        let ebpf_kernel = Family::<KernelCounterLabels, Gauge>::default();
        registry.register(
            "ebpf_kernel_counter",
            "Kernel-side counters of the eBPF programs (events seen, ring buffer full, read errors) since load",
            ebpf_kernel.clone(),
        );
        let last_collection_timestamp = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "last_collection_timestamp",
            "Unix time at which the last collection tick started (the timestamp of its samples)",
            Unit::Seconds,
            last_collection_timestamp.clone(),
        );
        let last_collection_samples = Gauge::default();
        registry.register(
            "last_collection_samples",
            "Samples produced by the last collection tick (sent to the aggregators and shown on /metrics)",
            last_collection_samples.clone(),
        );
        let events_lost = Family::<LostLabels, Counter>::default();
        registry.register(
            "events_lost",
            "Events lost between the kernel and the metric tables (ring buffer full, map full, \
             read or decode errors, unpaired requests/responses, series limit), by program and reason",
            events_lost.clone(),
        );
        let ebpf_hook_attached = Family::<HookLabels, Gauge>::default();
        registry.register(
            "ebpf_hook_attached",
            "1 when the eBPF program is attached to the hook, 0 when it could not be",
            ebpf_hook_attached.clone(),
        );
        let http_series = Gauge::default();
        registry.register(
            "http_series",
            "HTTP series (service, route, method, status, …) held",
            http_series.clone(),
        );
        let http_route_overflow = Gauge::default();
        registry.register(
            "http_route_overflow_requests",
            "HTTP requests whose route was folded into {other} by the per-service route cap, since start",
            http_route_overflow.clone(),
        );
        let http_filtered = Family::<ProgramLabels, Gauge>::default();
        registry.register(
            "ebpf_events_filtered",
            "Events dropped by the include/exclude rules in the agent, since start",
            http_filtered.clone(),
        );
        let tls_libraries = Gauge::default();
        registry.register(
            "tls_libraries_attached",
            "libssl files with the TLS uprobes attached",
            tls_libraries.clone(),
        );
        let seeded_connections = Gauge::default();
        registry.register(
            "ebpf_seeded_connections",
            "Connections opened before the agent started that were added to the kernel's connection map",
            seeded_connections.clone(),
        );
        let traces = TraceMetrics::register(&mut registry);
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self {
            registry,
            batches,
            buffer_batches,
            buffer_dropped_batches,
            buffer_dropped_samples,
            connected,
            buffer_bytes,
            buffer_write_failed_samples,
            delivered,
            appended_samples,
            next_sequence,
            collect_duration,
            collector_errors,
            ebpf_program_attached,
            ebpf_events,
            ebpf_kernel,
            last_collection_timestamp,
            last_collection_samples,
            events_lost,
            ebpf_hook_attached,
            http_series,
            http_route_overflow,
            http_filtered,
            tls_libraries,
            seeded_connections,
            sources: Mutex::new(Sources::default()),
            traces,
        }
    }

    /// Records the attach status of every hook.
    pub fn set_hooks(&self, hooks: &[HookStatus]) {
        for hook in hooks {
            self.ebpf_hook_attached
                .get_or_create(&HookLabels {
                    program: hook.program,
                    hook: hook.hook.clone(),
                })
                .set(i64::from(hook.attached()));
        }
    }

    /// Registers the HTTP/TCP pipeline's counters, read at scrape time.
    pub fn set_pipeline_source(&self, pipeline: Arc<PipelineStats>) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.pipeline = Some(pipeline);
    }

    /// Registers the eBPF sources read at scrape time.
    pub fn set_ebpf_sources(&self, kernel: Arc<KernelCounters>, exec: Option<Arc<ExecStats>>) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.kernel = Some(kernel);
        sources.exec = exec;
    }

    /// Renders every metric.
    pub fn render(&self) -> String {
        {
            let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            let mut lost: Vec<((&'static str, &'static str), u64)> = Vec::new();
            if let Some(kernel) = &sources.kernel {
                for (counter, value) in kernel.read() {
                    self.ebpf_kernel
                        .get_or_create(&KernelCounterLabels {
                            counter: counter.name(),
                        })
                        .set(value as i64);
                    if let Some(labels) = counter.loss() {
                        lost.push((labels, value));
                    }
                }
            }
            if let Some(exec) = &sources.exec {
                lost.push((
                    ("exec", "decode_error"),
                    exec.malformed.load(Ordering::Relaxed),
                ));
            }
            if let Some(p) = &sources.pipeline {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                lost.push((("http", "decode_error"), load(&p.http_decode_errors)));
                lost.push((("http", "series_limit"), load(&p.http_series_limit)));
                lost.push((("tcp", "decode_error"), load(&p.tcp_decode_errors)));
                lost.push((("tcp", "series_limit"), load(&p.tcp_series_limit)));
                for (program, value) in
                    [("http", load(&p.http_events)), ("tcp", load(&p.tcp_events))]
                {
                    self.ebpf_events
                        .get_or_create(&ProgramLabels { program })
                        .set(value as i64);
                }
                for (program, value) in [
                    ("http", load(&p.http_filtered)),
                    ("tcp", load(&p.tcp_filtered)),
                ] {
                    self.http_filtered
                        .get_or_create(&ProgramLabels { program })
                        .set(value as i64);
                }
                self.http_series.set(load(&p.http_series) as i64);
                self.http_route_overflow
                    .set(load(&p.http_route_overflow) as i64);
                self.tls_libraries.set(load(&p.tls.libraries) as i64);
                self.seeded_connections
                    .set(load(&p.seeded_connections) as i64);
            }
            for ((program, reason), total) in lost {
                let seen = sources.lost_seen.entry((program, reason)).or_insert(0);
                let counter = self
                    .events_lost
                    .get_or_create(&LostLabels { program, reason });
                if total > *seen {
                    counter.inc_by(total - *seen);
                    *seen = total;
                }
            }
            if let Some(exec) = &sources.exec {
                self.ebpf_events
                    .get_or_create(&ProgramLabels {
                        program: sonde_ebpf_common::programs::SCHED_PROCESS_EXEC,
                    })
                    .set(exec.execs.load(Ordering::Relaxed) as i64);
            }
        }
        self.traces.refresh();
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts an acknowledged batch.
    pub fn batch(&self, aggregator: &str, result: &'static str) {
        self.batches
            .get_or_create(&BatchLabels {
                aggregator: aggregator.to_owned(),
                result,
            })
            .inc();
    }

    /// Records a queue's length.
    pub fn buffer_size(&self, aggregator: &str, batches: usize) {
        self.buffer_batches
            .get_or_create(&AggregatorLabels {
                aggregator: aggregator.to_owned(),
            })
            .set(batches as i64);
    }

    /// Counts batches dropped by the buffer's size bound before `aggregator` acknowledged them.
    pub fn buffer_dropped(&self, aggregator: &str, batches: usize, samples: u64) {
        let labels = AggregatorLabels {
            aggregator: aggregator.to_owned(),
        };
        self.buffer_dropped_batches
            .get_or_create(&labels)
            .inc_by(batches as u64);
        self.buffer_dropped_samples
            .get_or_create(&labels)
            .inc_by(samples);
    }

    /// Records the disk buffer's size and next sequence number.
    pub fn buffer_state(&self, bytes: u64, next_sequence: u64) {
        self.buffer_bytes.set(bytes as i64);
        self.next_sequence.set(next_sequence as i64);
    }

    /// Counts samples lost to a failed buffer write.
    pub fn buffer_write_failed(&self, samples: u64) {
        self.buffer_write_failed_samples.inc_by(samples);
    }

    /// Counts samples appended to the buffer.
    pub fn appended(&self, samples: u64) {
        self.appended_samples.inc_by(samples);
    }

    /// Counts a batch that reached the write quorum.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// Records whether a stream to the aggregator is open.
    pub fn connected(&self, aggregator: &str, connected: bool) {
        self.connected
            .get_or_create(&AggregatorLabels {
                aggregator: aggregator.to_owned(),
            })
            .set(i64::from(connected));
    }
}

/// `reason` label of dropped spans.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanDropLabels {
    /// `sampled_out`, `budget`, `shed`, `otlp_queue_full`, `otlp_failed` or `batch_queue_full`.
    pub reason: &'static str,
}

/// Span counters, kept by the trace module and copied into the registry at scrape time.
#[derive(Debug, Clone)]
pub struct TraceMetrics {
    /// Drops by reason (shared with the span builder and the OTLP exporter).
    pub drops: Arc<crate::trace::sampler::DropCounters>,
    /// Spans accepted by the OTLP receiver.
    pub otlp_exported: Arc<AtomicU64>,
    /// How the HTTP pipeline linked the spans it built (shared with its linker).
    pub links: Arc<crate::http_metrics::spans::LinkStats>,
    dropped: Family<SpanDropLabels, Counter>,
    exported: Counter,
    linked: Family<SpanLinkLabels, Counter>,
}

/// `link` label of built spans.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLinkLabels {
    /// `header`, `thread`, `connection`, `none`, or (not built in time) `forced`,
    /// `abandoned`.
    pub link: &'static str,
}

impl TraceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            drops: Arc::default(),
            otlp_exported: Arc::default(),
            links: Arc::default(),
            dropped: Family::default(),
            exported: Counter::default(),
            linked: Family::default(),
        };
        registry.register(
            "spans_linked",
            "Spans built from eBPF HTTP exchanges by how their parent was found (header: \
             traceparent; thread: the server exchange the calling thread served; connection: \
             the client exchange on the other end of the connection; none: a new trace), and \
             exchanges built before their hold time (forced) or never built (abandoned)",
            m.linked.clone(),
        );
        registry.register(
            "spans_dropped",
            "Spans not exported, by reason (head sampling, per-second budget, shed before \
             linking under a load far beyond the budget, OTLP queue full, OTLP export failed, \
             batch queue full)",
            m.dropped.clone(),
        );
        registry.register(
            "otlp_spans_exported",
            "Spans accepted by the OTLP receiver",
            m.exported.clone(),
        );
        m.refresh();
        m
    }

    fn refresh(&self) {
        use crate::trace::sampler::DropReason;
        for reason in DropReason::ALL {
            let counter = self.dropped.get_or_create(&SpanDropLabels {
                reason: reason.as_str(),
            });
            let (now, shown) = (self.drops.get(reason), counter.get());
            if now > shown {
                counter.inc_by(now - shown);
            }
        }
        let l = &self.links;
        for (link, now) in [
            ("header", &l.header),
            ("thread", &l.thread),
            ("connection", &l.connection),
            ("none", &l.unlinked),
            ("forced", &l.forced),
            ("abandoned", &l.abandoned),
        ] {
            let counter = self.linked.get_or_create(&SpanLinkLabels { link });
            let (now, shown) = (now.load(Ordering::Relaxed), counter.get());
            if now > shown {
                counter.inc_by(now - shown);
            }
        }
        let (now, shown) = (
            self.otlp_exported.load(Ordering::Relaxed),
            self.exported.get(),
        );
        if now > shown {
            self.exported.inc_by(now - shown);
        }
    }
}
