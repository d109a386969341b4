//! Optional OTLP/gRPC export of the agent's spans (`opentelemetry.proto.collector.trace.v1.
//! TraceService/Export`), so they can also go to Jaeger, Tempo or an OpenTelemetry collector.
//!
//! Spans are queued (bounded: when full, new spans are dropped and counted as
//! `otlp_queue_full`), sent in batches of up to `batch_spans` or every `flush_interval`,
//! grouped by resource. A failed or timed-out export drops that batch and counts it
//! (`otlp_failed`); the spans still reach the aggregators, which are the system of record.
//! On cancellation the queue is drained and sent once more.
//!
//! Must not: build or sample spans (that is [`super::builder`]).

use std::{sync::Arc, time::Duration};

use sonde_proto::{
    opentelemetry::proto::{
        collector::trace::v1::{
            ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
        },
        common::v1::{self as otlp_common, InstrumentationScope},
        resource::v1::Resource,
        trace::v1::{self as otlp, ResourceSpans, ScopeSpans, Status, status::StatusCode},
    },
    v1::{KeyValue, Span, any_value::Value},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sampler::{DropCounters, DropReason};

/// Where and how to export.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`; empty disables export.
    pub endpoint: String,
    /// Spans waiting to be sent at most (newer ones are dropped when full).
    pub queue_spans: usize,
    /// Spans per export request at most.
    pub batch_spans: usize,
    /// A partial batch is sent after this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Deadline of one export request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            queue_spans: 8192,
            batch_spans: 512,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Hands spans to the export task.
#[derive(Debug, Clone)]
pub struct OtlpSender {
    tx: mpsc::Sender<Span>,
    drops: Arc<DropCounters>,
}

impl OtlpSender {
    /// Queues a span; counts it as dropped when the queue is full or the task is gone.
    pub fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.drops.add(DropReason::ExportQueueFull, 1);
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not a URI.
    #[error("traces.otlp.endpoint {endpoint:?} is not a valid URI: {message}")]
    Endpoint {
        /// As configured.
        endpoint: String,
        /// The parser's complaint.
        message: String,
    },
}

/// Starts the export task on the current runtime; spans sent through the returned sender
/// are exported until `shutdown`, then the rest of the queue is flushed once. Spans exported
/// successfully are counted in `exported`.
pub fn start(
    config: &OtlpConfig,
    drops: Arc<DropCounters>,
    exported: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) -> Result<(OtlpSender, tokio::task::JoinHandle<()>), OtlpError> {
    let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| OtlpError::Endpoint {
            endpoint: config.endpoint.clone(),
            message: e.to_string(),
        })?
        .timeout(config.timeout)
        .connect_timeout(config.timeout);
    let client = TraceServiceClient::new(endpoint.connect_lazy());
    let (tx, rx) = mpsc::channel(config.queue_spans.max(1));
    let task = tokio::spawn(run(
        client,
        rx,
        config.clone(),
        drops.clone(),
        exported,
        shutdown,
    ));
    Ok((OtlpSender { tx, drops }, task))
}

async fn run(
    mut client: TraceServiceClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Span>,
    config: OtlpConfig,
    drops: Arc<DropCounters>,
    exported: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) {
    let batch_size = config.batch_spans.max(1);
    let mut batch: Vec<Span> = Vec::with_capacity(batch_size);
    let mut tick = tokio::time::interval(config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flush = tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    batch.len() >= batch_size
                }
                None => break,
            },
            _ = tick.tick() => !batch.is_empty(),
            () = shutdown.cancelled() => break,
        };
        if flush {
            export(&mut client, std::mem::take(&mut batch), &drops, &exported).await;
        }
    }
    // Drain what is queued and send it once.
    rx.close();
    while let Some(span) = rx.recv().await {
        batch.push(span);
        if batch.len() >= batch_size {
            export(&mut client, std::mem::take(&mut batch), &drops, &exported).await;
        }
    }
    if !batch.is_empty() {
        export(&mut client, batch, &drops, &exported).await;
    }
}

async fn export(
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    spans: Vec<Span>,
    drops: &DropCounters,
    exported: &std::sync::atomic::AtomicU64,
) {
    let n = spans.len() as u64;
    match client.export(request(spans)).await {
        Ok(response) => {
            let rejected = response
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_spans.max(0) as u64)
                .min(n);
            if rejected > 0 {
                tracing::warn!(rejected, "OTLP receiver rejected spans");
                drops.add(DropReason::ExportFailed, rejected);
            }
            exported.fetch_add(n - rejected, std::sync::atomic::Ordering::Relaxed);
        }
        Err(status) => {
            tracing::warn!(%status, spans = n, "OTLP export failed; spans dropped");
            drops.add(DropReason::ExportFailed, n);
        }
    }
}

