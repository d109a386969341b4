//! Evaluation of a [`Plan`] over a grid of steps.
//!
//! Owns: the internal value types (every instant vector is held series by series with the
//! steps at which each series has a value, so labels, groupings and vector matchings are
//! computed once per series rather than once per step), the dispatch over plan nodes, the
//! per-query limits (samples held in memory, series selected, deadline, cancellation), and
//! the splitting of long range queries into blocks of steps whose data is selected once per
//! block. Steps are independent in PromQL, so blocks are evaluated one after the other and
//! concatenated, which bounds memory by the block rather than the whole range.
//!
//! Must not: parse PromQL (that is [`super::plan`]) or know about HTTP.

mod aggregate;
mod binary;
mod call;
mod range;
mod selector;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use super::{
    InstantSample, QueryError, RangeSeries, Value,
    plan::{Plan, check_range_query_kind},
};
use crate::{
    config::QueryConfig,
    store::{Labels, Sample, Store},
};

/// Hash maps keyed by label sets (hashed once per series in groupings and matchings), with
/// a fast seeded hasher.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// Hash sets, as [`HashMap`].
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The sample density assumed when sizing blocks: one sample per this many milliseconds
/// (Prometheus' default scrape interval).
const ASSUMED_INTERVAL_MS: i64 = 15_000;

/// Evaluation times: `start`, `start + step`, … up to `end` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// First step, milliseconds.
    pub start: i64,
    /// Last possible step, milliseconds (inclusive; need not be on the grid).
    pub end: i64,
    /// Distance between steps, milliseconds (positive).
    pub step: i64,
}

impl Grid {
    /// A single evaluation at `t`.
    pub fn instant(t: i64) -> Self {
        Self {
            start: t,
            end: t,
            step: 1,
        }
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            usize::try_from((self.end - self.start) / self.step + 1).unwrap_or(usize::MAX)
        }
    }

    /// Whether the grid has no step (its end is before its start).
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// Time of step `i`.
    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One value of a series at a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Step index in the grid.
    pub step: u32,
    /// The value.
    pub v: f64,
}

/// A series of an instant vector evaluated over a grid: its value at each step where it has
/// one, in step order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels.
    pub labels: Labels,
    /// Points, ascending by step, at most one per step.
    pub points: Vec<Point>,
}

/// A value evaluated over a grid.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A scalar at every step.
    Scalar(Vec<f64>),
    /// A string.
    String(String),
    /// An instant vector at every step.
    Vector(Vec<Series>),
    /// A range vector (only as a whole instant query's result).
    Matrix(Vec<RangeSeries>),
}

impl Val {
    /// Samples held, for the memory limit.
    fn size(&self) -> usize {
        match self {
            Self::Scalar(v) => v.len(),
            Self::String(_) => 1,
            Self::Vector(series) => series.iter().map(|s| s.points.len()).sum(),
            Self::Matrix(series) => series.iter().map(|s| s.samples.len()).sum(),
        }
    }
}

