//! Alert state, as Prometheus 2.42 keeps it: one [`Alert`] per label set an alerting rule's
//! expression returns, moving inactive → pending → firing after `for`, kept firing for
//! `keep_firing_for`, then resolved and kept 15 minutes so the resolution is sent.
//!
//! Owns: the state machine ([`AlertSet::update`]), the `ALERTS`/`ALERTS_FOR_STATE` samples,
//! which alerts need (re)sending and their `endsAt` ([`AlertSet::to_send`]).
//! Must not: evaluate PromQL or talk to Alertmanager.

use std::collections::HashMap;

use crate::store::Labels;

/// How long a resolved alert is kept so its resolution is (re)sent (Prometheus: 15m).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Resolved (kept for resending the resolution).
    Inactive,
    /// Active for less than `for`.
    Pending,
    /// Active for `for` or more.
    Firing,
}

impl AlertState {
    /// Prometheus' name (`alertstate` label, API `state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Identity: the expression's labels without `__name__`, the rule's labels, `alertname`.
    pub labels: Labels,
    /// Expanded annotations, sorted by name.
    pub annotations: Vec<(String, String)>,
    /// State.
    pub state: AlertState,
    /// Last expression value.
    pub value: f64,
    /// When it became pending (ms).
    pub active_at: i64,
    /// When it started firing (ms; 0 if never).
    pub fired_at: i64,
    /// When it resolved (ms; 0 if not).
    pub resolved_at: i64,
    /// When it was last sent (ms; 0 if never).
    pub last_sent_at: i64,
    /// `endsAt` of the last send (ms).
    pub valid_until: i64,
    /// Since when it is kept firing after the expression stopped returning it (ms; 0: not).
    pub keep_firing_since: i64,
}

/// What one evaluation returned for one label set.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Alert labels (already templated, with `alertname`).
    pub labels: Labels,
    /// Expanded annotations, sorted.
    pub annotations: Vec<(String, String)>,
    /// Expression value.
    pub value: f64,
}

/// The alerts of one alerting rule.
#[derive(Debug, Clone, Default)]
pub struct AlertSet {
    /// Alerts by label set.
    pub active: HashMap<Labels, Alert>,
}

