//! The agent's own metrics (`sonde_agent_*`), declared in one place and exposed on the
//! agent's `/metrics` in the OpenMetrics text format.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
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

use crate::ebpf::{KernelCounters, exec::ExecStats};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Sources read at scrape time.
#[derive(Debug, Default)]
struct Sources {
    kernel: Option<Arc<KernelCounters>>,
    exec: Option<Arc<ExecStats>>,
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
            sources: Mutex::new(Sources::default()),
            traces,
        }
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
            let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(kernel) = &sources.kernel {
                for (counter, value) in kernel.read() {
                    let name = match counter {
                        sonde_ebpf_common::Counter::ExecSeen => "exec_seen",
                        sonde_ebpf_common::Counter::ExecRingbufFull => "exec_ringbuf_full",
                        sonde_ebpf_common::Counter::ExecReadError => "exec_read_error",
                    };
                    self.ebpf_kernel
                        .get_or_create(&KernelCounterLabels { counter: name })
                        .set(value as i64);
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
    /// `sampled_out`, `budget`, `otlp_queue_full` or `otlp_failed`.
    pub reason: &'static str,
}

/// Span counters, kept by the trace module and copied into the registry at scrape time.
#[derive(Debug, Clone)]
pub struct TraceMetrics {
    /// Drops by reason (shared with the span builder and the OTLP exporter).
    pub drops: Arc<crate::trace::sampler::DropCounters>,
    /// Spans accepted by the OTLP receiver.
    pub otlp_exported: Arc<AtomicU64>,
    dropped: Family<SpanDropLabels, Counter>,
    exported: Counter,
}

impl TraceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            drops: Arc::default(),
            otlp_exported: Arc::default(),
            dropped: Family::default(),
            exported: Counter::default(),
        };
        registry.register(
            "spans_dropped",
            "Spans not exported, by reason (head sampling, per-second budget, OTLP queue full, \
             OTLP export failed)",
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
        let (now, shown) = (
            self.otlp_exported.load(Ordering::Relaxed),
            self.exported.get(),
        );
        if now > shown {
            self.exported.inc_by(now - shown);
        }
    }
}
