//! The rows of a capture as Rust values: one [`Record`] per Parquet row.
//!
//! Must not: know Parquet or Arrow (that is `schema`).

use std::collections::HashMap;

use sonde_proto::v1::{BatchPayload, MetricType};

use crate::{
    ebpf::{exec::Exec, http::Exchange, tcp::TcpRecord},
    http_metrics::identity::Identity,
};

/// One collector reading: one sample of one series at a tick. Histograms are recorded the
/// way Prometheus exposes them: `<name>_bucket{le}`, `<name>_sum`, `<name>_count` rows with
/// `metric_type` histogram and `family` `<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The collector that emitted it (`cpu`, `meminfo`, `container`, `http`, …).
    pub collector: String,
    /// Metric family (`node_cpu_seconds` for `node_cpu_seconds_total`).
    pub family: String,
    /// Series name (`__name__`).
    pub metric: String,
    /// Family type.
    pub metric_type: MetricType,
    /// Family help text.
    pub help: String,
    /// Family unit (often empty).
    pub unit: String,
    /// Labels other than `__name__`, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// One row of a capture. `t_ns` is the wall-clock time (ns since the Unix epoch) at which the
/// agent observed the event, or the collection time of a tick.
#[derive(Debug, Clone)]
pub enum Record {
    /// An HTTP exchange, with the identity the agent resolved for its process.
    Http {
        /// Observed at.
        t_ns: i64,
        /// The decoded exchange.
        exchange: Exchange,
        /// Service identity.
        who: Identity,
    },
    /// A TCP event, with its owner's identity when known.
    Tcp {
        /// Observed at.
        t_ns: i64,
        /// The decoded event.
        event: TcpRecord,
        /// Service identity of the owner.
        who: Option<Identity>,
    },
    /// An exec.
    Exec {
        /// Observed at.
        t_ns: i64,
        /// The decoded exec.
        exec: Exec,
    },
    /// A collector reading of the tick at `t_ns`.
    Reading {
        /// The tick's collection time.
        t_ns: i64,
        /// The reading.
        reading: Reading,
    },
    /// The end of the collection at `t_ns`: every reading of that tick precedes it.
    Tick {
        /// The tick's collection time (a whole millisecond: the samples' timestamp).
        t_ns: i64,
    },
}

impl Record {
    /// The row's time.
    pub fn t_ns(&self) -> i64 {
        match self {
            Record::Http { t_ns, .. }
            | Record::Tcp { t_ns, .. }
            | Record::Exec { t_ns, .. }
            | Record::Reading { t_ns, .. }
            | Record::Tick { t_ns } => *t_ns,
        }
    }

    /// The `kind` column value.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Http { .. } => "http",
            Record::Tcp { .. } => "tcp",
            Record::Exec { .. } => "exec",
            Record::Reading { .. } => "reading",
            Record::Tick { .. } => "tick",
        }
    }
}