impl AlertSet {
    /// Applies one evaluation at `ts` (ms): `found` are the expression's results. Returns the
    /// alerts that are pending or firing afterwards (those written as `ALERTS`).
    pub fn update(
        &mut self,
        ts: i64,
        found: Vec<Candidate>,
        hold_ms: i64,
        keep_firing_for_ms: i64,
    ) -> Vec<&Alert> {
        let mut returned = std::collections::HashSet::with_capacity(found.len());
        for c in found {
            returned.insert(c.labels.clone());
            match self.active.get_mut(&c.labels) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = c.value;
                    a.annotations = c.annotations;
                }
                _ => {
                    self.active.insert(
                        c.labels.clone(),
                        Alert {
                            labels: c.labels,
                            annotations: c.annotations,
                            state: AlertState::Pending,
                            value: c.value,
                            active_at: ts,
                            fired_at: 0,
                            resolved_at: 0,
                            last_sent_at: 0,
                            valid_until: 0,
                            keep_firing_since: 0,
                        },
                    );
                }
            }
        }
        let mut remove = Vec::new();
        for (key, a) in self.active.iter_mut() {
            if !returned.contains(key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_firing_for_ms > 0 {
                    if a.keep_firing_since == 0 {
                        a.keep_firing_since = ts;
                    }
                    keep_firing = ts - a.keep_firing_since < keep_firing_for_ms;
                }
                if a.state == AlertState::Pending
                    || (a.resolved_at != 0 && ts - a.resolved_at > RESOLVED_RETENTION_MS)
                {
                    remove.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = ts;
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = 0;
            }
            if a.state == AlertState::Pending && ts - a.active_at >= hold_ms {
                a.state = AlertState::Firing;
                a.fired_at = ts;
            }
        }
        for key in remove {
            self.active.remove(&key);
        }
        let mut out: Vec<&Alert> = self
            .active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Pending and firing alerts, sorted by labels.
    pub fn active_alerts(&self) -> Vec<&Alert> {
        let mut out: Vec<&Alert> = self
            .active
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// The rule's state: the most severe of its alerts.
    pub fn state(&self) -> AlertState {
        let mut state = AlertState::Inactive;
        for a in self.active.values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => state = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        state
    }

    /// The alerts to send after an evaluation at `ts`, marking them sent: firing alerts not
    /// sent within `resend_delay`, and resolutions not yet sent. `endsAt` is the resolution
    /// time, or `ts + 4 × max(resend_delay, interval)` for firing alerts (Prometheus).
    pub fn to_send(&mut self, ts: i64, resend_delay_ms: i64, interval_ms: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            let needs = match a.state {
                AlertState::Pending => false,
                _ if a.resolved_at > a.last_sent_at => true,
                _ => a.last_sent_at + resend_delay_ms < ts,
            };
            if !needs {
                continue;
            }
            a.last_sent_at = ts;
            a.valid_until = ts + 4 * resend_delay_ms.max(interval_ms);
            out.push(a.clone());
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(v: f64) -> Candidate {
        Candidate {
            labels: Labels::from_pairs([("alertname", "A"), ("job", "x")]),
            annotations: Vec::new(),
            value: v,
        }
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let mut set = AlertSet::default();
        let hold = 120_000;
        assert_eq!(
            set.update(0, vec![cand(1.0)], hold, 0)[0].state,
            AlertState::Pending
        );
        assert_eq!(
            set.update(60_000, vec![cand(2.0)], hold, 0)[0].state,
            AlertState::Pending
        );
        let firing = set.update(120_000, vec![cand(3.0)], hold, 0);
        assert_eq!(firing[0].state, AlertState::Firing);
        assert_eq!(firing[0].value, 3.0);
        let sent = set.to_send(120_000, 60_000, 15_000);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].valid_until, 120_000 + 240_000);
        assert!(
            set.to_send(150_000, 60_000, 15_000).is_empty(),
            "within resend delay"
        );
        assert_eq!(
            set.to_send(190_000, 60_000, 15_000).len(),
            1,
            "resent after delay"
        );
        assert!(set.update(200_000, vec![], hold, 0).is_empty());
        let resolved = set.to_send(200_000, 60_000, 15_000);
        assert_eq!(resolved[0].state, AlertState::Inactive);
        assert_eq!(resolved[0].resolved_at, 200_000);
        // Kept for 15 minutes, then dropped.
        set.update(200_000 + RESOLVED_RETENTION_MS, vec![], hold, 0);
        assert_eq!(set.active.len(), 1);
        set.update(200_001 + RESOLVED_RETENTION_MS, vec![], hold, 0);
        assert!(set.active.is_empty());
    }

    #[test]
    fn pending_alert_that_disappears_is_dropped_and_restarts() {
        let mut set = AlertSet::default();
        set.update(0, vec![cand(1.0)], 120_000, 0);
        set.update(60_000, vec![], 120_000, 0);
        assert!(set.active.is_empty());
        let a = set.update(120_000, vec![cand(1.0)], 120_000, 0);
        assert_eq!(a[0].active_at, 120_000);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let mut set = AlertSet::default();
        set.update(0, vec![cand(1.0)], 0, 120_000);
        assert_eq!(set.state(), AlertState::Firing);
        assert_eq!(set.update(60_000, vec![], 0, 120_000).len(), 1);
        assert_eq!(set.update(120_000, vec![], 0, 120_000).len(), 1);
        assert!(set.update(180_000, vec![], 0, 120_000).is_empty());
        assert_eq!(set.state(), AlertState::Inactive);
    }
}
