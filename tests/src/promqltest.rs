//! PromQL golden files (`tests/fixtures/promql/*.test`): parsing, running them against a Sonde
//! aggregator over HTTP, comparing, rewriting their expectations, and converting them into
//! `promtool test rules` input so Prometheus itself can be asked the same questions.
//!
//! The format follows Prometheus' promqltest:
//!
//! ```text
//! # A comment.
//! load 1m
//!     http_requests_total{job="api"} 0+10x10 _ 5 stale
//!
//! eval instant at 5m rate(http_requests_total[5m])
//!     {job="api"} 0.16666666666666666
//!
//! eval range from 0 to 2m step 1m sum(http_requests_total)
//!     {} 0 10 20
//!
//! eval_fail instant at 5m foo / ignoring(job) foo
//!     error found duplicate series
//! ```
//!
//! Values in `load` use promqltest's notation: `a+bxn` (n+1 values from a, step b), `a-bxn`,
//! `axn`, `_` (no sample), `_xn`, `stale` (a stale marker), `NaN`, `Inf`, `-Inf`. Each `load`
//! starts a new group with fresh data; samples are at `i * interval` from time 0. Expected
//! results: `<labels> <value>` for instant vectors, one value per step (`_` when absent) for
//! range queries, `<labels> v@seconds ...` for a range vector, `scalar <v>`, `string "<s>"`;
//! `eval_ordered` also checks the order of an instant vector. A line `#! oracle: skip <why>`
//! before an eval exempts it from the comparison with Prometheus (documented divergences).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde_json::Value as Json;
use sonde_proto::v1::{BatchPayload, Label, Sample, Series};

use crate::{Aggregator, encode};

/// Prometheus' stale marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A parsed golden file.
#[derive(Debug)]
pub struct GoldenFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its lines.
    pub lines: Vec<String>,
    /// Its groups.
    pub groups: Vec<Group>,
}

/// Data loaded together and the evaluations run over it.
#[derive(Debug, Default)]
pub struct Group {
    /// Interval between a series' values, milliseconds.
    pub interval_ms: i64,
    /// The series.
    pub series: Vec<LoadSeries>,
    /// The evaluations.
    pub evals: Vec<Eval>,
}

/// One loaded series.
#[derive(Debug, Clone)]
pub struct LoadSeries {
    /// Labels, `__name__` included.
    pub labels: BTreeMap<String, String>,
    /// The value at each interval (`None`: no sample; stale markers are the stale NaN).
    pub values: Vec<Option<f64>>,
}

/// When an evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalKind {
    /// An instant query at this time (milliseconds).
    Instant(i64),
    /// A range query.
    Range {
        /// First step, milliseconds.
        start: i64,
        /// Last step, milliseconds.
        end: i64,
        /// Step, milliseconds.
        step: i64,
    },
}

/// One evaluation and what it should produce.
#[derive(Debug, Clone)]
pub struct Eval {
    /// Index of its `eval` line.
    pub line: usize,
    /// Index one past its last expected line.
    pub end: usize,
    /// The query.
    pub query: String,
    /// When.
    pub kind: EvalKind,
    /// Whether an instant vector's order is checked.
    pub ordered: bool,
    /// The expected outcome.
    pub expected: Outcome,
    /// Why Prometheus is not asked (a documented divergence), if so.
    pub oracle_skip: Option<String>,
}

/// One value token of a result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token {
    /// A value.
    Value(f64),
    /// No value at this step.
    Missing,
    /// A value at a time (range vectors), milliseconds.
    At(f64, i64),
}

/// What an evaluation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A scalar.
    Scalar(f64),
    /// A string.
    String(String),
    /// Series (labels in Prometheus notation) with their tokens.
    Series(Vec<(String, Vec<Token>)>),
    /// An error whose message contains this text (empty: any error).
    Error(String),
}

