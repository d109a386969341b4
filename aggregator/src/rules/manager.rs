//! The rule manager: loads the configured rule files, runs one task per group evaluating at
//! its interval (timestamps aligned to multiples of the interval plus a per-group offset, so
//! every replica evaluates at the same instants), restores `for` state after start-up,
//! reloads on request keeping the previous rules when the new ones are invalid, and hands
//! alerts to the [`Notifier`].
//!
//! Must not: evaluate on the async runtime threads (evaluations run on the blocking pool).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{
    file::{self, RuleFileError},
    group::{EvalContext, Group, Health},
    notify::{Notifier, postable},
};
use crate::{
    metrics::{Metrics, RuleGroupLabels},
    promql::Engine,
    store::Store,
};

/// Settings of rule evaluation.
#[derive(Debug, Clone)]
pub struct RulesOptions {
    /// Files, directories or globs.
    pub patterns: Vec<String>,
    /// Interval of groups without their own.
    pub default_interval: Duration,
    /// Minimum time between two sends of the same firing alert.
    pub resend_delay: Duration,
    /// How far back `ALERTS_FOR_STATE` is read when restoring.
    pub outage_tolerance: Duration,
    /// Least time a restored alert waits before firing.
    pub for_grace_period: Duration,
    /// `$externalURL` and the base of `generatorURL`.
    pub external_url: String,
    /// `$externalLabels`, added to sent alerts lacking them.
    pub external_labels: BTreeMap<String, String>,
    /// Deadline of each rule query.
    pub query_timeout: Duration,
}

