//! Functions over instant vectors and scalars: math, clamping, calendar, `timestamp`,
//! `vector`/`scalar`, `absent`, sorting, label rewriting and `histogram_quantile` over classic
//! buckets. Label work (name dropping, `label_replace`, bucket grouping) is done once per
//! series, values per point.

use super::HashMap;

use chrono::{Datelike, TimeZone, Timelike, Utc};

use super::{Evaluator, Grid, Point, Series, Val, drop_name, merge_same_labels};
use crate::{
    promql::{
        QueryError,
        math::{Bucket, bucket_quantile, go_max, go_min},
        plan::{Call, DateFn, Func, Plan},
    },
    store::Labels,
};

impl Evaluator<'_> {
    /// Evaluates a function call at every step of `grid`.
    pub(super) fn call(&mut self, call: &Call, grid: Grid) -> Result<Val, QueryError> {
        let steps = grid.len();
        match &call.func {
            Func::Time => {
                return Ok(Val::Scalar(
                    (0..steps).map(|i| grid.ts(i) as f64 / 1000.0).collect(),
                ));
            }
            Func::Pi => return Ok(Val::Scalar(vec![std::f64::consts::PI; steps])),
            Func::Vector => {
                let values = self.eval_scalar(&call.args[0], grid)?;
                self.release(values.len());
                return Ok(Val::Vector(vec![Series {
                    labels: Labels::default(),
                    points: values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| Point { step: i as u32, v })
                        .collect(),
                }]));
            }
            Func::Date(date) if call.args.is_empty() => {
                return Ok(Val::Vector(vec![Series {
                    labels: Labels::default(),
                    points: (0..steps)
                        .map(|i| Point {
                            step: i as u32,
                            v: date_value(*date, grid.ts(i) as f64 / 1000.0),
                        })
                        .collect(),
                }]));
            }
            Func::Timestamp => return self.timestamp(&call.args[0], grid).map(Val::Vector),
            _ => {}
        }
        // Every other function takes an instant vector first, then scalars; except
        // histogram_quantile, whose φ comes first.
        let vector_arg = usize::from(matches!(call.func, Func::HistogramQuantile));
        let input = self.eval_vector(&call.args[vector_arg], grid)?;
        let held: usize = input.iter().map(|s| s.points.len()).sum();
        let mut scalars: Vec<Vec<f64>> = Vec::new();
        for (i, plan) in call.args.iter().enumerate() {
            if i == vector_arg {
                continue;
            }
            let values = self.eval_scalar(plan, grid)?;
            self.release(values.len());
            scalars.push(values);
        }
        let arg = |n: usize, i: u32| scalars.get(n).map(|s| s[i as usize]);
        let out = match &call.func {
            Func::Simple(_, f) => map_points(input, |_, v| Some(f(v)))?,
            Func::Round => map_points(input, |i, v| {
                let to_nearest = arg(0, i).unwrap_or(1.0);
                let inverse = 1.0 / to_nearest;
                Some((v * inverse + 0.5).floor() / inverse)
            })?,
            Func::Clamp => map_points(input, |i, v| {
                let (min, max) = (arg(0, i)?, arg(1, i)?);
                (max >= min).then(|| go_max(min, go_min(max, v)))
            })?,
            Func::ClampMin => map_points(input, |i, v| Some(go_max(arg(0, i)?, v)))?,
            Func::ClampMax => map_points(input, |i, v| Some(go_min(arg(0, i)?, v)))?,
            Func::Date(date) => map_points(input, |_, v| Some(date_value(*date, v)))?,
            Func::Scalar => {
                let mut count = vec![0u32; steps];
                let mut value = vec![f64::NAN; steps];
                for s in &input {
                    for p in &s.points {
                        count[p.step as usize] += 1;
                        value[p.step as usize] = p.v;
                    }
                }
                self.release(held);
                return Ok(Val::Scalar(
                    count
                        .into_iter()
                        .zip(value)
                        .map(|(n, v)| if n == 1 { v } else { f64::NAN })
                        .collect(),
                ));
            }
            Func::Absent(labels) => {
                let mut present = vec![false; steps];
                for s in &input {
                    for p in &s.points {
                        present[p.step as usize] = true;
                    }
                }
                let points: Vec<Point> = present
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !**p)
                    .map(|(i, _)| Point {
                        step: i as u32,
                        v: 1.0,
                    })
                    .collect();
                if points.is_empty() {
                    Vec::new()
                } else {
                    vec![Series {
                        labels: labels.clone(),
                        points,
                    }]
                }
            }
            Func::Sort | Func::SortDesc => {
                sort_by_value(input, matches!(call.func, Func::SortDesc))
            }
            Func::LabelReplace {
                dst,
                replacement,
                src,
                regex,
            } => {
                let relabeled = input
                    .into_iter()
                    .map(|mut s| {
                        let value = s.labels.get(src).unwrap_or("");
                        if let Some(caps) = regex.captures(value) {
                            let mut result = String::new();
                            caps.expand(replacement, &mut result);
                            s.labels = set_label(&s.labels, dst, &result);
                        }
                        s
                    })
                    .collect();
                merge_same_labels(relabeled)?
            }
            Func::LabelJoin {
                dst,
                separator,
                srcs,
            } => {
                let relabeled = input
                    .into_iter()
                    .map(|mut s| {
                        let joined = srcs
                            .iter()
                            .map(|src| s.labels.get(src).unwrap_or(""))
                            .collect::<Vec<_>>()
                            .join(separator);
                        s.labels = set_label(&s.labels, dst, &joined);
                        s
                    })
                    .collect();
                merge_same_labels(relabeled)?
            }
            Func::HistogramQuantile => histogram_quantile(&scalars[0], input)?,
            Func::NativeHistogramOnly(_) => Vec::new(),
            Func::Time | Func::Pi | Func::Vector | Func::Timestamp => {
                unreachable!("handled above")
            }
        };
        self.release(held);
        Ok(Val::Vector(out))
    }

    /// `timestamp(v)`: for a selector (possibly step invariant), the time of the sample
    /// each step picked; for anything else, the step's time.
    fn timestamp(&mut self, arg: &Plan, grid: Grid) -> Result<Vec<Series>, QueryError> {
        let selector = match arg {
            Plan::Selector(s) => Some(s),
            Plan::StepInvariant(inner) => match inner.as_ref() {
                Plan::Selector(s) => Some(s),
                _ => None,
            },
            _ => None,
        };
        let series = match selector {
            Some(sel) => self.instant_selector(sel, grid, true)?,
            None => {
                let input = self.eval_vector(arg, grid)?;
                self.release(input.iter().map(|s| s.points.len()).sum());
                input
                    .into_iter()
                    .map(|mut s| {
                        for p in &mut s.points {
                            p.v = grid.ts(p.step as usize) as f64 / 1000.0;
                        }
                        s
                    })
                    .collect()
            }
        };
        merge_same_labels(
            series
                .into_iter()
                .map(|mut s| {
                    s.labels = drop_name(&s.labels);
                    s
                })
                .collect(),
        )
    }
}

