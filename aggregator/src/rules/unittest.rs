//! `sonde-aggregator test rules FILE...`: promtool's rule unit-test format (`rule_files`,
//! `evaluation_interval`, `group_eval_order`, `tests:` with `interval`, `input_series`,
//! `alert_rule_test`, `promql_expr_test`, `external_labels`, `external_url`, `name`) run
//! against Sonde's rule evaluation and PromQL engine, with promtool 2.42's semantics: input
//! series in the expanding notation (`1+2x10`, `_x3`, `stale`) every `interval` from time 0,
//! every group evaluated every `evaluation_interval` from 0 to the largest `eval_time`, alerts
//! compared (firing only) at the evaluation at or before each `eval_time`, expressions
//! checked after all evaluations.
//!
//! Owns: the test-file model, the series notation, the comparison and promtool-like output.
//! Must not: touch a real data directory (each test group uses a fresh temporary store).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use super::{
    alert::AlertState,
    duration,
    file::{self, RuleKind},
    group::{EvalContext, Group, run_query},
};
use crate::{
    config::QueryConfig,
    promql::{Engine, STALE_NAN_BITS},
    store::{Labels, Sample, Store, StoreOptions},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    #[serde(default)]
    eval_time: Option<String>,
    #[serde(default)]
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    #[serde(default)]
    eval_time: Option<String>,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

fn dur_ms(text: &Option<String>) -> Result<i64, String> {
    match text {
        None => Ok(0),
        Some(t) => duration::parse(t).map(|d| d.as_millis() as i64),
    }
}

fn fmt_ms(ms: i64) -> String {
    duration::format(Duration::from_millis(ms.max(0) as u64))
}

/// Runs every file; prints promtool-like output to stdout/stderr; true when all passed.
pub fn run_files(files: &[PathBuf]) -> bool {
    let mut ok = true;
    for f in files {
        println!("Unit Testing:  {}", f.display());
        match run_file(f) {
            Ok(()) => println!("  SUCCESS"),
            Err(errors) => {
                eprintln!("  FAILED:");
                for e in errors {
                    eprintln!("{e}");
                    eprintln!();
                }
                ok = false;
            }
        }
        println!();
    }
    ok
}

/// Runs one test file; the errors are what failed.
pub fn run_file(path: &Path) -> Result<(), Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let tf: TestFile = serde_saphyr::from_str(&text)
        .map_err(|e| vec![format!("{}: {}", path.display(), e.without_snippet())])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let patterns: Vec<String> = tf
        .rule_files
        .iter()
        .map(|f| {
            if Path::new(f).is_absolute() {
                f.clone()
            } else {
                base.join(f).display().to_string()
            }
        })
        .collect();
    let mut rule_files = Vec::new();
    for p in &patterns {
        match file::expand_patterns(std::slice::from_ref(p)) {
            Ok(found) => {
                if found.is_empty() {
                    eprintln!("  WARNING: no file match pattern {p}");
                }
                rule_files.extend(found);
            }
            Err(e) => return Err(vec![e.to_string()]),
        }
    }
    let eval_interval = match dur_ms(&tf.evaluation_interval).map_err(|e| vec![e])? {
        0 => 60_000,
        ms => ms,
    };
    let mut order: HashMap<&str, usize> = HashMap::new();
    for (i, g) in tf.group_eval_order.iter().enumerate() {
        if order.insert(g, i).is_some() {
            return Err(vec![format!(
                "group name repeated in evaluation order: {g}"
            )]);
        }
    }
    let mut errors = Vec::new();
    for tg in &tf.tests {
        if let Err(mut e) = run_group(tg, eval_interval, &rule_files, &order) {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn parse_number(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse::<f64>()
            .map_err(|_| format!("invalid number {other:?}")),
    }
}

/// Expands the series notation into one optional value per interval.
pub fn parse_series_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        if token == "_" {
            out.push(None);
        } else if token == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN_BITS)));
        } else if let Some(n) = token.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid {token:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
        } else if let Some((head, times)) = token.rsplit_once('x') {
            let times: i64 = times.parse().map_err(|_| format!("invalid {token:?}"))?;
            let split = head
                .char_indices()
                .skip(1)
                .find(|&(i, c)| (c == '+' || c == '-') && !head[..i].ends_with(['e', 'E']))
                .map(|(i, _)| i);
            let (start, delta) = match split {
                Some(i) => {
                    let delta = parse_number(&head[i + 1..])?;
                    let delta = if &head[i..=i] == "-" { -delta } else { delta };
                    (parse_number(&head[..i])?, delta)
                }
                None => (parse_number(head)?, 0.0),
            };
            // Repeated addition, as promtool accumulates.
            let mut v = start;
            for _ in 0..=times {
                out.push(Some(v));
                v += delta;
            }
        } else {
            out.push(Some(parse_number(token)?));
        }
    }
    Ok(out)
}