struct RunningGroup {
    group: Arc<Mutex<Group>>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

struct Shared {
    options: RulesOptions,
    engine: Engine,
    store: Arc<Store>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
}

/// Runs the rule groups.
pub struct RuleManager {
    shared: Arc<Shared>,
    running: tokio::sync::Mutex<Vec<RunningGroup>>,
    snapshot: Mutex<Vec<Arc<Mutex<Group>>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for RuleManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleManager")
            .field("patterns", &self.shared.options.patterns)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// FNV-1a; spreads groups over their interval identically on every replica.
fn group_offset(group: &Group) -> i64 {
    let file = std::path::Path::new(&group.spec.file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in file.bytes().chain([0xff]).chain(group.spec.name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let interval = group.interval.as_millis().max(1) as u64;
    (h % interval) as i64
}

impl RuleManager {
    /// Loads the rules (an invalid file fails start-up) and starts evaluating them.
    pub async fn start(
        options: RulesOptions,
        engine: Engine,
        store: Arc<Store>,
        notifier: Arc<Notifier>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RuleFileError> {
        let specs = load(options.patterns.clone()).await?;
        let manager = Arc::new(Self {
            shared: Arc::new(Shared {
                options,
                engine,
                store,
                notifier,
                metrics,
            }),
            running: tokio::sync::Mutex::new(Vec::new()),
            snapshot: Mutex::new(Vec::new()),
            shutdown,
        });
        manager.apply(specs, true).await;
        Ok(manager)
    }

    /// Reloads the rule files. On error the running rules stay as they are.
    pub async fn reload(&self) -> Result<(), RuleFileError> {
        match load(self.shared.options.patterns.clone()).await {
            Ok(specs) => {
                self.apply(specs, false).await;
                tracing::info!("rules reloaded");
                Ok(())
            }
            Err(error) => {
                self.shared
                    .metrics
                    .rules
                    .config_last_reload_successful
                    .set(0);
                tracing::error!(%error, "rule reload failed; keeping the previous rules");
                Err(error)
            }
        }
    }

    async fn apply(&self, specs: Vec<file::GroupSpec>, first: bool) {
        let mut running = self.running.lock().await;
        let mut old: Vec<(String, Group)> = Vec::new();
        for r in running.drain(..) {
            r.stop.cancel();
            let _ = r.handle.await;
            let g = r.group.lock().unwrap_or_else(|p| p.into_inner()).clone();
            old.push((g.spec.key(), g));
        }
        let m = &self.shared.metrics.rules;
        for (key, _) in &old {
            let labels = RuleGroupLabels {
                rule_group: key.clone(),
            };
            m.group_rules.remove(&labels);
            m.group_interval.remove(&labels);
        }
        let mut snapshot = Vec::new();
        for spec in specs {
            let mut group = Group::new(spec, self.shared.options.default_interval);
            let key = group.spec.key();
            if let Some((_, o)) = old.iter().find(|(k, _)| *k == key) {
                group.copy_state(o);
            }
            if !first {
                group.set_restored();
            }
            let labels = RuleGroupLabels {
                rule_group: key.clone(),
            };
            m.group_rules
                .get_or_create(&labels)
                .set(group.rules.len() as i64);
            m.group_interval
                .get_or_create(&labels)
                .set(group.interval.as_secs_f64());
            let group = Arc::new(Mutex::new(group));
            let stop = self.shutdown.child_token();
            let handle = tokio::spawn(run_group(
                self.shared.clone(),
                group.clone(),
                stop.clone(),
                first,
            ));
            snapshot.push(group.clone());
            running.push(RunningGroup {
                group,
                stop,
                handle,
            });
        }
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        m.config_last_reload_successful.set(1);
        m.config_last_reload_success_timestamp.set(now_ms() / 1000);
    }

    /// A copy of every group's current state, in file order.
    pub fn groups(&self) -> Vec<Group> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|g| g.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// The external URL alerts link to.
    pub fn external_url(&self) -> &str {
        &self.shared.options.external_url
    }

    /// Stops every group and waits for running evaluations to finish.
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        for r in running.drain(..) {
            r.stop.cancel();
            let _ = r.handle.await;
        }
    }
}

async fn load(patterns: Vec<String>) -> Result<Vec<file::GroupSpec>, RuleFileError> {
    tokio::task::spawn_blocking(move || file::load_all(&patterns))
        .await
        .unwrap_or_else(|e| {
            Err(RuleFileError::Read {
                path: String::new(),
                message: format!("loading panicked: {e}"),
            })
        })
}

async fn run_group(
    shared: Arc<Shared>,
    group: Arc<Mutex<Group>>,
    stop: CancellationToken,
    mut should_restore: bool,
) {
    let (interval, offset, key, rules) = {
        let g = group.lock().unwrap_or_else(|p| p.into_inner());
        (
            g.interval.as_millis().max(1) as i64,
            group_offset(&g),
            g.spec.key(),
            g.rules.len() as u64,
        )
    };
    let labels = RuleGroupLabels { rule_group: key };
    let m = &shared.metrics.rules;
    // The first aligned instant after now (Prometheus' EvalTimestamp + interval).
    let now = now_ms();
    let adj = now - offset;
    let mut ts = adj - adj.rem_euclid(interval) + offset + interval;
    let mut evaluations = 0u32;
    loop {
        let wait = Duration::from_millis((ts - now_ms()).max(0) as u64);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let s = shared.clone();
        let g = group.clone();
        let restore = should_restore && evaluations == 1;
        let result = tokio::task::spawn_blocking(move || {
            let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
            let ctx = EvalContext {
                engine: &s.engine,
                store: &s.store,
                external_labels: &s.options.external_labels,
                external_url: &s.options.external_url,
                query_timeout: s.options.query_timeout,
            };
            let outgoing = g.eval(&ctx, ts, s.options.resend_delay);
            if restore {
                g.restore_for_state(
                    &s.store,
                    now_ms(),
                    s.options.outage_tolerance,
                    s.options.for_grace_period,
                );
            }
            let failures = g.rules.iter().filter(|r| r.health == Health::Bad).count();
            (outgoing, failures, g.evaluation_seconds, g.last_samples)
        })
        .await;
        evaluations = evaluations.saturating_add(1);
        if restore {
            should_restore = false;
        }
        match result {
            Ok((outgoing, failures, seconds, samples)) => {
                m.group_iterations.get_or_create(&labels).inc();
                m.evaluations.get_or_create(&labels).inc_by(rules);
                m.evaluation_failures
                    .get_or_create(&labels)
                    .inc_by(failures as u64);
                m.group_last_duration.get_or_create(&labels).set(seconds);
                m.group_last_evaluation
                    .get_or_create(&labels)
                    .set(ts as f64 / 1000.0);
                m.group_samples.get_or_create(&labels).set(samples as i64);
                for (expr, alerts) in outgoing {
                    shared.notifier.enqueue(postable(
                        &expr,
                        &alerts,
                        &shared.options.external_url,
                        &shared.options.external_labels,
                    ));
                }
            }
            Err(error) => tracing::error!(%error, "rule group evaluation panicked"),
        }
        let now = now_ms();
        let mut next = ts + interval;
        if next <= now {
            let missed = (now - ts) / interval - 1;
            if missed > 0 {
                m.group_iterations_missed
                    .get_or_create(&labels)
                    .inc_by(missed as u64);
                tracing::warn!(group = %labels.rule_group, missed, "rule group evaluation overran its interval");
            }
            next = ts + (missed.max(0) + 1) * interval;
        }
        ts = next;
    }
}
