//! The `sonde.v1.Ingest` gRPC service: one task per agent stream, one [`Ack`] per batch.
//!
//! Decoding, validation and storing run on the blocking pool (they are CPU work); the stream
//! task only moves messages. A bad batch is answered `REJECTED` and the stream goes on; a
//! stream-level error (broken envelope, disconnect) ends only that stream.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sonde_proto::{
    codec,
    v1::{Ack, AckStatus, Batch, ingest_server::Ingest},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use sonde_proto::sequence::SequenceTracker;

use super::apply::Applier;
use crate::metrics::Metrics;

/// State shared by every stream.
#[derive(Debug)]
struct Shared {
    applier: Arc<Applier>,
    metrics: Arc<Metrics>,
    /// (agent id, stream epoch) → stored sequences.
    streams: Mutex<HashMap<(String, u64), SequenceTracker>>,
}

/// The gRPC ingest service.
#[derive(Debug, Clone)]
pub struct IngestService {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl IngestService {
    /// Creates the service; streams end when `shutdown` is cancelled.
    pub fn new(applier: Arc<Applier>, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self {
            shared: Arc::new(Shared {
                applier,
                metrics,
                streams: Mutex::new(HashMap::new()),
            }),
            shutdown,
        }
    }

    /// The largest envelope the server accepts: the payload limit plus framing slack (zstd
    /// output can exceed its input slightly for incompressible data).
    pub fn max_message_bytes(&self) -> usize {
        let limit = self.shared.applier.limits().max_batch_bytes as usize;
        limit + limit / 64 + 64 * 1024
    }

    /// Handles one batch and produces its acknowledgement.
    pub fn handle(&self, batch: Batch) -> Ack {
        self.shared.handle(batch)
    }
}

impl Shared {
    fn handle(&self, batch: Batch) -> Ack {
        let sequence = batch.sequence;
        let key = (batch.agent_id.clone(), batch.stream_epoch);
        let reject = |error: String| {
            tracing::warn!(agent = %batch.agent_id, sequence, %error, "batch rejected");
            self.metrics.batch("rejected");
            Ack {
                sequence,
                status: AckStatus::Rejected as i32,
                error,
                ..Default::default()
            }
        };
        if batch.agent_id.is_empty() {
            return reject("batch has an empty agent_id".to_owned());
        }
        if sequence == 0 {
            return reject("batch sequence numbers start at 1".to_owned());
        }
        if self.seen(&key, sequence) {
            self.metrics.batch("duplicate");
            return Ack {
                sequence,
                status: AckStatus::Ok as i32,
                ..Default::default()
            };
        }
        let bytes = match codec::decompress(&batch, self.applier.limits().max_batch_bytes) {
            Ok(bytes) => bytes,
            Err(error) => return reject(error.to_string()),
        };
        let applied = match self
            .applier
            .apply_encoded(&batch.agent_id, sequence, &bytes)
        {
            Ok(applied) => applied,
            Err(error) if error.is_transient() => {
                tracing::warn!(agent = %batch.agent_id, sequence, %error, "batch not stored; the agent will resend it");
                self.metrics.batch("retry");
                return Ack {
                    sequence,
                    status: AckStatus::Retry as i32,
                    error: error.to_string(),
                    ..Default::default()
                };
            }
            Err(error) => return reject(error.to_string()),
        };
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .mark(sequence);
        self.metrics.batch("ok");
        Ack {
            sequence,
            status: AckStatus::Ok as i32,
            samples_stored: applied.stored,
            spans_stored: applied.spans,
            ..Default::default()
        }
    }

