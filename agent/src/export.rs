//! Delivery of batches to the aggregator replicas over `sonde.v1.Ingest/Push`.
//!
//! Owns: the disk [`buffer`] (every batch is appended there first, with its sequence number),
//! one connection task per replica ([`replica`]) that streams what that replica has not
//! acknowledged, and delivery accounting against the write quorum. TLS, mutual TLS and the
//! bearer token are applied per connection ([`security`]).
//! Must not: collect metrics or know what a batch contains.
//!
//! Invariants: every replica receives every batch, in sequence order, from the buffer; a batch
//! stays buffered until every replica acknowledged it (OK, or REJECTED which is counted and
//! logged) or the size bound drops it (counted per replica in
//! `sonde_agent_buffer_dropped_samples_total`). A batch is *delivered* once `write_quorum`
//! replicas acknowledged it (default: a majority). An agent restart resends what is buffered.

pub mod buffer;
pub mod replica;
pub mod security;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sonde_proto::v1::{BatchPayload, Label};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::replica::Replica;
pub use self::{
    buffer::{Buffer, BufferError, Options as BufferOptions},
    security::Security,
};
use crate::metrics::Metrics;

/// Appends batches to the buffer and wakes the replica tasks.
#[derive(Debug)]
pub struct Exporter {
    buffer: Arc<Buffer>,
    target_labels: Arc<Vec<Label>>,
    appended: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Opens the buffer and starts one connection task per replica on `tasks`; they stop when
    /// `stop` is cancelled (call [`Exporter::flush`] first).
    pub fn start(
        options: BufferOptions,
        target_labels: Vec<(String, String)>,
        security: Security,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self, BufferError> {
        let replicas = options.replicas.clone();
        let buffer = Arc::new(Buffer::open(options, metrics.clone())?);
        let (appended, _) = watch::channel(0u64);
        for (index, url) in replicas.into_iter().enumerate() {
            let replica = Replica::new(
                index,
                url,
                buffer.clone(),
                appended.subscribe(),
                security.clone(),
                metrics.clone(),
            );
            tasks.spawn(replica.run(stop.clone()));
        }
        let target_labels = target_labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect();
        Ok(Self {
            buffer,
            target_labels: Arc::new(target_labels),
            appended,
            metrics,
        })
    }

    /// Appends a payload as the next batch. A buffer that cannot be written (disk full,
    /// I/O error) loses this batch: it is logged and counted, and the agent goes on.
    pub async fn submit(&self, payload: Arc<BatchPayload>) {
        let samples = (payload
            .series
            .iter()
            .map(|s| s.samples.len())
            .sum::<usize>()
            + payload
                .histograms
                .iter()
                .map(|h| h.points.len())
                .sum::<usize>()) as u32;
        let buffer = self.buffer.clone();
        let labels = self.target_labels.clone();
        let result = tokio::task::spawn_blocking(move || {
            // Target labels go on series; a batch of spans only is written as it is (a copy
            // of thousands of spans is megabytes).
            if payload.series.is_empty() && payload.histograms.is_empty() {
                buffer.append(&payload, samples)
            } else {
                buffer.append(&with_target_labels(&payload, &labels), samples)
            }
        })
        .await;
        match result {
            Ok(Ok(sequence)) => {
                self.metrics.appended(u64::from(samples));
                self.appended.send_replace(sequence);
            }
            Ok(Err(error)) => {
                self.metrics.buffer_write_failed(u64::from(samples));
                tracing::error!(%error, samples, "cannot write the batch to the buffer; dropped");
            }
            Err(error) => tracing::error!(%error, "buffer append panicked"),
        }
    }

    /// Waits until every buffered batch reached the write quorum, or `grace` passed; then
    /// persists the cursors. Returns `(not acknowledged by every replica, below quorum)`.
    pub async fn flush(&self, grace: Duration) -> (usize, usize) {
        let deadline = Instant::now() + grace;
        loop {
            let buffer = self.buffer.clone();
            let (unacked, below_quorum) = tokio::task::spawn_blocking(move || buffer.pending())
                .await
                .unwrap_or((0, 0));
            if below_quorum == 0 || Instant::now() >= deadline {
                let buffer = self.buffer.clone();
                match tokio::task::spawn_blocking(move || buffer.close()).await {
                    Ok(Err(error)) => tracing::error!(%error, "cannot persist buffer cursors"),
                    Err(error) => tracing::error!(%error, "buffer close panicked"),
                    Ok(Ok(())) => {}
                }
                return (unacked, below_quorum);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A copy of `payload` with each target label added to every series and histogram that does
/// not already have it, keeping labels sorted by name.
pub fn with_target_labels(payload: &BatchPayload, targets: &[Label]) -> BatchPayload {
    let mut out = payload.clone();
    let add = |labels: &mut Vec<Label>| {
        for target in targets {
            if let Err(at) = labels.binary_search_by(|l| l.name.as_str().cmp(&target.name)) {
                labels.insert(at, target.clone());
            }
        }
    };
    for series in &mut out.series {
        add(&mut series.labels);
    }
    for histogram in &mut out.histograms {
        add(&mut histogram.labels);
    }
    out
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::Series;

    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn target_labels_are_added_in_order_without_overriding() {
        let payload = BatchPayload {
            series: vec![Series {
                labels: vec![
                    label("__name__", "up"),
                    label("job", "mine"),
                    label("zone", "a"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = with_target_labels(
            &payload,
            &[label("instance", "host-1"), label("job", "sonde-agent")],
        );
        let got: Vec<(&str, &str)> = out.series[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("__name__", "up"),
                ("instance", "host-1"),
                ("job", "mine"),
                ("zone", "a")
            ]
        );
    }
}
