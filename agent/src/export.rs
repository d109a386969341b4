//! Delivery of batches to the aggregator replicas over `sonde.v1.Ingest/Push`.
//!
//! Owns: sequence numbering ([`Exporter::submit`]), one bounded queue per replica
//! ([`queue`]) and one connection task per replica ([`replica`]) that sends queued batches,
//! pipelined, and removes each one when its acknowledgement arrives.
//! Must not: collect metrics or know what a batch contains.
//!
//! Invariants: every replica receives every batch, in sequence order; a batch leaves a
//! replica's queue only when that replica acknowledged it (`OK`, or `REJECTED`, which is
//! counted and logged); a full queue drops its oldest batch and counts what was dropped.
//! The queue lives in memory: batches still queued when the agent stops are lost (and
//! counted in the shutdown log line).

pub mod queue;
pub mod replica;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sonde_proto::{codec, v1::BatchPayload};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{queue::Queue, replica::Replica};
use crate::metrics::Metrics;

/// Numbers batches and hands each to every replica's queue.
#[derive(Debug)]
pub struct Exporter {
    agent_id: String,
    stream_epoch: u64,
    next_sequence: u64,
    compression_level: i32,
    queues: Vec<Arc<Queue>>,
}

impl Exporter {
    /// Starts one connection task per aggregator URL on `tasks`. The tasks stop when `stop`
    /// is cancelled; call [`Exporter::flush`] first to deliver what is queued.
    pub fn start(
        agent_id: String,
        aggregators: &[String],
        max_buffered_batches: usize,
        compression_level: i32,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let mut queues = Vec::with_capacity(aggregators.len());
        for url in aggregators {
            let queue = Arc::new(Queue::new(
                url.clone(),
                max_buffered_batches,
                metrics.clone(),
            ));
            let replica = Replica::new(url.clone(), queue.clone(), metrics.clone());
            tasks.spawn(replica.run(stop.clone()));
            queues.push(queue);
        }
        // A new epoch per process: sequence numbers restart at 1 with every start.
        let stream_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            agent_id,
            stream_epoch,
            next_sequence: 1,
            compression_level,
            queues,
        }
    }

    /// Encodes a payload as the next batch and queues it for every replica.
    pub fn submit(&mut self, payload: &BatchPayload) {
        let samples: usize = payload
            .series
            .iter()
            .map(|s| s.samples.len())
            .sum::<usize>()
            + payload
                .histograms
                .iter()
                .map(|h| h.points.len())
                .sum::<usize>();
        let batch = Arc::new(codec::encode_batch(
            &self.agent_id,
            self.stream_epoch,
            self.next_sequence,
            payload,
            self.compression_level,
        ));
        self.next_sequence += 1;
        for queue in &self.queues {
            queue.push(batch.clone(), samples);
        }
    }

    /// Waits until every queue is empty or `grace` has passed; returns the batches still
    /// queued per replica.
    pub async fn flush(&self, grace: Duration) -> Vec<(String, usize)> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.queues.iter().any(|q| !q.is_empty()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.queues
            .iter()
            .map(|q| (q.url().to_owned(), q.len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
