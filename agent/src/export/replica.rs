//! One aggregator replica: connect, stream queued batches (up to [`WINDOW`] unacknowledged),
//! apply acknowledgements, and reconnect with exponential backoff and jitter when anything
//! breaks. After a reconnect, sending restarts from the oldest unacknowledged batch (the
//! aggregator recognises batches it already stored).

use std::{sync::Arc, time::Duration};

use rand::Rng;
use sonde_proto::v1::{AckStatus, Batch, ingest_client::IngestClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::queue::Queue;
use crate::metrics::Metrics;

/// Batches sent but not yet acknowledged, per replica.
pub const WINDOW: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a session with the replica ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("invalid aggregator URL: {0}")]
    Url(#[source] tonic::transport::Error),
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("the aggregator refused the stream: {0}")]
    Open(tonic::Status),
    #[error("the stream failed: {0}")]
    Stream(tonic::Status),
    #[error("the aggregator closed the stream")]
    Closed,
    #[error("the aggregator asked to retry batch {sequence} later: {error}")]
    Retry { sequence: u64, error: String },
}

/// The connection task of one replica.
#[derive(Debug)]
pub struct Replica {
    url: String,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

impl Replica {
    /// A replica task over `queue`.
    pub fn new(url: String, queue: Arc<Queue>, metrics: Arc<Metrics>) -> Self {
        Self {
            url,
            queue,
            metrics,
        }
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            let result = self.session(&stop, &mut failures).await;
            self.metrics.connected(&self.url, false);
            match result {
                Ok(()) => return,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::warn!(
                        aggregator = %self.url,
                        %error,
                        retry_in = ?delay,
                        queued = self.queue.len(),
                        "aggregator unavailable"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        stop: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), SessionError> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(SessionError::Url)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            channel = endpoint.connect() => channel.map_err(SessionError::Connect)?,
        };
        let mut client = IngestClient::new(channel).max_decoding_message_size(1 << 20);
        let (tx, rx) = mpsc::channel::<Batch>(WINDOW);
        let mut acks = client
            .push(ReceiverStream::new(rx))
            .await
            .map_err(SessionError::Open)?
            .into_inner();
        tracing::info!(aggregator = %self.url, queued = self.queue.len(), "connected to aggregator");
        self.metrics.connected(&self.url, true);
        *failures = 0;

        let mut last_sent = 0u64;
        let mut in_flight = 0usize;
        loop {
            while in_flight < WINDOW {
                let Some(batch) = self.queue.next_after(last_sent) else {
                    break;
                };
                last_sent = batch.sequence;
                if tx.send(Batch::clone(&batch)).await.is_err() {
                    return Err(SessionError::Closed);
                }
                in_flight += 1;
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = self.queue.pushed(), if in_flight < WINDOW => {}
                ack = acks.message() => {
                    let ack = ack.map_err(SessionError::Stream)?.ok_or(SessionError::Closed)?;
                    in_flight = in_flight.saturating_sub(1);
                    match AckStatus::try_from(ack.status) {
                        Ok(AckStatus::Ok) => {
                            self.queue.remove(ack.sequence);
                            self.metrics.batch(&self.url, "ok");
                        }
                        Ok(AckStatus::Rejected) => {
                            let samples = self.queue.remove(ack.sequence).unwrap_or(0);
                            self.metrics.batch(&self.url, "rejected");
                            tracing::error!(
                                aggregator = %self.url,
                                sequence = ack.sequence,
                                samples,
                                error = %ack.error,
                                "batch rejected by the aggregator; dropped"
                            );
                        }
                        Ok(AckStatus::Retry) | Ok(AckStatus::Unspecified) | Err(_) => {
                            self.metrics.batch(&self.url, "retry");
                            return Err(SessionError::Retry {
                                sequence: ack.sequence,
                                error: ack.error,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Exponential backoff with jitter: uniformly in [d/2, d], d = min(250ms·2^(n-1), 30s).
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_MAX);
    let floor = ceiling / 2;
    floor
        + ceiling
            .saturating_sub(floor)
            .mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN,
                "{first:?}"
            );
            let late = backoff(40);
            assert!(late >= BACKOFF_MAX / 2 && late <= BACKOFF_MAX, "{late:?}");
        }
    }
}
