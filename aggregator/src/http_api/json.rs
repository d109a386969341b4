//! Prometheus' JSON envelope and value encoding, byte-compatible where clients look:
//! sample values are strings formatted like Go's `strconv.FormatFloat(v, 'f', -1, 64)`
//! (`"NaN"`, `"+Inf"`, `"-Inf"`), timestamps are seconds with up to three decimals.

use std::fmt::Write as _;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

use crate::{
    promql::Value,
    store::{Labels, Sample},
};

/// A `{"status":"success","data":…}` response around already-encoded JSON.
pub fn success(data_json: String) -> Response {
    let mut body = String::with_capacity(data_json.len() + 32);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(&data_json);
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// [`success`] with Prometheus' `warnings` list (left out when empty).
pub fn success_with_warnings(data_json: String, warnings: &[String]) -> Response {
    if warnings.is_empty() {
        return success(data_json);
    }
    let mut body = String::with_capacity(data_json.len() + 64);
    body.push_str(r#"{"status":"success","data":"#);
    body.push_str(&data_json);
    body.push_str(r#","warnings":"#);
    body.push_str(&serde_json::to_string(warnings).expect("strings serialize"));
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A success response around a serializable value.
pub fn success_json(data: &impl serde::Serialize) -> Response {
    success(serde_json::to_string(data).expect("serializing plain data cannot fail"))
}

/// Formats a sample value as Prometheus does (`NaN`, `+Inf`, shortest digits, no exponent).
pub fn format_value(v: f64) -> String {
    crate::promql::math::format_float(v)
}

/// Writes a millisecond timestamp as seconds (`1435781451.781`, `1.5` → `1.500`).
pub fn write_timestamp(out: &mut String, t: i64) {
    if t < 0 {
        out.push('-');
    }
    let t = t.unsigned_abs();
    let _ = write!(out, "{}", t / 1000);
    let fraction = t % 1000;
    if fraction != 0 {
        let _ = write!(out, ".{fraction:03}");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings always serialize"));
}

/// Writes labels as a JSON object.
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, &label.name);
        out.push(':');
        write_string(out, &label.value);
    }
    out.push('}');
}

/// Writes a sample value as Prometheus formats it, without an intermediate allocation.
fn write_value(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str(&format_value(v));
    }
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// Encodes a query result as `{"resultType":…,"result":…}`.
pub fn encode_value(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    let _ = write!(out, r#"{{"resultType":"{}","result":"#, value.type_name());
    match value {
        Value::Scalar { t, v } => write_point(&mut out, *t, *v),
        Value::String { t, v } => {
            out.push('[');
            write_timestamp(&mut out, *t);
            out.push(',');
            write_string(&mut out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                write_point(&mut out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, Sample { t, v }) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{InstantSample, RangeSeries};

    #[test]
    fn values_and_timestamps_formatted_like_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        let ts = |t| {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            s
        };
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1500), "1.500");
        assert_eq!(ts(1005), "1.005");
        assert_eq!(ts(2000), "2");
        assert_eq!(ts(-1500), "-1.500");
    }

    #[test]
    fn encodes_each_value_type() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        let vector = Value::Vector(vec![InstantSample {
            labels: labels.clone(),
            t: 1000,
            v: f64::INFINITY,
        }]);
        assert_eq!(
            encode_value(&vector),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1,"+Inf"]}]}"#
        );
        let matrix = Value::Matrix(vec![RangeSeries {
            labels,
            samples: vec![Sample { t: 0, v: 1.0 }, Sample { t: 15_000, v: 2.5 }],
        }]);
        assert_eq!(
            encode_value(&matrix),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[0,"1"],[15,"2.5"]]}]}"#
        );
        assert_eq!(
            encode_value(&Value::Scalar { t: 1, v: 2.0 }),
            r#"{"resultType":"scalar","result":[0.001,"2"]}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&encode_value(&Value::String {
            t: 0,
            v: "x".into(),
        }))
        .unwrap();
        assert_eq!(parsed["result"][1], "x");
    }
}
