//! Functions over range vectors (`rate`, `*_over_time`, `holt_winters`, …): each series'
//! samples are walked once with a sliding window per step (closed interval
//! `[end - range, end]`, as Prometheus 2.x), and the function is applied to each window.

use super::HashSet;

use super::{Evaluator, Grid, Point, Series, drop_name, same_labelset};
use crate::{
    promql::{
        QueryError,
        math::{kahan_inc, linear_regression, quantile},
        plan::{RangeCall, RangeFn},
    },
    store::{Labels, Sample},
};

/// One window handed to a range function.
struct Window<'a> {
    /// Samples in the window, time order, no stale markers; never empty.
    samples: &'a [Sample],
    /// Window start, milliseconds.
    start: i64,
    /// Window end, milliseconds.
    end: i64,
    /// Window length, milliseconds.
    range_ms: i64,
    /// The evaluation step's time, milliseconds.
    ts: i64,
    /// Scalar arguments at this step.
    args: [f64; 2],
}

/// The windows of one evaluation: the input, the grid and the scalar arguments per step.
struct Windows<'a> {
    series: &'a [(Labels, Vec<Sample>)],
    grid: Grid,
    range_ms: i64,
    at_ms: Option<i64>,
    offset_ms: i64,
    scalars: &'a [Vec<f64>],
}

