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
    /// Open agent streams.
    pub ingest_streams: Gauge,
    /// HTTP requests served.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Query evaluation time.
    pub query_duration: Family<QueryLabels, Histogram>,
    head_series: Gauge,
    head_samples: Gauge,
    /// Rule evaluation and notification metrics.
    pub rules: RuleMetrics,
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
            ingest_streams,
            http_requests,
            query_duration,
            head_series,
            head_samples,
        }
    }

    /// Renders every metric, refreshing the gauges read from the store.
    pub fn render(&self, store: &Store) -> String {
        let stats = store.stats();
        self.head_series.set(stats.series as i64);
        self.head_samples.set(stats.samples as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
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
