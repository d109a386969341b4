//! Which batch sequence numbers of a stream were already handled (stored by an aggregator,
//! or acknowledged to an agent).
//!
//! Tracks a watermark below which every sequence was handled, plus the handled sequences above
//! it (batches can complete out of order when one was retried), so memory stays small and a
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

    /// Records every sequence up to and including `sequence` as handled.
    pub fn mark_through(&mut self, sequence: u64) {
        if sequence <= self.watermark {
            return;
        }
        self.watermark = sequence;
        self.above = self.above.split_off(&(sequence + 1));
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
        t.mark(6);
        t.mark(9);
        t.mark_through(5);
        assert_eq!(t.watermark(), 6, "5 joins the stored 6");
        assert!(t.seen(9) && !t.seen(7));
    }
}
