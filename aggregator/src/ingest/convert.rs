//! Conversion of a validated [`BatchPayload`] into store series.
//!
//! Classic histograms become the series Prometheus clients expose: `<name>_bucket{le=…}` per
//! bound plus `le="+Inf"`, `<name>_sum` and `<name>_count`, with `le` formatted as Go's
//! `strconv.FormatFloat(v, 'g', -1, 64)` so queries written for Prometheus match.
//! A histogram's exemplars go to the `_bucket` series of the smallest bound not below their
//! value (`+Inf` past the last), where a Prometheus client library exposes them.

use sonde_proto::v1::{BatchPayload, Label as ProtoLabel, MetricType as ProtoType};

use crate::store::{AttrValue, Exemplar, Labels, Metadata, MetricType, Sample, Span};

/// A batch ready to store.
#[derive(Debug, Default)]
pub struct ConvertedBatch {
    /// Series with their samples.
    pub series: Vec<(Labels, Vec<Sample>)>,
    /// Metric family metadata.
    pub metadata: Vec<(String, Metadata)>,
    /// Spans.
    pub spans: Vec<Span>,
    /// Exemplars with their series' labels.
    pub exemplars: Vec<(Labels, Exemplar)>,
}

impl ConvertedBatch {
    /// Total samples across series.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|(_, s)| s.len()).sum()
    }
}

/// Wire samples as store samples.
pub fn to_samples(samples: &[sonde_proto::v1::Sample]) -> Vec<Sample> {
    samples
        .iter()
        .map(|s| Sample {
            t: s.timestamp_ms,
            v: s.value,
        })
        .collect()
}

/// Converts a payload that passed validation.
pub fn convert_batch(payload: BatchPayload) -> ConvertedBatch {
    let mut out = ConvertedBatch::default();
    for series in payload.series {
        let labels = to_labels(&series.labels);
        for e in &series.exemplars {
            out.exemplars.push((labels.clone(), to_exemplar(e)));
        }
        out.series.push((labels, to_samples(&series.samples)));
    }
    for histogram in payload.histograms {
        let name = histogram
            .labels
            .iter()
            .find(|l| l.name == sonde_proto::names::METRIC_NAME)
            .map(|l| l.value.clone())
            .unwrap_or_default();
        let with_name = |suffix: &str, le: Option<&str>| {
            let renamed = format!("{name}{suffix}");
            Labels::from_pairs(
                histogram
                    .labels
                    .iter()
                    .map(|l| {
                        let value = if l.name == sonde_proto::names::METRIC_NAME {
                            renamed.as_str()
                        } else {
                            l.value.as_str()
                        };
                        (l.name.as_str(), value)
                    })
                    .chain(le.map(|le| ("le", le))),
            )
        };
        for e in &histogram.exemplars {
            let le = histogram
                .upper_bounds
                .iter()
                .find(|b| e.value <= **b)
                .map_or_else(|| "+Inf".to_owned(), |b| format_go_g(*b));
            out.exemplars
                .push((with_name("_bucket", Some(&le)), to_exemplar(e)));
        }
        let points = &histogram.points;
        for (i, bound) in histogram.upper_bounds.iter().enumerate() {
            let samples = points
                .iter()
                .map(|p| Sample {
                    t: p.timestamp_ms,
                    v: p.bucket_counts[i] as f64,
                })
                .collect();
            out.series
                .push((with_name("_bucket", Some(&format_go_g(*bound))), samples));
        }
        let total = |f: &dyn Fn(&sonde_proto::v1::HistogramPoint) -> f64| {
            points
                .iter()
                .map(|p| Sample {
                    t: p.timestamp_ms,
                    v: f(p),
                })
                .collect::<Vec<_>>()
        };
        out.series.push((
            with_name("_bucket", Some("+Inf")),
            total(&|p| p.count as f64),
        ));
        out.series
            .push((with_name("_sum", None), total(&|p| p.sum)));
        out.series
            .push((with_name("_count", None), total(&|p| p.count as f64)));
    }
    out.spans = payload.spans.into_iter().map(convert_span).collect();
    for m in payload.metadata {
        let metric_type = match ProtoType::try_from(m.r#type) {
            Ok(ProtoType::Counter) => MetricType::Counter,
            Ok(ProtoType::Gauge) => MetricType::Gauge,
            Ok(ProtoType::Histogram) => MetricType::Histogram,
            Ok(ProtoType::Summary) => MetricType::Summary,
            Ok(ProtoType::Info) => MetricType::Info,
            Ok(ProtoType::Stateset) => MetricType::Stateset,
            Ok(ProtoType::Unspecified) | Err(_) => MetricType::Unknown,
        };
        out.metadata.push((
            m.metric_family_name,
            Metadata {
                metric_type,
                help: m.help,
                unit: m.unit,
            },
        ));
    }
    out
}

