//! The aggregator's own metrics (`sonde_aggregator_*`), declared in one place and exposed on
//! `/metrics` in the OpenMetrics text format.

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

use crate::store::Store;

/// Outcome label of an ingested batch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// `ok`, `duplicate`, `rejected` or `retry`.
    pub result: &'static str,
}

/// Labels of HTTP API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route (e.g. `/api/v1/query`).
    pub handler: String,
    /// HTTP status code.
    pub code: u16,
}

/// `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// HTTP status code.
    pub code: u16,
}

/// Labels of query timing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `instant` or `range`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric the aggregator exports about itself.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Batches received, by outcome.
    pub ingest_batches: Family<BatchLabels, Counter>,
    /// Samples stored (after deduplication).
    pub ingest_samples: Counter,
    /// Samples ignored because the series already had a sample at that timestamp.
    pub ingest_duplicate_samples: Counter,
    /// Agent series stored by their remembered head id (labels not decoded).
    pub ingest_known_series: Counter,
    /// Agent series whose labels were decoded (new to the aggregator, changed, with
    /// exemplars, or after a flush renumbered the head).
    pub ingest_decoded_series: Counter,
    /// Open agent streams.
    pub ingest_streams: Gauge,
    /// HTTP requests served.
    pub http_requests: Family<HttpLabels, Counter>,
    remote_write_requests: Family<CodeLabels, Counter>,
    remote_write_samples: Counter,
    /// Query evaluation time.
    pub query_duration: Family<QueryLabels, Histogram>,
    head_series: Gauge,
    head_samples: Gauge,
    store_blocks: Gauge,
    store_block_bytes: Gauge,
    store_block_samples: Gauge,
    store_wal_bytes: Gauge,
    store_head_memory_bytes: Gauge,
    /// Rule evaluation and notification metrics.
    pub rules: RuleMetrics,
    /// Exemplars and the Jaeger API.
    pub traces: TraceMetrics,
    /// Replication between replicas (`sonde_aggregator_replication_*`).
    pub replication: crate::replication::ReplicationMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sonde_aggregator");
        let ingest_batches = Family::<BatchLabels, Counter>::default();
        registry.register(
            "ingest_batches",
            "Batches received from agents, by result",
            ingest_batches.clone(),
        );
        let ingest_samples = Counter::default();
        registry.register(
            "ingest_samples",
            "Samples stored from agent batches",
            ingest_samples.clone(),
        );
        let ingest_duplicate_samples = Counter::default();
        registry.register(
            "ingest_duplicate_samples",
            "Samples ignored because their series already had a sample at that timestamp",
            ingest_duplicate_samples.clone(),
        );
        let ingest_known_series = Counter::default();
        registry.register(
            "ingest_known_series",
            "Series of agent batches stored by the head id remembered from the agent's earlier \
             batches, without decoding their labels",
            ingest_known_series.clone(),
        );
        let ingest_decoded_series = Counter::default();
        registry.register(
            "ingest_decoded_series",
            "Series of agent batches whose labels were decoded and validated (new, changed, \
             with exemplars, or after a flush renumbered the head)",
            ingest_decoded_series.clone(),
        );
        let ingest_streams = Gauge::default();
        registry.register(
            "ingest_streams",
            "Agent push streams currently open",
            ingest_streams.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by handler and status code",
            http_requests.clone(),
        );
        let remote_write_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "remote_write_requests",
            "Prometheus remote write requests, by response code",
            remote_write_requests.clone(),
        );
        let remote_write_samples = Counter::default();
        registry.register(
            "remote_write_samples",
            "Float samples received over Prometheus remote write",
            remote_write_samples.clone(),
        );
        let query_duration = Family::<QueryLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        registry.register_with_unit(
            "query_duration",
            "PromQL evaluation time",
            Unit::Seconds,
            query_duration.clone(),
        );
        let head_series = Gauge::default();
        registry.register(
            "head_series",
            "Series held in the head",
            head_series.clone(),
        );
        let head_samples = Gauge::default();
        registry.register(
            "head_samples",
            "Samples held in the head",
            head_samples.clone(),
        );
        let store_blocks = Gauge::default();
        registry.register(
            "store_blocks",
            "Parquet blocks on disk",
            store_blocks.clone(),
        );
        let store_block_bytes = Gauge::default();
        registry.register_with_unit(
            "store_block",
            "Size of the Parquet blocks on disk",
            Unit::Bytes,
            store_block_bytes.clone(),
        );
        let store_block_samples = Gauge::default();
        registry.register(
            "store_block_samples",
            "Samples in Parquet blocks",
            store_block_samples.clone(),
        );
        let store_wal_bytes = Gauge::default();
        registry.register_with_unit(
            "store_wal",
            "Size of the write-ahead log segments",
            Unit::Bytes,
            store_wal_bytes.clone(),
        );
        let store_head_memory_bytes = Gauge::default();
        registry.register_with_unit(
            "store_head_memory",
            "Approximate heap held by the head and the block indexes",
            Unit::Bytes,
            store_head_memory_bytes.clone(),
        );
        let traces = TraceMetrics::register(&mut registry);
        let replication = crate::replication::ReplicationMetrics::register(&mut registry);
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let rules = RuleMetrics::register(&mut registry);
        Self {
            registry,
            rules,
            ingest_batches,
            ingest_samples,
            ingest_duplicate_samples,
            ingest_known_series,
            ingest_decoded_series,
            ingest_streams,
            http_requests,
            remote_write_requests,
            remote_write_samples,
            query_duration,
            head_series,
            head_samples,
            store_blocks,
            store_block_bytes,
            store_block_samples,
            store_wal_bytes,
            store_head_memory_bytes,
            traces,
            replication,
        }
    }

    /// Renders every metric, refreshing the gauges read from the store.
    pub fn render(&self, store: &Store) -> String {
        let stats = store.stats();
        self.head_series.set(stats.series as i64);
        self.head_samples.set(stats.samples as i64);
        let disk = store.disk_stats();
        self.store_blocks.set(disk.blocks as i64);
        self.store_block_bytes.set(disk.block_bytes as i64);
        self.store_block_samples.set(disk.block_samples as i64);
        self.store_wal_bytes.set(disk.wal_bytes as i64);
        self.store_head_memory_bytes.set(store.heap_bytes() as i64);
        self.traces.refresh(store);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts a remote write request by response code.
    pub fn remote_write_request(&self, code: u16) {
        self.remote_write_requests
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    /// Counts samples received over remote write.
    pub fn remote_write_samples(&self, samples: u64) {
        self.remote_write_samples.inc_by(samples);
    }

    /// Counts a batch outcome.
    pub fn batch(&self, result: &'static str) {
        self.ingest_batches
            .get_or_create(&BatchLabels { result })
            .inc();
    }
}

/// Label of per-group rule metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleGroupLabels {
    /// Prometheus' group key, `file;name`.
    pub rule_group: String,
}