/// Parses a duration such as `5m`, `1h30m`, `90s`, `0`, `1.5` (seconds) into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(seconds) = s.parse::<f64>() {
        return Ok((seconds * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {s:?} lacks a unit"))?;
        if digits == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad number in {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            other => return Err(format!("unknown unit {other:?} in {s:?}")),
        };
        total += n * unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats milliseconds as a Prometheus duration (`1h30m`, `15s`, `0s`, `1500ms`).
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut s = ms / 1000;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            let _ = write!(out, "{}{unit}", s / len);
            s %= len;
        }
    }
    out
}

/// Formats a value as Prometheus writes it (`NaN`, `+Inf`, shortest round-trip digits).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

fn parse_number(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Inf" | "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse::<f64>()
            .map_err(|_| format!("invalid number {other:?}")),
    }
}

/// Expands promqltest's series notation into one entry per interval.
pub fn parse_series_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        if token == "_" {
            out.push(None);
        } else if token == "stale" {
            out.push(Some(f64::from_bits(STALE_NAN)));
        } else if let Some(n) = token.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid {token:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
        } else if let Some((head, times)) = token.rsplit_once('x') {
            let times: i64 = times.parse().map_err(|_| format!("invalid {token:?}"))?;
            // head is `a`, `a+b` or `a-b` (a may itself be negative).
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
            for k in 0..=times {
                out.push(Some(start + delta * k as f64));
            }
        } else {
            out.push(Some(parse_number(token)?));
        }
    }
    Ok(out)
}

/// Splits `name{a="b", c="d"} rest` into labels and the rest of the line.
pub fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let text = text.trim_start();
    let mut labels = BTreeMap::new();
    let name_end = text
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(text.len());
    if name_end > 0 {
        labels.insert("__name__".to_owned(), text[..name_end].to_owned());
    }
    let rest = &text[name_end..];
    let Some(body) = rest.strip_prefix('{') else {
        return Ok((labels, rest));
    };
    let mut chars = body.char_indices().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_whitespace() || *c == ',')
        {
            chars.next();
        }
        match chars.peek() {
            Some((i, '}')) => {
                let i = *i;
                return Ok((labels, &body[i + 1..]));
            }
            None => return Err(format!("unterminated labels in {text:?}")),
            _ => {}
        }
        let mut name = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_whitespace() || *c == '=')
        {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("expected a quoted value in {text:?}"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '"')) => break,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated value in {text:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated value in {text:?}")),
            }
        }
        labels.insert(name, value);
    }
}

/// Labels in Prometheus notation: `name{a="b", c="d"}`, `{}` when empty.
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    let mut out = labels.get("__name__").cloned().unwrap_or_default();
    out.push('{');
    let mut first = true;
    for (name, value) in labels {
        if name == "__name__" {
            continue;
        }
        if !first {
            out.push_str(", ");
        }
        first = false;
        let _ = write!(out, "{name}={value:?}");
    }
    out.push('}');
    out
}

fn parse_expected(lines: &[String]) -> Result<Outcome, String> {
    let mut series = Vec::new();
    for line in lines {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("scalar ") {
            return Ok(Outcome::Scalar(parse_number(rest.trim())?));
        }
        if let Some(rest) = line.strip_prefix("string ") {
            let s: String =
                serde_json::from_str(rest.trim()).map_err(|e| format!("bad string: {e}"))?;
            return Ok(Outcome::String(s));
        }
        if let Some(rest) = line.strip_prefix("error") {
            return Ok(Outcome::Error(rest.trim().to_owned()));
        }
        let (labels, rest) = parse_labels(line)?;
        let mut tokens = Vec::new();
        for token in rest.split_whitespace() {
            if token == "_" {
                tokens.push(Token::Missing);
            } else if let Some((v, t)) = token.split_once('@') {
                tokens.push(Token::At(parse_number(v)?, parse_duration(t)?));
            } else {
                let expanded = parse_series_values(token)?;
                tokens.extend(expanded.into_iter().map(|v| match v {
                    Some(v) => Token::Value(v),
                    None => Token::Missing,
                }));
            }
        }
        series.push((format_labels(&labels), tokens));
    }
    Ok(Outcome::Series(series))
}

