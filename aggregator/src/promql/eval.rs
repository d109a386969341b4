//! Tree-walking evaluation of a parsed expression at one timestamp (instant queries) or at
//! every step (range queries).

use std::{collections::BTreeMap, collections::HashMap, time::Instant};

use promql_parser::{
    label::{MatchOp as ParsedOp, Matcher as ParsedMatcher},
    parser::{
        AtModifier, BinaryExpr, Expr, MatrixSelector, Offset, VectorMatchCardinality,
        VectorSelector,
        token::{self, TokenType},
        value::ValueType,
    },
};

use super::{InstantSample, QueryError, RangeSeries, STALE_NAN_BITS, Value};
use crate::{
    config::QueryConfig,
    store::{Labels, Matcher, Sample, SeriesSamples, Store},
};

pub(super) struct Evaluator<'a> {
    store: &'a Store,
    lookback_ms: i64,
    start_ms: i64,
    end_ms: i64,
    deadline: Instant,
    loaded: usize,
    max_samples: usize,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

impl<'a> Evaluator<'a> {
    pub(super) fn new(
        store: &'a Store,
        config: &QueryConfig,
        start_ms: i64,
        end_ms: i64,
        deadline: Instant,
    ) -> Self {
        Self {
            store,
            lookback_ms: millis(config.lookback_delta),
            start_ms,
            end_ms,
            deadline,
            loaded: 0,
            max_samples: config.max_samples,
        }
    }