/// Label of per-Alertmanager notification metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertmanagerLabels {
    /// The Alertmanager's URL as configured.
    pub alertmanager: String,
}

/// `sonde_aggregator_rule_*` and `sonde_aggregator_notifications_*` (Prometheus'
/// `prometheus_rule_*` and `prometheus_notifications_*` counterparts).
#[derive(Debug)]
pub struct RuleMetrics {
    /// Rule evaluations, per group.
    pub evaluations: Family<RuleGroupLabels, Counter>,
    /// Failed rule evaluations, per group.
    pub evaluation_failures: Family<RuleGroupLabels, Counter>,
    /// Group evaluations run.
    pub group_iterations: Family<RuleGroupLabels, Counter>,
    /// Group evaluations skipped because the previous one overran.
    pub group_iterations_missed: Family<RuleGroupLabels, Counter>,
    /// Duration of the last group evaluation.
    pub group_last_duration: Family<RuleGroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Timestamp of the last group evaluation.
    pub group_last_evaluation: Family<RuleGroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Samples the last group evaluation produced.
    pub group_samples: Family<RuleGroupLabels, Gauge>,
    /// Rules in each group.
    pub group_rules: Family<RuleGroupLabels, Gauge>,
    /// Interval of each group.
    pub group_interval: Family<RuleGroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 if the last rule (re)load succeeded.
    pub config_last_reload_successful: Gauge,
    /// When the rules were last (re)loaded successfully.
    pub config_last_reload_success_timestamp: Gauge,
    /// Alerts sent, per Alertmanager.
    pub notifications_sent: Family<AlertmanagerLabels, Counter>,
    /// Alerts whose sending failed, per Alertmanager.
    pub notifications_errors: Family<AlertmanagerLabels, Counter>,
    /// Alerts dropped (queue overflow, or no Alertmanager accepted them).
    pub notifications_dropped: Counter,
    /// Alerts waiting in the queue.
    pub notifications_queue_length: Gauge,
    /// Queue capacity.
    pub notifications_queue_capacity: Gauge,
    /// Alertmanagers configured.
    pub notifications_alertmanagers: Gauge,
    /// Time to send a batch, per Alertmanager.
    pub notifications_latency: Family<AlertmanagerLabels, Histogram>,
}

