//! Validation of a decoded batch against the configured [`Limits`].
//!
//! Every error names the offending series (by its labels as sent) and the rule it broke, so an
//! operator can find the instrumentation at fault.

use sonde_proto::v1::{BatchPayload, Exemplar, HistogramSeries, Label};

use crate::config::Limits;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A series has no `__name__`.
    #[error("series {series}: missing metric name (__name__)")]
    MissingName {
        /// The series as sent.
        series: String,
    },
    /// A metric name is not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("series {series}: invalid metric name {name:?}")]
    InvalidMetricName {
        /// The series as sent.
        series: String,
        /// The name.
        name: String,
    },
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("series {series}: invalid label name {name:?}")]
    InvalidLabelName {
        /// The series as sent.
        series: String,
        /// The name.
        name: String,
    },
    /// A label name appears twice.
    #[error("series {series}: duplicate label name {name:?}")]
    DuplicateLabel {
        /// The series as sent.
        series: String,
        /// The name.
        name: String,
    },
    /// Too many labels.
    #[error("series {series}: {count} labels exceed the limit of {limit}")]
    TooManyLabels {
        /// The series as sent.
        series: String,
        /// Labels it has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A label name or value is too long.
    #[error("series {series}: label {name:?} has a {what} of {len} B, over the limit of {limit} B")]
    LabelTooLong {
        /// The series as sent.
        series: String,
        /// The label name (truncated to 64 bytes).
        name: String,
        /// "name" or "value".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A histogram is malformed.
    #[error("histogram {series}: {problem}")]
    InvalidHistogram {
        /// The series as sent.
        series: String,
        /// What is wrong.
        problem: String,
    },
    /// An exemplar is malformed (label names, label set over 128 code points).
    #[error("series {series}: exemplar at {t} ms: {problem}")]
    InvalidExemplar {
        /// The series as sent.
        series: String,
        /// The exemplar's timestamp.
        t: i64,
        /// What is wrong.
        problem: String,
    },
    /// A span's ids have the wrong length.
    #[error("span {index} ({name:?}): {problem}")]
    InvalidSpan {
        /// Position of the span in the batch.
        index: usize,
        /// The span's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// Checks a whole batch; the first problem found is returned.
pub fn validate(payload: &BatchPayload, limits: &Limits) -> Result<(), ValidationError> {
    for (index, span) in payload.spans.iter().enumerate() {
        let problem = if span.trace_id.len() != 16 {
            Some(format!(
                "trace_id has {} bytes, not 16",
                span.trace_id.len()
            ))
        } else if span.span_id.len() != 8 {
            Some(format!("span_id has {} bytes, not 8", span.span_id.len()))
        } else if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
            Some(format!(
                "parent_span_id has {} bytes, not 0 or 8",
                span.parent_span_id.len()
            ))
        } else if span.end_time_unix_nano < span.start_time_unix_nano {
            Some("end time precedes start time".to_owned())
        } else if i64::try_from(span.end_time_unix_nano).is_err() {
            Some("end time is past the year 2262".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ValidationError::InvalidSpan {
                index,
                name: span.name.clone(),
                problem,
            });
        }
    }
    for series in &payload.series {
        validate_labels(&series.labels, limits, 0)?;
        validate_exemplars(&series.labels, &series.exemplars)?;
    }
    for histogram in &payload.histograms {
        // `le` is added on expansion, so it counts against the label limit.
        validate_labels(&histogram.labels, limits, 1)?;
        validate_histogram(histogram)?;
        validate_exemplars(&histogram.labels, &histogram.exemplars)?;
    }
    Ok(())
}

fn validate_exemplars(series: &[Label], exemplars: &[Exemplar]) -> Result<(), ValidationError> {
    use crate::store::exemplars::{MAX_LABEL_SET_CHARS, label_set_chars};
    for e in exemplars {
        let invalid = |problem: String| ValidationError::InvalidExemplar {
            series: describe(series),
            t: e.timestamp_ms,
            problem,
        };
        if let Some(l) = e.labels.iter().find(|l| !is_label_name(&l.name)) {
            return Err(invalid(format!("invalid label name {:?}", l.name)));
        }
        let mut names: Vec<&str> = e.labels.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("duplicate label name {:?}", pair[0])));
        }
        let chars = label_set_chars(e.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        if chars > MAX_LABEL_SET_CHARS {
            return Err(invalid(format!(
                "labels have {chars} UTF-8 code points, over the limit of {MAX_LABEL_SET_CHARS}"
            )));
        }
    }
    Ok(())
}