impl GoldenFile {
    /// Reads and parses a golden file.
    pub fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let groups = Self::parse(&lines).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self {
            path: path.to_owned(),
            lines,
            groups,
        }
    }

    fn parse(lines: &[String]) -> Result<Vec<Group>, String> {
        let mut groups: Vec<Group> = Vec::new();
        let mut i = 0;
        let mut skip: Option<String> = None;
        while i < lines.len() {
            let line = lines[i].trim();
            let line_no = i + 1;
            let at = move |msg: String| format!("line {line_no}: {msg}");
            if let Some(reason) = line.strip_prefix("#! oracle: skip") {
                skip = Some(reason.trim().to_owned());
                i += 1;
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                i += 1;
                continue;
            }
            if let Some(interval) = line.strip_prefix("load ") {
                let mut group = Group {
                    interval_ms: parse_duration(interval.trim()).map_err(at)?,
                    ..Group::default()
                };
                i += 1;
                while i < lines.len() && lines[i].starts_with([' ', '\t']) {
                    let text = lines[i].trim();
                    if !text.is_empty() && !text.starts_with('#') {
                        let (labels, rest) = parse_labels(text).map_err(at)?;
                        group.series.push(LoadSeries {
                            labels,
                            values: parse_series_values(rest).map_err(at)?,
                        });
                    }
                    i += 1;
                }
                groups.push(group);
                continue;
            }
            let (keyword, rest) = line.split_once(' ').ok_or_else(|| at("bad line".into()))?;
            let (ordered, fail) = match keyword {
                "eval" => (false, false),
                "eval_ordered" => (true, false),
                "eval_fail" => (false, true),
                other => return Err(at(format!("unknown command {other:?}"))),
            };
            let (kind, query) = if let Some(rest) = rest.strip_prefix("instant at ") {
                let (t, q) = rest.split_once(' ').ok_or_else(|| at("no query".into()))?;
                (EvalKind::Instant(parse_duration(t).map_err(at)?), q)
            } else if let Some(rest) = rest.strip_prefix("range from ") {
                let parts: Vec<&str> = rest.splitn(6, ' ').collect();
                if parts.len() < 6 || parts[1] != "to" || parts[3] != "step" {
                    return Err(at("expected `range from T to T step D query`".into()));
                }
                (
                    EvalKind::Range {
                        start: parse_duration(parts[0]).map_err(at)?,
                        end: parse_duration(parts[2]).map_err(at)?,
                        step: parse_duration(parts[4]).map_err(at)?,
                    },
                    parts[5],
                )
            } else {
                return Err(at("expected `instant at` or `range from`".into()));
            };
            let start = i;
            i += 1;
            let mut expected_lines = Vec::new();
            while i < lines.len()
                && lines[i].starts_with([' ', '\t'])
                && !lines[i].trim().is_empty()
            {
                expected_lines.push(lines[i].clone());
                i += 1;
            }
            let mut expected = parse_expected(&expected_lines).map_err(at)?;
            if fail && !matches!(expected, Outcome::Error(_)) {
                expected = Outcome::Error(String::new());
            }
            if groups.is_empty() {
                groups.push(Group::default());
            }
            groups.last_mut().expect("a group").evals.push(Eval {
                line: start,
                end: i,
                query: query.trim().to_owned(),
                kind,
                ordered,
                expected,
                oracle_skip: skip.take(),
            });
        }
        Ok(groups)
    }

    /// Rewrites the file with `outcomes` (one per eval, in file order) as expectations.
    pub fn rewrite(&self, outcomes: &[Outcome]) {
        let evals: Vec<&Eval> = self.groups.iter().flat_map(|g| &g.evals).collect();
        assert_eq!(evals.len(), outcomes.len());
        let mut out: Vec<String> = Vec::with_capacity(self.lines.len());
        let mut next = 0;
        for (eval, outcome) in evals.iter().zip(outcomes) {
            out.extend_from_slice(&self.lines[next..eval.line]);
            let head = &self.lines[eval.line];
            let (keyword, rest) = head.split_once(' ').unwrap_or((head, ""));
            let keyword = match (outcome, keyword) {
                (Outcome::Error(_), _) => "eval_fail",
                (_, "eval_fail") => "eval",
                (_, k) => k,
            };
            out.push(format!("{keyword} {rest}"));
            out.extend(
                format_outcome(outcome)
                    .into_iter()
                    .map(|l| format!("    {l}")),
            );
            next = eval.end;
        }
        out.extend_from_slice(&self.lines[next..]);
        let mut text = out.join("\n");
        text.push('\n');
        std::fs::write(&self.path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.path.display()));
    }
}

