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
//!
//! [`Admission`] sheds exchanges before they are linked when they far outnumber what the
//! budget and the ratio can keep: linking and deciding 80k exchanges per second to keep 5000
//! cost the agent more than everything else it does per request. It admits the exchanges
//! in flight during a window at the start of each wall-clock second, sized from the previous
//! second's rate. An exchange that encloses an admitted one is admitted too (it was in
//! flight as well), so a linked parent is never shed while its child is kept: traces lose
//! children that start after the window, never their parents.

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
    /// Shed before linking: exchanges far outnumbered the budget ([`Admission`]).
    Shed,
    /// The OTLP export queue was full.
    ExportQueueFull,
    /// The OTLP receiver failed or refused the spans.
    ExportFailed,
    /// Built spans waiting for the exporter beyond the bound (the exporter fell behind).
    BatchQueueFull,
}

impl DropReason {
    /// Every reason, for exporting zeros.
    pub const ALL: [DropReason; 6] = [
        DropReason::SampledOut,
        DropReason::Budget,
        DropReason::Shed,
        DropReason::ExportQueueFull,
        DropReason::ExportFailed,
        DropReason::BatchQueueFull,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SampledOut => "sampled_out",
            DropReason::Budget => "budget",
            DropReason::Shed => "shed",
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

    /// The share of new traces kept.
    pub fn ratio(&self) -> f64 {
        if self.all {
            1.0
        } else {
            self.threshold as f64 / 18_446_744_073_709_551_616.0
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

    /// Spans per second (0: unlimited).
    pub fn per_second(&self) -> u64 {
        self.per_second
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

const SECOND_NS: i64 = 1_000_000_000;
/// Seconds whose admission window is remembered: exchanges reach the linker up to a ring
/// drain (plus scheduling) after they end, so two would do; older ones are admitted whole.
const WINDOWS_KEPT: usize = 4;

/// Which exchanges are linked at all (see the module documentation): those in flight during
/// the first `window` ns of a wall-clock second, where `window` is the whole second while
/// the previous second's exchanges numbered at most `per_second`, else shrinks in
/// proportion.
#[derive(Debug)]
pub struct Admission {
    per_second: u64,
    state: Mutex<AdmissionState>,
}

#[derive(Debug, Default)]
struct AdmissionState {
    /// (second, window ns) of the latest seconds seen, oldest first. A second's window is
    /// fixed when its first exchange arrives and never changes: a parent is judged by the
    /// window its child was.
    windows: std::collections::VecDeque<(i64, i64)>,
    /// (second, exchanges ending in it) of the second being counted and of the one before.
    counting: (i64, u64),
    previous: (i64, u64),
}

impl Admission {
    /// Admits about `per_second` exchanges per second under load (0: everything).
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            state: Mutex::default(),
        }
    }

    /// The admission for a builder keeping `ratio` of new traces within a budget of
    /// `budget_per_second` spans: what the budget could keep after sampling (everything
    /// when either is unlimited or the ratio is 0, which parent decisions can still
    /// override).
    pub fn for_budget(budget_per_second: u64, ratio: f64) -> Self {
        if budget_per_second == 0 || ratio <= 0.0 {
            return Self::new(0);
        }
        let per_second = (budget_per_second as f64 / ratio.min(1.0)).min(u64::MAX as f64 / 2.0);
        Self::new(per_second as u64)
    }

    /// Whether the exchange from `start_ns` to `end_ns` (Unix ns) is admitted; exchanges
    /// are expected in about the order they ended.
    pub fn admit(&self, start_ns: i64, end_ns: i64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let second = end_ns.div_euclid(SECOND_NS);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if second > s.counting.0 {
            s.previous = s.counting;
            s.counting = (second, 0);
        }
        if second == s.counting.0 {
            s.counting.1 += 1;
        }
        let newest = s.windows.back().map(|w| w.0);
        let window = if newest.is_none_or(|n| second > n) {
            let rate = if s.previous.0 == second - 1 {
                s.previous.1
            } else {
                0
            };
            let window = if rate <= self.per_second {
                SECOND_NS
            } else {
                (SECOND_NS as f64 * self.per_second as f64 / rate as f64) as i64
            };
            if s.windows.len() == WINDOWS_KEPT {
                s.windows.pop_front();
            }
            s.windows.push_back((second, window));
            window
        } else {
            // A late arrival: its second's window, or (forgotten, or a second without a
            // window because none of its exchanges had arrived) the whole second.
            s.windows
                .iter()
                .find(|w| w.0 == second)
                .map_or(SECOND_NS, |w| w.1)
        };
        // In flight during [second, second + window]: it ends after the window opens (it
        // ends in this second), so it only has to start before the window closes.
        start_ns <= second * SECOND_NS + window
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
            DropReason::ALL.map(DropReason::as_str)[3],
            "otlp_queue_full"
        );
    }

    const MS: i64 = 1_000_000;

    /// Feeds `n` exchanges of `duration` ending evenly over second `second`; returns how
    /// many were admitted.
    fn feed(a: &Admission, second: i64, n: i64, duration: i64) -> i64 {
        (0..n)
            .filter(|i| {
                let end = second * SECOND_NS + i * SECOND_NS / n;
                a.admit(end - duration, end)
            })
            .count() as i64
    }

    #[test]
    fn admission_follows_the_previous_seconds_rate() {
        let a = Admission::new(1000);
        // Unknown rate, then a rate within the target: everything.
        assert_eq!(feed(&a, 10, 800, MS), 800);
        assert_eq!(feed(&a, 11, 8000, MS), 8000);
        // After 8000 in a second: a window of 1/8 s, about 1000 of the next 8000.
        let admitted = feed(&a, 12, 8000, MS);
        assert!((995..=1010).contains(&admitted), "{admitted}");
        // The rate fell: everything again.
        feed(&a, 13, 500, MS);
        assert_eq!(feed(&a, 14, 500, MS), 500);
        // No limit at all.
        assert_eq!(feed(&Admission::new(0), 1, 100_000, MS), 100_000);
        assert_eq!(feed(&Admission::for_budget(0, 1.0), 1, 100, MS), 100);
        assert_eq!(feed(&Admission::for_budget(10, 0.0), 1, 100, MS), 100);
    }

    #[test]
    fn a_parent_of_an_admitted_exchange_is_admitted() {
        let a = Admission::new(100);
        feed(&a, 20, 10_000, MS);
        // Second 21 admits what is in flight during its first 10 ms.
        let s = 21 * SECOND_NS;
        // A child inside the window, arriving first; its parent ends later, in the next
        // second, and a late arrival of second 21 after that still sees 21's window.
        assert!(a.admit(s + 5 * MS, s + 6 * MS));
        assert!(!a.admit(s + 11 * MS, s + 12 * MS));
        assert!(
            a.admit(s - 3 * MS, s + 1_001 * MS),
            "parent spanning into 22"
        );
        assert!(!a.admit(s + 20 * MS, s + 30 * MS));
        assert!(a.admit(s + 9 * MS, s + 500 * MS));
        // A second whose first exchange arrived after a later second's: whole.
        let late = Admission::new(1);
        feed(&late, 30, 100, MS);
        assert!(late.admit(32 * SECOND_NS, 32 * SECOND_NS + 1));
        assert!(late.admit(31 * SECOND_NS + 900 * MS, 31 * SECOND_NS + 901 * MS));
    }

    #[test]
    fn admission_scales_with_the_sampling_ratio() {
        assert_eq!(Admission::for_budget(5000, 0.5).per_second, 10_000);
        assert_eq!(Admission::for_budget(5000, 1.0).per_second, 5000);
        assert_eq!(HeadSampler::new(0.25).ratio(), 0.25);
        assert_eq!(HeadSampler::new(1.0).ratio(), 1.0);
    }
}