fn validate_labels(labels: &[Label], limits: &Limits, extra: usize) -> Result<(), ValidationError> {
    let series = || describe(labels);
    if labels.len() + extra > limits.max_labels_per_series {
        return Err(ValidationError::TooManyLabels {
            series: series(),
            count: labels.len() + extra,
            limit: limits.max_labels_per_series,
        });
    }
    let mut names: Vec<&str> = Vec::with_capacity(labels.len());
    for label in labels {
        if label.name.len() > limits.max_label_name_bytes {
            return Err(ValidationError::LabelTooLong {
                series: series(),
                name: truncate(&label.name, 64),
                what: "name",
                len: label.name.len(),
                limit: limits.max_label_name_bytes,
            });
        }
        if label.value.len() > limits.max_label_value_bytes {
            return Err(ValidationError::LabelTooLong {
                series: series(),
                name: truncate(&label.name, 64),
                what: "value",
                len: label.value.len(),
                limit: limits.max_label_value_bytes,
            });
        }
        if label.name == sonde_proto::names::METRIC_NAME {
            if !is_metric_name(&label.value) {
                return Err(ValidationError::InvalidMetricName {
                    series: series(),
                    name: label.value.clone(),
                });
            }
        } else if !is_label_name(&label.name) {
            return Err(ValidationError::InvalidLabelName {
                series: series(),
                name: label.name.clone(),
            });
        }
        names.push(&label.name);
    }
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ValidationError::DuplicateLabel {
            series: series(),
            name: pair[0].to_owned(),
        });
    }
    if !names.contains(&sonde_proto::names::METRIC_NAME) {
        return Err(ValidationError::MissingName { series: series() });
    }
    Ok(())
}