/// The limits and bookkeeping of one query.
pub struct Evaluator<'a> {
    store: &'a Store,
    remote: Option<&'a dyn super::RemoteSelect>,
    lookback_ms: i64,
    deadline: Instant,
    cancelled: &'a AtomicBool,
    max_samples: usize,
    max_series: usize,
    /// Samples currently held by the evaluation.
    samples: usize,
    /// Peak of `samples`.
    peak_samples: usize,
    /// Series selected from the store in the current block.
    series: usize,
    /// Calls to the store's `select` so far.
    selections: usize,
    ticks: u32,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<'a> Evaluator<'a> {
    /// An evaluator over `store` with `config`'s limits.
    pub fn new(
        store: &'a Store,
        config: &QueryConfig,
        deadline: Instant,
        cancelled: &'a AtomicBool,
    ) -> Self {
        Self {
            store,
            remote: None,
            lookback_ms: millis(config.lookback_delta),
            deadline,
            cancelled,
            max_samples: config.max_samples,
            max_series: config.max_series,
            samples: 0,
            peak_samples: 0,
            series: 0,
            selections: 0,
            ticks: 0,
        }
    }

    /// Makes every selection also read `remote` (merged reads across replicas).
    pub fn set_remote(&mut self, remote: Option<&'a dyn super::RemoteSelect>) {
        self.remote = remote;
    }

    /// How many times the store was asked for samples so far (once per selector and
    /// evaluation block, never once per step).
    pub fn selections(&self) -> usize {
        self.selections
    }

    /// The most samples held at once so far.
    pub fn peak_samples(&self) -> usize {
        self.peak_samples
    }

    /// Fails when the deadline passed or the query was cancelled.
    fn check(&self) -> Result<(), QueryError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(QueryError::Cancelled);
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout {
                phase: "expression evaluation",
            });
        }
        Ok(())
    }

    /// A cheap [`check`](Self::check) for inner loops: looks at the clock every 64 calls.
    fn tick(&mut self) -> Result<(), QueryError> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(64) {
            self.check()
        } else {
            Ok(())
        }
    }

    /// Accounts for `n` more samples in memory.
    fn hold(&mut self, n: usize) -> Result<(), QueryError> {
        self.samples = self.samples.saturating_add(n);
        self.peak_samples = self.peak_samples.max(self.samples);
        if self.samples > self.max_samples {
            return Err(QueryError::TooManySamples {
                limit: self.max_samples,
            });
        }
        Ok(())
    }

    /// Accounts for `n` samples no longer held.
    fn release(&mut self, n: usize) {
        self.samples = self.samples.saturating_sub(n);
    }

    /// Evaluates `plan` at every step of `grid`.
    pub fn eval(&mut self, plan: &Plan, grid: Grid) -> Result<Val, QueryError> {
        self.check()?;
        // Every node holds at least one value per step: refuse a grid (a subquery's, say
        // `x[1y:1ms]`) that could not fit before allocating for it.
        if grid.len() > self.max_samples {
            return Err(QueryError::TooManySamples {
                limit: self.max_samples,
            });
        }
        let out = match plan {
            Plan::Number(n) => Val::Scalar(vec![*n; grid.len()]),
            Plan::String(s) => Val::String(s.clone()),
            Plan::Selector(sel) => Val::Vector(self.instant_selector(sel, grid, false)?),
            Plan::Matrix(source) => Val::Matrix(self.matrix_value(source, grid)?),
            Plan::Call(call) => self.call(call, grid)?,
            Plan::RangeCall(call) => Val::Vector(self.range_call(call, grid)?),
            Plan::Aggregate(agg) => Val::Vector(self.aggregate(agg, grid)?),
            Plan::Binary(b) => self.binary(b, grid)?,
            Plan::Neg(inner) => {
                let value = self.eval(inner, grid)?;
                let size = value.size();
                let out = match value {
                    Val::Scalar(v) => Val::Scalar(v.into_iter().map(|v| -v).collect()),
                    Val::Vector(series) => {
                        let series = series
                            .into_iter()
                            .map(|mut s| {
                                s.labels = drop_name(&s.labels);
                                for p in &mut s.points {
                                    p.v = -p.v;
                                }
                                s
                            })
                            .collect();
                        Val::Vector(merge_same_labels(series)?)
                    }
                    other => {
                        return Err(QueryError::Execution(format!(
                            "unary minus on a {}",
                            val_type(&other)
                        )));
                    }
                };
                self.release(size);
                out
            }
            Plan::StepInvariant(inner) => {
                let steps = grid.len();
                let once = self.eval(
                    inner,
                    Grid {
                        end: grid.start,
                        ..grid
                    },
                )?;
                let size = once.size();
                let out = broadcast(once, steps);
                self.release(size);
                out
            }
        };
        self.hold(out.size())?;
        Ok(out)
    }

    /// Evaluates a scalar-typed plan.
    fn eval_scalar(&mut self, plan: &Plan, grid: Grid) -> Result<Vec<f64>, QueryError> {
        match self.eval(plan, grid)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected a scalar, got {}",
                val_type(&other)
            ))),
        }
    }

    /// Evaluates a vector-typed plan.
    fn eval_vector(&mut self, plan: &Plan, grid: Grid) -> Result<Vec<Series>, QueryError> {
        match self.eval(plan, grid)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected an instant vector, got {}",
                val_type(&other)
            ))),
        }
    }
}

