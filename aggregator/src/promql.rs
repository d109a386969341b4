//! PromQL: parsing (the `promql-parser` crate) and evaluation over the [`Store`].
//!
//! Owns: the [`Engine`] that answers instant and range queries, query limits (timeout, samples
//! loaded) and Prometheus' evaluation semantics (lookback, stale markers, `offset`, `@`).
//! Must not: know about HTTP; the API layer maps [`QueryError`] to status codes.
//!
//! Coverage today: number and string literals, parentheses, unary minus, instant and range
//! vector selectors (all matcher types, `offset`, `@`), and arithmetic and comparison operators
//! between scalars and vectors (vector/vector with default one-to-one matching). Other
//! constructs answer [`QueryError::Unsupported`] naming the construct.

mod eval;
pub mod value;

use std::{sync::Arc, time::Instant};

use crate::{
    config::QueryConfig,
    store::{Matcher, Store},
};

pub use self::value::{InstantSample, RangeSeries, Value};

/// Prometheus' stale marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Why a query failed; the API maps each kind to Prometheus' error type.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse.
    #[error("{0}")]
    Parse(String),
    /// Evaluation failed (type errors, matching conflicts).
    #[error("{0}")]
    Execution(String),
    /// The expression uses something this engine does not evaluate yet.
    #[error("unsupported PromQL: {0} is not supported by this version of Sonde")]
    Unsupported(String),
    /// The store failed to read.
    #[error("storage error: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Evaluation ran past its deadline.
    #[error("query timed out in {phase}")]
    Timeout {
        /// What was running.
        phase: &'static str,
    },
    /// The query would load more samples than allowed.
    #[error(
        "query processing would load too many samples into memory in query execution \
         (limit {limit})"
    )]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
}

/// Parses a series selector (as in `match[]`) into matcher conjunctions, one per `or` branch.
pub fn parse_series_selector(selector: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    match promql_parser::parser::parse(selector).map_err(QueryError::Parse)? {
        promql_parser::parser::Expr::VectorSelector(vs) => eval::matcher_groups(&vs),
        _ => Err(QueryError::Parse(format!(
            "{selector:?} is not a series selector"
        ))),
    }
}

/// Evaluates PromQL over a store.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<Store>,
    config: QueryConfig,
}

impl Engine {
    /// Creates an engine with the given limits and lookback.
    pub fn new(store: Arc<Store>, config: QueryConfig) -> Self {
        Self { store, config }
    }

    /// The configured limits.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Evaluates `query` at `time_ms`.
    pub fn instant(
        &self,
        query: &str,
        time_ms: i64,
        deadline: Instant,
    ) -> Result<Value, QueryError> {
        let expr = promql_parser::parser::parse(query).map_err(QueryError::Parse)?;
        let mut ev = eval::Evaluator::new(&self.store, &self.config, time_ms, time_ms, deadline);
        ev.eval(&expr, time_ms)
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` (inclusive); the result is
    /// always a matrix.
    pub fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        deadline: Instant,
    ) -> Result<Value, QueryError> {
        let expr = promql_parser::parser::parse(query).map_err(QueryError::Parse)?;
        let mut ev = eval::Evaluator::new(&self.store, &self.config, start_ms, end_ms, deadline);
        ev.eval_range(&expr, start_ms, end_ms, step_ms)
    }
}
