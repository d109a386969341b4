//! Replay detection: which sequence numbers of an agent stream were already stored.
//!
//! Tracks a watermark below which every sequence was stored, plus the stored sequences above
//! it (batches can be stored out of order when one was retried), so memory stays small and a
//! retried gap is never mistaken for a duplicate.

use std::collections::BTreeSet;

/// Stored sequence numbers of one (agent, epoch) stream.
#[derive(Debug, Default, Clone)]
pub struct SequenceTracker {
    /// Every sequence `<= watermark` has been stored.
    watermark: u64,
    /// Stored sequences above the watermark.
    above: BTreeSet<u64>,
}

impl SequenceTracker {
    /// Whether `sequence` was stored already.
    pub fn seen(&self, sequence: u64) -> bool {
        sequence <= self.watermark || self.above.contains(&sequence)
    }

    /// Records `sequence` as stored.
    pub fn mark(&mut self, sequence: u64) {
        if sequence <= self.watermark {
            return;
        }
        self.above.insert(sequence);
        while self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
    }

    /// Highest sequence below which nothing is missing.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_gap_is_not_a_duplicate() {
        let mut t = SequenceTracker::default();
        t.mark(1);
        t.mark(3); // 2 was answered RETRY and is resent later.
        assert!(t.seen(1) && t.seen(3));
        assert!(!t.seen(2));
        assert_eq!(t.watermark(), 1);
        t.mark(2);
        assert_eq!(t.watermark(), 3);
        assert!(t.seen(2));
        assert!(!t.seen(4));
    }
}
