//! One aggregator replica: connect, stream the batches it has not acknowledged from the
//! buffer (up to [`WINDOW`] in flight), apply acknowledgements, and reconnect with exponential
//! backoff and jitter when anything breaks. After a reconnect, sending restarts from the
//! oldest unacknowledged batch (the aggregator recognises batches it already stored).

use std::{sync::Arc, time::Duration};

use rand::Rng;
use sonde_proto::v1::{AckStatus, Batch, ingest_client::IngestClient};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Endpoint};

use super::{Buffer, Security, buffer::BufferError, security::SecurityError};
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
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("the aggregator refused the stream: {0}")]
    Open(Status),
    #[error("the stream failed: {0}")]
    Stream(Status),
    #[error("the aggregator closed the stream")]
    Closed,
    #[error("the aggregator asked to retry batch {sequence} later: {error}")]
    Retry { sequence: u64, error: String },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

/// The connection task of one replica.
#[derive(Debug)]
pub struct Replica {
    index: usize,
    url: String,
    buffer: Arc<Buffer>,
    appended: watch::Receiver<u64>,
    security: Security,
    metrics: Arc<Metrics>,
}

impl Replica {
    /// A replica task; `index` addresses its tracker in the buffer.
    pub fn new(
        index: usize,
        url: String,
        buffer: Arc<Buffer>,
        appended: watch::Receiver<u64>,
        security: Security,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            index,
            url,
            buffer,
            appended,
            security,
            metrics,
        }
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            let result = self.session(&stop, &mut failures).await;
            self.buffer.stream_ended(self.index);
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
                        "aggregator unavailable; batches stay buffered"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn read(&self, sequence: u64) -> Result<Option<Batch>, SessionError> {
        let (buffer, index) = (self.buffer.clone(), self.index);
        Ok(
            tokio::task::spawn_blocking(move || buffer.read_for(index, sequence))
                .await
                .expect("buffer read does not panic")?,
        )
    }

    async fn ack(&self, sequence: u64) -> Result<(), SessionError> {
        let (buffer, index) = (self.buffer.clone(), self.index);
        let reached = tokio::task::spawn_blocking(move || buffer.ack(index, sequence))
            .await
            .expect("buffer ack does not panic")?;
        if reached {
            self.metrics.delivered();
        }
        Ok(())
    }

    async fn session(
        &mut self,
        stop: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), SessionError> {
        let https = self.url.starts_with("https://");
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(SessionError::Url)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let endpoint = self.security.apply(endpoint, https)?;
        let authorization = self.security.authorization()?;
        let channel = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            channel = endpoint.connect() => channel.map_err(SessionError::Connect)?,
        };
        let mut client = IngestClient::with_interceptor(channel, move |mut request: Request<()>| {
            if let Some(value) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        })
        .max_decoding_message_size(1 << 20);
        let (tx, rx) = mpsc::channel::<Batch>(WINDOW);
        let mut acks = client
            .push(ReceiverStream::new(rx))
            .await
            .map_err(SessionError::Open)?
            .into_inner();
        tracing::info!(aggregator = %self.url, "connected to aggregator");
        self.metrics.connected(&self.url, true);
        *failures = 0;

        let mut last_sent = 0u64;
        let mut in_flight = 0usize;
        loop {
            while in_flight < WINDOW {
                let Some(sequence) = self.buffer.next_for(self.index, last_sent) else {
                    break;
                };
                last_sent = sequence;
                // Dropped by the size bound in the meantime: skip it.
                let Some(batch) = self.read(sequence).await? else {
                    continue;
                };
                if tx.send(batch).await.is_err() {
                    return Err(SessionError::Closed);
                }
                in_flight += 1;
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                changed = self.appended.changed(), if in_flight < WINDOW => {
                    if changed.is_err() {
                        // The exporter is gone: the agent is stopping.
                        return Ok(());
                    }
                }
                ack = acks.message() => {
                    let ack = ack.map_err(SessionError::Stream)?.ok_or(SessionError::Closed)?;
                    in_flight = in_flight.saturating_sub(1);
                    match AckStatus::try_from(ack.status) {
                        Ok(AckStatus::Ok) => {
                            self.ack(ack.sequence).await?;
                            self.metrics.batch(&self.url, "ok");
                        }
                        Ok(AckStatus::Rejected) => {
                            self.ack(ack.sequence).await?;
                            self.metrics.batch(&self.url, "rejected");
                            tracing::error!(
                                aggregator = %self.url,
                                sequence = ack.sequence,
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
