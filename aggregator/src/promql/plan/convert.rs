//! Conversion of promql-parser's AST into a [`Plan`], with Prometheus 2.x's marking of
//! step-invariant subtrees.

use std::time::{Duration, SystemTime};

use promql_parser::{
    label::{MatchOp as ParsedOp, Matcher as ParsedMatcher, Matchers as ParsedMatchers},
    parser::{
        AggregateExpr, AtModifier, BinaryExpr, Call as ParsedCall, Expr, LabelModifier, Offset,
        SubqueryExpr, VectorMatchCardinality, VectorSelector, token,
    },
};
use regex::Regex;

use super::{
    AggOp, Aggregate, BinOp, Binary, Call, Cardinality, Func, Grouping, Matching, MatrixSource,
    Plan, PlanContext, RangeCall, Selector, Subquery,
    functions::{date_fn, range_fn, simple_fn, time_dependent},
};
use crate::{
    promql::QueryError,
    store::{Labels, Matcher},
};

pub(super) fn wrap_if(plan: Plan, invariant: bool) -> Plan {
    match plan {
        Plan::Number(_) | Plan::String(_) | Plan::Matrix(_) | Plan::StepInvariant(_) => plan,
        other if invariant => Plan::StepInvariant(Box::new(other)),
        other => other,
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
    }
}

fn at_ms(at: &Option<AtModifier>, ctx: &PlanContext) -> Option<i64> {
    at.as_ref().map(|at| match at {
        AtModifier::Start => ctx.start_ms,
        AtModifier::End => ctx.end_ms,
        AtModifier::At(time) => system_time_ms(*time),
    })
}

fn system_time_ms(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => millis(d),
        Err(e) => -millis(e.duration()),
    }
}

fn unsupported(what: impl Into<String>) -> QueryError {
    QueryError::Unsupported(what.into())
}

fn execution(message: impl Into<String>) -> QueryError {
    QueryError::Execution(message.into())
}

/// Converts `expr`; the flag says whether it is step invariant (Prometheus' rules: selectors
/// and subqueries with `@`, literals, and nodes whose children all are, except the functions
/// whose result depends on the evaluation time).
pub(super) fn convert(expr: &Expr, ctx: &PlanContext) -> Result<(Plan, bool), QueryError> {
    match expr {
        Expr::NumberLiteral(n) => Ok((Plan::Number(n.val), true)),
        Expr::StringLiteral(s) => Ok((Plan::String(s.val.clone()), true)),
        Expr::Paren(p) => convert(&p.expr, ctx),
        Expr::Unary(u) => {
            let (inner, invariant) = convert(&u.expr, ctx)?;
            Ok((Plan::Neg(Box::new(inner)), invariant))
        }
        Expr::VectorSelector(vs) => {
            let selector = selector(vs, ctx)?;
            let invariant = selector.at_ms.is_some();
            Ok((Plan::Selector(selector), invariant))
        }
        Expr::MatrixSelector(ms) => {
            let selector = selector(&ms.vs, ctx)?;
            let invariant = selector.at_ms.is_some();
            Ok((
                Plan::Matrix(MatrixSource::Selector {
                    selector,
                    range_ms: millis(ms.range),
                }),
                invariant,
            ))
        }
        Expr::Subquery(sq) => {
            let (subquery, invariant) = subquery(sq, ctx)?;
            Ok((
                Plan::Matrix(MatrixSource::Subquery(Box::new(subquery))),
                invariant,
            ))
        }
        Expr::Binary(b) => binary(b, ctx),
        Expr::Aggregate(a) => aggregate(a, ctx),
        Expr::Call(c) => call(c, ctx),
        Expr::Extension(_) => Err(unsupported("extension expressions")),
    }
}

fn subquery(sq: &SubqueryExpr, ctx: &PlanContext) -> Result<(Subquery, bool), QueryError> {
    let (inner, inner_invariant) = convert(&sq.expr, ctx)?;
    let step_ms = match sq.step {
        Some(step) => millis(step),
        None => ctx.default_subquery_step_ms,
    };
    if step_ms <= 0 {
        return Err(QueryError::Parse(format!(
            "zero or negative subquery step in {sq}"
        )));
    }
    let at = at_ms(&sq.at, ctx);
    Ok((
        Subquery {
            expr: wrap_if(inner, inner_invariant),
            range_ms: millis(sq.range),
            step_ms,
            offset_ms: offset_ms(&sq.offset),
            at_ms: at,
        },
        at.is_some(),
    ))
}

