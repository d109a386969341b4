//! Unit tests of the evaluator over a small in-memory store; the broad corpus lives in the
//! golden files under `tests/fixtures/promql/` and the differential test against Prometheus.

use std::time::{Duration, Instant};

use crate::{
    config::QueryConfig,
    promql::{Engine, QueryError, STALE_NAN_BITS, Value},
    store::{Labels, Sample, Store},
};

fn engine_with(config: QueryConfig) -> (Engine, tempfile::TempDir) {
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
    // A counter with a reset: 0, 10, …, 50, then 5, 15.
    let counter: Vec<Sample> = (0..6)
        .map(|i| s(i * 60_000, i as f64 * 10.0))
        .chain([s(360_000, 5.0), s(420_000, 15.0)])
        .collect();
    store
        .append(
            Labels::from_pairs([("__name__", "requests_total"), ("job", "a")]),
            &counter,
        )
        .unwrap();
    (Engine::new(store, config), dir)
}

fn engine() -> (Engine, tempfile::TempDir) {
    engine_with(QueryConfig::default())
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

fn instant(engine: &Engine, query: &str, t: i64) -> Vec<(String, f64)> {
    vector(
        engine
            .instant(query, t, deadline())
            .unwrap_or_else(|e| panic!("{query}: {e}")),
    )
}

#[test]
fn lookback_is_inclusive_and_stale_markers_end_series() {
    let (engine, _dir) = engine();
    assert_eq!(
        instant(&engine, "up", 90_000),
        [(r#"up{job="a"}"#.to_owned(), 1.0)]
    );
    assert_eq!(instant(&engine, "up", 30_000).len(), 2);
    assert_eq!(instant(&engine, "up", 420_000).len(), 1);
    assert!(instant(&engine, "up", 420_001).is_empty());
}

#[test]
fn rate_extrapolates_and_handles_resets() {
    let (engine, _dir) = engine();
    // Window [0, 300 s] closed: samples 0..50 at 0..300 s, no extrapolation needed.
    let got = instant(&engine, "increase(requests_total[5m])", 300_000);
    assert_eq!(got.len(), 1);
    assert!((got[0].1 - 50.0).abs() < 1e-9, "{got:?}");
    // Across the reset (50 → 5): 10 + 10 + 5 + 10 over the samples at 180..420 s, which fill
    // the closed window [180 s, 420 s] exactly.
    let got = instant(&engine, "increase(requests_total[4m])", 420_000);
    assert!((got[0].1 - 35.0).abs() < 1e-9, "{got:?}");
    assert_eq!(got[0].0, r#"{job="a"}"#);
    let got = instant(&engine, "resets(requests_total[10m])", 420_000);
    assert_eq!(got[0].1, 1.0);
}

#[test]
fn aggregations_and_matching() {
    let (engine, _dir) = engine();
    let got = instant(&engine, "sum by (job) (up)", 30_000);
    assert_eq!(
        got,
        [
            (r#"{job="a"}"#.to_owned(), 1.0),
            (r#"{job="b"}"#.to_owned(), 1.0)
        ]
    );
    let got = instant(&engine, "count(up)", 30_000);
    assert_eq!(got, [("{}".to_owned(), 2.0)]);
    let got = instant(&engine, "load / on(job) group_left up", 60_000);
    assert_eq!(got, [(r#"{job="a"}"#.to_owned(), 4.0)]);
    let got = instant(&engine, r#"topk(1, {__name__=~"up|load"})"#, 60_000);
    assert_eq!(got, [(r#"load{job="a"}"#.to_owned(), 4.0)]);
}

#[test]
fn range_query_selects_once_and_builds_a_matrix() {
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
    let past = Instant::now() - Duration::from_secs(1);
    assert!(matches!(
        engine.instant("up", 0, past),
        Err(QueryError::Timeout { .. })
    ));
    let (small, _dir) = engine_with(QueryConfig {
        max_samples: 1,
        ..QueryConfig::default()
    });
    assert!(matches!(
        small.instant("up", 60_000, deadline()),
        Err(QueryError::TooManySamples { .. })
    ));
    let (few, _dir) = engine_with(QueryConfig {
        max_series: 1,
        ..QueryConfig::default()
    });
    assert!(matches!(
        few.instant("up", 60_000, deadline()),
        Err(QueryError::TooManySeries { .. })
    ));
    let err = engine
        .instant("up / ignoring(job) up", 30_000, deadline())
        .unwrap_err();
    assert!(err.to_string().contains("duplicate series"), "{err}");
}

#[test]
fn a_huge_subquery_grid_is_refused_before_allocating() {
    let (engine, _dir) = engine();
    let err = engine
        .instant("sum_over_time(vector(1)[1y:1ms])", 420_000, deadline())
        .unwrap_err();
    assert!(matches!(err, QueryError::TooManySamples { .. }), "{err}");
}

#[test]
fn range_queries_select_once_per_selector_and_block() {
    use std::sync::atomic::AtomicBool;

    use crate::promql::{
        eval::{Evaluator, Grid, run_range},
        plan::{Plan, PlanContext},
    };

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let samples: Vec<Sample> = (0..2000)
        .map(|i| Sample {
            t: i * 60_000,
            v: i as f64,
        })
        .collect();
    store
        .append(Labels::from_pairs([("__name__", "x")]), &samples)
        .unwrap();
    let config = QueryConfig::default();
    let cancelled = AtomicBool::new(false);
    let run = |query: &str, grid: Grid| {
        let ctx = PlanContext {
            start_ms: grid.start,
            end_ms: grid.end,
            default_subquery_step_ms: 60_000,
        };
        let plan = Plan::from_ast(&crate::promql::parse(query).unwrap(), &ctx).unwrap();
        let mut ev = Evaluator::new(&store, &config, deadline(), &cancelled);
        run_range(&mut ev, &plan, grid).unwrap();
        ev.selections()
    };
    // One hour at 15 s: 241 steps, one selection per selector.
    let hour = Grid {
        start: 3_600_000,
        end: 7_200_000,
        step: 15_000,
    };
    assert_eq!(run("rate(x[5m])", hour), 1);
    assert_eq!(run("x / on() x offset 1m", hour), 2);
    assert_eq!(run("max_over_time(x[10m:1m])", hour), 1);
    // A day at 60 s fits the default limit: one block.
    let day = Grid {
        start: 0,
        end: 24 * 3_600_000,
        step: 60_000,
    };
    assert_eq!(run("sum(rate(x[5m]))", day), 1);
    // `@` makes the selector step invariant: evaluated once per block at one step.
    assert_eq!(run("x @ 600", hour), 1);

    // With room for 2000 samples, a day (at an assumed sample per 15 s) is cut into blocks
    // of 8 h 15 min that each fit: three selections, and the same answer as one block.
    let small = QueryConfig {
        max_samples: 2000,
        ..QueryConfig::default()
    };
    let ctx = PlanContext {
        start_ms: day.start,
        end_ms: day.end,
        default_subquery_step_ms: 60_000,
    };
    let plan = Plan::from_ast(&crate::promql::parse("sum(rate(x[5m]))").unwrap(), &ctx).unwrap();
    let mut ev = Evaluator::new(&store, &small, deadline(), &cancelled);
    let blocks = run_range(&mut ev, &plan, day).unwrap();
    assert_eq!(ev.selections(), 3);
    let mut ev = Evaluator::new(&store, &config, deadline(), &cancelled);
    assert_eq!(run_range(&mut ev, &plan, day).unwrap(), blocks);
}

#[test]
fn a_cancelled_query_stops() {
    use std::sync::atomic::AtomicBool;
    let (engine, _dir) = engine();
    let cancelled = AtomicBool::new(true);
    let err = engine
        .range_cancellable("up", 0, 420_000, 1_000, deadline(), &cancelled)
        .unwrap_err();
    assert!(matches!(err, QueryError::Cancelled), "{err}");
}
