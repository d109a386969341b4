//! One rule group's evaluation, as Prometheus 2.42's `Group.Eval`: rules in file order at one
//! timestamp, each rule's output appended to the store (recording rules under their new
//! name; alerting rules as `ALERTS`/`ALERTS_FOR_STATE`), series a rule no longer returns
//! marked stale, and `for` state restored from `ALERTS_FOR_STATE` after a restart.
//!
//! Owns: [`Group`], [`RuleState`], the PromQL-to-template bridge. Must not: schedule (the
//! manager does), send notifications (it returns what to send) or block the async runtime
//! (callers run it on the blocking pool).

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use super::{
    alert::{Alert, AlertSet, AlertState, Candidate},
    file::{GroupSpec, RuleKind, RuleSpec},
    template::{AlertData, QuerySample, Template, TemplateContext, expand_or_marker},
};
use crate::{
    promql::{Engine, STALE_NAN_BITS, Value},
    store::{Labels, Matcher, Sample, Store},
};

/// Name of the series alerting rules write their alerts to.
pub const ALERTS: &str = "ALERTS";
/// Name of the series holding each active alert's `activeAt` (seconds).
pub const ALERTS_FOR_STATE: &str = "ALERTS_FOR_STATE";

/// A rule's health after its last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// Evaluated without error.
    Good,
    /// The last evaluation failed.
    Bad,
}

impl Health {
    /// Prometheus' name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Good => "ok",
            Self::Bad => "err",
        }
    }
}

/// What evaluating rules needs.
pub struct EvalContext<'a> {
    /// The PromQL engine.
    pub engine: &'a Engine,
    /// Where outputs go.
    pub store: &'a Store,
    /// `$externalLabels`.
    pub external_labels: &'a BTreeMap<String, String>,
    /// `$externalURL`.
    pub external_url: &'a str,
    /// Deadline of each rule's query.
    pub query_timeout: Duration,
}

/// A rule and what its evaluations left behind.
#[derive(Debug, Clone)]
pub struct RuleState {
    /// The rule as loaded.
    pub spec: RuleSpec,
    /// Health of the last evaluation.
    pub health: Health,
    /// Error of the last evaluation.
    pub last_error: Option<String>,
    /// Wall-clock time of the last evaluation (ms).
    pub last_evaluation_ms: i64,
    /// Duration of the last evaluation.
    pub evaluation_seconds: f64,
    /// Alerts (alerting rules).
    pub alerts: AlertSet,
    /// Whether `for` state was restored (ALERTS are written only afterwards, as Prometheus).
    pub restored: bool,
    series_in_previous_eval: HashSet<Labels>,
}

impl RuleState {
    fn new(spec: RuleSpec) -> Self {
        Self {
            spec,
            health: Health::Unknown,
            last_error: None,
            last_evaluation_ms: 0,
            evaluation_seconds: 0.0,
            alerts: AlertSet::default(),
            restored: false,
            series_in_previous_eval: HashSet::new(),
        }
    }

    fn hold_ms(&self) -> i64 {
        match &self.spec.kind {
            RuleKind::Alerting { hold, .. } => hold.as_millis() as i64,
            RuleKind::Recording => 0,
        }
    }
}

/// A group with its rules' state.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group as loaded.
    pub spec: GroupSpec,
    /// Evaluation interval (own or default).
    pub interval: Duration,
    /// Rules in order.
    pub rules: Vec<RuleState>,
    /// Wall-clock time of the last evaluation (ms).
    pub last_evaluation_ms: i64,
    /// Duration of the last evaluation.
    pub evaluation_seconds: f64,
    /// Samples the last evaluation produced.
    pub last_samples: usize,
}

/// Alerts one evaluation wants sent, per rule expression.
pub type Outgoing = Vec<(String, Vec<Alert>)>;

/// Template `query` through the engine at the evaluation time.
struct Queries<'a> {
    ctx: &'a EvalContext<'a>,
    ts: i64,
}

impl TemplateContext for Queries<'_> {
    fn query(&self, query: &str) -> Result<Vec<QuerySample>, String> {
        let result = run_query(self.ctx, query, self.ts).map_err(|e| e.to_string())?;
        Ok(result
            .into_iter()
            .map(|(labels, value)| QuerySample {
                labels: labels
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect(),
                value,
            })
            .collect())
    }
}