impl RuleMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            evaluations: Family::default(),
            evaluation_failures: Family::default(),
            group_iterations: Family::default(),
            group_iterations_missed: Family::default(),
            group_last_duration: Family::default(),
            group_last_evaluation: Family::default(),
            group_samples: Family::default(),
            group_rules: Family::default(),
            group_interval: Family::default(),
            config_last_reload_successful: Gauge::default(),
            config_last_reload_success_timestamp: Gauge::default(),
            notifications_sent: Family::default(),
            notifications_errors: Family::default(),
            notifications_dropped: Counter::default(),
            notifications_queue_length: Gauge::default(),
            notifications_queue_capacity: Gauge::default(),
            notifications_alertmanagers: Gauge::default(),
            notifications_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 8))
            }),
        };
        registry.register(
            "rule_evaluations",
            "Rule evaluations",
            m.evaluations.clone(),
        );
        registry.register(
            "rule_evaluation_failures",
            "Rule evaluations that failed",
            m.evaluation_failures.clone(),
        );
        registry.register(
            "rule_group_iterations",
            "Group evaluations run",
            m.group_iterations.clone(),
        );
        registry.register(
            "rule_group_iterations_missed",
            "Group evaluations missed because the previous one was slow",
            m.group_iterations_missed.clone(),
        );
        registry.register_with_unit(
            "rule_group_last_duration",
            "Duration of the last group evaluation",
            Unit::Seconds,
            m.group_last_duration.clone(),
        );
        registry.register_with_unit(
            "rule_group_last_evaluation_timestamp",
            "Time of the last group evaluation",
            Unit::Seconds,
            m.group_last_evaluation.clone(),
        );
        registry.register(
            "rule_group_last_evaluation_samples",
            "Samples the last group evaluation produced",
            m.group_samples.clone(),
        );
        registry.register(
            "rule_group_rules",
            "Rules in the group",
            m.group_rules.clone(),
        );
        registry.register_with_unit(
            "rule_group_interval",
            "Evaluation interval of the group",
            Unit::Seconds,
            m.group_interval.clone(),
        );
        registry.register(
            "rule_config_last_reload_successful",
            "Whether the last rule reload succeeded (1) or failed (0)",
            m.config_last_reload_successful.clone(),
        );
        registry.register_with_unit(
            "rule_config_last_reload_success_timestamp",
            "When the rules were last loaded successfully",
            Unit::Seconds,
            m.config_last_reload_success_timestamp.clone(),
        );
        registry.register(
            "notifications_sent",
            "Alerts sent to Alertmanager",
            m.notifications_sent.clone(),
        );
        registry.register(
            "notifications_errors",
            "Alerts that could not be sent to an Alertmanager",
            m.notifications_errors.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Alerts dropped: queue full or no Alertmanager accepted them",
            m.notifications_dropped.clone(),
        );
        registry.register(
            "notifications_queue_length",
            "Alerts waiting to be sent",
            m.notifications_queue_length.clone(),
        );
        registry.register(
            "notifications_queue_capacity",
            "Capacity of the alert queue",
            m.notifications_queue_capacity.clone(),
        );
        registry.register(
            "notifications_alertmanagers",
            "Alertmanagers alerts are sent to",
            m.notifications_alertmanagers.clone(),
        );
        registry.register_with_unit(
            "notifications_latency",
            "Time to send a batch of alerts",
            Unit::Seconds,
            m.notifications_latency.clone(),
        );
        m
    }
}

/// `reason` label of dropped exemplars.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `duplicate` or `out_of_order`.
    pub reason: &'static str,
}

/// Exemplar storage metrics.
#[derive(Debug, Clone, Default)]
pub struct TraceMetrics {
    exemplars_appended: Counter,
    exemplars_dropped: Family<ReasonLabels, Counter>,
    exemplars_in_memory: Gauge,
    exemplar_series: Gauge,
}

impl TraceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "exemplars_appended",
            "Exemplars kept in the exemplar ring",
            m.exemplars_appended.clone(),
        );
        registry.register(
            "exemplars_dropped",
            "Exemplars dropped: equal to (duplicate) or not newer than (out_of_order) their \
             series' newest",
            m.exemplars_dropped.clone(),
        );
        registry.register(
            "exemplars_in_memory",
            "Exemplars held in the ring (storage.max_exemplars bounds it)",
            m.exemplars_in_memory.clone(),
        );
        registry.register(
            "exemplar_series",
            "Series with at least one exemplar in the ring",
            m.exemplar_series.clone(),
        );
        m
    }

    /// Counts the exemplars of one stored batch.
    pub fn exemplars_appended(&self, outcome: &crate::store::BatchOutcome) {
        self.exemplars_appended.inc_by(outcome.exemplars);
        for (reason, n) in [
            ("duplicate", outcome.exemplars_duplicate),
            ("out_of_order", outcome.exemplars_out_of_order),
        ] {
            if n > 0 {
                self.exemplars_dropped
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(n);
            }
        }
    }

    fn refresh(&self, store: &Store) {
        let (exemplars, series) = store.exemplar_stats();
        self.exemplars_in_memory.set(exemplars as i64);
        self.exemplar_series.set(series as i64);
    }
}
