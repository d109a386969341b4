//! Renders a [`BatchPayload`] in the Prometheus text format (0.0.4) or OpenMetrics 1.0, and
//! converts the agent's own metrics (rendered by `prometheus-client` as OpenMetrics) to the
//! negotiated format.
//!
//! Series of a family are grouped under one `# HELP`/`# TYPE` header in order of first
//! appearance; counters are `<family>_total` samples (the Prometheus text header names the
//! sample, the OpenMetrics one the family); untyped families are `untyped`/`unknown`;
//! classic histograms become `_bucket{le}`, `_sum`, `_count`. Must not: collect anything.

use std::{collections::HashMap, fmt::Write};

use sonde_proto::v1::{BatchPayload, Label, MetricType};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header lists it (with a non-zero quality), else text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants = accept.is_some_and(|accept| {
            accept.split(',').any(|part| {
                let mut params = part.split(';').map(str::trim);
                params.next() == Some("application/openmetrics-text")
                    && !params.any(|p| p.replace(' ', "") == "q=0" || p == "q=0.0")
            })
        });
        if wants {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

fn metric_name(labels: &[Label]) -> &str {
    labels
        .iter()
        .find(|l| l.name == sonde_proto::names::METRIC_NAME)
        .map_or("", |l| l.value.as_str())
}

fn type_name(t: MetricType, format: Format) -> &'static str {
    match (t, format) {
        (MetricType::Counter, _) => "counter",
        (MetricType::Histogram, _) => "histogram",
        (MetricType::Summary, _) => "summary",
        (MetricType::Gauge | MetricType::Info | MetricType::Stateset, _) => "gauge",
        (MetricType::Unspecified, Format::Prometheus) => "untyped",
        (MetricType::Unspecified, Format::OpenMetrics) => "unknown",
    }
}

fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str, format: Format, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Writes a float as both formats accept it.
pub fn write_value(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

fn write_sample(
    name: &str,
    labels: &[Label],
    extra: Option<(&str, &str)>,
    value: f64,
    out: &mut String,
) {
    out.push_str(name);
    let mut first = true;
    let pairs = labels
        .iter()
        .filter(|l| l.name != sonde_proto::names::METRIC_NAME)
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .chain(extra);
    for (n, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        escape_label(v, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_value(value, out);
    out.push('\n');
}

/// Renders every series and histogram of `payload` (without the OpenMetrics `# EOF`).
pub fn render(payload: &BatchPayload, format: Format, out: &mut String) {
    let meta: HashMap<&str, (MetricType, &str)> = payload
        .metadata
        .iter()
        .map(|m| {
            (
                m.metric_family_name.as_str(),
                (
                    MetricType::try_from(m.r#type).unwrap_or(MetricType::Unspecified),
                    m.help.as_str(),
                ),
            )
        })
        .collect();
    // family → indexes of its series, in order of first appearance.
    let mut order: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, series) in payload.series.iter().enumerate() {
        let name = metric_name(&series.labels);
        let family = match name.strip_suffix("_total") {
            Some(base) if !meta.contains_key(name) && meta.contains_key(base) => base,
            _ => name,
        };
        let slot = *index.entry(family).or_insert_with(|| {
            order.push((family, Vec::new()));
            order.len() - 1
        });
        order[slot].1.push(i);
    }
    for (family, members) in order {
        let (metric_type, help) = meta
            .get(family)
            .copied()
            .unwrap_or((MetricType::Unspecified, ""));
        let first_name = metric_name(&payload.series[members[0]].labels);
        let header = match format {
            Format::Prometheus => first_name,
            Format::OpenMetrics => family,
        };
        write_header(header, metric_type, help, format, out);
        for i in members {
            let series = &payload.series[i];
            if let Some(sample) = series.samples.last() {
                write_sample(
                    metric_name(&series.labels),
                    &series.labels,
                    None,
                    sample.value,
                    out,
                );
            }
        }
    }
    let mut histogram_families: Vec<&str> = Vec::new();
    for h in &payload.histograms {
        let family = metric_name(&h.labels);
        if !histogram_families.contains(&family) {
            histogram_families.push(family);
        }
    }
    for family in histogram_families {
        let help = meta.get(family).map_or("", |m| m.1);
        write_header(family, MetricType::Histogram, help, format, out);
        for h in payload
            .histograms
            .iter()
            .filter(|h| metric_name(&h.labels) == family)
        {
            let Some(point) = h.points.last() else {
                continue;
            };
            let bucket = format!("{family}_bucket");
            let mut le = String::new();
            for (bound, count) in h.upper_bounds.iter().zip(&point.bucket_counts) {
                le.clear();
                write_value(*bound, &mut le);
                write_sample(&bucket, &h.labels, Some(("le", &le)), *count as f64, out);
            }
            write_sample(
                &bucket,
                &h.labels,
                Some(("le", "+Inf")),
                point.count as f64,
                out,
            );
            write_sample(&format!("{family}_sum"), &h.labels, None, point.sum, out);
            write_sample(
                &format!("{family}_count"),
                &h.labels,
                None,
                point.count as f64,
                out,
            );
        }
    }
}

fn write_header(name: &str, metric_type: MetricType, help: &str, format: Format, out: &mut String) {
    if !help.is_empty() {
        let _ = write!(out, "# HELP {name} ");
        escape_help(help, format, out);
        out.push('\n');
    }
    let _ = writeln!(out, "# TYPE {name} {}", type_name(metric_type, format));
}

/// Appends the agent's own metrics (`prometheus-client` OpenMetrics text) in `format`, and
/// the final `# EOF` for OpenMetrics.
pub fn append_self_metrics(openmetrics: &str, format: Format, out: &mut String) {
    if format == Format::OpenMetrics {
        out.push_str(openmetrics.trim_end().trim_end_matches("# EOF").trim_end());
        out.push_str("\n# EOF\n");
        return;
    }
    // OpenMetrics → 0.0.4: headers name the sample (`x_total`, `x_info`), no UNIT/EOF lines.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (sample_name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                "stateset" | "gaugehistogram" => (name.to_owned(), "gauge"),
                other => (name.to_owned(), other),
            };
            if let Some((_, help)) = pending_help.take() {
                let _ = writeln!(out, "# HELP {sample_name} {help}");
            }
            let _ = writeln!(out, "# TYPE {sample_name} {kind}");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{HistogramPoint, HistogramSeries};

    use super::*;
    use crate::collect::Emitter;

    fn payload() -> BatchPayload {
        let mut e = Emitter::new(1000);
        e.counter(
            "node_cpu_seconds_total",
            "Seconds.",
            &[("cpu", "0"), ("mode", "idle")],
            10.5,
        );
        e.gauge("node_load1", "1m load average.", &[], 0.25);
        e.counter(
            "node_cpu_seconds_total",
            "Seconds.",
            &[("cpu", "1"), ("mode", "idle")],
            11.0,
        );
        e.untyped(
            "node_netstat_Tcp_CurrEstab",
            "Statistic TcpCurrEstab.",
            &[],
            5.0,
        );
        e.gauge("x_info", "Odd \"value\".", &[("v", "a\"b\\c\nd")], 1.0);
        let mut p = e.finish();
        p.histograms.push(HistogramSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "lat_seconds".into(),
            }],
            upper_bounds: vec![0.1, 1.0],
            points: vec![HistogramPoint {
                timestamp_ms: 1000,
                bucket_counts: vec![1, 3],
                count: 4,
                sum: 2.5,
            }],
            exemplars: vec![],
        });
        p
    }

    #[test]
    fn prometheus_text_groups_families_and_names_counter_samples() {
        let mut out = String::new();
        render(&payload(), Format::Prometheus, &mut out);
        let expected = "\
# HELP node_cpu_seconds_total Seconds.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 10.5
node_cpu_seconds_total{cpu=\"1\",mode=\"idle\"} 11
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.25
# HELP node_netstat_Tcp_CurrEstab Statistic TcpCurrEstab.
# TYPE node_netstat_Tcp_CurrEstab untyped
node_netstat_Tcp_CurrEstab 5
# HELP x_info Odd \"value\".
# TYPE x_info gauge
x_info{v=\"a\\\"b\\\\c\\nd\"} 1
# TYPE lat_seconds histogram
lat_seconds_bucket{le=\"0.1\"} 1
lat_seconds_bucket{le=\"1\"} 3
lat_seconds_bucket{le=\"+Inf\"} 4
lat_seconds_sum 2.5
lat_seconds_count 4
";
        assert_eq!(out, expected);
    }

    #[test]
    fn openmetrics_names_families_and_ends_with_eof() {
        let mut out = String::new();
        render(&payload(), Format::OpenMetrics, &mut out);
        append_self_metrics(
            "# HELP a_b Help.\n# TYPE a_b counter\na_b_total 1\n# EOF\n",
            Format::OpenMetrics,
            &mut out,
        );
        assert!(out.contains("# TYPE node_cpu_seconds counter\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 10.5\n"), "{out}");
        assert!(out.contains("# TYPE node_netstat_Tcp_CurrEstab unknown\n"));
        assert!(out.contains("# HELP x_info Odd \\\"value\\\".\n"));
        assert!(out.ends_with("a_b_total 1\n# EOF\n"));
        assert_eq!(out.matches("# EOF").count(), 1);
    }

    #[test]
    fn self_metrics_converted_to_text_format() {
        let mut out = String::new();
        append_self_metrics(
            "# HELP s_batches Batches.\n# TYPE s_batches counter\ns_batches_total{a=\"x\"} 2\n# HELP s_d Time.\n# TYPE s_d_seconds histogram\n# UNIT s_d_seconds seconds\ns_d_seconds_count 1\n# HELP s_build Build.\n# TYPE s_build info\ns_build_info{version=\"1\"} 1\n# EOF\n",
            Format::Prometheus,
            &mut out,
        );
        assert_eq!(
            out,
            "# HELP s_batches_total Batches.\n# TYPE s_batches_total counter\ns_batches_total{a=\"x\"} 2\n# HELP s_d_seconds Time.\n# TYPE s_d_seconds histogram\ns_d_seconds_count 1\n# HELP s_build_info Build.\n# TYPE s_build_info gauge\ns_build_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
    }
}