fn val_type(v: &Val) -> &'static str {
    match v {
        Val::Scalar(_) => "scalar",
        Val::String(_) => "string",
        Val::Vector(_) => "instant vector",
        Val::Matrix(_) => "range vector",
    }
}

/// Repeats a value computed for the first step at every one of `steps` steps.
fn broadcast(value: Val, steps: usize) -> Val {
    if steps <= 1 {
        return value;
    }
    match value {
        Val::Scalar(v) => Val::Scalar(vec![v.first().copied().unwrap_or(f64::NAN); steps]),
        Val::Vector(series) => Val::Vector(
            series
                .into_iter()
                .filter_map(|s| {
                    let v = s.points.first()?.v;
                    Some(Series {
                        labels: s.labels,
                        points: (0..steps as u32).map(|step| Point { step, v }).collect(),
                    })
                })
                .collect(),
        ),
        other => other,
    }
}

/// The labels without the metric name.
pub fn drop_name(labels: &Labels) -> Labels {
    if labels.metric_name().is_none() {
        return labels.clone();
    }
    labels.without(|name| name == sonde_proto::names::METRIC_NAME)
}

/// Merges series whose labels became equal (after dropping names or rewriting labels), in
/// order of first appearance. Two of them with a value at the same step is Prometheus' error
/// "vector cannot contain metrics with the same labelset".
pub fn merge_same_labels(series: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    if series.len() < 2 {
        return Ok(series);
    }
    let mut index: HashMap<&Labels, usize> =
        HashMap::with_capacity_and_hasher(series.len(), Default::default());
    let mut duplicates = false;
    for (i, s) in series.iter().enumerate() {
        if index.insert(&s.labels, i).is_some() {
            duplicates = true;
            break;
        }
    }
    drop(index);
    if !duplicates {
        return Ok(series);
    }
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    let mut index: HashMap<Labels, usize> =
        HashMap::with_capacity_and_hasher(series.len(), Default::default());
    let mut unsorted: Vec<bool> = Vec::new();
    for s in series {
        match index.get(&s.labels) {
            Some(&i) => {
                out[i].points.extend(s.points);
                unsorted[i] = true;
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
                unsorted.push(false);
            }
        }
    }
    for (s, unsorted) in out.iter_mut().zip(unsorted) {
        if unsorted {
            s.points.sort_by_key(|p| p.step);
            if s.points.windows(2).any(|w| w[0].step == w[1].step) {
                return Err(same_labelset());
            }
        }
    }
    Ok(out)
}

/// Prometheus' error for two results with identical labels.
pub fn same_labelset() -> QueryError {
    QueryError::Execution("vector cannot contain metrics with the same labelset".to_owned())
}

/// Runs an instant query at `time`.
pub fn run_instant(ev: &mut Evaluator<'_>, plan: &Plan, time: i64) -> Result<Value, QueryError> {
    let grid = Grid::instant(time);
    Ok(match ev.eval(plan, grid)? {
        Val::Scalar(v) => Value::Scalar {
            t: time,
            v: v.first().copied().unwrap_or(f64::NAN),
        },
        Val::String(s) => Value::String { t: time, v: s },
        Val::Vector(series) => Value::Vector(
            series
                .into_iter()
                .filter_map(|s| {
                    let p = s.points.first()?;
                    Some(InstantSample {
                        labels: s.labels,
                        t: time,
                        v: p.v,
                    })
                })
                .collect(),
        ),
        Val::Matrix(m) => Value::Matrix(m),
    })
}

