//! Aggregations. Each input series is assigned its group once; `sum`, `avg`, `count`, `min`,
//! `max`, `group`, `stddev` and `stdvar` then accumulate into dense per-(group, step) cells in
//! input order (the order Prometheus adds in), while `topk`, `bottomk`, `limitk`,
//! `limit_ratio`, `quantile` and `count_values` look at each step's members of a group.
//!
//! Groups appear in the order of their first member, which is the order an instant query
//! returns them in, as Prometheus does.

use super::HashMap;

use super::{Evaluator, Grid, Point, Series};
use crate::{
    promql::{
        QueryError,
        math::{format_float, quantile},
        plan::{AggOp, Aggregate, Grouping},
    },
    store::Labels,
};

/// A group's labels: the `by` labels, or all but the `without` labels and the metric name.
pub fn group_labels(labels: &Labels, grouping: &Grouping) -> Labels {
    let listed = |names: &[String], n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).is_ok();
    match grouping {
        Grouping::By(names) => labels.without(|n| !listed(names, n)),
        Grouping::Without(names) => {
            labels.without(|n| n == sonde_proto::names::METRIC_NAME || listed(names, n))
        }
    }
}

/// Output series created on first use, in creation order.
#[derive(Default)]
struct Outputs {
    series: Vec<Series>,
    index: HashMap<Labels, usize>,
}