/// The expectation lines for an outcome.
pub fn format_outcome(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Scalar(v) => vec![format!("scalar {}", format_value(*v))],
        Outcome::String(s) => vec![format!("string {}", serde_json::Value::from(s.as_str()))],
        Outcome::Error(message) => vec![format!("error {message}")],
        Outcome::Series(series) => series
            .iter()
            .map(|(labels, tokens)| {
                let mut line = labels.clone();
                for t in tokens {
                    line.push(' ');
                    match t {
                        Token::Value(v) => line.push_str(&format_value(*v)),
                        Token::Missing => line.push('_'),
                        Token::At(v, t) => {
                            let _ = write!(line, "{}@{}", format_value(*v), format_duration(*t));
                        }
                    }
                }
                line
            })
            .collect(),
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    let diff = (a - b).abs();
    diff <= tolerance * a.abs().max(b.abs()) || diff < 1e-12
}

/// Compares two outcomes; `None` when they agree within `tolerance` (relative).
pub fn compare(
    expected: &Outcome,
    actual: &Outcome,
    ordered: bool,
    tolerance: f64,
) -> Option<String> {
    match (expected, actual) {
        (Outcome::Error(want), Outcome::Error(got)) => {
            (!got.contains(want.as_str())).then(|| format!("error {got:?} lacks {want:?}"))
        }
        (Outcome::Scalar(a), Outcome::Scalar(b)) => {
            (!close(*a, *b, tolerance)).then(|| format!("scalar {a} != {b}"))
        }
        (Outcome::String(a), Outcome::String(b)) => (a != b).then(|| format!("{a:?} != {b:?}")),
        (Outcome::Series(a), Outcome::Series(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            if !ordered {
                a.sort_by(|x, y| x.0.cmp(&y.0));
                b.sort_by(|x, y| x.0.cmp(&y.0));
            }
            if a.len() != b.len() {
                return Some(format!("{} series expected, {} returned", a.len(), b.len()));
            }
            for ((la, ta), (lb, tb)) in a.iter().zip(&b) {
                if la != lb {
                    return Some(format!("series {la} expected, {lb} returned"));
                }
                if ta.len() != tb.len() {
                    return Some(format!(
                        "{la}: {} values expected, {} returned",
                        ta.len(),
                        tb.len()
                    ));
                }
                for (x, y) in ta.iter().zip(tb) {
                    let same = match (x, y) {
                        (Token::Value(x), Token::Value(y)) => close(*x, *y, tolerance),
                        (Token::At(x, t), Token::At(y, u)) => t == u && close(*x, *y, tolerance),
                        (Token::Missing, Token::Missing) => true,
                        _ => false,
                    };
                    if !same {
                        return Some(format!("{la}: {x:?} expected, {y:?} returned"));
                    }
                }
            }
            None
        }
        (want, got) => Some(format!("{want:?} expected, {got:?} returned")),
    }
}

/// Pushes a group's series into an aggregator (one batch per 500 series).
pub fn load_into(agg: &Aggregator, group: &Group) {
    let series: Vec<Series> = group
        .series
        .iter()
        .map(|s| Series {
            labels: s
                .labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            samples: s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.map(|value| Sample {
                        timestamp_ms: i as i64 * group.interval_ms,
                        value,
                    })
                })
                .collect(),
            exemplars: vec![],
        })
        .collect();
    let batches: Vec<_> = series
        .chunks(500)
        .enumerate()
        .map(|(i, chunk)| {
            let payload = BatchPayload {
                series: chunk.to_vec(),
                ..Default::default()
            };
            sonde_proto::codec::encode_batch("promqltest", 1, i as u64 + 1, &payload, 3)
        })
        .collect();
    let expected = batches.len();
    let acks = agg.push(batches);
    assert_eq!(acks.len(), expected, "every batch acknowledged");
    for ack in acks {
        assert_eq!(
            ack.status,
            sonde_proto::v1::AckStatus::Ok as i32,
            "batch rejected: {ack:?}"
        );
    }
}