fn attrs(kvs: Vec<sonde_proto::v1::KeyValue>) -> Vec<(String, AttrValue)> {
    use sonde_proto::v1::any_value::Value;
    kvs.into_iter()
        .filter_map(|kv| {
            let value = match kv.value?.value? {
                Value::StringValue(s) => AttrValue::Str(s),
                Value::BoolValue(b) => AttrValue::Bool(b),
                Value::IntValue(i) => AttrValue::Int(i),
                Value::DoubleValue(d) => AttrValue::Double(d),
                Value::BytesValue(b) => AttrValue::Bytes(b),
            };
            Some((kv.key, value))
        })
        .collect()
}

/// Converts a validated span (ids of the right lengths, times in range).
fn convert_span(span: sonde_proto::v1::Span) -> Span {
    let resource = attrs(span.resource);
    let service = resource
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("service.name", AttrValue::Str(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let id8 = |b: &[u8]| -> [u8; 8] { b.try_into().unwrap_or_default() };
    Span {
        trace_id: span.trace_id.as_slice().try_into().unwrap_or_default(),
        span_id: id8(&span.span_id),
        parent_span_id: (span.parent_span_id.len() == 8).then(|| id8(&span.parent_span_id)),
        service,
        name: span.name,
        kind: span.kind.clamp(0, 255) as u8,
        start_unix_nano: span.start_time_unix_nano as i64,
        end_unix_nano: span.end_time_unix_nano as i64,
        status_code: span.status.clamp(0, 255) as u8,
        status_message: span.status_message,
        attributes: attrs(span.attributes),
        resource,
    }
}

fn to_exemplar(e: &sonde_proto::v1::Exemplar) -> Exemplar {
    Exemplar {
        labels: to_labels(&e.labels),
        value: e.value,
        t: e.timestamp_ms,
    }
}

fn to_labels(labels: &[ProtoLabel]) -> Labels {
    Labels::from_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// Formats like Go's `strconv.FormatFloat(v, 'g', -1, 64)`, with `+Inf`/`-Inf`/`NaN` as
/// Prometheus writes them.
pub fn format_go_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, like Go's precision -1.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{HistogramPoint, HistogramSeries, Sample as ProtoSample, Series};

    use super::*;

    #[test]
    fn go_g_formatting() {
        for (v, want) in [
            (0.005, "0.005"),
            (1.0, "1"),
            (10.0, "10"),
            (2.5, "2.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (-2e21, "-2e+21"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(format_go_g(v), want, "{v}");
        }
    }

    #[test]
    fn histogram_expands_to_bucket_sum_count() {
        let l = |n: &str, v: &str| ProtoLabel {
            name: n.into(),
            value: v.into(),
        };
        let payload = BatchPayload {
            series: vec![Series {
                labels: vec![l("__name__", "up")],
                samples: vec![ProtoSample {
                    timestamp_ms: 5,
                    value: 1.0,
                }],
                exemplars: vec![],
            }],
            histograms: vec![HistogramSeries {
                labels: vec![l("__name__", "lat_seconds"), l("job", "j")],
                upper_bounds: vec![0.005, 1.0],
                points: vec![HistogramPoint {
                    timestamp_ms: 7,
                    bucket_counts: vec![1, 3],
                    count: 4,
                    sum: 2.5,
                }],
                exemplars: vec![],
            }],
            ..Default::default()
        };
        let out = convert_batch(payload);
        let rendered: Vec<String> = out
            .series
            .iter()
            .map(|(labels, samples)| format!("{labels} {}@{}", samples[0].v, samples[0].t))
            .collect();
        assert_eq!(
            rendered,
            [
                "up{} 1@5",
                r#"lat_seconds_bucket{job="j", le="0.005"} 1@7"#,
                r#"lat_seconds_bucket{job="j", le="1"} 3@7"#,
                r#"lat_seconds_bucket{job="j", le="+Inf"} 4@7"#,
                r#"lat_seconds_sum{job="j"} 2.5@7"#,
                r#"lat_seconds_count{job="j"} 4@7"#,
            ]
        );
        assert_eq!(out.sample_count(), 6);
    }
}