impl Outputs {
    fn push(&mut self, labels: &Labels, step: u32, v: f64) {
        let i = match self.index.get(labels) {
            Some(&i) => i,
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(Series {
                    labels: labels.clone(),
                    points: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        self.series[i].points.push(Point { step, v });
    }
}

/// Prometheus' conversion of `k` to an integer, with its error for values that do not fit.
fn int_param(k: f64) -> Result<i64, QueryError> {
    // NaN is outside every range.
    if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&k) {
        return Err(QueryError::Execution(format!(
            "Scalar value {} overflows int64",
            format_float(k)
        )));
    }
    Ok(k as i64)
}

/// A stable position of a label set in [0, 1), for `limit_ratio`.
fn ratio_offset(labels: &Labels) -> f64 {
    // FNV-1a over name/value pairs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for label in labels.iter() {
        for b in label
            .name
            .bytes()
            .chain([0xff])
            .chain(label.value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Evaluator<'_> {
    /// Evaluates an aggregation at every step of `grid`.
    pub(super) fn aggregate(
        &mut self,
        agg: &Aggregate,
        grid: Grid,
    ) -> Result<Vec<Series>, QueryError> {
        let steps = grid.len();
        let param = match &agg.param {
            Some(p) => {
                let values = self.eval_scalar(p, grid)?;
                self.release(values.len());
                values
            }
            None => Vec::new(),
        };
        let input = self.eval_vector(&agg.expr, grid)?;
        let held: usize = input.iter().map(|s| s.points.len()).sum();

        // Group of every input series, groups numbered by first appearance.
        let mut group_index: HashMap<Labels, u32> = HashMap::default();
        let mut groups: Vec<Labels> = Vec::new();
        let mut group_of: Vec<u32> = Vec::with_capacity(input.len());
        if agg.op != AggOp::CountValues {
            for s in &input {
                let key = group_labels(&s.labels, &agg.grouping);
                let g = *group_index.entry(key).or_insert_with_key(|key| {
                    groups.push(key.clone());
                    (groups.len() - 1) as u32
                });
                group_of.push(g);
            }
        }

        let out = match agg.op {
            AggOp::Sum
            | AggOp::Avg
            | AggOp::Count
            | AggOp::Min
            | AggOp::Max
            | AggOp::Group
            | AggOp::Stddev
            | AggOp::Stdvar => self.accumulate(agg.op, &input, &group_of, groups, steps)?,
            AggOp::CountValues => self.count_values(agg, &input)?,
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk | AggOp::LimitRatio | AggOp::Quantile => {
                self.per_step(agg.op, &param, &input, &group_of, &groups, steps)?
            }
        };
        self.release(held);
        Ok(out)
    }

    /// Aggregations that fold values into one number per group and step.
    fn accumulate(
        &mut self,
        op: AggOp,
        input: &[Series],
        group_of: &[u32],
        groups: Vec<Labels>,
        steps: usize,
    ) -> Result<Vec<Series>, QueryError> {
        let cells = groups.len().saturating_mul(steps);
        self.hold(cells)?;
        let mut count = vec![0u32; cells];
        let mut value = vec![0f64; cells];
        let mut mean = if matches!(op, AggOp::Avg | AggOp::Stddev | AggOp::Stdvar) {
            vec![0f64; cells]
        } else {
            Vec::new()
        };
        for (s, &g) in input.iter().zip(group_of) {
            self.tick()?;
            let base = g as usize * steps;
            for p in &s.points {
                let k = base + p.step as usize;
                let v = p.v;
                let n = count[k];
                if n == 0 {
                    match op {
                        AggOp::Avg => mean[k] = v,
                        AggOp::Stddev | AggOp::Stdvar => {
                            mean[k] = v;
                            value[k] = 0.0;
                        }
                        _ => value[k] = v,
                    }
                    count[k] = 1;
                    continue;
                }
                let n = n + 1;
                count[k] = n;
                let nf = f64::from(n);
                match op {
                    AggOp::Sum => value[k] += v,
                    AggOp::Min if value[k] > v || value[k].is_nan() => value[k] = v,
                    AggOp::Max if value[k] < v || value[k].is_nan() => value[k] = v,
                    AggOp::Avg => {
                        let m = mean[k];
                        if m.is_infinite() {
                            if v.is_infinite() && (m > 0.0) == (v > 0.0) {
                                continue;
                            }
                            if !v.is_infinite() && !v.is_nan() {
                                continue;
                            }
                        }
                        mean[k] = m + (v / nf - m / nf);
                    }
                    AggOp::Stddev | AggOp::Stdvar => {
                        let delta = v - mean[k];
                        mean[k] += delta / nf;
                        value[k] += delta * (v - mean[k]);
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::with_capacity(groups.len());
        for (g, labels) in groups.into_iter().enumerate() {
            let base = g * steps;
            let points: Vec<Point> = (0..steps)
                .filter(|&i| count[base + i] > 0)
                .map(|i| {
                    let k = base + i;
                    let n = f64::from(count[k]);
                    let v = match op {
                        AggOp::Avg => mean[k],
                        AggOp::Count => n,
                        AggOp::Group => 1.0,
                        AggOp::Stdvar => value[k] / n,
                        AggOp::Stddev => (value[k] / n).sqrt(),
                        _ => value[k],
                    };
                    Point { step: i as u32, v }
                })
                .collect();
            if !points.is_empty() {
                out.push(Series { labels, points });
            }
        }
        self.release(cells);
        Ok(out)
    }

    /// Aggregations that look at each step's members of a group.
    fn per_step(
        &mut self,
        op: AggOp,
        param: &[f64],
        input: &[Series],
        group_of: &[u32],
        groups: &[Labels],
        steps: usize,
    ) -> Result<Vec<Series>, QueryError> {
        // (group, series) of every point, by step, series in input order.
        let mut by_step: Vec<Vec<(u32, u32, f64)>> = vec![Vec::new(); steps];
        let mut held = 0usize;
        for (si, (s, &g)) in input.iter().zip(group_of).enumerate() {
            for p in &s.points {
                by_step[p.step as usize].push((g, si as u32, p.v));
            }
            held += s.points.len();
        }
        self.hold(held)?;
        let mut out = Outputs::default();
        let mut members: Vec<(u32, f64)> = Vec::new();
        for (step, mut entries) in by_step.into_iter().enumerate() {
            self.tick()?;
            let p = param.get(step).copied().unwrap_or(f64::NAN);
            let k = match op {
                AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
                    let k = int_param(p)?;
                    if k < 1 {
                        continue;
                    }
                    usize::try_from(k).unwrap_or(usize::MAX)
                }
                _ => 0,
            };
            entries.sort_by_key(|e| e.0);
            for run in entries.chunk_by(|a, b| a.0 == b.0) {
                let g = run[0].0 as usize;
                members.clear();
                members.extend(run.iter().map(|&(_, si, v)| (si, v)));
                let step = step as u32;
                match op {
                    AggOp::Topk | AggOp::Bottomk => {
                        let top = op == AggOp::Topk;
                        // NaN is never preferred; ties keep input order.
                        members.sort_by(|a, b| match (a.1.is_nan(), b.1.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if top => b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal),
                            _ => a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal),
                        });
                        for &(si, v) in members.iter().take(k) {
                            out.push(&input[si as usize].labels, step, v);
                        }
                    }
                    AggOp::Limitk => {
                        for &(si, v) in members.iter().take(k) {
                            out.push(&input[si as usize].labels, step, v);
                        }
                    }
                    AggOp::LimitRatio => {
                        let r = p.clamp(-1.0, 1.0);
                        for &(si, v) in members.iter() {
                            let offset = ratio_offset(&input[si as usize].labels);
                            if (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r) {
                                out.push(&input[si as usize].labels, step, v);
                            }
                        }
                    }
                    AggOp::Quantile => {
                        let mut values: Vec<f64> = members.iter().map(|m| m.1).collect();
                        out.push(&groups[g], step, quantile(p, &mut values));
                    }
                    _ => unreachable!("only per-step aggregations get here"),
                }
            }
        }
        self.release(held);
        Ok(out.series)
    }

    /// `count_values("label", v)`: how many series have each value, the value (formatted as
    /// Prometheus does) in `label`.
    fn count_values(
        &mut self,
        agg: &Aggregate,
        input: &[Series],
    ) -> Result<Vec<Series>, QueryError> {
        let label = agg.value_label.as_deref().unwrap_or("value");
        let grouping = match &agg.grouping {
            Grouping::By(names) => {
                let mut names = names.clone();
                if let Err(pos) = names.binary_search_by(|n| n.as_str().cmp(label)) {
                    names.insert(pos, label.to_owned());
                }
                Grouping::By(names)
            }
            without => without.clone(),
        };
        // Counts per (output labels, step), outputs in order of first appearance.
        let mut index: HashMap<Labels, usize> = HashMap::default();
        let mut outputs: Vec<(Labels, HashMap<u32, u32>)> = Vec::new();
        let mut order: Vec<(usize, u32)> = Vec::new();
        for s in input {
            self.tick()?;
            for p in &s.points {
                let with_value = super::call::set_label(&s.labels, label, &format_float(p.v));
                let key = group_labels(&with_value, &grouping);
                let i = *index.entry(key).or_insert_with_key(|key| {
                    outputs.push((key.clone(), HashMap::default()));
                    outputs.len() - 1
                });
                let count = outputs[i].1.entry(p.step).or_insert(0);
                if *count == 0 {
                    order.push((i, p.step));
                }
                *count += 1;
            }
        }
        let mut out: Vec<Series> = outputs
            .iter()
            .map(|(labels, _)| Series {
                labels: labels.clone(),
                points: Vec::new(),
            })
            .collect();
        for (i, step) in order {
            out[i].points.push(Point {
                step,
                v: f64::from(outputs[i].1[&step]),
            });
        }
        for s in &mut out {
            s.points.sort_by_key(|p| p.step);
        }
        Ok(out)
    }
}