/// Applies `f(step, value)` to every point (dropping the point when it answers `None`), drops
/// the metric name, and merges series that became equal.
fn map_points(
    input: Vec<Series>,
    f: impl Fn(u32, f64) -> Option<f64>,
) -> Result<Vec<Series>, QueryError> {
    let out = input
        .into_iter()
        .filter_map(|s| {
            let points: Vec<Point> = s
                .points
                .iter()
                .filter_map(|p| f(p.step, p.v).map(|v| Point { step: p.step, v }))
                .collect();
            (!points.is_empty()).then(|| Series {
                labels: drop_name(&s.labels),
                points,
            })
        })
        .collect();
    merge_same_labels(out)
}

/// `labels` with `name` set to `value` (removed when `value` is empty).
pub fn set_label(labels: &Labels, name: &str, value: &str) -> Labels {
    Labels::from_pairs(
        labels
            .iter()
            .filter(|l| &*l.name != name)
            .map(|l| (&*l.name, &*l.value))
            .chain(std::iter::once((name, value))),
    )
}

/// `sort`/`sort_desc`: only an instant query's order is observable; NaN goes last either way.
fn sort_by_value(mut input: Vec<Series>, descending: bool) -> Vec<Series> {
    let value = |s: &Series| s.points.first().map_or(f64::NAN, |p| p.v);
    input.sort_by(|a, b| {
        let (a, b) = (value(a), value(b));
        match (a.is_nan(), b.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if descending => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
            _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
        }
    });
    input
}

/// Calendar value of a Unix time in seconds (truncated toward zero, as Go's `int64()`), in
/// UTC. Non-finite or out-of-range times give NaN.
fn date_value(date: DateFn, seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let Some(t) = Utc.timestamp_opt(seconds.trunc() as i64, 0).single() else {
        return f64::NAN;
    };
    f64::from(match date {
        DateFn::DayOfMonth => t.day(),
        DateFn::DayOfWeek => t.weekday().num_days_from_sunday(),
        DateFn::DayOfYear => t.ordinal(),
        DateFn::DaysInMonth => {
            let (y, m) = (t.year(), t.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            let next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1);
            match (first, next) {
                (Some(a), Some(b)) => (b - a).num_days() as u32,
                _ => return f64::NAN,
            }
        }
        DateFn::Hour => t.hour(),
        DateFn::Minute => t.minute(),
        DateFn::Month => t.month(),
        DateFn::Year => return f64::from(t.year()),
    })
}

/// `histogram_quantile(φ, buckets)`: series grouped by their labels without `le` (the metric
/// name included, so two histograms never mix), each step's buckets of a group interpolated.
/// Series without a parseable `le` are ignored. The result drops `le` and the metric name.
fn histogram_quantile(q: &[f64], input: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    struct Group {
        labels: Labels,
        /// (step, upper bound, count) of every member's points.
        points: Vec<(u32, f64, f64)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::default();
    for s in input {
        let Some(upper) = s.labels.get("le").and_then(parse_go_float) else {
            continue;
        };
        let key = s.labels.without(|n| n == "le");
        let g = *index.entry(key).or_insert_with_key(|key| {
            groups.push(Group {
                labels: drop_name(key),
                points: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g]
            .points
            .extend(s.points.iter().map(|p| (p.step, upper, p.v)));
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut buckets: Vec<Bucket> = Vec::new();
    for mut group in groups {
        group.points.sort_by_key(|p| p.0);
        let mut points = Vec::new();
        for run in group.points.chunk_by(|a, b| a.0 == b.0) {
            let step = run[0].0;
            buckets.clear();
            buckets.extend(run.iter().map(|&(_, upper, count)| Bucket { upper, count }));
            points.push(Point {
                step,
                v: bucket_quantile(q[step as usize], &mut buckets),
            });
        }
        out.push(Series {
            labels: group.labels,
            points,
        });
    }
    merge_same_labels(out)
}

/// Go's `strconv.ParseFloat` for the spellings bucket bounds use (`+Inf`, `1e-3`, `0.5`);
/// Rust accepts the same signs, exponents and case-insensitive `inf`/`nan`.
fn parse_go_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}
