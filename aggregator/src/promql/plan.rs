//! The evaluation plan: promql-parser's AST converted into our own tree.
//!
//! Owns: name resolution (functions, operators, aggregations), `@ start()`/`@ end()` resolved
//! to timestamps, durations in milliseconds, default subquery steps, string arguments checked
//! up front (regexes, label names), and the marking of step-invariant subtrees exactly where
//! Prometheus 2.x marks them (so they are evaluated once per query, not once per step).
//! Must not: touch the store or evaluate anything.

use std::time::{Duration, SystemTime};

use promql_parser::{
    label::{MatchOp as ParsedOp, Matcher as ParsedMatcher, Matchers as ParsedMatchers},
    parser::{
        AggregateExpr, AtModifier, BinaryExpr, Call as ParsedCall, Expr, LabelModifier, Offset,
        SubqueryExpr, VectorMatchCardinality, VectorSelector, token, value::ValueType,
    },
};
use regex::Regex;

use super::{QueryError, math};
use crate::store::{Labels, Matcher};

/// Times the plan resolves `start()` and `end()` against, and the default subquery step.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext {
    /// Query start, milliseconds.
    pub start_ms: i64,
    /// Query end, milliseconds.
    pub end_ms: i64,
    /// Step of a subquery written without one (`x[5m:]`).
    pub default_subquery_step_ms: i64,
}

/// A node of the plan.
#[derive(Debug, Clone)]
pub enum Plan {
    /// A number literal.
    Number(f64),
    /// A string literal.
    String(String),
    /// An instant vector selector.
    Selector(Selector),
    /// A range vector (only as the whole query; functions take [`MatrixSource`] directly).
    Matrix(MatrixSource),
    /// A function over instant vectors and scalars.
    Call(Call),
    /// A function over a range vector.
    RangeCall(RangeCall),
    /// An aggregation.
    Aggregate(Aggregate),
    /// A binary operator.
    Binary(Binary),
    /// Unary minus.
    Neg(Box<Plan>),
    /// A subtree whose value is the same at every step: evaluated once, then repeated.
    StepInvariant(Box<Plan>),
}

/// The value type of a plan node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Scalar.
    Scalar,
    /// Instant vector.
    Vector,
    /// Range vector.
    Matrix,
    /// String.
    String,
}

impl Kind {
    /// Prometheus' name of the type, as in its error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Vector => "instant vector",
            Self::Matrix => "range vector",
            Self::String => "string",
        }
    }
}

/// Series selection: matchers plus time modifiers.
#[derive(Debug, Clone)]
pub struct Selector {
    /// One conjunction of matchers per `or` branch (usually one).
    pub groups: Vec<Vec<Matcher>>,
    /// `offset`, milliseconds (negative for `offset -5m`).
    pub offset_ms: i64,
    /// `@`, resolved to milliseconds.
    pub at_ms: Option<i64>,
    /// Labels `absent()` reports: the equality matchers' labels.
    pub absent_labels: Labels,
    /// The selector as written, for error messages.
    pub text: String,
}

/// Where a range function reads its windows from.
#[derive(Debug, Clone)]
pub enum MatrixSource {
    /// `selector[range]`.
    Selector {
        /// The selector.
        selector: Selector,
        /// Window length, milliseconds.
        range_ms: i64,
    },
    /// `expr[range:step]`.
    Subquery(Box<Subquery>),
}

impl MatrixSource {
    /// Window length, milliseconds.
    pub fn range_ms(&self) -> i64 {
        match self {
            Self::Selector { range_ms, .. } => *range_ms,
            Self::Subquery(s) => s.range_ms,
        }
    }

    /// The `@` time, if any.
    pub fn at_ms(&self) -> Option<i64> {
        match self {
            Self::Selector { selector, .. } => selector.at_ms,
            Self::Subquery(s) => s.at_ms,
        }
    }

    /// The offset, milliseconds.
    pub fn offset_ms(&self) -> i64 {
        match self {
            Self::Selector { selector, .. } => selector.offset_ms,
            Self::Subquery(s) => s.offset_ms,
        }
    }

    /// Labels `absent_over_time()` reports.
    pub fn absent_labels(&self) -> Labels {
        match self {
            Self::Selector { selector, .. } => selector.absent_labels.clone(),
            Self::Subquery(_) => Labels::default(),
        }
    }
}