/// Parses `name{a="b"}` / `{a="b"}` into labels.
pub fn parse_metric(text: &str) -> Result<Labels, String> {
    let text = text.trim();
    let (name, rest) = match text.find('{') {
        Some(i) => (text[..i].trim(), &text[i..]),
        None => (text, ""),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".to_owned(), name.to_owned()));
    }
    if !rest.is_empty() {
        let body = rest
            .strip_prefix('{')
            .and_then(|r| r.trim_end().strip_suffix('}'))
            .ok_or_else(|| format!("invalid labels {text:?}"))?;
        let mut chars = body.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut n = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c.is_whitespace() {
                    break;
                }
                n.push(c);
                chars.next();
            }
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '=') {
                chars.next();
            }
            if chars.next() != Some('"') {
                return Err(format!("expected a quoted label value in {text:?}"));
            }
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some(c) => v.push(c),
                        None => return Err(format!("unterminated label value in {text:?}")),
                    },
                    Some(c) => v.push(c),
                    None => return Err(format!("unterminated label value in {text:?}")),
                }
            }
            pairs.push((n, v));
        }
    }
    Ok(Labels::from_pairs(pairs))
}

fn fmt_value(v: f64) -> String {
    super::template::gofmt::format_e(v, 6, true)
}

type LabelsAndAnnotations = Vec<(Labels, Vec<(String, String)>)>;

fn fmt_alerts(list: &LabelsAndAnnotations) -> String {
    if list.is_empty() {
        return "[]".to_owned();
    }
    let mut s = String::from("[");
    for (i, (l, a)) in list.iter().enumerate() {
        let ann: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let _ = write!(
            s,
            "\n            {i}:\n              Labels:{l}\n              Annotations:{{{}}}",
            ann.join(", ")
        );
    }
    s.push_str("\n            ]");
    s
}

