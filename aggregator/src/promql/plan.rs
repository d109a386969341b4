//! The evaluation plan: promql-parser's AST converted into our own tree.
//!
//! Owns: name resolution (functions, operators, aggregations), `@ start()`/`@ end()` resolved
//! to timestamps, durations in milliseconds, default subquery steps, string arguments checked
//! up front (regexes, label names), and the marking of step-invariant subtrees exactly where
//! Prometheus 2.x marks them (so they are evaluated once per query, not once per step).
//! Must not: touch the store or evaluate anything.

mod convert;
mod functions;

use promql_parser::parser::Expr;
use regex::Regex;

use self::convert::{convert, wrap_if};
pub use self::convert::{is_label_name, matcher_groups};
use super::QueryError;
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

    /// Every selector in the plan (subqueries included), in no particular order.
    pub fn selectors<'a>(&'a self, out: &mut Vec<&'a Selector>) {
        match self {
            Self::Number(_) | Self::String(_) => {}
            Self::Selector(s) => out.push(s),
            Self::Matrix(m) => source_selectors(m, out),
            Self::Call(c) => c.args.iter().for_each(|a| a.selectors(out)),
            Self::RangeCall(c) => {
                source_selectors(&c.source, out);
                c.scalars.iter().for_each(|a| a.selectors(out));
            }
            Self::Aggregate(a) => {
                a.expr.selectors(out);
                if let Some(p) = &a.param {
                    p.selectors(out);
                }
            }
            Self::Binary(b) => {
                b.lhs.selectors(out);
                b.rhs.selectors(out);
            }
            Self::Neg(inner) | Self::StepInvariant(inner) => inner.selectors(out),
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

fn source_selectors<'a>(source: &'a MatrixSource, out: &mut Vec<&'a Selector>) {
    match source {
        MatrixSource::Selector { selector, .. } => out.push(selector),
        MatrixSource::Subquery(s) => s.expr.selectors(out),
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