fn attributes(kvs: Vec<KeyValue>) -> Vec<otlp_common::KeyValue> {
    use otlp_common::any_value::Value as O;
    kvs.into_iter()
        .map(|kv| otlp_common::KeyValue {
            key: kv.key,
            value: kv
                .value
                .and_then(|v| v.value)
                .map(|v| otlp_common::AnyValue {
                    value: Some(match v {
                        Value::StringValue(s) => O::StringValue(s),
                        Value::BoolValue(b) => O::BoolValue(b),
                        Value::IntValue(i) => O::IntValue(i),
                        Value::DoubleValue(d) => O::DoubleValue(d),
                        Value::BytesValue(b) => O::BytesValue(b),
                    }),
                }),
        })
        .collect()
}

/// Converts spans to one export request, one `ResourceSpans` per distinct resource.
pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Vec<KeyValue>, Vec<otlp::Span>)> = Vec::new();
    for span in spans {
        let converted = otlp::Span {
            trace_id: span.trace_id,
            span_id: span.span_id,
            trace_state: String::new(),
            parent_span_id: span.parent_span_id,
            // Sampled (W3C flags in the low byte).
            flags: 1,
            name: span.name,
            // sonde.v1 and OTLP number span kinds and status codes alike.
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            attributes: attributes(span.attributes),
            status: Some(Status {
                message: span.status_message,
                code: match span.status {
                    1 => StatusCode::Ok as i32,
                    2 => StatusCode::Error as i32,
                    _ => StatusCode::Unset as i32,
                },
            }),
        };
        match groups.iter_mut().find(|(r, _)| *r == span.resource) {
            Some((_, spans)) => spans.push(converted),
            None => groups.push((span.resource, vec![converted])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: attributes(resource),
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "sonde-agent".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, atomic::AtomicU64};

    use sonde_proto::{
        opentelemetry::proto::collector::trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
        v1::AnyValue,
    };

    use super::*;

    /// An OTLP receiver that records requests and rejects spans named "reject-me".
    #[derive(Default, Clone)]
    struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let request = request.into_inner();
            let rejected = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .filter(|s| s.name == "reject-me")
                .count() as i64;
            self.0.lock().unwrap().push(request);
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: "no".into(),
                }),
            }))
        }
    }

    fn span(name: &str, service: &str, parent: Option<u8>) -> Span {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
        };
        Span {
            trace_id: vec![9; 16],
            span_id: vec![name.len() as u8; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            status: 2,
            status_message: String::new(),
            attributes: vec![kv("http.route", "/x")],
            resource: vec![kv("service.name", service)],
        }
    }

    async fn receiver() -> (Receiver, String, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let stop = CancellationToken::new();
        let service = TraceServiceServer::new(receiver.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stopped.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        (receiver, format!("http://{addr}"), stop)
    }

    #[tokio::test]
    async fn exports_batches_grouped_by_resource_and_counts_failures() {
        let (receiver, endpoint, stop) = receiver().await;
        let drops = Arc::new(DropCounters::default());
        let exported = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let config = OtlpConfig {
            endpoint,
            batch_spans: 3,
            flush_interval: Duration::from_millis(50),
            ..OtlpConfig::default()
        };
        let (sender, task) =
            start(&config, drops.clone(), exported.clone(), shutdown.clone()).unwrap();
        sender.send(span("a", "api", None));
        sender.send(span("bb", "db", Some(1)));
        sender.send(span("reject-me", "api", None));
        // A partial batch goes out on the flush interval.
        sender.send(span("ccc", "api", Some(2)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while receiver.0.lock().unwrap().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no export");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests = receiver.0.lock().unwrap().clone();
        let first = &requests[0];
        assert_eq!(first.resource_spans.len(), 2, "api and db");
        let api = &first.resource_spans[0];
        let service = &api.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        assert_eq!(
            service.value.as_ref().unwrap().value,
            Some(otlp_common::any_value::Value::StringValue("api".into()))
        );
        let spans = &api.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].trace_id, vec![9; 16]);
        assert_eq!(spans[0].kind, otlp::span::SpanKind::Server as i32);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(
            api.scope_spans[0].scope.as_ref().unwrap().name,
            "sonde-agent"
        );
        let db = &first.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(db.parent_span_id, vec![1; 8]);
        assert_eq!(
            requests[1].resource_spans[0].scope_spans[0].spans[0].name,
            "ccc"
        );
        assert_eq!(drops.get(DropReason::ExportFailed), 1, "partial success");
        assert_eq!(exported.load(std::sync::atomic::Ordering::Relaxed), 3);

        // Receiver gone: the export fails and is counted; shutdown still returns.
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sender.send(span("d", "api", None));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("exporter stops")
            .unwrap();
        assert_eq!(drops.get(DropReason::ExportFailed), 2);
        // After the task ended, sending counts as a full queue.
        sender.send(span("e", "api", None));
        assert_eq!(drops.get(DropReason::ExportQueueFull), 1);
    }

    #[test]
    fn bad_endpoint_is_a_clear_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = start(
            &OtlpConfig {
                endpoint: "not a uri".into(),
                ..OtlpConfig::default()
            },
            Arc::default(),
            Arc::default(),
            CancellationToken::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("traces.otlp.endpoint \"not a uri\""),
            "{err}"
        );
    }
}