/// Evaluates `expr` at `ts` as Prometheus' `EngineQueryFunc`: a vector as is, a scalar as
/// one sample without labels, anything else an error.
pub fn run_query(ctx: &EvalContext<'_>, expr: &str, ts: i64) -> Result<Vec<(Labels, f64)>, String> {
    let deadline = Instant::now() + ctx.query_timeout;
    match ctx.engine.instant(expr, ts, deadline) {
        Ok(Value::Vector(v)) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Ok(Value::Scalar { v, .. }) => Ok(vec![(Labels::default(), v)]),
        Ok(_) => Err("rule result is not a vector or scalar".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn with_name(labels: &Labels, name: &str, extra: Option<(&str, &str)>) -> Labels {
    let pairs = labels
        .iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .chain([("__name__".to_owned(), name.to_owned())])
        .chain(extra.map(|(n, v)| (n.to_owned(), v.to_owned())));
    Labels::from_pairs(pairs)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Group {
    /// A group with fresh state.
    pub fn new(spec: GroupSpec, default_interval: Duration) -> Self {
        let interval = spec.interval.unwrap_or(default_interval);
        let rules = spec.rules.iter().cloned().map(RuleState::new).collect();
        Self {
            spec,
            interval,
            rules,
            last_evaluation_ms: 0,
            evaluation_seconds: 0.0,
            last_samples: 0,
        }
    }

    /// Takes over the state of `old` (a reload): rules with the same name, kind and
    /// expression keep their alerts, health and series; as Prometheus' `CopyState`.
    pub fn copy_state(&mut self, old: &Group) {
        self.last_evaluation_ms = old.last_evaluation_ms;
        self.evaluation_seconds = old.evaluation_seconds;
        let mut used = vec![false; old.rules.len()];
        for rule in &mut self.rules {
            let found = old.rules.iter().enumerate().position(|(i, o)| {
                !used[i]
                    && o.spec.name == rule.spec.name
                    && o.spec.expr == rule.spec.expr
                    && matches!(o.spec.kind, RuleKind::Alerting { .. })
                        == matches!(rule.spec.kind, RuleKind::Alerting { .. })
            });
            if let Some(i) = found {
                used[i] = true;
                let o = &old.rules[i];
                rule.health = o.health;
                rule.last_error = o.last_error.clone();
                rule.last_evaluation_ms = o.last_evaluation_ms;
                rule.evaluation_seconds = o.evaluation_seconds;
                rule.alerts = o.alerts.clone();
                rule.restored = o.restored;
                rule.series_in_previous_eval = o.series_in_previous_eval.clone();
            }
        }
    }

    /// Marks every rule restored (promtool's unit tests, reloaded groups).
    pub fn set_restored(&mut self) {
        for r in &mut self.rules {
            r.restored = true;
        }
    }

    /// Evaluates every rule at `ts` (ms), appending outputs to the store. Returns the alerts
    /// to send (with `resend_delay` and this group's interval deciding, as Prometheus).
    pub fn eval(&mut self, ctx: &EvalContext<'_>, ts: i64, resend_delay: Duration) -> Outgoing {
        let started = Instant::now();
        let wall = now_ms();
        let mut outgoing = Vec::new();
        let mut samples_total = 0;
        let limit = self.spec.limit;
        let interval_ms = self.interval.as_millis() as i64;
        for rule in &mut self.rules {
            let rule_started = Instant::now();
            rule.last_evaluation_ms = wall;
            let result = match &rule.spec.kind {
                RuleKind::Recording => eval_recording(ctx, &rule.spec, ts, limit),
                RuleKind::Alerting { .. } => eval_alerting(ctx, rule, ts, limit),
            };
            rule.evaluation_seconds = rule_started.elapsed().as_secs_f64();
            let output = match result {
                Ok(o) => o,
                Err(e) => {
                    rule.health = Health::Bad;
                    rule.last_error = Some(e);
                    continue;
                }
            };
            rule.health = Health::Good;
            rule.last_error = None;
            samples_total += output.len();
            if matches!(rule.spec.kind, RuleKind::Alerting { .. }) {
                let send = rule
                    .alerts
                    .to_send(ts, resend_delay.as_millis() as i64, interval_ms);
                if !send.is_empty() {
                    outgoing.push((rule.spec.expr.clone(), send));
                }
            }
            let returned: HashSet<Labels> = output.iter().map(|(l, _)| l.clone()).collect();
            let mut batch: Vec<(Labels, Vec<Sample>)> = output
                .into_iter()
                .map(|(l, v)| (l, vec![Sample { t: ts, v }]))
                .collect();
            for gone in rule.series_in_previous_eval.difference(&returned) {
                batch.push((
                    gone.clone(),
                    vec![Sample {
                        t: ts,
                        v: f64::from_bits(STALE_NAN_BITS),
                    }],
                ));
            }
            if !batch.is_empty()
                && let Err(e) = ctx.store.append_batch(batch, Vec::new())
            {
                rule.health = Health::Bad;
                rule.last_error = Some(format!("cannot store rule output: {e}"));
            }
            rule.series_in_previous_eval = returned;
        }
        self.last_evaluation_ms = wall;
        self.evaluation_seconds = started.elapsed().as_secs_f64();
        self.last_samples = samples_total;
        outgoing
    }

    /// Restores `for` state from `ALERTS_FOR_STATE` written within `outage_tolerance`
    /// before `ts`, as Prometheus' `RestoreForState`; marks every rule restored.
    pub fn restore_for_state(
        &mut self,
        store: &Store,
        ts: i64,
        outage_tolerance: Duration,
        grace: Duration,
    ) {
        let mint = ts - outage_tolerance.as_millis() as i64;
        let grace_ms = grace.as_millis() as i64;
        for rule in &mut self.rules {
            let hold = rule.hold_ms();
            if !matches!(rule.spec.kind, RuleKind::Alerting { .. }) || hold < grace_ms {
                rule.restored = true;
                continue;
            }
            for alert in rule.alerts.active.values_mut() {
                let mut matchers = vec![Matcher::equal("__name__", ALERTS_FOR_STATE)];
                matchers.extend(
                    alert
                        .labels
                        .iter()
                        .map(|l| Matcher::equal(l.name.to_string(), l.value.to_string())),
                );
                let series = match store.select(&matchers, mint, ts) {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::error!(%error, alert = %alert.labels, "cannot read ALERTS_FOR_STATE");
                        continue;
                    }
                };
                // Exactly the alert's labels plus the name.
                let want = alert.labels.len() + 1;
                let Some(last) = series
                    .iter()
                    .filter(|s| s.labels.len() == want)
                    .filter_map(|s| s.samples.last())
                    .max_by_key(|s| s.t)
                else {
                    continue;
                };
                if last.v.to_bits() == STALE_NAN_BITS || last.v.is_nan() {
                    continue;
                }
                let down_at = last.t.div_euclid(1000) * 1000;
                let mut active_at = (last.v as i64) * 1000;
                let remaining = hold - (down_at - active_at);
                if remaining <= 0 {
                    // It was firing; the next evaluation makes it fire again.
                } else if remaining < grace_ms {
                    active_at = ts + grace_ms - hold;
                } else {
                    active_at += ts - down_at;
                }
                tracing::info!(alert = %alert.labels, active_at, "'for' state restored");
                alert.active_at = active_at;
            }
            rule.restored = true;
        }
    }
}

fn eval_recording(
    ctx: &EvalContext<'_>,
    spec: &RuleSpec,
    ts: i64,
    limit: usize,
) -> Result<Vec<(Labels, f64)>, String> {
    let result = run_query(ctx, &spec.expr, ts)?;
    let mut seen = HashSet::with_capacity(result.len());
    let mut out = Vec::with_capacity(result.len());
    for (labels, v) in result {
        let pairs = labels
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .chain([("__name__".to_owned(), spec.name.clone())])
            .chain(spec.labels.iter().cloned());
        let labels = Labels::from_pairs(pairs);
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels"
                    .to_owned(),
            );
        }
        out.push((labels, v));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

fn eval_alerting(
    ctx: &EvalContext<'_>,
    rule: &mut RuleState,
    ts: i64,
    limit: usize,
) -> Result<Vec<(Labels, f64)>, String> {
    let RuleKind::Alerting {
        keep_firing_for,
        annotations,
        label_templates,
        annotation_templates,
        ..
    } = &rule.spec.kind
    else {
        unreachable!("eval_alerting on a recording rule");
    };
    let result = run_query(ctx, &rule.spec.expr, ts)?;
    let queries = Queries { ctx, ts };
    let mut seen = HashSet::with_capacity(result.len());
    let mut found = Vec::with_capacity(result.len());
    for (labels, value) in result {
        let data = AlertData {
            labels: labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect(),
            external_labels: ctx.external_labels.clone(),
            external_url: ctx.external_url.to_owned(),
            value,
        };
        let expand = |t: &Template, raw: &str| {
            if t.is_literal() {
                raw.to_owned()
            } else {
                expand_or_marker(t, &data, &queries)
            }
        };
        let pairs = labels
            .iter()
            .filter(|l| &*l.name != "__name__")
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .chain(
                rule.spec
                    .labels
                    .iter()
                    .zip(label_templates)
                    .map(|((n, raw), t)| (n.clone(), expand(t, raw))),
            )
            .chain([("alertname".to_owned(), rule.spec.name.clone())]);
        let alert_labels = Labels::from_pairs(pairs);
        let mut ann: Vec<(String, String)> = annotations
            .iter()
            .zip(annotation_templates)
            .map(|((n, raw), t)| (n.clone(), expand(t, raw)))
            .collect();
        ann.sort();
        if !seen.insert(alert_labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels"
                    .to_owned(),
            );
        }
        found.push(Candidate {
            labels: alert_labels,
            annotations: ann,
            value,
        });
    }
    let hold = rule.hold_ms();
    let restored = rule.restored;
    let active = rule
        .alerts
        .update(ts, found, hold, keep_firing_for.as_millis() as i64);
    if limit > 0 && active.len() > limit {
        let n = active.len();
        rule.alerts.active.clear();
        return Err(format!("exceeded limit of {limit} with {n} alerts"));
    }
    let mut out = Vec::new();
    if restored {
        for a in active {
            let state = match a.state {
                AlertState::Firing => "firing",
                _ => "pending",
            };
            out.push((
                with_name(&a.labels, ALERTS, Some(("alertstate", state))),
                1.0,
            ));
            out.push((
                with_name(&a.labels, ALERTS_FOR_STATE, None),
                a.active_at.div_euclid(1000) as f64,
            ));
        }
    }
    Ok(out)
}
