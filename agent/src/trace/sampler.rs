//! What the agent keeps: head sampling and the per-second span budget, each counting what it
//! drops.
//!
//! Head sampling is parent-based: a request whose `traceparent` carries a decision follows
//! it (sampled → kept, not sampled → dropped); a new trace is kept when its trace id falls
//! under the ratio (the id's last 8 bytes as a big-endian integer below `ratio × 2⁶⁴`,
//! OpenTelemetry's `TraceIdRatioBased` rule). Deciding from the trace id means every agent
//! that sees spans of one trace decides alike, so sampled traces stay whole across hosts.
//!
//! The budget bounds spans per wall-clock second (a fixed window: at most `per_second` in
//! each second). Spans over it are dropped and counted; a dropped server span's clients still
//! link to it by id, so a trace may miss spans under overload but never links wrongly.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

/// Why a span was not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Head sampling said no (ratio, or the caller's unsampled flag).
    SampledOut,
    /// Over the per-second span budget.
    Budget,
    /// The OTLP export queue was full.
    ExportQueueFull,
    /// The OTLP receiver failed or refused the spans.
    ExportFailed,
    /// Built spans waiting for the exporter beyond the bound (the exporter fell behind).
    BatchQueueFull,
}

impl DropReason {
    /// Every reason, for exporting zeros.
    pub const ALL: [DropReason; 5] = [
        DropReason::SampledOut,
        DropReason::Budget,
        DropReason::ExportQueueFull,
        DropReason::ExportFailed,
        DropReason::BatchQueueFull,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SampledOut => "sampled_out",
            DropReason::Budget => "budget",
            DropReason::ExportQueueFull => "otlp_queue_full",
            DropReason::ExportFailed => "otlp_failed",
            DropReason::BatchQueueFull => "batch_queue_full",
        }
    }
}

/// Counts of dropped spans by reason (read by the metrics).
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    /// Counts `n` spans dropped for `reason`.
    pub fn add(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Spans dropped so far for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }
}

/// Parent-based, trace-id-ratio head sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadSampler {
    threshold: u64,
    all: bool,
}

impl HeadSampler {
    /// Keeps `ratio` (clamped to 0–1) of new traces.
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Self {
            // 2^64 × ratio; 1.0 keeps everything (handled apart: it does not fit a u64).
            threshold: (ratio * 18_446_744_073_709_551_616.0) as u64,
            all: ratio >= 1.0,
        }
    }

    /// Whether a span of `trace_id` is kept; `parent_sampled` is the caller's decision when a
    /// `traceparent` carried one.
    pub fn keep(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        if let Some(decision) = parent_sampled {
            return decision;
        }
        if self.all {
            return true;
        }
        let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
        low < self.threshold
    }
}

/// At most `per_second` spans in each wall-clock second.
#[derive(Debug)]
pub struct SpanBudget {
    per_second: u64,
    window: Mutex<(i64, u64)>,
}

impl SpanBudget {
    /// A budget of `per_second` spans per second (0: unlimited).
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            window: Mutex::new((i64::MIN, 0)),
        }
    }

    /// Takes one span from the budget of the second containing `now_ns`; false when spent.
    pub fn take(&self, now_ns: i64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let second = now_ns.div_euclid(1_000_000_000);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= self.per_second {
            return false;
        }
        window.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_with_low(low: u64) -> [u8; 16] {
        let mut id = [7u8; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        id
    }

    #[test]
    fn ratio_compares_the_low_half_of_the_trace_id() {
        let half = HeadSampler::new(0.5);
        assert!(half.keep(&trace_with_low(0), None));
        assert!(half.keep(&trace_with_low(u64::MAX / 2 - 1), None));
        assert!(!half.keep(&trace_with_low(u64::MAX / 2 + 2), None));
        assert!(!HeadSampler::new(0.0).keep(&trace_with_low(0), None));
        assert!(HeadSampler::new(1.0).keep(&trace_with_low(u64::MAX), None));
        assert!(!HeadSampler::new(f64::NAN).keep(&trace_with_low(0), None));
        // The parent's decision wins both ways.
        assert!(HeadSampler::new(0.0).keep(&trace_with_low(0), Some(true)));
        assert!(!HeadSampler::new(1.0).keep(&trace_with_low(0), Some(false)));
    }

    #[test]
    fn ratio_keeps_about_that_share_of_random_ids() {
        let sampler = HeadSampler::new(0.25);
        let kept = (0..20_000)
            .filter(|_| sampler.keep(&super::super::ids::trace_id(), None))
            .count();
        assert!((4_400..5_600).contains(&kept), "{kept}");
    }

    #[test]
    fn budget_is_per_second() {
        let budget = SpanBudget::new(2);
        let s = 1_000_000_000;
        assert!(budget.take(5 * s));
        assert!(budget.take(5 * s + 10));
        assert!(!budget.take(5 * s + 999_999_999));
        assert!(budget.take(6 * s));
        assert!(SpanBudget::new(0).take(0));
    }

    #[test]
    fn counters_by_reason() {
        let c = DropCounters::default();
        c.add(DropReason::Budget, 3);
        c.add(DropReason::SampledOut, 1);
        assert_eq!(c.get(DropReason::Budget), 3);
        assert_eq!(c.get(DropReason::ExportFailed), 0);
        assert_eq!(
            DropReason::ALL.map(DropReason::as_str)[2],
            "otlp_queue_full"
        );
    }
}
