//! The golden files' recorded results checked against Prometheus itself: every instant
//! evaluation, and every step of every range evaluation, is asked of `promtool test rules`
//! (Prometheus 2.42's engine over the same series, stale markers included) and must agree at
//! relative 1e-6. Evaluations marked `#! oracle: skip <why>` are documented divergences.

use sonde_tests::promqltest::{
    EvalKind, GoldenFile, OracleAnswer, OracleQuestion, Outcome, Token, ask_promtool, golden_files,
    promtool_input,
};

/// What one golden eval expects at one instant, as promtool reports results.
#[derive(Debug)]
enum Expect {
    Samples(Vec<(String, f64)>),
    Error,
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    let diff = (a - b).abs();
    diff <= 1e-6 * a.abs().max(b.abs()) || diff < 1e-12
}

#[test]
fn golden_results_agree_with_prometheus() {
    let mut failures = Vec::new();
    let mut asked = 0usize;
    let mut skipped = 0usize;
    for path in golden_files() {
        let file = GoldenFile::load(&path);
        let mut groups = Vec::new();
        // (eval line, query, expectation) per question, in question order.
        let mut expectations: Vec<(usize, String, i64, Expect)> = Vec::new();
        for group in &file.groups {
            let mut questions = Vec::new();
            for eval in &group.evals {
                if eval.oracle_skip.is_some() {
                    skipped += 1;
                    continue;
                }
                let times: Vec<i64> = match eval.kind {
                    EvalKind::Instant(t) => vec![t],
                    EvalKind::Range { start, end, step } => {
                        // start()/end() mean the range's bounds, which promtool's instant
                        // evaluations cannot express.
                        if eval.query.contains("start()") || eval.query.contains("end()") {
                            skipped += 1;
                            continue;
                        }
                        (0..=(end - start) / step)
                            .map(|i| start + i * step)
                            .collect()
                    }
                };
                for (step, &t) in times.iter().enumerate() {
                    let expect = match &eval.expected {
                        Outcome::Error(_) => Expect::Error,
                        Outcome::Scalar(v) => Expect::Samples(vec![("{}".to_owned(), *v)]),
                        Outcome::String(_) => continue,
                        Outcome::Series(series) => {
                            if series
                                .iter()
                                .any(|(_, t)| t.iter().any(|t| matches!(t, Token::At(..))))
                            {
                                // Range vectors are not something promtool tests evaluate.
                                break;
                            }
                            Expect::Samples(
                                series
                                    .iter()
                                    .filter_map(|(labels, tokens)| match tokens.get(step) {
                                        Some(Token::Value(v)) => Some((labels.clone(), *v)),
                                        _ => None,
                                    })
                                    .collect(),
                            )
                        }
                    };
                    questions.push(OracleQuestion {
                        query: eval.query.clone(),
                        time_ms: t,
                    });
                    expectations.push((eval.line + 1, eval.query.clone(), t, expect));
                }
            }
            groups.push((group, questions));
        }
        if expectations.is_empty() {
            continue;
        }
        let input = promtool_input(&groups);
        let answers = ask_promtool(&input, expectations.len());
        asked += answers.len();
        for ((line, query, t, expect), answer) in expectations.iter().zip(answers) {
            let problem = match (expect, &answer) {
                (Expect::Error, OracleAnswer::Error(_)) => None,
                (Expect::Samples(want), OracleAnswer::Samples(got)) => {
                    let mut want = want.clone();
                    let mut got = got.clone();
                    want.sort_by(|a, b| a.0.cmp(&b.0));
                    got.sort_by(|a, b| a.0.cmp(&b.0));
                    let same = want.len() == got.len()
                        && want
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.0 == b.0 && close(a.1, b.1));
                    (!same).then(|| format!("Sonde {want:?}\n        Prometheus {got:?}"))
                }
                _ => Some(format!("Sonde {expect:?}\n        Prometheus {answer:?}")),
            };
            if let Some(problem) = problem {
                failures.push(format!(
                    "{}:{line}: {query} at {t} ms\n        {problem}",
                    path.display()
                ));
            }
        }
    }
    eprintln!("asked Prometheus {asked} questions; {skipped} documented divergences skipped");
    assert!(
        failures.is_empty(),
        "{} answers differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