fn run_group(
    tg: &TestGroup,
    eval_interval: i64,
    rule_files: &[PathBuf],
    order: &HashMap<&str, usize>,
) -> Result<(), Vec<String>> {
    let fail = |e: String| vec![e];
    let interval = dur_ms(&tg.interval).map_err(fail)?;
    let dir =
        tempfile::tempdir().map_err(|e| fail(format!("cannot create a temporary store: {e}")))?;
    let options = StoreOptions {
        out_of_order_window: Duration::from_secs(1000 * 365 * 86_400),
        retention_time: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = Store::open_offline(dir.path(), options).map_err(|e| fail(e.to_string()))?;
    let mut batch = Vec::new();
    for s in &tg.input_series {
        let labels =
            parse_metric(&s.series).map_err(|e| fail(format!("series {:?}: {e}", s.series)))?;
        let values = parse_series_values(&s.values)
            .map_err(|e| fail(format!("series {:?}: values {:?}: {e}", s.series, s.values)))?;
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.map(|v| Sample {
                    t: i as i64 * interval,
                    v,
                })
            })
            .collect();
        batch.push((labels, samples));
    }
    store
        .append_batch(batch, Vec::new())
        .map_err(|e| fail(e.to_string()))?;
    let query = QueryConfig {
        subquery_step: Duration::from_millis(eval_interval as u64),
        ..QueryConfig::default()
    };
    let engine = Engine::new(store.clone(), query);
    let mut groups = Vec::new();
    for f in rule_files {
        let specs = file::load_file(f).map_err(|e| fail(e.to_string()))?;
        for spec in specs {
            let mut g = Group::new(spec, Duration::from_millis(interval.max(1) as u64));
            g.set_restored();
            groups.push(g);
        }
    }
    groups.sort_by_key(|g| order.get(g.spec.name.as_str()).copied().unwrap_or(0));
    let ctx = EvalContext {
        engine: &engine,
        store: &store,
        external_labels: &tg.external_labels,
        external_url: &tg.external_url,
        query_timeout: Duration::from_secs(120),
    };
    let test_name = if tg.name.is_empty() {
        String::new()
    } else {
        format!("    name: {},\n", tg.name)
    };
    let mut alert_tests: Vec<(i64, &AlertTest)> = Vec::new();
    for a in &tg.alert_rule_test {
        if a.alertname.is_empty() {
            let suffix = if tg.name.is_empty() {
                String::new()
            } else {
                format!(" (in TestGroup {})", tg.name)
            };
            return Err(fail(format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{suffix}",
                a.eval_time.as_deref().unwrap_or("0s")
            )));
        }
        alert_tests.push((dur_ms(&a.eval_time).map_err(fail)?, a));
    }
    let mut eval_times: Vec<i64> = alert_tests.iter().map(|(t, _)| *t).collect();
    eval_times.sort_unstable();
    eval_times.dedup();
    let mut max_t = eval_times.last().copied().unwrap_or(0);
    let mut expr_tests = Vec::new();
    for e in &tg.promql_expr_test {
        let t = dur_ms(&e.eval_time).map_err(fail)?;
        max_t = max_t.max(t);
        expr_tests.push((t, e));
    }
    let mut errors = Vec::new();
    let mut curr = 0;
    let mut ts = 0;
    while ts <= max_t {
        let mut eval_errors = Vec::new();
        for g in &mut groups {
            g.eval(&ctx, ts, Duration::from_secs(60));
            for r in &g.rules {
                if let Some(e) = &r.last_error {
                    eval_errors.push(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.spec.name,
                        fmt_ms(ts)
                    ));
                }
            }
        }
        if !eval_errors.is_empty() {
            errors.extend(eval_errors);
            return Err(errors);
        }
        while curr < eval_times.len()
            && ts <= eval_times[curr]
            && eval_times[curr] < ts + eval_interval
        {
            let t = eval_times[curr];
            for (_, test) in alert_tests.iter().filter(|(at, _)| *at == t) {
                let mut got: LabelsAndAnnotations = Vec::new();
                for g in &groups {
                    for r in &g.rules {
                        if r.spec.name != test.alertname
                            || !matches!(r.spec.kind, RuleKind::Alerting { .. })
                        {
                            continue;
                        }
                        for a in r.alerts.active_alerts() {
                            if a.state == AlertState::Firing {
                                got.push((a.labels.clone(), a.annotations.clone()));
                            }
                        }
                    }
                }
                let mut exp: LabelsAndAnnotations = test
                    .exp_alerts
                    .iter()
                    .map(|a| {
                        let labels = Labels::from_pairs(
                            a.exp_labels
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .chain([("alertname", test.alertname.as_str())]),
                        );
                        let ann: Vec<(String, String)> = a
                            .exp_annotations
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        (labels, ann)
                    })
                    .collect();
                got.sort();
                exp.sort();
                if exp != got {
                    errors.push(format!(
                        "{test_name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        test.alertname,
                        fmt_ms(t),
                        fmt_alerts(&exp),
                        fmt_alerts(&got)
                    ));
                }
            }
            curr += 1;
        }
        ts += eval_interval;
    }
    for (t, test) in expr_tests {
        let got = match run_query(&ctx, &test.expr, t) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!(
                    "    expr: {:?}, time: {}, err: {e}",
                    test.expr,
                    fmt_ms(t)
                ));
                continue;
            }
        };
        let mut exp = Vec::new();
        let mut bad = None;
        for s in &test.exp_samples {
            match parse_metric(&s.labels) {
                Ok(l) => exp.push((l, s.value)),
                Err(e) => {
                    bad = Some(format!("labels {:?}: {e}", s.labels));
                    break;
                }
            }
        }
        if let Some(e) = bad {
            errors.push(format!(
                "    expr: {:?}, time: {}, err: {e}",
                test.expr,
                fmt_ms(t)
            ));
            continue;
        }
        let mut got = got;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        // Exact equality, as promtool 2.42 (NaN never equals).
        let same =
            got.len() == exp.len() && got.iter().zip(&exp).all(|(g, e)| g.0 == e.0 && g.1 == e.1);
        if !same {
            let show = |v: &[(Labels, f64)]| {
                if v.is_empty() {
                    "nil".to_owned()
                } else {
                    v.iter()
                        .map(|(l, x)| format!("{l} {}", fmt_value(*x)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            errors.push(format!(
                "    expr: {:?}, time: {},\n        exp: {}\n        got: {}",
                test.expr,
                fmt_ms(t),
                show(&exp),
                show(&got)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_notation() {
        assert_eq!(
            parse_series_values("1+1x2 _ _x2 stale 3 1x1 -1-2x1")
                .unwrap()
                .len(),
            3 + 1 + 2 + 1 + 1 + 2 + 2
        );
        let v = parse_series_values("0.5-0.5x2 1e3").unwrap();
        assert_eq!(v, vec![Some(0.5), Some(0.0), Some(-0.5), Some(1000.0)]);
        assert!(parse_series_values("1+x").is_err());
    }

    #[test]
    fn metric_notation() {
        let l = parse_metric(r#"up{job="a", instance="b\"c"}"#).unwrap();
        assert_eq!(l.get("__name__"), Some("up"));
        assert_eq!(l.get("instance"), Some("b\"c"));
        assert!(parse_metric("{}").unwrap().is_empty());
    }

    #[test]
    fn a_test_file_passes_and_a_wrong_expectation_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yml"),
            "groups:\n  - name: g\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n      - alert: Down\n        expr: up == 0\n        for: 2m\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $labels.instance }} down, value {{ $value }}'\n",
        )
        .unwrap();
        let test = |exp_severity: &str| {
            format!(
                "rule_files: [r.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'up{{job=\"a\", instance=\"x\"}}'\n        values: '1 0x5'\n    alert_rule_test:\n      - eval_time: 2m\n        alertname: Down\n      - eval_time: 3m\n        alertname: Down\n        exp_alerts:\n          - exp_labels: {{job: a, instance: x, severity: {exp_severity}}}\n            exp_annotations: {{summary: 'x down, value 0'}}\n    promql_expr_test:\n      - expr: job:up:sum\n        eval_time: 4m\n        exp_samples:\n          - labels: 'job:up:sum{{job=\"a\"}}'\n            value: 0\n      - expr: ALERTS\n        eval_time: 4m\n        exp_samples:\n          - labels: 'ALERTS{{alertname=\"Down\", alertstate=\"firing\", job=\"a\", instance=\"x\", severity=\"page\"}}'\n            value: 1\n"
            )
        };
        std::fs::write(dir.path().join("ok.yml"), test("page")).unwrap();
        std::fs::write(dir.path().join("bad.yml"), test("ticket")).unwrap();
        run_file(&dir.path().join("ok.yml")).unwrap();
        let errors = run_file(&dir.path().join("bad.yml")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("alertname: Down, time: 3m"),
            "{}",
            errors[0]
        );
    }
}
