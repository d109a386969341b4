//! PromQL: parsing (the pinned `promql-parser` crate), planning ([`plan`]) and evaluation
//! ([`eval`]) over the [`Store`], with Prometheus 2.x semantics.
//!
//! Owns: the [`Engine`] that answers instant and range queries; query limits (timeout,
//! cancellation, samples held in memory, series selected); Prometheus' evaluation rules
//! (5 m lookback inclusive at both ends, stale markers, closed range windows, `offset`, `@`
//! with `start()`/`end()`, subquery step alignment, rate extrapolation, name dropping,
//! ordering of instant results).
//! Must not: know about HTTP; the API layer maps [`QueryError`] to status codes.
//!
//! Pipeline: text → promql-parser AST → [`plan::Plan`] (names resolved, `@` resolved,
//! step-invariant subtrees marked) → [`eval::Evaluator`] over a grid of steps. Range queries
//! select each series once per block of steps (the whole query for ranges up to a few hours),
//! never once per step.

pub mod eval;
pub mod math;
pub mod plan;
pub mod value;

use std::{
    sync::{Arc, Once, atomic::AtomicBool},
    time::{Duration, Instant},
};

use promql_parser::parser::{Expr, Function, register_extra_functions, value::ValueType};

pub use self::value::{InstantSample, RangeSeries, Value};
use self::{
    eval::{Evaluator, Grid},
    plan::{Plan, PlanContext},
};
use crate::{
    config::QueryConfig,
    store::{Matcher, Store},
};

/// Prometheus' stale marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Why a query failed; the API maps each kind to Prometheus' error type.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse or has the wrong type.
    #[error("{0}")]
    Parse(String),
    /// Evaluation failed (matching conflicts, invalid arguments).
    #[error("{0}")]
    Execution(String),
    /// The expression uses something this engine does not evaluate.
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
    /// The query was abandoned (its client went away).
    #[error("query cancelled")]
    Cancelled,
    /// The query would hold more samples in memory than allowed.
    #[error(
        "query processing would load too many samples into memory in query execution \
         (limit {limit})"
    )]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
    /// The query would select more series than allowed.
    #[error(
        "query would select too many series (limit {limit}, reached at {selector}); use more \
         specific selectors"
    )]
    TooManySeries {
        /// The limit.
        limit: usize,
        /// The selector that crossed it.
        selector: String,
    },
}

/// Registers the functions promql-parser does not know but Prometheus 2.x has: `holt_winters`
/// (renamed `double_exponential_smoothing` in Prometheus 3).
fn register_functions() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registration only fails on a clash with a built-in, which would mean the parser
        // learned the function itself; parsing works either way.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Parses a PromQL expression.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    register_functions();
    promql_parser::parser::parse(query).map_err(QueryError::Parse)
}

/// Parses a series selector (as in `match[]`) into matcher conjunctions, one per `or` branch.
pub fn parse_series_selector(selector: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    match parse(selector)? {
        Expr::VectorSelector(vs) => plan::matcher_groups(&vs),
        _ => Err(QueryError::Parse(format!(
            "{selector:?} is not a series selector"
        ))),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Samples a query reads beside the local store: merged reads across replicas. Given the
/// local selection of one matcher conjunction, returns it merged with the other sources
/// (local samples win on equal timestamps), sorted by labels. Failures of the other sources
/// must not fail the query (the implementation reports them its own way).
pub trait RemoteSelect: Send + Sync + std::fmt::Debug {
    /// Merges the other sources' series matching `matchers` in `[mint, maxt]` into `local`.
    fn merge_into(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        local: Vec<crate::store::SeriesSamples>,
    ) -> Vec<crate::store::SeriesSamples>;
}

/// Evaluates PromQL over a store.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<Store>,
    /// Other sources every selection also reads (merged reads); `None`: the store alone.
    remote: Option<Arc<dyn RemoteSelect>>,
    config: QueryConfig,
    /// Admission: at most `max_concurrent` queries evaluate at once (shared by clones).
    admission: Arc<tokio::sync::Semaphore>,
}

impl Engine {
    /// Creates an engine with the given limits and lookback.
    pub fn new(store: Arc<Store>, config: QueryConfig) -> Self {
        register_functions();
        let admission = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1)));
        Self {
            store,
            remote: None,
            config,
            admission,
        }
    }

    /// This engine (same admission slots) reading `remote` beside the store, if given.
    pub fn with_remote(&self, remote: Option<Arc<dyn RemoteSelect>>) -> Self {
        Self {
            remote,
            ..self.clone()
        }
    }

    /// Waits for one of the `max_concurrent` evaluation slots, until `deadline`. Hold the
    /// permit while evaluating.
    pub async fn admit(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, QueryError> {
        let acquire = self.admission.clone().acquire_owned();
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(QueryError::Cancelled),
            Err(_) => Err(QueryError::Timeout {
                phase: "query queue",
            }),
        }
    }

    /// The configured limits.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    fn plan(&self, query: &str, start_ms: i64, end_ms: i64) -> Result<Plan, QueryError> {
        let expr = parse(query)?;
        Plan::from_ast(
            &expr,
            &PlanContext {
                start_ms,
                end_ms,
                default_subquery_step_ms: millis(self.config.subquery_step).max(1),
            },
        )
    }

    /// Evaluates `query` at `time_ms`.
    pub fn instant(
        &self,
        query: &str,
        time_ms: i64,
        deadline: Instant,
    ) -> Result<Value, QueryError> {
        self.instant_cancellable(query, time_ms, deadline, &AtomicBool::new(false))
    }

    /// [`instant`](Self::instant), abandoned with [`QueryError::Cancelled`] once `cancelled`
    /// is set.
    pub fn instant_cancellable(
        &self,
        query: &str,
        time_ms: i64,
        deadline: Instant,
        cancelled: &AtomicBool,
    ) -> Result<Value, QueryError> {
        let plan = self.plan(query, time_ms, time_ms)?;
        let mut ev = Evaluator::new(&self.store, &self.config, deadline, cancelled);
        ev.set_remote(self.remote.as_deref());
        eval::run_instant(&mut ev, &plan, time_ms)
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` (inclusive); the result is
    /// always a matrix, sorted by labels.
    pub fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        deadline: Instant,
    ) -> Result<Value, QueryError> {
        self.range_cancellable(
            query,
            start_ms,
            end_ms,
            step_ms,
            deadline,
            &AtomicBool::new(false),
        )
    }

    /// [`range`](Self::range), abandoned with [`QueryError::Cancelled`] once `cancelled` is
    /// set.
    pub fn range_cancellable(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        deadline: Instant,
        cancelled: &AtomicBool,
    ) -> Result<Value, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::Parse(
                "zero or negative query resolution step widths are not accepted".to_owned(),
            ));
        }
        let plan = self.plan(query, start_ms, end_ms)?;
        let mut ev = Evaluator::new(&self.store, &self.config, deadline, cancelled);
        ev.set_remote(self.remote.as_deref());
        eval::run_range(
            &mut ev,
            &plan,
            Grid {
                start: start_ms,
                end: end_ms,
                step: step_ms,
            },
        )
    }
}
