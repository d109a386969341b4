//! Compaction: merges the blocks of one aligned time window into a single block, so that
//! overlapping blocks disappear and per-block overhead (series tables, footers) is paid once
//! per window instead of once per flush.
//!
//! Must not: touch the head or the WAL. Invariant: merging keeps, per series and timestamp,
//! the sample of the oldest source block (first write wins), so a compaction never changes
//! what a selection returns.

use std::{collections::HashMap, path::Path, sync::Arc};

use super::{Block, BlockError, Labels, Sample, block::write::write_block, merge_first_wins};

/// Groups of blocks to merge: per window of `window_ms` (aligned), every window with two or
/// more blocks that is complete (its end is at or before `watermark`, the head's flush
/// point) or whose blocks overlap in time. `watermark` `None` treats every window as
/// complete.
pub fn plan(blocks: &[Arc<Block>], window_ms: i64, watermark: Option<i64>) -> Vec<Vec<Arc<Block>>> {
    let mut windows: std::collections::BTreeMap<i64, Vec<Arc<Block>>> = Default::default();
    for block in blocks {
        let start = block.meta().min_t.div_euclid(window_ms) * window_ms;
        if block.meta().max_t >= start + window_ms {
            // Spans windows (written with another window setting): leave it alone.
            continue;
        }
        windows.entry(start).or_default().push(block.clone());
    }
    windows
        .into_iter()
        .filter(|(start, group)| {
            if group.len() < 2 {
                return false;
            }
            let complete = watermark.is_none_or(|w| start + window_ms <= w);
            let mut ranges: Vec<(i64, i64)> = group
                .iter()
                .map(|b| (b.meta().min_t, b.meta().max_t))
                .collect();
            ranges.sort_unstable();
            let overlapping = ranges.windows(2).any(|w| w[1].0 <= w[0].1);
            complete || overlapping
        })
        .map(|(_, mut group)| {
            group.sort_by_key(|b| b.meta().seq);
            group
        })
        .collect()
}

/// Merges `group` (sorted by sequence, oldest first) into block `seq` under `blocks_dir`.
pub fn compact(
    blocks_dir: &Path,
    seq: u64,
    group: &[Arc<Block>],
) -> Result<Option<Block>, BlockError> {
    let mut merged: HashMap<Labels, Vec<Sample>> = HashMap::new();
    for block in group {
        block.read_all(|labels, samples| match merged.get_mut(labels) {
            Some(into) => merge_first_wins(into, samples),
            None => {
                merged.insert(labels.clone(), samples.to_vec());
            }
        })?;
    }
    let level = group.iter().map(|b| b.meta().level).max().unwrap_or(0) + 1;
    let sources = group.iter().map(|b| b.meta().seq).collect();
    match write_block(
        blocks_dir,
        seq,
        level,
        sources,
        merged.into_iter().collect(),
    )? {
        Some((path, _)) => Block::open(&path).map(Some),
        None => Ok(None),
    }
}