fn validate_histogram(h: &HistogramSeries) -> Result<(), ValidationError> {
    let invalid = |problem: String| ValidationError::InvalidHistogram {
        series: describe(&h.labels),
        problem,
    };
    if let Some(label) = h.labels.iter().find(|l| l.name == "le") {
        return Err(invalid(format!(
            "must not carry an `le` label (has le={:?}); buckets come from upper_bounds",
            label.value
        )));
    }
    if h.upper_bounds.iter().any(|b| b.is_nan()) {
        return Err(invalid("upper bound is NaN".to_owned()));
    }
    if h.upper_bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(format!(
            "upper bounds {:?} are not strictly increasing",
            h.upper_bounds
        )));
    }
    for point in &h.points {
        if point.bucket_counts.len() != h.upper_bounds.len() {
            return Err(invalid(format!(
                "point at {} ms has {} bucket counts for {} upper bounds",
                point.timestamp_ms,
                point.bucket_counts.len(),
                h.upper_bounds.len()
            )));
        }
        let cumulative = point.bucket_counts.windows(2).all(|w| w[0] <= w[1])
            && point
                .bucket_counts
                .last()
                .is_none_or(|&last| last <= point.count);
        if !cumulative {
            return Err(invalid(format!(
                "point at {} ms: bucket counts {:?} (count {}) are not cumulative",
                point.timestamp_ms, point.bucket_counts, point.count
            )));
        }
    }
    Ok(())
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Renders labels as sent, for error messages (bounded length).
fn describe(labels: &[Label]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == sonde_proto::names::METRIC_NAME)
        .map_or("", |l| l.value.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != sonde_proto::names::METRIC_NAME)
        .map(|l| format!("{}={:?}", truncate(&l.name, 64), truncate(&l.value, 64)))
        .collect();
    truncate(
        &format!("{}{{{}}}", truncate(name, 128), rest.join(", ")),
        512,
    )
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{HistogramPoint, Series};

    use super::*;

    fn l(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn payload(labels: Vec<Label>) -> BatchPayload {
        BatchPayload {
            series: vec![Series {
                labels,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn names_checked() {
        let limits = Limits::default();
        assert!(validate(&payload(vec![l("__name__", "up"), l("job", "x")]), &limits).is_ok());
        let err = validate(&payload(vec![l("job", "x")]), &limits).unwrap_err();
        assert!(matches!(err, ValidationError::MissingName { .. }));
        let err = validate(&payload(vec![l("__name__", "1up")]), &limits).unwrap_err();
        assert_eq!(err.to_string(), "series 1up{}: invalid metric name \"1up\"");
        let err =
            validate(&payload(vec![l("__name__", "up"), l("a-b", "x")]), &limits).unwrap_err();
        assert!(matches!(err, ValidationError::InvalidLabelName { ref name, .. } if name == "a-b"));
        let err = validate(
            &payload(vec![l("__name__", "up"), l("a", "x"), l("a", "y")]),
            &limits,
        )
        .unwrap_err();
        assert!(matches!(err, ValidationError::DuplicateLabel { .. }));
    }

    #[test]
    fn limits_checked() {
        let limits = Limits {
            max_labels_per_series: 2,
            max_label_value_bytes: 3,
            ..Limits::default()
        };
        let err = validate(
            &payload(vec![l("__name__", "up"), l("a", "1"), l("b", "2")]),
            &limits,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ValidationError::TooManyLabels {
                count: 3,
                limit: 2,
                ..
            }
        ));
        let err =
            validate(&payload(vec![l("__name__", "up"), l("a", "1234")]), &limits).unwrap_err();
        assert!(
            err.to_string().contains("label \"a\" has a value of 4 B"),
            "{err}"
        );
    }

    #[test]
    fn histograms_checked() {
        let limits = Limits::default();
        let mut h = HistogramSeries {
            labels: vec![l("__name__", "lat")],
            upper_bounds: vec![0.1, 1.0],
            points: vec![HistogramPoint {
                timestamp_ms: 1,
                bucket_counts: vec![1, 2],
                count: 3,
                sum: 1.5,
            }],
            exemplars: vec![],
        };
        let mut p = BatchPayload {
            histograms: vec![h.clone()],
            ..Default::default()
        };
        assert!(validate(&p, &limits).is_ok());
        h.upper_bounds = vec![1.0, 0.1];
        p.histograms = vec![h.clone()];
        assert!(
            validate(&p, &limits)
                .unwrap_err()
                .to_string()
                .contains("strictly increasing")
        );
        h.upper_bounds = vec![0.1, 1.0];
        h.points[0].bucket_counts = vec![2, 1];
        p.histograms = vec![h.clone()];
        assert!(
            validate(&p, &limits)
                .unwrap_err()
                .to_string()
                .contains("not cumulative")
        );
        h.points[0].bucket_counts = vec![1];
        p.histograms = vec![h];
        assert!(
            validate(&p, &limits)
                .unwrap_err()
                .to_string()
                .contains("1 bucket counts")
        );
    }

    #[test]
    fn exemplars_checked() {
        let limits = Limits::default();
        let with = |labels: Vec<Label>| BatchPayload {
            series: vec![Series {
                labels: vec![l("__name__", "lat_bucket"), l("le", "0.1")],
                samples: vec![],
                exemplars: vec![Exemplar {
                    labels,
                    value: 0.05,
                    timestamp_ms: 7,
                }],
            }],
            ..Default::default()
        };
        assert!(validate(&with(vec![l("trace_id", &"a".repeat(120))]), &limits).is_ok());
        let err = validate(&with(vec![l("trace_id", &"a".repeat(121))]), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "series lat_bucket{le=\"0.1\"}: exemplar at 7 ms: labels have 129 UTF-8 code \
             points, over the limit of 128"
        );
        let err = validate(&with(vec![l("trace-id", "x")]), &limits).unwrap_err();
        assert!(
            err.to_string().contains("invalid label name \"trace-id\""),
            "{err}"
        );
        let err = validate(&with(vec![l("a", "x"), l("a", "y")]), &limits).unwrap_err();
        assert!(err.to_string().contains("duplicate label name"), "{err}");
    }
}
