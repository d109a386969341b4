//! Binary operators: arithmetic and comparisons between scalars and vectors, vector matching
//! (`on`/`ignoring`, `group_left`/`group_right`, `bool`) and the set operators.
//!
//! Matching signatures and result labels are computed once per series (or pair of series);
//! only the checks Prometheus makes per step (a "one" side that is not unique, a one-to-one
//! match that is not) look at steps, and only for signatures with several members.

use super::{HashMap, HashSet};

use super::{Evaluator, Grid, Point, Series, Val, drop_name, merge_same_labels, same_labelset};
use crate::{
    promql::{
        QueryError,
        plan::{BinOp, Binary, Cardinality, Matching},
    },
    store::Labels,
};

/// Applies an arithmetic or comparison operator: `(value, keep)`; comparisons return the
/// left value and whether the comparison holds.
pub fn apply(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        // Go's math.Mod: the sign of the dividend, like Rust's `%` on floats.
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

/// The matching signature of a series: its `on` labels, or all labels but the `ignoring`
/// ones and the metric name.
fn signature(labels: &Labels, matching: &Matching) -> Labels {
    let listed = |n: &str| matching.labels.iter().any(|l| l == n);
    if matching.on {
        labels.without(|n| !listed(n))
    } else {
        labels.without(|n| n == sonde_proto::names::METRIC_NAME || listed(n))
    }
}

/// Result labels of a vector/vector operation, from the "many" (or left) side `many` and the
/// "one" side `one`.
fn result_labels(many: &Labels, one: &Labels, b: &Binary) -> Labels {
    let m = &b.matching;
    let mut pairs: Vec<(&str, &str)> = many
        .iter()
        .map(|l| (&*l.name, &*l.value))
        .filter(|(n, _)| {
            if (b.op.drops_metric_name() || b.return_bool) && *n == sonde_proto::names::METRIC_NAME
            {
                return false;
            }
            if m.card == Cardinality::OneToOne {
                let listed = m.labels.iter().any(|l| l == n);
                return if m.on { listed } else { !listed };
            }
            true
        })
        .collect();
    for name in &m.include {
        pairs.retain(|(n, _)| n != name);
        if let Some(v) = one.get(name) {
            pairs.push((name, v));
        }
    }
    Labels::from_pairs(pairs)
}

impl Evaluator<'_> {
    /// Evaluates a binary operation at every step of `grid`.
    pub(super) fn binary(&mut self, b: &Binary, grid: Grid) -> Result<Val, QueryError> {
        let lhs = self.eval(&b.lhs, grid)?;
        let rhs = self.eval(&b.rhs, grid)?;
        let held = lhs.size() + rhs.size();
        let out = match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => Val::Scalar(
                l.into_iter()
                    .zip(r)
                    .map(|(l, r)| {
                        let (v, keep) = apply(b.op, l, r);
                        if b.op.is_comparison() {
                            f64::from(u8::from(keep))
                        } else {
                            v
                        }
                    })
                    .collect(),
            ),
            (Val::Vector(v), Val::Scalar(s)) => Val::Vector(vector_scalar(b, v, &s, false)?),
            (Val::Scalar(s), Val::Vector(v)) => Val::Vector(vector_scalar(b, v, &s, true)?),
            (Val::Vector(l), Val::Vector(r)) => Val::Vector(match b.op {
                BinOp::And | BinOp::Unless => self.and_unless(b, l, r, grid)?,
                BinOp::Or => self.or(b, l, r, grid)?,
                _ => self.vector_vector(b, l, r, grid)?,
            }),
            _ => {
                return Err(QueryError::Execution(
                    "binary expression must contain only scalar and instant vector types"
                        .to_owned(),
                ));
            }
        };
        self.release(held);
        Ok(out)
    }

    /// `and` keeps left points whose signature the right side has at that step; `unless`
    /// keeps those it does not.
    fn and_unless(
        &mut self,
        b: &Binary,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
        grid: Grid,
    ) -> Result<Vec<Series>, QueryError> {
        let steps = grid.len();
        let presence = self.signature_presence(&rhs, &b.matching, steps)?;
        let keep_when_present = b.op == BinOp::And;
        let mut out = Vec::with_capacity(lhs.len());
        for mut s in lhs {
            self.tick()?;
            let present = presence.get(&signature(&s.labels, &b.matching));
            s.points.retain(|p| {
                let here = present.is_some_and(|steps| steps[p.step as usize]);
                here == keep_when_present
            });
            if !s.points.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// `or`: every left point, and right points whose signature the left side lacks at that
    /// step.
    fn or(
        &mut self,
        b: &Binary,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
        grid: Grid,
    ) -> Result<Vec<Series>, QueryError> {
        let steps = grid.len();
        let presence = self.signature_presence(&lhs, &b.matching, steps)?;
        let mut out = lhs;
        for mut s in rhs {
            self.tick()?;
            if let Some(present) = presence.get(&signature(&s.labels, &b.matching)) {
                s.points.retain(|p| !present[p.step as usize]);
            }
            if !s.points.is_empty() {
                out.push(s);
            }
        }
        merge_same_labels(out)
    }

    /// For each signature on a side, the steps at which some series with it has a value.
    fn signature_presence(
        &mut self,
        series: &[Series],
        matching: &Matching,
        steps: usize,
    ) -> Result<HashMap<Labels, Vec<bool>>, QueryError> {
        let mut presence: HashMap<Labels, Vec<bool>> = HashMap::default();
        for s in series {
            self.tick()?;
            let steps_of = presence
                .entry(signature(&s.labels, matching))
                .or_insert_with(|| vec![false; steps]);
            for p in &s.points {
                steps_of[p.step as usize] = true;
            }
        }
        Ok(presence)
    }

    /// Arithmetic and comparisons between two vectors with one-to-one or many-to-one matching.
    fn vector_vector(
        &mut self,
        b: &Binary,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
        grid: Grid,
    ) -> Result<Vec<Series>, QueryError> {
        let steps = grid.len();
        let m = &b.matching;
        // group_right swaps sides; values are swapped back when applying the operator.
        let swapped = m.card == Cardinality::OneToMany;
        let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
        let one_side = if swapped { "left" } else { "right" };

        // Steps at which the "many" side has anything: Prometheus matches nothing at a step
        // where either side is empty, so its checks only apply where both have values.
        let mut many_present = vec![false; steps];
        for s in &many {
            for p in &s.points {
                many_present[p.step as usize] = true;
            }
        }

        // The "one" side by signature.
        let mut one_by_sig: HashMap<Labels, Vec<usize>> = HashMap::default();
        for (i, s) in one.iter().enumerate() {
            one_by_sig
                .entry(signature(&s.labels, m))
                .or_default()
                .push(i);
        }
        // A signature with several "one" series must not have two of them at a step.
        // Per step, which "one" series holds each such signature.
        let mut one_at: HashMap<&Labels, Vec<Option<usize>>> = HashMap::default();
        for (sig, members) in &one_by_sig {
            if members.len() < 2 {
                continue;
            }
            let mut at: Vec<Option<usize>> = vec![None; steps];
            for &i in members {
                for p in &one[i].points {
                    let step = p.step as usize;
                    if !many_present[step] {
                        continue;
                    }
                    if let Some(other) = at[step] {
                        return Err(QueryError::Execution(format!(
                            "found duplicate series for the match group {} on the {one_side} \
                             hand-side of the operation: [{}, {}];many-to-many matching not \
                             allowed: matching labels must be unique on one side",
                            sig_display(sig),
                            one[i].labels,
                            one[other].labels
                        )));
                    }
                    at[step] = Some(i);
                }
            }
            one_at.insert(sig, at);
        }

        // Many side by signature, to check uniqueness per step where a signature has several.
        let mut many_by_sig: HashMap<Labels, Vec<usize>> = HashMap::default();
        for (i, s) in many.iter().enumerate() {
            let sig = signature(&s.labels, m);
            if one_by_sig.contains_key(&sig) {
                many_by_sig.entry(sig).or_default().push(i);
            }
        }

        // Results in order of the many side; output series keyed by result labels.
        let mut index: HashMap<Labels, usize> = HashMap::default();
        let mut out: Vec<Series> = Vec::new();
        let mut unsorted = false;
        // The signature group of every many series, processed in many-side order.
        let mut order: Vec<(usize, &Labels)> = many_by_sig
            .iter()
            .flat_map(|(sig, members)| members.iter().map(move |&i| (i, sig)))
            .collect();
        order.sort_by_key(|(i, _)| *i);
        // Per signature with several many-side members: (step, result) emitted so far; for
        // one-to-one matching any second result at a step clashes, so the result is not kept.
        let mut emitted: HashMap<&Labels, HashSet<(u32, usize)>> = HashMap::default();
        let mut cached_labels: HashMap<(usize, usize), usize> = HashMap::default();
        for (mi, sig) in order {
            self.tick()?;
            let members = &one_by_sig[sig];
            let shared = many_by_sig[sig].len() > 1;
            for p in &many[mi].points {
                let step = p.step as usize;
                let oi = match one_at.get(sig) {
                    Some(at) => match at[step] {
                        Some(oi) => oi,
                        None => continue,
                    },
                    None => {
                        let oi = members[0];
                        if one[oi]
                            .points
                            .binary_search_by_key(&p.step, |q| q.step)
                            .is_err()
                        {
                            continue;
                        }
                        oi
                    }
                };
                let ov = one[oi]
                    .points
                    .binary_search_by_key(&p.step, |q| q.step)
                    .map(|j| one[oi].points[j].v)
                    .unwrap_or(f64::NAN);
                let (l, r) = if swapped { (ov, p.v) } else { (p.v, ov) };
                let (mut value, keep) = apply(b.op, l, r);
                if b.return_bool {
                    value = f64::from(u8::from(keep));
                } else if !keep {
                    continue;
                }
                let result = match cached_labels.get(&(mi, oi)) {
                    Some(&r) => r,
                    None => {
                        let labels = result_labels(&many[mi].labels, &one[oi].labels, b);
                        let r = *index.entry(labels).or_insert_with_key(|labels| {
                            out.push(Series {
                                labels: labels.clone(),
                                points: Vec::new(),
                            });
                            out.len() - 1
                        });
                        cached_labels.insert((mi, oi), r);
                        r
                    }
                };
                if shared {
                    let key = if m.card == Cardinality::OneToOne {
                        (p.step, usize::MAX)
                    } else {
                        (p.step, result)
                    };
                    if !emitted.entry(sig).or_default().insert(key) {
                        return Err(QueryError::Execution(
                            if m.card == Cardinality::OneToOne {
                                "multiple matches for labels: many-to-one matching must be \
                                 explicit (group_left/group_right)"
                            } else {
                                "multiple matches for labels: grouping labels must ensure \
                                 unique matches"
                            }
                            .to_owned(),
                        ));
                    }
                }
                let points = &mut out[result].points;
                if points.last().is_some_and(|last| last.step >= p.step) {
                    unsorted = true;
                }
                points.push(Point {
                    step: p.step,
                    v: value,
                });
            }
        }
        if unsorted {
            for s in &mut out {
                s.points.sort_by_key(|p| p.step);
                if s.points.windows(2).any(|w| w[0].step == w[1].step) {
                    return Err(same_labelset());
                }
            }
        }
        out.retain(|s| !s.points.is_empty());
        Ok(out)
    }
}

/// Prometheus' spelling of a match group's labels: `{a="b", c="d"}`.
fn sig_display(sig: &Labels) -> String {
    let inner: Vec<String> = sig
        .iter()
        .map(|l| format!("{}={:?}", l.name, &*l.value))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// A vector against a scalar (`scalar_left` when the scalar is the left operand).
fn vector_scalar(
    b: &Binary,
    vector: Vec<Series>,
    scalar: &[f64],
    scalar_left: bool,
) -> Result<Vec<Series>, QueryError> {
    let drop = b.op.drops_metric_name() || b.return_bool;
    let comparison = b.op.is_comparison();
    let out: Vec<Series> = vector
        .into_iter()
        .filter_map(|mut s| {
            s.points.retain_mut(|p| {
                let (l, r) = if scalar_left {
                    (scalar[p.step as usize], p.v)
                } else {
                    (p.v, scalar[p.step as usize])
                };
                let (mut value, keep) = apply(b.op, l, r);
                // A comparison always yields the vector's value, whichever side it is on.
                if comparison && scalar_left {
                    value = r;
                }
                if b.return_bool {
                    p.v = f64::from(u8::from(keep));
                    return true;
                }
                p.v = value;
                keep
            });
            if s.points.is_empty() {
                return None;
            }
            if drop {
                s.labels = drop_name(&s.labels);
            }
            Some(s)
        })
        .collect();
    if drop {
        merge_same_labels(out)
    } else {
        Ok(out)
    }
}
