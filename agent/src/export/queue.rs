//! A replica's bounded queue of batches awaiting acknowledgement.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use sonde_proto::v1::Batch;
use tokio::sync::Notify;

use crate::metrics::Metrics;

#[derive(Debug)]
struct Entry {
    batch: Arc<Batch>,
    samples: usize,
}

/// Batches for one replica, oldest first.
#[derive(Debug)]
pub struct Queue {
    url: String,
    capacity: usize,
    entries: Mutex<VecDeque<Entry>>,
    notify: Notify,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// An empty queue holding at most `capacity` batches.
    pub fn new(url: String, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            url,
            capacity,
            entries: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            metrics,
        }
    }

    /// The replica's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch, dropping (and counting) the oldest when full.
    pub fn push(&self, batch: Arc<Batch>, samples: usize) {
        let mut entries = self.lock();
        while entries.len() >= self.capacity {
            if let Some(dropped) = entries.pop_front() {
                self.metrics.buffer_dropped(&self.url, dropped.samples);
                tracing::warn!(
                    aggregator = %self.url,
                    sequence = dropped.batch.sequence,
                    samples = dropped.samples,
                    "send queue full; dropped the oldest batch"
                );
            }
        }
        entries.push_back(Entry { batch, samples });
        self.metrics.buffer_size(&self.url, entries.len());
        drop(entries);
        self.notify.notify_one();
    }

    /// The oldest batch with a sequence above `after`, if any.
    pub fn next_after(&self, after: u64) -> Option<Arc<Batch>> {
        self.lock()
            .iter()
            .find(|e| e.batch.sequence > after)
            .map(|e| e.batch.clone())
    }

    /// Removes the batch with `sequence` (acknowledged); returns its sample count.
    pub fn remove(&self, sequence: u64) -> Option<usize> {
        let mut entries = self.lock();
        let index = entries.iter().position(|e| e.batch.sequence == sequence)?;
        let removed = entries.remove(index).map(|e| e.samples);
        self.metrics.buffer_size(&self.url, entries.len());
        removed
    }

    /// Waits until a batch is pushed.
    pub async fn pushed(&self) {
        self.notify.notified().await;
    }

    /// Batches queued.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequence: u64) -> Arc<Batch> {
        Arc::new(Batch {
            sequence,
            ..Default::default()
        })
    }

    #[test]
    fn bounded_oldest_dropped_and_removal_by_sequence() {
        let q = Queue::new("http://x".into(), 2, Arc::new(Metrics::new()));
        q.push(batch(1), 5);
        q.push(batch(2), 5);
        q.push(batch(3), 5);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_after(0).unwrap().sequence, 2, "batch 1 was dropped");
        assert_eq!(q.next_after(2).unwrap().sequence, 3);
        assert!(q.next_after(3).is_none());
        assert_eq!(q.remove(3), Some(5));
        assert_eq!(q.remove(3), None);
        assert_eq!(q.len(), 1);
    }
}