/// How many steps each block of a range query holds. The series the plan's selectors match
/// over the whole query (an index lookup, no samples read) give an estimate of the samples a
/// block selects, at one per 15 s over the block plus the plan's look-back; the whole query is
/// one block when that fits in `max_samples`, otherwise blocks are as long as fits.
fn steps_per_block(ev: &mut Evaluator<'_>, plan: &Plan, grid: Grid) -> Result<usize, QueryError> {
    let total = grid.len().max(1);
    if total == 1 {
        return Ok(1);
    }
    let reach = plan.reach_ms(ev.lookback_ms).max(0);
    let mut selectors = Vec::new();
    plan.selectors(&mut selectors);
    let mut series = 0usize;
    for sel in selectors {
        let (mint, maxt) = match sel.at_ms {
            // Selectors with `@` read one instant, whatever the grid.
            Some(at) => (at - sel.offset_ms - reach, at - sel.offset_ms),
            None => (grid.start - reach - sel.offset_ms, grid.end - sel.offset_ms),
        };
        series = series.saturating_add(ev.store.series(&sel.groups, mint, maxt)?.len());
    }
    let series = i64::try_from(series.max(1)).unwrap_or(i64::MAX);
    let budget = i64::try_from(ev.max_samples).unwrap_or(i64::MAX);
    let span = grid.end - grid.start + reach;
    if series.saturating_mul(span / ASSUMED_INTERVAL_MS + 1) <= budget {
        return Ok(total);
    }
    let block_ms = (budget / series * ASSUMED_INTERVAL_MS - reach).max(grid.step);
    Ok(usize::try_from(block_ms / grid.step)
        .unwrap_or(usize::MAX)
        .clamp(1, total))
}

/// Runs a range query; the result is a matrix sorted by labels.
pub fn run_range(ev: &mut Evaluator<'_>, plan: &Plan, grid: Grid) -> Result<Value, QueryError> {
    check_range_query_kind(plan)?;
    let per_block = steps_per_block(ev, plan, grid)?;
    let total = grid.len();
    let mut index: HashMap<Labels, usize> = HashMap::default();
    let mut out: Vec<RangeSeries> = Vec::new();
    let mut done = 0usize;
    while done < total {
        let count = per_block.min(total - done);
        let block = Grid {
            start: grid.ts(done),
            end: grid.ts(done + count - 1),
            step: grid.step,
        };
        ev.series = 0;
        let value = ev.eval(plan, block)?;
        ev.release(value.size());
        let mut add = |labels: Labels, samples: &mut dyn Iterator<Item = Sample>| {
            let i = *index.entry(labels.clone()).or_insert_with(|| {
                out.push(RangeSeries {
                    labels,
                    samples: Vec::new(),
                });
                out.len() - 1
            });
            out[i].samples.extend(samples);
        };
        match value {
            Val::Scalar(values) => add(
                Labels::default(),
                &mut values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Sample { t: block.ts(i), v }),
            ),
            Val::Vector(series) => {
                for s in series {
                    add(
                        s.labels,
                        &mut s.points.iter().map(|p| Sample {
                            t: block.ts(p.step as usize),
                            v: p.v,
                        }),
                    );
                }
            }
            other => {
                return Err(QueryError::Execution(format!(
                    "range query evaluated to a {}",
                    val_type(&other)
                )));
            }
        }
        done += count;
        // The result so far stays in memory until the query ends.
        let kept: usize = out.iter().map(|s| s.samples.len()).sum();
        if kept > ev.max_samples {
            return Err(QueryError::TooManySamples {
                limit: ev.max_samples,
            });
        }
    }
    out.retain(|s| !s.samples.is_empty());
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(out))
}

#[cfg(test)]
mod tests;