impl Windows<'_> {
    /// Calls `visit(series index, step, window)` for every non-empty window, series by
    /// series; each series' samples are walked once with two cursors.
    fn each(
        &self,
        mut visit: impl FnMut(usize, usize, &Window<'_>) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let steps = self.grid.len();
        // Window bounds and arguments are the same for every series: compute them once.
        let bounds: Vec<(i64, i64, i64)> = (0..steps)
            .map(|i| {
                let ts = self.grid.ts(i);
                let end = self.at_ms.unwrap_or(ts) - self.offset_ms;
                (ts, end - self.range_ms, end)
            })
            .collect();
        for (si, (_, samples)) in self.series.iter().enumerate() {
            let (mut lo, mut hi) = (0usize, 0usize);
            for (i, &(ts, start, end)) in bounds.iter().enumerate() {
                while hi < samples.len() && samples[hi].t <= end {
                    hi += 1;
                }
                while lo < hi && samples[lo].t < start {
                    lo += 1;
                }
                if lo >= hi {
                    continue;
                }
                let window = Window {
                    samples: &samples[lo..hi],
                    start,
                    end,
                    range_ms: self.range_ms,
                    ts,
                    args: [
                        self.scalars.first().map_or(f64::NAN, |s| s[i]),
                        self.scalars.get(1).map_or(f64::NAN, |s| s[i]),
                    ],
                };
                visit(si, i, &window)?;
            }
        }
        Ok(())
    }

    /// Applies `f` to every window; one output series per input series with any value.
    fn map(
        &self,
        ev: &mut Evaluator<'_>,
        keep_name: bool,
        f: impl Fn(&Window<'_>) -> Result<Option<f64>, QueryError>,
    ) -> Result<Vec<Series>, QueryError> {
        let mut points: Vec<Vec<Point>> = vec![Vec::new(); self.series.len()];
        let mut last = usize::MAX;
        self.each(|si, i, w| {
            if si != last {
                last = si;
                ev.tick()?;
            }
            if let Some(v) = f(w)? {
                points[si].push(Point { step: i as u32, v });
            }
            Ok(())
        })?;
        Ok(self
            .series
            .iter()
            .zip(points)
            .filter(|(_, p)| !p.is_empty())
            .map(|((labels, _), points)| Series {
                labels: if keep_name {
                    labels.clone()
                } else {
                    drop_name(labels)
                },
                points,
            })
            .collect())
    }
}

impl Evaluator<'_> {
    /// Evaluates a range function at every step of `grid`.
    pub(super) fn range_call(
        &mut self,
        call: &RangeCall,
        grid: Grid,
    ) -> Result<Vec<Series>, QueryError> {
        let mut scalars: Vec<Vec<f64>> = Vec::with_capacity(call.scalars.len());
        for plan in &call.scalars {
            let values = self.eval_scalar(plan, grid)?;
            self.release(values.len());
            scalars.push(values);
        }
        let input = self.range_input(&call.source, grid)?;
        let windows = Windows {
            series: &input.series,
            grid,
            range_ms: input.range_ms,
            at_ms: input.at_ms,
            offset_ms: input.offset_ms,
            scalars: &scalars,
        };
        let keep_name = call.func == RangeFn::LastOverTime;
        // One loop per function, so each is compiled with its function inlined.
        let out = match call.func {
            RangeFn::AbsentOverTime => {
                let mut covered = vec![false; grid.len()];
                windows.each(|_, i, _| {
                    covered[i] = true;
                    Ok(())
                })?;
                self.release(input.held);
                let points: Vec<Point> = covered
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !**c)
                    .map(|(i, _)| Point {
                        step: i as u32,
                        v: 1.0,
                    })
                    .collect();
                return Ok(if points.is_empty() {
                    Vec::new()
                } else {
                    vec![Series {
                        labels: call.source.absent_labels(),
                        points,
                    }]
                });
            }
            RangeFn::Rate => windows.map(self, false, |w| Ok(extrapolated_rate(w, true, true)))?,
            RangeFn::Increase => {
                windows.map(self, false, |w| Ok(extrapolated_rate(w, true, false)))?
            }
            RangeFn::Delta => {
                windows.map(self, false, |w| Ok(extrapolated_rate(w, false, false)))?
            }
            RangeFn::Irate => windows.map(self, false, |w| Ok(instant_value(w.samples, true)))?,
            RangeFn::Idelta => windows.map(self, false, |w| Ok(instant_value(w.samples, false)))?,
            RangeFn::AvgOverTime => {
                windows.map(self, false, |w| Ok(Some(avg_over_time(w.samples))))?
            }
            RangeFn::SumOverTime => {
                windows.map(self, false, |w| Ok(Some(sum_over_time(w.samples))))?
            }
            RangeFn::CountOverTime => {
                windows.map(self, false, |w| Ok(Some(w.samples.len() as f64)))?
            }
            func => windows.map(self, keep_name, |w| apply(func, w))?,
        };
        self.release(input.held);
        // Prometheus rejects a range function's result with two equal label sets, even when
        // they never have a value at the same step.
        // Series of one metric name stay distinct without it: no need to look.
        let one_name = input.series.split_first().is_none_or(|(first, rest)| {
            let name = first.0.metric_name();
            rest.iter().all(|(l, _)| l.metric_name() == name)
        });
        if !keep_name && !one_name && out.len() > 1 {
            let mut seen: HashSet<&Labels> =
                HashSet::with_capacity_and_hasher(out.len(), Default::default());
            if !out.iter().all(|s| seen.insert(&s.labels)) {
                return Err(same_labelset());
            }
        }
        Ok(out)
    }
}