/// `expr[range:step] @ at offset offset`.
#[derive(Debug, Clone)]
pub struct Subquery {
    /// The inner expression (an instant vector).
    pub expr: Plan,
    /// Window length, milliseconds.
    pub range_ms: i64,
    /// Inner evaluation step, milliseconds.
    pub step_ms: i64,
    /// Offset, milliseconds.
    pub offset_ms: i64,
    /// `@`, milliseconds.
    pub at_ms: Option<i64>,
}

/// Functions over instant vectors and scalars.
#[derive(Debug, Clone)]
pub enum Func {
    /// Element-wise math that drops the metric name (`abs`, `ln`, `sin`, …).
    Simple(&'static str, fn(f64) -> f64),
    /// `round(v, to_nearest)`.
    Round,
    /// `clamp(v, min, max)`.
    Clamp,
    /// `clamp_min(v, min)`.
    ClampMin,
    /// `clamp_max(v, max)`.
    ClampMax,
    /// Calendar functions of a Unix time (`hour`, `month`, …); `vector(time())` without an
    /// argument.
    Date(DateFn),
    /// `timestamp(v)`.
    Timestamp,
    /// `vector(s)`.
    Vector,
    /// `scalar(v)`.
    Scalar,
    /// `time()`.
    Time,
    /// `pi()`.
    Pi,
    /// `absent(v)` with the labels it reports.
    Absent(Labels),
    /// `sort(v)`.
    Sort,
    /// `sort_desc(v)`.
    SortDesc,
    /// `label_replace(v, dst, replacement, src, regex)`.
    LabelReplace {
        /// Destination label.
        dst: String,
        /// Replacement template (`$1`, `${name}`).
        replacement: String,
        /// Source label.
        src: String,
        /// The anchored regex.
        regex: Regex,
    },
    /// `label_join(v, dst, separator, src...)`.
    LabelJoin {
        /// Destination label.
        dst: String,
        /// Separator.
        separator: String,
        /// Source labels.
        srcs: Vec<String>,
    },
    /// `histogram_quantile(φ, buckets)` over classic `le` buckets.
    HistogramQuantile,
    /// Functions that only read native histograms (`histogram_count`, …): float samples are
    /// ignored, as in Prometheus, so over our float-only data they answer an empty vector.
    NativeHistogramOnly(&'static str),
}

/// Calendar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFn {
    /// `day_of_month`
    DayOfMonth,
    /// `day_of_week`
    DayOfWeek,
    /// `day_of_year`
    DayOfYear,
    /// `days_in_month`
    DaysInMonth,
    /// `hour`
    Hour,
    /// `minute`
    Minute,
    /// `month`
    Month,
    /// `year`
    Year,
}

/// A call of a [`Func`].
#[derive(Debug, Clone)]
pub struct Call {
    /// The function.
    pub func: Func,
    /// Arguments (string arguments are folded into `func`).
    pub args: Vec<Plan>,
}

/// Functions over range vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFn {
    /// `rate`
    Rate,
    /// `increase`
    Increase,
    /// `delta`
    Delta,
    /// `irate`
    Irate,
    /// `idelta`
    Idelta,
    /// `avg_over_time`
    AvgOverTime,
    /// `min_over_time`
    MinOverTime,
    /// `max_over_time`
    MaxOverTime,
    /// `sum_over_time`
    SumOverTime,
    /// `count_over_time`
    CountOverTime,
    /// `quantile_over_time(φ, m)`
    QuantileOverTime,
    /// `stddev_over_time`
    StddevOverTime,
    /// `stdvar_over_time`
    StdvarOverTime,
    /// `mad_over_time`
    MadOverTime,
    /// `last_over_time`
    LastOverTime,
    /// `first_over_time`
    FirstOverTime,
    /// `present_over_time`
    PresentOverTime,
    /// `absent_over_time`
    AbsentOverTime,
    /// `changes`
    Changes,
    /// `resets`
    Resets,
    /// `deriv`
    Deriv,
    /// `predict_linear(m, t)`
    PredictLinear,
    /// `holt_winters(m, sf, tf)` (also `double_exponential_smoothing`)
    HoltWinters,
}

