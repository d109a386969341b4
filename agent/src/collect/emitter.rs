//! The [`Emitter`]: accumulates one tick's samples and metadata as a batch payload.

use std::collections::HashSet;

use sonde_proto::v1::{
    BatchPayload, Exemplar, HistogramPoint, HistogramSeries, Label, MetricMetadata, MetricType,
    Sample, Series,
};

/// One classic histogram's state at this tick (see [`Emitter::histogram`]).
#[derive(Debug, Clone)]
pub struct HistogramValue<'a> {
    /// Finite upper bounds, strictly increasing (`+Inf` is implicit).
    pub upper_bounds: &'a [f64],
    /// Cumulative count per finite bound (same length as `upper_bounds`).
    pub cumulative: &'a [u64],
    /// Total observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of observations.
    pub sum: f64,
    /// Exemplars (e.g. trace ids) for this histogram; empty until spans exist.
    pub exemplars: Vec<Exemplar>,
}

/// Accumulates samples, all stamped with the tick's timestamp.
#[derive(Debug)]
pub struct Emitter {
    timestamp_ms: i64,
    payload: BatchPayload,
    families: HashSet<String>,
}

impl Emitter {
    /// A new, empty tick at `timestamp_ms`.
    pub fn new(timestamp_ms: i64) -> Self {
        Self {
            timestamp_ms,
            payload: BatchPayload::default(),
            families: HashSet::new(),
        }
    }

    /// Declares a metric family once per tick (type, help, unit).
    pub fn family(&mut self, name: &str, metric_type: MetricType, help: &str, unit: &str) {
        // Checked before inserting so the common case (family already declared) allocates nothing.
        if !self.families.contains(name) && self.families.insert(name.to_owned()) {
            self.payload.metadata.push(MetricMetadata {
                metric_family_name: name.to_owned(),
                r#type: metric_type as i32,
                help: help.to_owned(),
                unit: unit.to_owned(),
            });
        }
    }

    /// Declares a gauge and emits one sample of it.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, MetricType::Gauge, help, "");
        self.sample(name, labels, value);
    }

    /// Declares a counter (family name without `_total`) and emits `<name>_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let family = name.strip_suffix("_total").unwrap_or(name);
        self.family(family, MetricType::Counter, help, "");
        self.sample(name, labels, value);
    }

    /// Declares an untyped metric (Prometheus "untyped", OpenMetrics "unknown") and emits one
    /// sample of it, for sources whose type is unknown (node_exporter's netstat and vmstat).
    pub fn untyped(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, MetricType::Unspecified, help, "");
        self.sample(name, labels, value);
    }

    /// Emits one sample of series `name{labels}`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.payload.series.push(Series {
            labels: sorted_labels(name, labels),
            samples: vec![Sample {
                timestamp_ms: self.timestamp_ms,
                value,
            }],
            exemplars: Vec::new(),
        });
    }

    /// Declares a histogram family (`name` without `_bucket`/`_sum`/`_count`) and emits one
    /// classic histogram point of series `name{labels}`; the aggregator stores it as
    /// `<name>_bucket{le}`, `<name>_sum` and `<name>_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        unit: &str,
        labels: &[(&str, &str)],
        value: HistogramValue<'_>,
    ) {
        self.family(name, MetricType::Histogram, help, unit);
        self.payload.histograms.push(HistogramSeries {
            labels: sorted_labels(name, labels),
            upper_bounds: value.upper_bounds.to_vec(),
            points: vec![HistogramPoint {
                timestamp_ms: self.timestamp_ms,
                bucket_counts: value.cumulative.to_vec(),
                count: value.count,
                sum: value.sum,
            }],
            exemplars: value.exemplars,
        });
    }

    /// Adds spans to the tick's payload (they travel in the same batch as the samples).
    pub fn spans(&mut self, spans: impl IntoIterator<Item = sonde_proto::v1::Span>) {
        self.payload.spans.extend(spans);
    }

    /// Number of samples emitted so far.
    pub fn sample_count(&self) -> usize {
        self.payload.series.iter().map(|s| s.samples.len()).sum()
    }

    /// The finished payload.
    pub fn finish(self) -> BatchPayload {
        self.payload
    }
}

/// `__name__` plus `labels`, sorted by name.
fn sorted_labels(name: &str, labels: &[(&str, &str)]) -> Vec<Label> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.push(Label {
        name: sonde_proto::names::METRIC_NAME.to_owned(),
        value: name.to_owned(),
    });
    all.extend(labels.iter().map(|(n, v)| Label {
        name: (*n).to_owned(),
        value: (*v).to_owned(),
    }));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_point_with_sorted_labels_and_metadata() {
        let mut e = Emitter::new(7);
        e.histogram(
            "lat_seconds",
            "help",
            "seconds",
            &[("z", "1"), ("a", "2")],
            HistogramValue {
                upper_bounds: &[0.1, 1.0],
                cumulative: &[1, 3],
                count: 4,
                sum: 2.5,
                exemplars: Vec::new(),
            },
        );
        let p = e.finish();
        let h = &p.histograms[0];
        let names: Vec<&str> = h.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "z"]);
        assert_eq!(h.labels[0].value, "lat_seconds");
        assert_eq!(h.points[0].bucket_counts, [1, 3]);
        assert_eq!((h.points[0].count, h.points[0].timestamp_ms), (4, 7));
        assert_eq!(p.metadata[0].r#type, MetricType::Histogram as i32);
        assert_eq!(p.metadata[0].unit, "seconds");
    }

    #[test]
    fn labels_sorted_and_metadata_once() {
        let mut e = Emitter::new(1000);
        e.counter("x_total", "help", &[("zone", "a"), ("cpu", "0")], 1.0);
        e.counter("x_total", "help", &[("zone", "b"), ("cpu", "0")], 2.0);
        assert_eq!(e.sample_count(), 2);
        let p = e.finish();
        assert_eq!(p.metadata.len(), 1);
        assert_eq!(p.metadata[0].metric_family_name, "x");
        let names: Vec<&str> = p.series[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "cpu", "zone"]);
        assert_eq!(p.series[1].samples[0].timestamp_ms, 1000);
    }
}