/// The readings of one collector's payload at tick `t_ns`.
pub fn readings(collector: &str, payload: &BatchPayload, t_ns: i64) -> Vec<Record> {
    let families: HashMap<&str, (MetricType, &str, &str)> = payload
        .metadata
        .iter()
        .map(|m| {
            let ty = MetricType::try_from(m.r#type).unwrap_or(MetricType::Unspecified);
            (
                m.metric_family_name.as_str(),
                (ty, m.help.as_str(), m.unit.as_str()),
            )
        })
        .collect();
    let family_of = |metric: &str| -> (String, MetricType, String, String) {
        let candidates = [
            Some(metric),
            metric.strip_suffix("_total"),
            metric.strip_suffix("_bucket"),
            metric.strip_suffix("_sum"),
            metric.strip_suffix("_count"),
        ];
        for name in candidates.into_iter().flatten() {
            if let Some((ty, help, unit)) = families.get(name) {
                return (name.to_owned(), *ty, (*help).to_owned(), (*unit).to_owned());
            }
        }
        (
            metric.to_owned(),
            MetricType::Unspecified,
            String::new(),
            String::new(),
        )
    };
    let split = |labels: &[sonde_proto::v1::Label]| -> (String, Vec<(String, String)>) {
        let mut name = String::new();
        let mut rest = Vec::with_capacity(labels.len());
        for l in labels {
            if l.name == sonde_proto::names::METRIC_NAME {
                name.clone_from(&l.value);
            } else {
                rest.push((l.name.clone(), l.value.clone()));
            }
        }
        rest.sort();
        (name, rest)
    };
    let mut out = Vec::new();
    let mut push = |metric: String, labels: Vec<(String, String)>, value: f64| {
        let (family, metric_type, help, unit) = family_of(&metric);
        out.push(Record::Reading {
            t_ns,
            reading: Reading {
                collector: collector.to_owned(),
                family,
                metric,
                metric_type,
                help,
                unit,
                labels,
                value,
            },
        });
    };
    for series in &payload.series {
        let (name, labels) = split(&series.labels);
        for sample in &series.samples {
            push(name.clone(), labels.clone(), sample.value);
        }
    }
    for histogram in &payload.histograms {
        let (name, labels) = split(&histogram.labels);
        for point in &histogram.points {
            let bounds = histogram.upper_bounds.iter().map(|b| format_le(*b));
            let cumulative = point.bucket_counts.iter().copied();
            for (le, count) in bounds
                .chain(std::iter::once("+Inf".to_owned()))
                .zip(cumulative.chain(std::iter::once(point.count)))
            {
                let mut with_le = labels.clone();
                with_le.push(("le".to_owned(), le));
                with_le.sort();
                push(format!("{name}_bucket"), with_le, count as f64);
            }
            push(format!("{name}_sum"), labels.clone(), point.sum);
            push(format!("{name}_count"), labels.clone(), point.count as f64);
        }
    }
    out
}

/// A bucket bound as Prometheus prints `le` (`0.005`, `1`, `2.5`).
fn format_le(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{}", bound as i64)
    } else {
        format!("{bound}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{Emitter, emitter::HistogramValue};

    #[test]
    fn payload_becomes_one_reading_per_sample_with_its_family() {
        let mut e = Emitter::new(5);
        e.counter("node_x_total", "X.", &[("cpu", "0")], 3.0);
        e.histogram(
            "lat_seconds",
            "Lat.",
            "seconds",
            &[("svc", "a")],
            HistogramValue {
                upper_bounds: &[0.5, 1.0],
                cumulative: &[1, 2],
                count: 3,
                sum: 4.5,
                exemplars: Vec::new(),
            },
        );
        let rows = readings("test", &e.finish(), 5_000_000);
        type Row = (String, String, Vec<(String, String)>, f64);
        let got: Vec<Row> = rows
            .iter()
            .map(|r| match r {
                Record::Reading { reading: r, .. } => (
                    r.metric.clone(),
                    r.family.clone(),
                    r.labels.clone(),
                    r.value,
                ),
                other => panic!("not a reading: {other:?}"),
            })
            .collect();
        let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            got[0],
            (
                "node_x_total".into(),
                "node_x".into(),
                l(&[("cpu", "0")]),
                3.0
            )
        );
        assert_eq!(
            got[1..4]
                .iter()
                .map(|g| (g.2.clone(), g.3))
                .collect::<Vec<_>>(),
            [
                (l(&[("le", "0.5"), ("svc", "a")]), 1.0),
                (l(&[("le", "1"), ("svc", "a")]), 2.0),
                (l(&[("le", "+Inf"), ("svc", "a")]), 3.0)
            ]
        );
        assert_eq!((got[4].0.as_str(), got[4].3), ("lat_seconds_sum", 4.5));
        assert_eq!(
            (got[5].0.as_str(), got[5].1.as_str()),
            ("lat_seconds_count", "lat_seconds")
        );
    }
}