    fn seen(&self, key: &(String, u64), sequence: u64) -> bool {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|t| t.seen(sequence))
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type PushStream = ReceiverStream<Result<Ack, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let service = self.clone();
        tokio::spawn(async move {
            service.shared.metrics.ingest_streams.inc();
            tracing::debug!(?peer, "agent stream opened");
            loop {
                let message = tokio::select! {
                    () = service.shutdown.cancelled() => break,
                    message = inbound.message() => message,
                };
                match message {
                    Ok(Some(batch)) => {
                        let worker = service.clone();
                        let ack =
                            match tokio::task::spawn_blocking(move || worker.handle(batch)).await {
                                Ok(ack) => Ok(ack),
                                Err(error) => {
                                    tracing::error!(%error, "batch handler panicked");
                                    Err(Status::internal("batch handler failed"))
                                }
                            };
                        if tx.send(ack).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(?peer, %status, "agent stream failed");
                        break;
                    }
                }
            }
            service.shared.metrics.ingest_streams.dec();
            tracing::debug!(?peer, "agent stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{BatchPayload, Label, Sample, Series};

    use super::*;
    use crate::store::Store;

    fn service() -> (IngestService, Arc<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let applier = Arc::new(Applier::new(
            store.clone(),
            crate::config::Limits::default(),
            metrics.clone(),
        ));
        let service = IngestService::new(applier, metrics, CancellationToken::new());
        (service, store, dir)
    }

    fn batch(sequence: u64, name: &str, t: i64) -> Batch {
        let payload = BatchPayload {
            series: vec![Series {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: name.into(),
                }],
                samples: vec![Sample {
                    timestamp_ms: t,
                    value: 1.0,
                }],
                exemplars: vec![],
            }],
            ..Default::default()
        };
        codec::encode_batch("agent-1", 42, sequence, &payload, 3)
    }

    #[test]
    fn replayed_batch_is_acknowledged_but_not_stored_twice() {
        let (service, store, _dir) = service();
        let ack = service.handle(batch(1, "up", 1000));
        assert_eq!((ack.status, ack.samples_stored), (AckStatus::Ok as i32, 1));
        let ack = service.handle(batch(1, "up", 1000));
        assert_eq!((ack.status, ack.samples_stored), (AckStatus::Ok as i32, 0));
        assert_eq!(store.stats().samples, 1);
    }

    #[test]
    fn bad_batch_rejected_and_next_one_stored() {
        let (service, store, _dir) = service();
        let ack = service.handle(batch(1, "bad-name", 1000));
        assert_eq!(ack.status, AckStatus::Rejected as i32);
        assert!(ack.error.contains("invalid metric name"), "{}", ack.error);
        let ack = service.handle(batch(2, "good", 1000));
        assert_eq!(ack.status, AckStatus::Ok as i32);
        assert_eq!(store.stats().samples, 1);
    }

    #[test]
    fn corrupt_payload_rejected() {
        let (service, _store, _dir) = service();
        let mut b = batch(1, "up", 1000);
        b.payload = bytes::Bytes::from_static(b"\x28\xb5\x2f\xfd garbage");
        let ack = service.handle(b);
        assert_eq!(ack.status, AckStatus::Rejected as i32);
        assert!(ack.error.contains("batch 1"), "{}", ack.error);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Any mutation of a valid batch (bytes flipped, truncated, fields changed) is answered
        /// with an ack, never a panic, and a later valid batch on the same service is stored.
        #[test]
        fn mutated_batches_never_break_the_service(
            flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 0..8),
            cut in 0usize..4096,
            compression in 0i32..3,
            declared in 0u64..(1 << 21),
        ) {
            let (service, store, _dir) = service();
            let mut b = batch(1, "up", 1000);
            let mut bytes = b.payload.to_vec();
            for (at, x) in flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= x;
                }
            }
            bytes.truncate(cut.max(1));
            b.payload = bytes::Bytes::from(bytes);
            b.compression = compression;
            b.uncompressed_size = declared;
            let ack = service.handle(b);
            proptest::prop_assert!(ack.status == AckStatus::Ok as i32 || ack.status == AckStatus::Rejected as i32);
            let before = store.stats().samples;
            let ack = service.handle(batch(2, "after", 2000));
            proptest::prop_assert_eq!(ack.status, AckStatus::Ok as i32);
            proptest::prop_assert_eq!(store.stats().samples, before + 1);
        }
    }
}
