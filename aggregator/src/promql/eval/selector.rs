//! Reading the store: instant selectors (latest sample within the lookback, stale markers
//! ending a series), range windows for range functions (from the store or from a subquery),
//! and range vectors as a whole query's result.
//!
//! Every selector reads the store once per grid: one `select` over the whole stretch the grid
//! needs, then a linear walk over each series' samples.

use super::{Evaluator, Grid, Point, Series};
use crate::{
    promql::{
        QueryError, RangeSeries, STALE_NAN_BITS,
        plan::{MatrixSource, Selector, Subquery},
    },
    store::{Labels, Sample, SeriesSamples},
};

/// Whether `v` is Prometheus' stale marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Series with their (stale-marker-free) samples, and how to find each step's window.
pub struct RangeInput {
    /// Series labels and samples in time order.
    pub series: Vec<(Labels, Vec<Sample>)>,
    /// Window length, milliseconds.
    pub range_ms: i64,
    /// `@` time, if any.
    pub at_ms: Option<i64>,
    /// Offset, milliseconds.
    pub offset_ms: i64,
    /// Samples accounted as held for this input; release them when done.
    pub held: usize,
}

impl RangeInput {
    /// The end of the window evaluated at step time `ts` (closed interval
    /// `[end - range, end]`, as Prometheus 2.x).
    pub fn window_end(&self, ts: i64) -> i64 {
        self.at_ms.unwrap_or(ts) - self.offset_ms
    }
}

/// The inner grid of a subquery evaluated for the outer `grid`: steps aligned to multiples of
/// the subquery step (from the Unix epoch), from the first one inside the first window to the
/// last window's end.
pub fn subquery_grid(sq: &Subquery, grid: Grid) -> Grid {
    let (first, last) = match sq.at_ms {
        Some(at) => (at - sq.offset_ms, at - sq.offset_ms),
        None => (grid.start - sq.offset_ms, grid.end - sq.offset_ms),
    };
    let raw = first - sq.range_ms;
    // Go's integer division truncates toward zero, as Rust's does.
    let mut start = sq.step_ms * (raw / sq.step_ms);
    if start < raw {
        start += sq.step_ms;
    }
    Grid {
        start,
        end: last,
        step: sq.step_ms,
    }
}

impl Evaluator<'_> {
    /// Series matching the selector with samples in `[mint, maxt]`, sorted by labels.
    pub(super) fn select(
        &mut self,
        sel: &Selector,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, QueryError> {
        self.check()?;
        self.selections += 1;
        let mut out: Vec<SeriesSamples> = Vec::new();
        for group in &sel.groups {
            let local = self.store.select(group, mint, maxt)?;
            out.extend(match self.remote {
                Some(remote) => remote.merge_into(group, mint, maxt, local),
                None => local,
            });
        }
        // One group's selection comes sorted from the store (and the remote merge).
        if sel.groups.len() > 1 {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.dedup_by(|a, b| a.labels == b.labels);
        }
        self.series = self.series.saturating_add(out.len());
        if self.series > self.max_series {
            return Err(QueryError::TooManySeries {
                limit: self.max_series,
                selector: sel.text.clone(),
            });
        }
        self.hold(out.iter().map(|s| s.samples.len()).sum())?;
        Ok(out)
    }

    /// An instant selector at every step: each series' latest sample at or before the step's
    /// reference time and no older than the lookback (both ends inclusive, as Prometheus
    /// 2.x), unless that sample is a stale marker. With `timestamps`, the value is the
    /// sample's time in seconds (for `timestamp()`).
    pub(super) fn instant_selector(
        &mut self,
        sel: &Selector,
        grid: Grid,
        timestamps: bool,
    ) -> Result<Vec<Series>, QueryError> {
        let steps = grid.len();
        if steps == 0 {
            return Ok(Vec::new());
        }
        let reference = |i: usize| sel.at_ms.unwrap_or_else(|| grid.ts(i)) - sel.offset_ms;
        let (first, last) = (reference(0), reference(steps - 1));
        let raw = self.select(sel, first - self.lookback_ms, last)?;
        let held: usize = raw.iter().map(|s| s.samples.len()).sum();
        let mut out = Vec::with_capacity(raw.len());
        for series in raw {
            self.tick()?;
            let samples = &series.samples;
            let mut points = Vec::new();
            // Index of the first sample after the reference time.
            let mut next = 0usize;
            for i in 0..steps {
                let r = reference(i);
                while next < samples.len() && samples[next].t <= r {
                    next += 1;
                }
                let Some(s) = next.checked_sub(1).map(|j| samples[j]) else {
                    continue;
                };
                if s.t < r - self.lookback_ms || is_stale(s.v) {
                    continue;
                }
                points.push(Point {
                    step: i as u32,
                    v: if timestamps { s.t as f64 / 1000.0 } else { s.v },
                });
            }
            if !points.is_empty() {
                out.push(Series {
                    labels: series.labels,
                    points,
                });
            }
        }
        self.release(held);
        Ok(out)
    }

    /// The series a range function reads, with their samples for the whole grid.
    pub(super) fn range_input(
        &mut self,
        source: &MatrixSource,
        grid: Grid,
    ) -> Result<RangeInput, QueryError> {
        let steps = grid.len();
        let mut input = RangeInput {
            series: Vec::new(),
            range_ms: source.range_ms(),
            at_ms: source.at_ms(),
            offset_ms: source.offset_ms(),
            held: 0,
        };
        if steps == 0 {
            return Ok(input);
        }
        let before = self.samples;
        let first = input.window_end(grid.start);
        let last = input.window_end(grid.ts(steps - 1));
        match source {
            MatrixSource::Selector { selector, range_ms } => {
                let raw = self.select(selector, first - range_ms, last)?;
                input.series = raw
                    .into_iter()
                    .map(|mut s| {
                        s.samples.retain(|s| !is_stale(s.v));
                        (s.labels, s.samples)
                    })
                    .filter(|(_, samples)| !samples.is_empty())
                    .collect();
            }
            MatrixSource::Subquery(sq) => {
                let inner = subquery_grid(sq, grid);
                let series = self.eval_vector(&sq.expr, inner)?;
                input.series = series
                    .into_iter()
                    .map(|s| {
                        let samples = s
                            .points
                            .iter()
                            .map(|p| Sample {
                                t: inner.ts(p.step as usize),
                                v: p.v,
                            })
                            .collect();
                        (s.labels, samples)
                    })
                    .collect();
            }
        }
        // Swap whatever selection or inner evaluation held for what the input keeps.
        self.release(self.samples.saturating_sub(before));
        input.held = input.series.iter().map(|(_, s)| s.len()).sum();
        self.hold(input.held)?;
        Ok(input)
    }

    /// A range vector as the result of an instant query: every sample in each series' window.
    pub(super) fn matrix_value(
        &mut self,
        source: &MatrixSource,
        grid: Grid,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        if grid.len() != 1 {
            return Err(QueryError::Parse(
                "invalid expression type \"range vector\" for range query, must be Scalar or \
                 instant Vector"
                    .to_owned(),
            ));
        }
        let input = self.range_input(source, grid)?;
        self.release(input.held);
        let end = input.window_end(grid.start);
        let start = end - input.range_ms;
        let mut out: Vec<RangeSeries> = input
            .series
            .into_iter()
            .filter_map(|(labels, samples)| {
                let samples: Vec<Sample> = samples
                    .into_iter()
                    .filter(|s| s.t >= start && s.t <= end)
                    .collect();
                (!samples.is_empty()).then_some(RangeSeries { labels, samples })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}
