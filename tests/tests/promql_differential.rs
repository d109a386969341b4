//! Differential test against the real Prometheus (Debian's 2.42): the same generated dataset
//! is backfilled into Prometheus with `promtool tsdb create-blocks-from openmetrics` and into
//! Sonde with `sonde-aggregator import`, then every query of `tests/fixtures/promql/differential.queries` runs on both
//! as instant queries at several times and as range queries, and the answers must agree at
//! relative 1e-6 (documented divergences excepted, see `divergences.md`).

use std::collections::BTreeMap;

use std::path::Path;

use sonde_tests::{
    Aggregator, binary,
    promqldiff::{DURATION_MS, Dataset, Prometheus, START_MS, fixture, read_corpus},
    promqltest::{Eval, EvalKind, Outcome, compare, run_eval},
};

/// Imports the OpenMetrics file with `sonde-aggregator import` and serves the result.
fn load_sonde(openmetrics: &Path, data_dir: &Path) -> Aggregator {
    let output = std::process::Command::new(binary("sonde-aggregator"))
        .args(["import", "--data-dir"])
        .arg(data_dir)
        .arg(openmetrics)
        .output()
        .expect("run sonde-aggregator import");
    assert!(
        output.status.success(),
        "sonde-aggregator import failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Aggregator::start_in(Some(data_dir), None, &[])
}

fn eval(query: &str, kind: EvalKind, ordered: bool) -> Eval {
    Eval {
        line: 0,
        end: 0,
        query: query.to_owned(),
        kind,
        ordered,
        expected: Outcome::Series(Vec::new()),
        oracle_skip: None,
    }
}

#[test]
fn sonde_agrees_with_prometheus() {
    let dataset = Dataset::generate(0x5eed);
    let dir = tempfile::tempdir().unwrap();
    let openmetrics = dir.path().join("dataset.om");
    std::fs::write(&openmetrics, dataset.to_openmetrics()).unwrap();
    // For investigating a divergence by hand: keep a copy of the dataset.
    if let Some(copy) = std::env::var_os("SONDE_DIFF_DATASET_OUT") {
        std::fs::copy(&openmetrics, copy).unwrap();
    }
    let prometheus = Prometheus::start_with(&openmetrics);
    let sonde = load_sonde(&openmetrics, &dir.path().join("sonde-data"));

    let end = START_MS + DURATION_MS;
    let instants = [
        START_MS + 30 * 60_000,
        START_MS + 67 * 60_000 + 13_500,
        START_MS + 150 * 60_000,
        end,
        end + 4 * 60_000,
        end + 6 * 60_000,
    ];
    let ranges = [
        (START_MS, end, 60_000),
        (START_MS + 10 * 60_000, START_MS + 60 * 60_000, 17_000),
        (end - 30 * 60_000, end + 10 * 60_000, 45_000),
    ];
    let corpus = read_corpus(&fixture("differential.queries"));
    let documented = std::fs::read_to_string(fixture("divergences.md")).unwrap();
    for q in &corpus {
        if let Some(id) = &q.divergent {
            assert!(
                documented.contains(&format!("\n## {id}\n")),
                "line {}: divergence `{id}` is not documented in divergences.md",
                q.line
            );
        }
    }
    let mut failures = Vec::new();
    let mut divergent: BTreeMap<String, usize> = BTreeMap::new();
    let mut compared = 0usize;
    for q in &corpus {
        let mut kinds: Vec<EvalKind> = instants.iter().map(|&t| EvalKind::Instant(t)).collect();
        if !q.instant_only {
            kinds.extend(ranges.iter().map(|&(start, end, step)| EvalKind::Range {
                start,
                end,
                step,
            }));
        }
        for kind in kinds {
            let e = eval(&q.query, kind, q.ordered);
            let want = run_eval(&prometheus.url, &e);
            let got = run_eval(&sonde.url(), &e);
            compared += 1;
            if let Some(diff) = compare(&want, &got, q.ordered, 1e-6) {
                match &q.divergent {
                    Some(id) => *divergent.entry(id.clone()).or_default() += 1,
                    None => failures.push(format!(
                        "line {}: {} ({kind:?})\n    {diff}",
                        q.line, q.query
                    )),
                }
            }
        }
    }
    eprintln!(
        "compared {compared} evaluations of {} queries over {} samples; documented \
         divergences seen: {divergent:?}",
        corpus.len(),
        dataset.samples()
    );
    assert!(
        failures.is_empty(),
        "{} evaluations differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