    fn check_deadline(&self, phase: &'static str) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout { phase });
        }
        Ok(())
    }

    pub(super) fn eval_range(
        &mut self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Value, QueryError> {
        match expr.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            other => {
                return Err(QueryError::Parse(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    if other == ValueType::Matrix {
                        "range vector"
                    } else {
                        "string"
                    }
                )));
            }
        }
        let mut series: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        let mut t = start;
        while t <= end {
            self.check_deadline("range evaluation")?;
            match self.eval(expr, t)? {
                Value::Scalar { v, .. } => series
                    .entry(Labels::default())
                    .or_default()
                    .push(Sample { t, v }),
                Value::Vector(samples) => {
                    for s in samples {
                        series
                            .entry(s.labels)
                            .or_default()
                            .push(Sample { t, v: s.v });
                    }
                }
                other => {
                    return Err(QueryError::Execution(format!(
                        "range query evaluated to {}",
                        other.type_name()
                    )));
                }
            }
            t += step;
        }
        Ok(Value::Matrix(
            series
                .into_iter()
                .map(|(labels, samples)| RangeSeries { labels, samples })
                .collect(),
        ))
    }

    pub(super) fn eval(&mut self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar { t, v: n.val }),
            Expr::StringLiteral(s) => Ok(Value::String {
                t,
                v: s.val.clone(),
            }),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar { t, v } => Ok(Value::Scalar { t, v: -v }),
                Value::Vector(samples) => Ok(Value::Vector(
                    samples
                        .into_iter()
                        .map(|s| InstantSample {
                            labels: drop_name(&s.labels),
                            t: s.t,
                            v: -s.v,
                        })
                        .collect(),
                )),
                other => Err(QueryError::Execution(format!(
                    "unary minus on a {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => self.vector_selector(vs, t).map(Value::Vector),
            Expr::MatrixSelector(ms) => self.matrix_selector(ms, t).map(Value::Matrix),
            Expr::Binary(b) => self.binary(b, t),
            Expr::Aggregate(a) => Err(QueryError::Unsupported(format!(
                "the aggregation `{}`",
                a.op
            ))),
            Expr::Call(c) => Err(QueryError::Unsupported(format!(
                "the function `{}()`",
                c.func.name
            ))),
            Expr::Subquery(_) => Err(QueryError::Unsupported("a subquery".to_owned())),
            Expr::Extension(_) => Err(QueryError::Unsupported(
                "an extension expression".to_owned(),
            )),
        }
    }

    /// The reference time of a selector: `@` if given, minus `offset`.
    fn reference_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start_ms,
            Some(AtModifier::End) => self.end_ms,
            Some(AtModifier::At(time)) => match time.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => millis(d),
                Err(e) => -millis(e.duration()),
            },
        };
        match offset {
            None => base,
            Some(Offset::Pos(d)) => base - millis(*d),
            Some(Offset::Neg(d)) => base + millis(*d),
        }
    }

    fn select(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, QueryError> {
        self.check_deadline("series selection")?;
        let groups = matcher_groups(vs)?;
        let mut out: Vec<SeriesSamples> = Vec::new();
        for group in &groups {
            out.extend(self.store.select(group, mint, maxt)?);
        }
        if groups.len() > 1 {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.dedup_by(|a, b| a.labels == b.labels);
        }
        self.loaded += out.iter().map(|s| s.samples.len()).sum::<usize>();
        if self.loaded > self.max_samples {
            return Err(QueryError::TooManySamples {
                limit: self.max_samples,
            });
        }
        Ok(out)
    }

    fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<InstantSample>, QueryError> {
        let reference = self.reference_time(&vs.at, &vs.offset, t);
        let mut out: Vec<InstantSample> = self
            .select(vs, reference - self.lookback_ms, reference)?
            .into_iter()
            .filter_map(|series| {
                let last = series.samples.last()?;
                (!is_stale(last.v)).then_some(InstantSample {
                    labels: series.labels,
                    t,
                    v: last.v,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    fn matrix_selector(
        &mut self,
        ms: &MatrixSelector,
        t: i64,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        let reference = self.reference_time(&ms.vs.at, &ms.vs.offset, t);
        let mut out: Vec<RangeSeries> = self
            .select(&ms.vs, reference - millis(ms.range), reference)?
            .into_iter()
            .filter_map(|series| {
                let samples: Vec<Sample> = series
                    .samples
                    .into_iter()
                    .filter(|s| !is_stale(s.v))
                    .collect();
                (!samples.is_empty()).then_some(RangeSeries {
                    labels: series.labels,
                    samples,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    fn binary(&mut self, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
        let op = b.op.id();
        if matches!(op, token::T_LAND | token::T_LOR | token::T_LUNLESS) {
            return Err(QueryError::Unsupported(format!(
                "the set operator `{}`",
                b.op
            )));
        }
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        if let Some(m) = &b.modifier
            && (m.matching.is_some() || m.card != VectorMatchCardinality::OneToOne)
        {
            return Err(QueryError::Unsupported(
                "vector matching with on/ignoring/group_left/group_right".to_owned(),
            ));
        }
        let drop_metric_name = return_bool || !b.op.is_comparison_operator();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let finish = |labels: &Labels| {
            if drop_metric_name {
                drop_name(labels)
            } else {
                labels.clone()
            }
        };
        match (lhs, rhs) {
            (Value::Scalar { v: l, .. }, Value::Scalar { v: r, .. }) => {
                let (v, keep) = apply(op, l, r)?;
                let v = if b.op.is_comparison_operator() {
                    f64::from(u8::from(keep))
                } else {
                    v
                };
                Ok(Value::Scalar { t, v })
            }
            (Value::Vector(vector), Value::Scalar { v: scalar, .. }) => {
                let mut out = Vec::with_capacity(vector.len());
                for s in vector {
                    if let Some(v) = vector_scalar(op, s.v, scalar, false, return_bool)? {
                        out.push(InstantSample {
                            labels: finish(&s.labels),
                            t,
                            v,
                        });
                    }
                }
                Ok(Value::Vector(out))
            }
            (Value::Scalar { v: scalar, .. }, Value::Vector(vector)) => {
                let mut out = Vec::with_capacity(vector.len());
                for s in vector {
                    if let Some(v) = vector_scalar(op, scalar, s.v, true, return_bool)? {
                        out.push(InstantSample {
                            labels: finish(&s.labels),
                            t,
                            v,
                        });
                    }
                }
                Ok(Value::Vector(out))
            }
            (Value::Vector(lhs), Value::Vector(rhs)) => {
                let mut right: HashMap<Labels, &InstantSample> = HashMap::with_capacity(rhs.len());
                for s in &rhs {
                    let signature = drop_name(&s.labels);
                    if let Some(previous) = right.insert(signature.clone(), s) {
                        return Err(QueryError::Execution(format!(
                            "found duplicate series for the match group {signature} on the right \
                             hand-side of the operation: [{}, {}];many-to-many matching not \
                             allowed: matching labels must be unique on one side",
                            previous.labels, s.labels
                        )));
                    }
                }
                let mut matched: HashMap<Labels, &Labels> = HashMap::new();
                let mut out = Vec::new();
                for s in &lhs {
                    let signature = drop_name(&s.labels);
                    let Some(r) = right.get(&signature) else {
                        continue;
                    };
                    if matched.insert(signature.clone(), &s.labels).is_some() {
                        return Err(QueryError::Execution(format!(
                            "multiple matches for labels: many-to-one matching must be explicit \
                             (group_left/group_right) for {signature}"
                        )));
                    }
                    let (v, keep) = apply(op, s.v, r.v)?;
                    let v = match (b.op.is_comparison_operator(), return_bool) {
                        (true, true) => f64::from(u8::from(keep)),
                        (true, false) if !keep => continue,
                        _ => v,
                    };
                    out.push(InstantSample {
                        labels: finish(&s.labels),
                        t,
                        v,
                    });
                }
                Ok(Value::Vector(out))
            }
            (l, r) => Err(QueryError::Execution(format!(
                "binary operator `{}` between {} and {}",
                b.op,
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

/// Prometheus' vector/scalar element operation: comparisons keep the vector's value (or 0/1
/// with `bool`); `None` drops the element.
fn vector_scalar(
    op: u16,
    lhs: f64,
    rhs: f64,
    scalar_on_left: bool,
    return_bool: bool,
) -> Result<Option<f64>, QueryError> {
    let (mut v, keep) = apply(op, lhs, rhs)?;
    let comparison = is_comparison(op);
    if comparison && scalar_on_left {
        v = rhs;
    }
    if return_bool {
        return Ok(Some(f64::from(u8::from(keep))));
    }
    Ok((keep || !comparison).then_some(v))
}

fn is_comparison(op: u16) -> bool {
    matches!(
        op,
        token::T_EQLC | token::T_NEQ | token::T_LTE | token::T_LSS | token::T_GTE | token::T_GTR
    )
}

/// Applies an arithmetic or comparison operator; comparisons return `(lhs, condition)`.
fn apply(op: u16, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        // Go's math.Mod: result has the sign of the dividend, like Rust's `%` on floats.
        token::T_MOD => (l % r, true),
        token::T_POW => (l.powf(r), true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        other => {
            return Err(QueryError::Unsupported(format!(
                "the operator `{}`",
                TokenType::new(other)
            )));
        }
    })
}

fn drop_name(labels: &Labels) -> Labels {
    labels.without(|name| name == sonde_proto::names::METRIC_NAME)
}

/// The selector's matchers as store matchers: one conjunction per `or` branch, each with the
/// metric name matcher when the selector names a metric.
pub(super) fn matcher_groups(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let convert = |group: &[ParsedMatcher]| -> Result<Vec<Matcher>, QueryError> {
        let mut out: Vec<Matcher> = Vec::with_capacity(group.len() + 1);
        if let Some(name) = &vs.name {
            out.push(Matcher::equal(
                sonde_proto::names::METRIC_NAME,
                name.clone(),
            ));
        }
        for m in group {
            out.push(match &m.op {
                ParsedOp::Equal => Matcher::equal(m.name.clone(), m.value.clone()),
                ParsedOp::NotEqual => Matcher {
                    name: m.name.clone(),
                    op: crate::store::MatchOp::NotEqual(m.value.clone()),
                },
                ParsedOp::Re(_) => Matcher::regex(m.name.clone(), &m.value, false)
                    .map_err(|e| QueryError::Parse(e.to_string()))?,
                ParsedOp::NotRe(_) => Matcher::regex(m.name.clone(), &m.value, true)
                    .map_err(|e| QueryError::Parse(e.to_string()))?,
            });
        }
        Ok(out)
    };
    if vs.matchers.or_matchers.is_empty() {
        Ok(vec![convert(&vs.matchers.matchers)?])
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|group| convert(group))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::promql::Engine;

    fn engine() -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = |t: i64, v: f64| Sample { t, v };
        store
            .append(
                Labels::from_pairs([("__name__", "up"), ("job", "a")]),
                &[s(0, 1.0), s(60_000, 1.0), s(120_000, 0.0)],
            )
            .unwrap();
        store
            .append(
                Labels::from_pairs([("__name__", "up"), ("job", "b")]),
                &[s(0, 1.0), s(60_000, f64::from_bits(STALE_NAN_BITS))],
            )
            .unwrap();
        store
            .append(
                Labels::from_pairs([("__name__", "load"), ("job", "a")]),
                &[s(0, 2.0), s(60_000, 4.0)],
            )
            .unwrap();
        (Engine::new(store, QueryConfig::default()), dir)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn vector(value: Value) -> Vec<(String, f64)> {
        match value {
            Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
            other => panic!("expected a vector, got {other:?}"),
        }
    }

    #[test]
    fn lookback_and_stale_markers() {
        let (engine, _dir) = engine();
        // At 90 s: job=a's latest sample is 60 s; job=b ended with a stale marker at 60 s.
        let got = vector(engine.instant("up", 90_000, deadline()).unwrap());
        assert_eq!(got, [(r#"up{job="a"}"#.to_owned(), 1.0)]);
        // At 30 s both have the 0 s sample.
        assert_eq!(
            vector(engine.instant("up", 30_000, deadline()).unwrap()).len(),
            2
        );
        // Lookback is 5 minutes, inclusive: 120 s + 300 s still sees the 120 s sample.
        assert_eq!(
            vector(engine.instant("up", 420_000, deadline()).unwrap()).len(),
            1
        );
        assert!(vector(engine.instant("up", 420_001, deadline()).unwrap()).is_empty());
    }

    #[test]
    fn offset_and_at() {
        let (engine, _dir) = engine();
        let got = vector(
            engine
                .instant("load offset 1m", 60_000, deadline())
                .unwrap(),
        );
        assert_eq!(got[0].1, 2.0);
        let got = vector(engine.instant("load @ 60", 0, deadline()).unwrap());
        assert_eq!(got[0].1, 4.0);
    }

    #[test]
    fn arithmetic_and_comparison() {
        let (engine, _dir) = engine();
        match engine.instant("1 + 1", 0, deadline()).unwrap() {
            Value::Scalar { v, .. } => assert_eq!(v, 2.0),
            other => panic!("{other:?}"),
        }
        let got = vector(engine.instant("load * 2", 60_000, deadline()).unwrap());
        assert_eq!(got, [(r#"{job="a"}"#.to_owned(), 8.0)]);
        // Comparison keeps the name and the vector's value, even with the scalar on the left.
        let got = vector(engine.instant("1 < load", 60_000, deadline()).unwrap());
        assert_eq!(got, [(r#"load{job="a"}"#.to_owned(), 4.0)]);
        let got = vector(engine.instant("load > bool 5", 60_000, deadline()).unwrap());
        assert_eq!(got, [(r#"{job="a"}"#.to_owned(), 0.0)]);
        // One-to-one vector matching ignores the metric name.
        let got = vector(engine.instant("load / up", 60_000, deadline()).unwrap());
        assert_eq!(got, [(r#"{job="a"}"#.to_owned(), 4.0)]);
    }

    #[test]
    fn range_query_builds_a_matrix() {
        let (engine, _dir) = engine();
        let Value::Matrix(m) = engine
            .range("load", 0, 120_000, 60_000, deadline())
            .unwrap()
        else {
            panic!("matrix expected");
        };
        assert_eq!(m.len(), 1);
        let values: Vec<f64> = m[0].samples.iter().map(|s| s.v).collect();
        assert_eq!(values, [2.0, 4.0, 4.0]);
        let err = engine.range("load[1m]", 0, 1, 1, deadline()).unwrap_err();
        assert!(matches!(err, QueryError::Parse(_)), "{err}");
    }

    #[test]
    fn errors_are_typed() {
        let (engine, _dir) = engine();
        assert!(matches!(
            engine.instant("up{", 0, deadline()),
            Err(QueryError::Parse(_))
        ));
        let err = engine.instant("rate(up[5m])", 0, deadline()).unwrap_err();
        assert!(matches!(err, QueryError::Unsupported(_)));
        assert!(err.to_string().contains("rate"), "{err}");
        let past = Instant::now() - Duration::from_secs(1);
        assert!(matches!(
            engine.instant("up", 0, past),
            Err(QueryError::Timeout { .. })
        ));
        let small = Engine::new(
            engine.store.clone(),
            QueryConfig {
                max_samples: 1,
                ..QueryConfig::default()
            },
        );
        assert!(matches!(
            small.instant("up", 60_000, deadline()),
            Err(QueryError::TooManySamples { .. })
        ));
    }
}