/// Runs one evaluation against a Prometheus-compatible HTTP API at `base`.
pub fn run_eval(base: &str, eval: &Eval) -> Outcome {
    let path = match eval.kind {
        EvalKind::Instant(t) => format!(
            "/api/v1/query?query={}&time={}",
            encode(&eval.query),
            t as f64 / 1000.0
        ),
        EvalKind::Range { start, end, step } => format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(&eval.query),
            start as f64 / 1000.0,
            end as f64 / 1000.0,
            step as f64 / 1000.0
        ),
    };
    let response =
        crate::http_get(&format!("{base}{path}")).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let json: Json = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", response.body));
    outcome_from_json(&json, eval.kind)
}

fn json_number(v: &Json) -> f64 {
    v.as_str()
        .map(|s| parse_number(s).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or(f64::NAN)
}

fn json_time_ms(v: &Json) -> i64 {
    (v.as_f64().expect("timestamp") * 1000.0).round() as i64
}

fn json_labels(v: &Json) -> String {
    let labels: BTreeMap<String, String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    format_labels(&labels)
}

/// Converts a Prometheus API response into an outcome.
pub fn outcome_from_json(json: &Json, kind: EvalKind) -> Outcome {
    if json["status"] != "success" {
        return Outcome::Error(json["error"].as_str().unwrap_or("").to_owned());
    }
    let data = &json["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => Outcome::Scalar(json_number(&result[1])),
        Some("string") => Outcome::String(result[1].as_str().unwrap_or_default().to_owned()),
        Some("vector") => Outcome::Series(
            result
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            (
                                json_labels(&s["metric"]),
                                vec![Token::Value(json_number(&s["value"][1]))],
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("matrix") => Outcome::Series(
            result
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            let points: Vec<(i64, f64)> = s["values"]
                                .as_array()
                                .map(|p| {
                                    p.iter()
                                        .map(|p| (json_time_ms(&p[0]), json_number(&p[1])))
                                        .collect()
                                })
                                .unwrap_or_default();
                            let tokens = match kind {
                                EvalKind::Range { start, end, step } => {
                                    let steps = ((end - start) / step + 1) as usize;
                                    let mut tokens = vec![Token::Missing; steps];
                                    for (t, v) in points {
                                        let i = ((t - start) / step) as usize;
                                        if i < steps {
                                            tokens[i] = Token::Value(v);
                                        }
                                    }
                                    tokens
                                }
                                EvalKind::Instant(_) => {
                                    points.into_iter().map(|(t, v)| Token::At(v, t)).collect()
                                }
                            };
                            (json_labels(&s["metric"]), tokens)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        other => Outcome::Error(format!("unknown result type {other:?}")),
    }
}

/// Every golden file under `tests/fixtures/promql/`, sorted.
pub fn golden_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/promql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    files
}

/// Runs every eval of a file against fresh aggregators (one per group); outcomes in order.
pub fn run_file_against_sonde(file: &GoldenFile) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for group in &file.groups {
        let agg = Aggregator::start();
        load_into(&agg, group);
        for eval in &group.evals {
            outcomes.push(run_eval(&agg.url(), eval));
        }
    }
    outcomes
}

/// The value tokens promtool's series notation takes for a loaded series.
fn promtool_values(values: &[Option<f64>]) -> String {
    values
        .iter()
        .map(|v| match v {
            None => "_".to_owned(),
            Some(v) if v.to_bits() == STALE_NAN => "stale".to_owned(),
            Some(v) => format_value(*v),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn yaml_string(s: &str) -> String {
    // Single-quoted YAML: only the quote itself needs doubling.
    format!("'{}'", s.replace('\'', "''"))
}

/// One instant evaluation promtool is asked for.
#[derive(Debug, Clone)]
pub struct OracleQuestion {
    /// The query.
    pub query: String,
    /// Evaluation time, milliseconds.
    pub time_ms: i64,
}

/// Builds `promtool test rules` input asking every question; each expects a sentinel sample
/// no real result can equal, so promtool prints what Prometheus computed for all of them.
pub fn promtool_input(groups: &[(&Group, Vec<OracleQuestion>)]) -> String {
    let mut out = String::from("evaluation_interval: 1m\ntests:\n");
    for (group, questions) in groups {
        let _ = writeln!(
            out,
            "  - interval: {}\n    input_series:",
            format_duration(group.interval_ms.max(1000))
        );
        if group.series.is_empty() {
            out.push_str("      []\n");
        }
        for s in &group.series {
            let _ = writeln!(
                out,
                "      - series: {}\n        values: {}",
                yaml_string(&format_labels_go(&s.labels)),
                yaml_string(&promtool_values(&s.values))
            );
        }
        out.push_str("    promql_expr_test:\n");
        for q in questions {
            let _ = writeln!(
                out,
                "      - expr: {}\n        eval_time: {}\n        exp_samples:\n          - labels: \
                 '{{__oracle_sentinel__=\"1\"}}'\n            value: 0",
                yaml_string(&q.query),
                format_duration(q.time_ms)
            );
        }
    }
    out
}

/// Labels as a series selector promtool accepts: `name{a="b"}`.
fn format_labels_go(labels: &BTreeMap<String, String>) -> String {
    let mut out = labels.get("__name__").cloned().unwrap_or_default();
    out.push('{');
    let inner: Vec<String> = labels
        .iter()
        .filter(|(n, _)| *n != "__name__")
        .map(|(n, v)| format!("{n}={}", serde_json::Value::from(v.as_str())))
        .collect();
    out.push_str(&inner.join(","));
    out.push('}');
    out
}

/// What promtool reported for one question.
#[derive(Debug, Clone, PartialEq)]
pub enum OracleAnswer {
    /// Samples (labels in our notation, value).
    Samples(Vec<(String, f64)>),
    /// An evaluation error.
    Error(String),
}

/// Runs promtool over `input` and returns its answers in question order.
pub fn ask_promtool(input: &str, expected: usize) -> Vec<OracleAnswer> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("oracle.yml");
    std::fs::write(&path, input).expect("write promtool input");
    let output = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("run promtool (Debian package prometheus)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let answers = parse_promtool_output(&text);
    assert_eq!(
        answers.len(),
        expected,
        "promtool answered {} of {expected} questions:\n{text}\ninput:\n{input}",
        answers.len()
    );
    answers
}

/// Parses promtool's failure report: `expr: "…", time: …, err: …` or a `got:` line with
/// `{labels} value, …` (`nil` for nothing).
pub fn parse_promtool_output(text: &str) -> Vec<OracleAnswer> {
    let mut answers = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if !line.starts_with("expr: \"") {
            i += 1;
            continue;
        }
        if let Some(pos) = line.find(", err: ") {
            answers.push(OracleAnswer::Error(line[pos + 7..].to_owned()));
            i += 1;
            continue;
        }
        // Find the `got:` line that belongs to this expr.
        let mut j = i + 1;
        while j < lines.len() && !lines[j].trim_start().starts_with("got:") {
            j += 1;
        }
        let got = lines
            .get(j)
            .map(|l| l.trim_start().trim_start_matches("got:").trim())
            .unwrap_or("nil");
        answers.push(OracleAnswer::Samples(parse_got(got)));
        i = j + 1;
    }
    answers
}

fn parse_got(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    if rest == "nil" || rest.is_empty() {
        return out;
    }
    while !rest.is_empty() {
        let Ok((labels, after)) = parse_labels(rest) else {
            break;
        };
        let after = after.trim_start();
        let end = after.find(", ").unwrap_or(after.len());
        let value = parse_number(after[..end].trim()).unwrap_or(f64::NAN);
        out.push((format_labels(&labels), value));
        rest = after[end..].trim_start_matches(", ").trim_start();
    }
    out
}
