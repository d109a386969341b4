//! PromQL golden files (`tests/fixtures/promql/*.test`) against a real aggregator: every
//! `eval` must produce its recorded result (relative 1e-9).
//!
//! Regenerate the recorded results after an intended change with
//! `SONDE_PROMQL_REGENERATE=1 cargo test -p sonde-tests --test promql_golden`, then review the
//! diff; `promql_oracle` checks the recorded results against Prometheus itself.

use sonde_tests::promqltest::{GoldenFile, compare, golden_files, run_file_against_sonde};

#[test]
fn golden_files_match() {
    let regenerate = std::env::var("SONDE_PROMQL_REGENERATE").as_deref() == Ok("1");
    let files = golden_files();
    assert!(!files.is_empty(), "no golden files found");
    let mut failures = Vec::new();
    let mut evals = 0;
    for path in files {
        let file = GoldenFile::load(&path);
        let outcomes = run_file_against_sonde(&file);
        if regenerate {
            file.rewrite(&outcomes);
            continue;
        }
        for (eval, outcome) in file.groups.iter().flat_map(|g| &g.evals).zip(&outcomes) {
            evals += 1;
            if let Some(diff) = compare(&eval.expected, outcome, eval.ordered, 1e-9) {
                failures.push(format!(
                    "{}:{}: {}\n    {diff}",
                    path.display(),
                    eval.line + 1,
                    eval.query
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {evals} golden evaluations differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