/// A call of a [`RangeFn`].
#[derive(Debug, Clone)]
pub struct RangeCall {
    /// The function.
    pub func: RangeFn,
    /// Its range-vector argument.
    pub source: MatrixSource,
    /// Its scalar arguments in order (φ for quantile_over_time, t for predict_linear, sf and
    /// tf for holt_winters).
    pub scalars: Vec<Plan>,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `group`
    Group,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk`
    Topk,
    /// `bottomk`
    Bottomk,
    /// `quantile`
    Quantile,
    /// `count_values`
    CountValues,
    /// `limitk`
    Limitk,
    /// `limit_ratio`
    LimitRatio,
}

/// `by (...)` or `without (...)`; labels sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// Keep only these labels.
    By(Vec<String>),
    /// Drop these labels and the metric name.
    Without(Vec<String>),
}

/// An aggregation.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// The operator.
    pub op: AggOp,
    /// The parameter (k, φ, ratio), a scalar expression.
    pub param: Option<Box<Plan>>,
    /// `count_values`' label name.
    pub value_label: Option<String>,
    /// Grouping.
    pub grouping: Grouping,
    /// The aggregated expression.
    pub expr: Box<Plan>,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `atan2`
    Atan2,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinOp {
    /// `==`, `!=`, `<`, `>`, `<=`, `>=`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Gt | Self::Lt | Self::Ge | Self::Le
        )
    }

    /// `and`, `or`, `unless`.
    pub fn is_set(self) -> bool {
        matches!(self, Self::And | Self::Or | Self::Unless)
    }

    /// Whether the result loses the metric name: arithmetic does; comparisons, set operators
    /// and (as in Prometheus 2.x) `atan2` do not.
    pub fn drops_metric_name(self) -> bool {
        matches!(
            self,
            Self::Add | Self::Sub | Self::Mul | Self::Div | Self::Mod | Self::Pow
        )
    }
}

/// Which side is the "one" of a many-to-one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// One-to-one.
    OneToOne,
    /// `group_left`: many on the left.
    ManyToOne,
    /// `group_right`: many on the right.
    OneToMany,
    /// Set operators.
    ManyToMany,
}

/// Vector matching of a binary operator between two vectors.
#[derive(Debug, Clone)]
pub struct Matching {
    /// Cardinality.
    pub card: Cardinality,
    /// `on (...)` (true) or `ignoring (...)`/none (false).
    pub on: bool,
    /// The `on`/`ignoring` labels.
    pub labels: Vec<String>,
    /// `group_left (...)`/`group_right (...)` labels copied from the "one" side.
    pub include: Vec<String>,
}

/// A binary operation.
#[derive(Debug, Clone)]
pub struct Binary {
    /// The operator.
    pub op: BinOp,
    /// Left operand.
    pub lhs: Box<Plan>,
    /// Right operand.
    pub rhs: Box<Plan>,
    /// `bool` modifier.
    pub return_bool: bool,
    /// Vector matching (meaningful between two vectors).
    pub matching: Matching,
}

impl Plan {
    /// Converts a parsed expression, marking step-invariant subtrees.
    pub fn from_ast(expr: &Expr, ctx: &PlanContext) -> Result<Self, QueryError> {
        let (plan, invariant) = convert(expr, ctx)?;
        Ok(wrap_if(plan, invariant))
    }

    /// The node's value type.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Number(_) => Kind::Scalar,
            Self::String(_) => Kind::String,
            Self::Selector(_)
            | Self::RangeCall(_)
            | Self::Aggregate(_)
            | Self::Call(Call {
                func:
                    Func::Simple(..)
                    | Func::Round
                    | Func::Clamp
                    | Func::ClampMin
                    | Func::ClampMax
                    | Func::Date(_)
                    | Func::Timestamp
                    | Func::Vector
                    | Func::Absent(_)
                    | Func::Sort
                    | Func::SortDesc
                    | Func::LabelReplace { .. }
                    | Func::LabelJoin { .. }
                    | Func::HistogramQuantile
                    | Func::NativeHistogramOnly(_),
                ..
            }) => Kind::Vector,
            Self::Call(Call {
                func: Func::Scalar | Func::Time | Func::Pi,
                ..
            }) => Kind::Scalar,
            Self::Matrix(_) => Kind::Matrix,
            Self::Binary(b) => {
                if b.lhs.kind() == Kind::Scalar && b.rhs.kind() == Kind::Scalar {
                    Kind::Scalar
                } else {
                    Kind::Vector
                }
            }
            Self::Neg(inner) | Self::StepInvariant(inner) => inner.kind(),
        }
    }

    /// The longest stretch of time before a step that evaluating this plan at that step reads
    /// (lookback, ranges, subquery ranges, offsets), milliseconds; used to size evaluation
    /// blocks.
    pub fn reach_ms(&self, lookback_ms: i64) -> i64 {
        match self {
            Self::Number(_) | Self::String(_) => 0,
            Self::Selector(s) => lookback_ms + s.offset_ms.max(0),
            Self::Matrix(m) => source_reach(m, lookback_ms),
            Self::Call(c) => c
                .args
                .iter()
                .map(|a| a.reach_ms(lookback_ms))
                .max()
                .unwrap_or(0),
            Self::RangeCall(c) => c
                .scalars
                .iter()
                .map(|a| a.reach_ms(lookback_ms))
                .chain([source_reach(&c.source, lookback_ms)])
                .max()
                .unwrap_or(0),
            Self::Aggregate(a) => a
                .expr
                .reach_ms(lookback_ms)
                .max(a.param.as_ref().map_or(0, |p| p.reach_ms(lookback_ms))),
            Self::Binary(b) => b.lhs.reach_ms(lookback_ms).max(b.rhs.reach_ms(lookback_ms)),
            Self::Neg(inner) => inner.reach_ms(lookback_ms),
            Self::StepInvariant(_) => 0,
        }
    }
}

fn source_reach(source: &MatrixSource, lookback_ms: i64) -> i64 {
    match source {
        MatrixSource::Selector { selector, range_ms } => range_ms + selector.offset_ms.max(0),
        MatrixSource::Subquery(s) => {
            s.range_ms + s.offset_ms.max(0) + s.step_ms + s.expr.reach_ms(lookback_ms)
        }
    }
}

fn wrap_if(plan: Plan, invariant: bool) -> Plan {
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
fn convert(expr: &Expr, ctx: &PlanContext) -> Result<(Plan, bool), QueryError> {
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

/// Functions whose value depends on the evaluation time itself: never step invariant.
fn time_dependent(name: &str) -> bool {
    matches!(
        name,
        "days_in_month"
            | "day_of_month"
            | "day_of_week"
            | "day_of_year"
            | "hour"
            | "minute"
            | "month"
            | "year"
            | "predict_linear"
            | "time"
            | "timestamp"
    )
}

fn simple_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => math::sgn,
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => math::deg,
        "rad" => math::rad,
        _ => return None,
    })
}

fn range_fn(name: &str) -> Option<RangeFn> {
    Some(match name {
        "rate" => RangeFn::Rate,
        "increase" => RangeFn::Increase,
        "delta" => RangeFn::Delta,
        "irate" => RangeFn::Irate,
        "idelta" => RangeFn::Idelta,
        "avg_over_time" => RangeFn::AvgOverTime,
        "min_over_time" => RangeFn::MinOverTime,
        "max_over_time" => RangeFn::MaxOverTime,
        "sum_over_time" => RangeFn::SumOverTime,
        "count_over_time" => RangeFn::CountOverTime,
        "quantile_over_time" => RangeFn::QuantileOverTime,
        "stddev_over_time" => RangeFn::StddevOverTime,
        "stdvar_over_time" => RangeFn::StdvarOverTime,
        "mad_over_time" => RangeFn::MadOverTime,
        "last_over_time" => RangeFn::LastOverTime,
        "first_over_time" => RangeFn::FirstOverTime,
        "present_over_time" => RangeFn::PresentOverTime,
        "absent_over_time" => RangeFn::AbsentOverTime,
        "changes" => RangeFn::Changes,
        "resets" => RangeFn::Resets,
        "deriv" => RangeFn::Deriv,
        "predict_linear" => RangeFn::PredictLinear,
        "holt_winters" | "double_exponential_smoothing" => RangeFn::HoltWinters,
        _ => return None,
    })
}

fn date_fn(name: &str) -> Option<DateFn> {
    Some(match name {
        "day_of_month" => DateFn::DayOfMonth,
        "day_of_week" => DateFn::DayOfWeek,
        "day_of_year" => DateFn::DayOfYear,
        "days_in_month" => DateFn::DaysInMonth,
        "hour" => DateFn::Hour,
        "minute" => DateFn::Minute,
        "month" => DateFn::Month,
        "year" => DateFn::Year,
        _ => return None,
    })
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

/// Checks a range query's expression type as Prometheus does.
pub fn check_range_query_kind(plan: &Plan) -> Result<(), QueryError> {
    match plan.kind() {
        Kind::Scalar | Kind::Vector => Ok(()),
        other => Err(QueryError::Parse(format!(
            "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
            other.name()
        ))),
    }
}

/// The parser's value type, for callers that only parsed.
pub fn kind_of(expr: &Expr) -> Kind {
    match expr.value_type() {
        ValueType::Scalar => Kind::Scalar,
        ValueType::Vector => Kind::Vector,
        ValueType::Matrix => Kind::Matrix,
        ValueType::String => Kind::String,
    }
}
