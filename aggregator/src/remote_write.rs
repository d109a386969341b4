//! Prometheus remote write 1.0 receiver: `POST /api/v1/write`, a snappy-compressed
//! `prometheus.WriteRequest`, so an existing Prometheus or Grafana Alloy can write into Sonde.
//! Exemplars in the request are kept like the agents' (`/api/v1/query_exemplars`).
//!
//! Owns: decoding (bounded decompression), conversion into a batch payload, and the status
//! codes senders act on: 204 stored; 400 for what resending cannot fix (malformed, invalid
//! labels, over the series limit, native histograms); 415 for remote write 2.0; 500 when
//! storage failed, which senders retry (safe: samples are first-write-wins per series and
//! timestamp). Must not: bypass the ingest validation, which it shares with the agents'
//! stream through [`Applier`].

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use prost::Message;
use sonde_proto::{
    prometheus::{
        MetricMetadata as PromMetadata, WriteRequest, metric_metadata::MetricType as PromType,
    },
    v1::{BatchPayload, Exemplar, Label, MetricMetadata, MetricType, Sample, Series},
};

use crate::{ingest::Applier, metrics::Metrics};

/// The source name remote-write data is accounted under (cardinality guard).
pub const SOURCE: &str = "remote_write";

#[derive(Debug, Clone)]
struct WriteState {
    applier: Arc<Applier>,
    metrics: Arc<Metrics>,
}

/// Routes of the receiver.
pub fn router(applier: Arc<Applier>, metrics: Arc<Metrics>) -> Router {
    // Compressed bodies are at most the uncompressed limit.
    let limit = applier.limits().max_batch_bytes as usize;
    Router::new()
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(WriteState { applier, metrics })
}

fn reply(state: &WriteState, status: StatusCode, message: String) -> Response {
    state.metrics.remote_write_request(status.as_u16());
    if status.is_success() {
        return status.into_response();
    }
    tracing::warn!(code = status.as_u16(), %message, "remote write request refused");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

async fn write(State(state): State<WriteState>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let content_type = header(header::CONTENT_TYPE);
    if content_type.contains("io.prometheus.write.v2.Request") {
        return reply(
            &state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "remote write 2.0 is not supported; send remote write 1.0 \
             (prometheus.WriteRequest)"
                .to_owned(),
        );
    }
    if !header(header::CONTENT_ENCODING).eq_ignore_ascii_case("snappy") {
        return reply(
            &state,
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported Content-Encoding {:?}: remote write bodies are snappy-compressed",
                header(header::CONTENT_ENCODING)
            ),
        );
    }
    let worker = state.clone();
    let result = tokio::task::spawn_blocking(move || decode_and_apply(&worker, &body)).await;
    match result {
        Ok(Ok(())) => reply(&state, StatusCode::NO_CONTENT, String::new()),
        Ok(Err((status, message))) => reply(&state, status, message),
        Err(error) => reply(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("remote write handler failed: {error}"),
        ),
    }
}

fn decode_and_apply(state: &WriteState, body: &[u8]) -> Result<(), (StatusCode, String)> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let limit = state.applier.limits().max_batch_bytes;
    let size =
        snap::raw::decompress_len(body).map_err(|e| bad(format!("invalid snappy block: {e}")))?;
    if size as u64 > limit {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "decompressed size {size} B exceeds the limit of {limit} B (limits.max_batch_bytes)"
            ),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| bad(format!("invalid snappy block: {e}")))?;
    let request = WriteRequest::decode(raw.as_slice())
        .map_err(|e| bad(format!("malformed WriteRequest: {e}")))?;
    let (payload, native_histograms) = convert(request);
    let samples: usize = payload.series.iter().map(|s| s.samples.len()).sum();
    match state.applier.apply(SOURCE, payload) {
        Ok(_) => state.metrics.remote_write_samples(samples as u64),
        Err(error) if error.is_transient() => {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, error.to_string()));
        }
        Err(error) => return Err(bad(error.to_string())),
    }
    if native_histograms > 0 {
        return Err(bad(format!(
            "{native_histograms} native histogram samples dropped: Sonde stores classic \
             histograms only (float samples of this request were stored)"
        )));
    }
    Ok(())
}

/// Converts a write request; returns the payload and the number of native histogram samples
/// it could not carry.
fn convert(request: WriteRequest) -> (BatchPayload, usize) {
    let mut native = 0;
    let mut payload = BatchPayload::default();
    for ts in request.timeseries {
        native += ts.histograms.len();
        if ts.samples.is_empty() && ts.exemplars.is_empty() {
            continue;
        }
        payload.series.push(Series {
            labels: ts
                .labels
                .into_iter()
                .map(|l| Label {
                    name: l.name,
                    value: l.value,
                })
                .collect(),
            samples: ts
                .samples
                .into_iter()
                .map(|s| Sample {
                    timestamp_ms: s.timestamp,
                    value: s.value,
                })
                .collect(),
            exemplars: ts
                .exemplars
                .into_iter()
                .map(|e| Exemplar {
                    labels: e
                        .labels
                        .into_iter()
                        .map(|l| Label {
                            name: l.name,
                            value: l.value,
                        })
                        .collect(),
                    value: e.value,
                    timestamp_ms: e.timestamp,
                })
                .collect(),
        });
    }
    payload.metadata = request.metadata.into_iter().map(convert_metadata).collect();
    (payload, native)
}

fn convert_metadata(m: PromMetadata) -> MetricMetadata {
    let metric_type = match PromType::try_from(m.r#type) {
        Ok(PromType::Counter) => MetricType::Counter,
        Ok(PromType::Gauge) => MetricType::Gauge,
        Ok(PromType::Histogram | PromType::Gaugehistogram) => MetricType::Histogram,
        Ok(PromType::Summary) => MetricType::Summary,
        Ok(PromType::Info) => MetricType::Info,
        Ok(PromType::Stateset) => MetricType::Stateset,
        Ok(PromType::Unknown) | Err(_) => MetricType::Unspecified,
    };
    MetricMetadata {
        metric_family_name: m.metric_family_name,
        r#type: metric_type as i32,
        help: m.help,
        unit: m.unit,
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::prometheus::{
        Histogram, Label as PromLabel, Sample as PromSample, TimeSeries,
    };

    use super::*;

    #[test]
    fn converts_samples_metadata_and_counts_native_histograms() {
        let request = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![PromLabel {
                        name: "__name__".into(),
                        value: "up".into(),
                    }],
                    samples: vec![PromSample {
                        value: 1.0,
                        timestamp: 5,
                    }],
                    exemplars: vec![],
                    histograms: vec![],
                },
                TimeSeries {
                    labels: vec![],
                    samples: vec![],
                    exemplars: vec![],
                    histograms: vec![Histogram { timestamp: 1 }],
                },
            ],
            metadata: vec![PromMetadata {
                r#type: PromType::Counter as i32,
                metric_family_name: "http_requests".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let (payload, native) = convert(request);
        assert_eq!(native, 1);
        assert_eq!(payload.series.len(), 1);
        assert_eq!(payload.series[0].samples[0].timestamp_ms, 5);
        assert_eq!(payload.metadata[0].r#type, MetricType::Counter as i32);
    }
}
