//! Retention: which blocks to delete because they are older than the retention time (behind
//! the newest sample) or because the store is over its size limit (oldest first).
//!
//! Must not: delete anything itself; the store removes what [`plan`] returns.

use std::sync::Arc;

use super::{Block, StoreOptions};

/// Blocks to delete, given the newest sample's time and the WAL's size.
pub fn plan(
    blocks: &[Arc<Block>],
    newest: Option<i64>,
    options: &StoreOptions,
    wal_bytes: u64,
) -> Vec<Arc<Block>> {
    let mut doomed: Vec<Arc<Block>> = Vec::new();
    if let (Some(newest), false) = (newest, options.retention_time.is_zero()) {
        let horizon = newest - options.retention_time.as_millis() as i64;
        doomed.extend(blocks.iter().filter(|b| b.meta().max_t < horizon).cloned());
    }
    if options.retention_bytes > 0 {
        let mut by_age: Vec<&Arc<Block>> = blocks
            .iter()
            .filter(|b| !doomed.iter().any(|d| Arc::ptr_eq(d, b)))
            .collect();
        by_age.sort_by_key(|b| (b.meta().max_t, b.meta().seq));
        let mut total: u64 = wal_bytes + by_age.iter().map(|b| b.bytes()).sum::<u64>();
        for block in by_age {
            if total <= options.retention_bytes {
                break;
            }
            total -= block.bytes();
            doomed.push(block.clone());
        }
    }
    doomed
}
