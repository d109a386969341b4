//! The `data` of `/api/v1/rules` and `/api/v1/alerts` in Prometheus 2.42's JSON shape
//! (`groups[].rules[]` with `state`, `duration`, `keepFiringFor`, `alerts`, `health`,
//! `lastError` when set, `evaluationTime`, `lastEvaluation`, `type`; alert `value` as Go's
//! `%e`).
//!
//! Must not: know HTTP (the API layer wraps this in its envelope).

use serde_json::{Map, Value, json};

use super::{
    alert::{Alert, AlertState},
    file::RuleKind,
    group::Group,
    notify::api_value,
};

/// Which rules `/api/v1/rules` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleFilter {
    /// All.
    All,
    /// `type=alert`.
    Alerting,
    /// `type=record`.
    Recording,
}

fn rfc3339_or_zero(ms: i64) -> String {
    if ms == 0 {
        "0001-01-01T00:00:00Z".to_owned()
    } else {
        rfc3339_nanos(ms)
    }
}

fn rfc3339_nanos(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn labels_obj<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Value::Object(m)
}

fn alert_json(a: &Alert) -> Value {
    let mut v = json!({
        "labels": labels_obj(a.labels.iter().map(|l| (&*l.name, &*l.value))),
        "annotations": labels_obj(a.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        "state": a.state.as_str(),
        "activeAt": rfc3339_nanos(a.active_at),
        "value": api_value(a.value),
    });
    if a.keep_firing_since != 0 {
        v["keepFiringSince"] = Value::String(rfc3339_nanos(a.keep_firing_since));
    }
    v
}

/// `{"groups":[…]}`.
pub fn rules(groups: &[Group], filter: RuleFilter) -> Value {
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            let rules: Vec<Value> = g
                .rules
                .iter()
                .filter_map(|r| {
                    let labels = labels_obj(r.spec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    let mut v = match &r.spec.kind {
                        RuleKind::Alerting {
                            hold,
                            keep_firing_for,
                            annotations,
                            ..
                        } => {
                            if filter == RuleFilter::Recording {
                                return None;
                            }
                            let alerts: Vec<Value> =
                                r.alerts.active_alerts().into_iter().map(alert_json).collect();
                            json!({
                                "state": r.alerts.state().as_str(),
                                "name": r.spec.name,
                                "query": r.spec.expr,
                                "duration": hold.as_secs_f64(),
                                "keepFiringFor": keep_firing_for.as_secs_f64(),
                                "labels": labels,
                                "annotations": labels_obj(annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                                "alerts": alerts,
                                "health": r.health.as_str(),
                                "evaluationTime": r.evaluation_seconds,
                                "lastEvaluation": rfc3339_or_zero(r.last_evaluation_ms),
                                "type": "alerting",
                            })
                        }
                        RuleKind::Recording => {
                            if filter == RuleFilter::Alerting {
                                return None;
                            }
                            json!({
                                "name": r.spec.name,
                                "query": r.spec.expr,
                                "labels": labels,
                                "health": r.health.as_str(),
                                "evaluationTime": r.evaluation_seconds,
                                "lastEvaluation": rfc3339_or_zero(r.last_evaluation_ms),
                                "type": "recording",
                            })
                        }
                    };
                    if let Some(e) = &r.last_error {
                        v["lastError"] = Value::String(e.clone());
                    }
                    Some(v)
                })
                .collect();
            json!({
                "name": g.spec.name,
                "file": g.spec.file,
                "rules": rules,
                "interval": g.interval.as_secs_f64(),
                "limit": g.spec.limit,
                "evaluationTime": g.evaluation_seconds,
                "lastEvaluation": rfc3339_or_zero(g.last_evaluation_ms),
            })
        })
        .collect();
    json!({ "groups": groups })
}

/// `{"alerts":[…]}`: every pending or firing alert.
pub fn alerts(groups: &[Group]) -> Value {
    let mut out = Vec::new();
    for g in groups {
        for r in &g.rules {
            for a in r.alerts.active_alerts() {
                if a.state != AlertState::Inactive {
                    out.push(alert_json(a));
                }
            }
        }
    }
    json!({ "alerts": out })
}