fn selector(vs: &VectorSelector, ctx: &PlanContext) -> Result<Selector, QueryError> {
    Ok(Selector {
        groups: matcher_groups(vs)?,
        offset_ms: offset_ms(&vs.offset),
        at_ms: at_ms(&vs.at, ctx),
        absent_labels: absent_labels(&vs.matchers),
        text: vs.to_string(),
    })
}

/// The labels `absent()` reports for a selector: each label with exactly one matcher, an
/// equality; labels with any other matcher are left out.
fn absent_labels(matchers: &ParsedMatchers) -> Labels {
    if !matchers.or_matchers.is_empty() {
        return Labels::default();
    }
    let mut set: Vec<(&str, &str)> = Vec::new();
    let mut unusable: Vec<&str> = Vec::new();
    for m in &matchers.matchers {
        if m.name == sonde_proto::names::METRIC_NAME {
            continue;
        }
        match m.op {
            ParsedOp::Equal if !set.iter().any(|(n, _)| *n == m.name) => {
                set.push((&m.name, &m.value));
            }
            _ => unusable.push(&m.name),
        }
    }
    Labels::from_pairs(set.into_iter().filter(|(n, _)| !unusable.contains(n)))
}

/// The pattern a parsed regex matcher was compiled from, after promql-parser's escaping of
/// Go-only syntax (`a{b}` with a literal brace), without its anchors.
fn regex_source(op: &ParsedOp, raw: &str) -> String {
    match op {
        ParsedOp::Re(r) | ParsedOp::NotRe(r) => r
            .as_str()
            .strip_prefix("^(?:")
            .and_then(|s| s.strip_suffix(")$"))
            .map_or_else(|| raw.to_owned(), str::to_owned),
        _ => raw.to_owned(),
    }
}

fn store_matcher(m: &ParsedMatcher) -> Result<Matcher, QueryError> {
    Ok(match &m.op {
        ParsedOp::Equal => Matcher::equal(m.name.clone(), m.value.clone()),
        ParsedOp::NotEqual => Matcher {
            name: m.name.clone(),
            op: crate::store::MatchOp::NotEqual(m.value.clone()),
        },
        op @ ParsedOp::Re(_) => Matcher::regex(m.name.clone(), &regex_source(op, &m.value), false)
            .map_err(|e| QueryError::Parse(e.to_string()))?,
        op @ ParsedOp::NotRe(_) => {
            Matcher::regex(m.name.clone(), &regex_source(op, &m.value), true)
                .map_err(|e| QueryError::Parse(e.to_string()))?
        }
    })
}