fn apply(func: RangeFn, w: &Window<'_>) -> Result<Option<f64>, QueryError> {
    let s = w.samples;
    let values = || s.iter().map(|s| s.v);
    Ok(match func {
        RangeFn::Rate => extrapolated_rate(w, true, true),
        RangeFn::Increase => extrapolated_rate(w, true, false),
        RangeFn::Delta => extrapolated_rate(w, false, false),
        RangeFn::Irate => instant_value(s, true),
        RangeFn::Idelta => instant_value(s, false),
        RangeFn::AvgOverTime => Some(avg_over_time(s)),
        RangeFn::MinOverTime => {
            Some(values().fold(
                s[0].v,
                |min, v| {
                    if v < min || min.is_nan() { v } else { min }
                },
            ))
        }
        RangeFn::MaxOverTime => {
            Some(values().fold(
                s[0].v,
                |max, v| {
                    if v > max || max.is_nan() { v } else { max }
                },
            ))
        }
        RangeFn::SumOverTime => Some(sum_over_time(s)),
        RangeFn::CountOverTime => Some(s.len() as f64),
        RangeFn::QuantileOverTime => Some(quantile(w.args[0], &mut values().collect::<Vec<_>>())),
        RangeFn::StddevOverTime => Some(variance_over_time(s).sqrt()),
        RangeFn::StdvarOverTime => Some(variance_over_time(s)),
        RangeFn::MadOverTime => {
            let median = quantile(0.5, &mut values().collect::<Vec<_>>());
            Some(quantile(
                0.5,
                &mut values().map(|v| (v - median).abs()).collect::<Vec<_>>(),
            ))
        }
        RangeFn::LastOverTime => Some(s[s.len() - 1].v),
        RangeFn::FirstOverTime => Some(s[0].v),
        RangeFn::PresentOverTime | RangeFn::AbsentOverTime => Some(1.0),
        RangeFn::Changes => {
            let mut changes = 0u32;
            for pair in s.windows(2) {
                let (prev, cur) = (pair[0].v, pair[1].v);
                if cur != prev && !(cur.is_nan() && prev.is_nan()) {
                    changes += 1;
                }
            }
            Some(f64::from(changes))
        }
        RangeFn::Resets => Some(f64::from(
            s.windows(2).filter(|p| p[1].v < p[0].v).count() as u32
        )),
        RangeFn::Deriv => (s.len() >= 2).then(|| linear_regression(s, s[0].t).0),
        RangeFn::PredictLinear => (s.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(s, w.ts);
            slope * w.args[0] + intercept
        }),
        RangeFn::HoltWinters => holt_winters(s, w.args[0], w.args[1])?,
    })
}

/// `rate`, `increase` and `delta`: the change over the window (with counter resets added back
/// for counters), extrapolated towards the window's edges as Prometheus does: to the edge
/// when the first/last sample is within 1.1 average intervals of it, half an interval
/// otherwise, and for counters never below the point where the counter would have been 0.
fn extrapolated_rate(w: &Window<'_>, counter: bool, per_second: bool) -> Option<f64> {
    let s = w.samples;
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.v - first.v;
    if counter {
        let mut prev = first.v;
        for sample in &s[1..] {
            if sample.v < prev {
                result += prev;
            }
            prev = sample.v;
        }
    }
    let mut to_start = (first.t - w.start) as f64 / 1000.0;
    let to_end = (w.end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let average = sampled / (s.len() - 1) as f64;
    if counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    let mut factor = interval / sampled;
    if per_second {
        factor /= w.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples.
fn instant_value(s: &[Sample], rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let last = s[s.len() - 1];
    let previous = s[s.len() - 2];
    let mut result = if rate && last.v < previous.v {
        last.v
    } else {
        last.v - previous.v
    };
    let interval = last.t - previous.t;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Compensated sum.
fn sum_over_time(s: &[Sample]) -> f64 {
    let (sum, c) = s
        .iter()
        .fold((0.0, 0.0), |(sum, c), x| kahan_inc(x.v, sum, c));
    if sum.is_infinite() { sum } else { sum + c }
}

/// Incremental, compensated mean that keeps an infinite mean infinite.
fn avg_over_time(s: &[Sample]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
    for sample in s {
        let v = sample.v;
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

/// Population variance with compensated Welford updates.
fn variance_over_time(s: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for sample in s {
        let v = sample.v;
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Double exponential smoothing with smoothing factor `sf` and trend factor `tf`.
fn holt_winters(s: &[Sample], sf: f64, tf: f64) -> Result<Option<f64>, QueryError> {
    if sf <= 0.0 || sf >= 1.0 || sf.is_nan() {
        return Err(QueryError::Execution(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
        )));
    }
    if tf <= 0.0 || tf >= 1.0 || tf.is_nan() {
        return Err(QueryError::Execution(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
        )));
    }
    if s.len() < 2 {
        return Ok(None);
    }
    let (mut s0, mut s1) = (0.0, s[0].v);
    let mut b = s[1].v - s[0].v;
    for (i, sample) in s.iter().enumerate().skip(1) {
        let x = sf * sample.v;
        // The trend: the initial difference first, then smoothed.
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Ok(Some(s1))
}