/// A selector's matchers as store matchers: one conjunction per `or` branch, each with the
/// metric-name matcher when the selector names a metric.
pub fn matcher_groups(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let convert = |group: &[ParsedMatcher]| -> Result<Vec<Matcher>, QueryError> {
        let mut out: Vec<Matcher> = Vec::with_capacity(group.len() + 1);
        if let Some(name) = &vs.name {
            out.push(Matcher::equal(
                sonde_proto::names::METRIC_NAME,
                name.clone(),
            ));
        }
        for m in group {
            out.push(store_matcher(m)?);
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

fn label_list(labels: &promql_parser::label::Labels) -> Vec<String> {
    let mut out: Vec<String> = labels.labels.clone();
    out.sort();
    out.dedup();
    out
}

fn binary(b: &BinaryExpr, ctx: &PlanContext) -> Result<(Plan, bool), QueryError> {
    let op = match b.op.id() {
        token::T_ADD => BinOp::Add,
        token::T_SUB => BinOp::Sub,
        token::T_MUL => BinOp::Mul,
        token::T_DIV => BinOp::Div,
        token::T_MOD => BinOp::Mod,
        token::T_POW => BinOp::Pow,
        token::T_ATAN2 => BinOp::Atan2,
        token::T_EQLC => BinOp::Eq,
        token::T_NEQ => BinOp::Ne,
        token::T_GTR => BinOp::Gt,
        token::T_LSS => BinOp::Lt,
        token::T_GTE => BinOp::Ge,
        token::T_LTE => BinOp::Le,
        token::T_LAND => BinOp::And,
        token::T_LOR => BinOp::Or,
        token::T_LUNLESS => BinOp::Unless,
        _ => return Err(unsupported(format!("the operator `{}`", b.op))),
    };
    let modifier = b.modifier.clone().unwrap_or_default();
    if modifier.fill_values.lhs.is_some() || modifier.fill_values.rhs.is_some() {
        return Err(unsupported("fill modifiers on binary operators"));
    }
    let card = match &modifier.card {
        VectorMatchCardinality::OneToOne => Cardinality::OneToOne,
        VectorMatchCardinality::ManyToOne(_) => Cardinality::ManyToOne,
        VectorMatchCardinality::OneToMany(_) => Cardinality::OneToMany,
        VectorMatchCardinality::ManyToMany => Cardinality::ManyToMany,
    };
    let card = if op.is_set() {
        Cardinality::ManyToMany
    } else {
        card
    };
    let include = modifier
        .card
        .labels()
        .map(|l| l.labels.clone())
        .unwrap_or_default();
    let (on, labels) = match &modifier.matching {
        Some(LabelModifier::Include(l)) => (true, label_list(l)),
        Some(LabelModifier::Exclude(l)) => (false, label_list(l)),
        None => (false, Vec::new()),
    };
    let (lhs, lhs_invariant) = convert(&b.lhs, ctx)?;
    let (rhs, rhs_invariant) = convert(&b.rhs, ctx)?;
    let invariant = lhs_invariant && rhs_invariant;
    let (lhs, rhs) = if invariant {
        (lhs, rhs)
    } else {
        (wrap_if(lhs, lhs_invariant), wrap_if(rhs, rhs_invariant))
    };
    Ok((
        Plan::Binary(Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            return_bool: modifier.return_bool,
            matching: Matching {
                card,
                on,
                labels,
                include,
            },
        }),
        invariant,
    ))
}

fn aggregate(a: &AggregateExpr, ctx: &PlanContext) -> Result<(Plan, bool), QueryError> {
    let op = match a.op.id() {
        token::T_SUM => AggOp::Sum,
        token::T_AVG => AggOp::Avg,
        token::T_COUNT => AggOp::Count,
        token::T_MIN => AggOp::Min,
        token::T_MAX => AggOp::Max,
        token::T_GROUP => AggOp::Group,
        token::T_STDDEV => AggOp::Stddev,
        token::T_STDVAR => AggOp::Stdvar,
        token::T_TOPK => AggOp::Topk,
        token::T_BOTTOMK => AggOp::Bottomk,
        token::T_QUANTILE => AggOp::Quantile,
        token::T_COUNT_VALUES => AggOp::CountValues,
        token::T_LIMITK => AggOp::Limitk,
        token::T_LIMIT_RATIO => AggOp::LimitRatio,
        _ => return Err(unsupported(format!("the aggregation `{}`", a.op))),
    };
    let grouping = match &a.modifier {
        None => Grouping::By(Vec::new()),
        Some(LabelModifier::Include(l)) => Grouping::By(label_list(l)),
        Some(LabelModifier::Exclude(l)) => Grouping::Without(label_list(l)),
    };
    let (expr, invariant) = convert(&a.expr, ctx)?;
    let mut value_label = None;
    let mut param = None;
    if let Some(p) = &a.param {
        if op == AggOp::CountValues {
            let label = string_arg(p, "count_values")?;
            if !is_label_name(&label) {
                return Err(execution(format!("invalid label name {label:?}")));
            }
            value_label = Some(label);
        } else {
            // Prometheus 2.x does not mark the parameter step invariant on its own; it is
            // evaluated at every step (or once, with the aggregation, when that is invariant).
            let (p, _) = convert(p, ctx)?;
            param = Some(Box::new(p));
        }
    }
    if matches!(
        op,
        AggOp::Topk | AggOp::Bottomk | AggOp::Quantile | AggOp::Limitk | AggOp::LimitRatio
    ) && param.is_none()
    {
        return Err(QueryError::Parse(format!(
            "parameter missing in aggregation {}",
            a.op
        )));
    }
    Ok((
        Plan::Aggregate(Aggregate {
            op,
            param,
            value_label,
            grouping,
            // Like Prometheus, an aggregation never wraps its operand: when the operand is
            // invariant, so is the aggregation, and its parent wraps it.
            expr: Box::new(expr),
        }),
        invariant,
    ))
}

/// A string argument: a (possibly parenthesized) string literal.
fn string_arg(expr: &Expr, function: &str) -> Result<String, QueryError> {
    match expr {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        Expr::Paren(p) => string_arg(&p.expr, function),
        _ => Err(unsupported(format!(
            "a computed string argument to {function}()"
        ))),
    }
}

/// Prometheus' (2.x) label name syntax.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unparen(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

fn call(c: &ParsedCall, ctx: &PlanContext) -> Result<(Plan, bool), QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| unparen(a)).collect();
    // Every argument converted, with its invariance.
    let mut converted: Vec<(Plan, bool)> = Vec::with_capacity(args.len());
    for arg in &args {
        converted.push(convert(arg, ctx)?);
    }
    let invariant = !time_dependent(name) && converted.iter().all(|(_, i)| *i);
    // When the call as a whole is not invariant, its invariant arguments are.
    let take = |converted: Vec<(Plan, bool)>| -> Vec<Plan> {
        converted
            .into_iter()
            .map(|(p, i)| if invariant { p } else { wrap_if(p, i) })
            .collect()
    };

    if let Some(func) = range_fn(name) {
        let mut matrix = None;
        let mut scalars = Vec::new();
        for plan in take(converted) {
            match plan {
                Plan::Matrix(source) if matrix.is_none() => matrix = Some(source),
                other => scalars.push(other),
            }
        }
        let source = matrix.ok_or_else(|| {
            QueryError::Parse(format!("expected a range vector argument in {name}()"))
        })?;
        return Ok((
            Plan::RangeCall(RangeCall {
                func,
                source,
                scalars,
            }),
            invariant,
        ));
    }

    let strings = |from: usize| -> Result<Vec<String>, QueryError> {
        args[from..].iter().map(|a| string_arg(a, name)).collect()
    };
    let func = if let Some(f) = simple_fn(name) {
        Func::Simple(name, f)
    } else if let Some(d) = date_fn(name) {
        Func::Date(d)
    } else {
        match name {
            "round" => Func::Round,
            "clamp" => Func::Clamp,
            "clamp_min" => Func::ClampMin,
            "clamp_max" => Func::ClampMax,
            "timestamp" => Func::Timestamp,
            "vector" => Func::Vector,
            "scalar" => Func::Scalar,
            "time" => Func::Time,
            "pi" => Func::Pi,
            "sort" => Func::Sort,
            "sort_desc" => Func::SortDesc,
            "histogram_quantile" => Func::HistogramQuantile,
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_fraction"
            | "histogram_stddev" | "histogram_stdvar" => Func::NativeHistogramOnly(name),
            "absent" => Func::Absent(match args.first() {
                Some(Expr::VectorSelector(vs)) => absent_labels(&vs.matchers),
                _ => Labels::default(),
            }),
            "label_replace" => {
                let s = strings(1)?;
                let [dst, replacement, src, regex] = <[String; 4]>::try_from(s)
                    .map_err(|_| QueryError::Parse("label_replace takes 5 arguments".into()))?;
                let compiled = Regex::new(&format!("^(?:{regex})$")).map_err(|_| {
                    execution(format!(
                        "invalid regular expression in label_replace(): {regex}"
                    ))
                })?;
                if !is_label_name(&dst) {
                    return Err(execution(format!(
                        "invalid destination label name in label_replace(): {dst}"
                    )));
                }
                Func::LabelReplace {
                    dst,
                    replacement,
                    src,
                    regex: compiled,
                }
            }
            "label_join" => {
                let mut s = strings(1)?;
                if s.len() < 2 {
                    return Err(QueryError::Parse(
                        "label_join takes at least 3 arguments".into(),
                    ));
                }
                let srcs = s.split_off(2);
                let separator = s.pop().unwrap_or_default();
                let dst = s.pop().unwrap_or_default();
                if !is_label_name(&dst) {
                    return Err(execution(format!(
                        "invalid destination label name in label_join(): {dst}"
                    )));
                }
                if let Some(bad) = srcs.iter().find(|s| !is_label_name(s)) {
                    return Err(execution(format!(
                        "invalid source label name in label_join(): {bad}"
                    )));
                }
                Func::LabelJoin {
                    dst,
                    separator,
                    srcs,
                }
            }
            other => return Err(unsupported(format!("the function `{other}()`"))),
        }
    };
    // String arguments are folded into the function; keep only the others.
    let keep = match &func {
        Func::LabelReplace { .. } | Func::LabelJoin { .. } => 1,
        _ => converted.len(),
    };
    converted.truncate(keep);
    Ok((
        Plan::Call(Call {
            func,
            args: take(converted),
        }),
        invariant,
    ))
}
