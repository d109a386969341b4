//! Recording and alerting rules: Prometheus rule files evaluated by our PromQL engine over
//! the store, outputs written back like ingested samples, alerts sent to Alertmanager.
//!
//! Parts: [`file`] (YAML → validated [`file::GroupSpec`]s, errors naming file, line, group
//! and rule), [`template`] (alert label/annotation templates), [`alert`] (the pending →
//! firing → resolved state machine), [`group`] (one group's evaluation, stale markers,
//! `ALERTS`/`ALERTS_FOR_STATE`, `for` restore), [`manager`] (scheduling and reload),
//! [`notify`] (Alertmanager API v2), [`api`] (`/api/v1/rules` and `/api/v1/alerts` data),
//! [`unittest`] (`sonde-aggregator test rules`, promtool's format).
//!
//! Must not: know HTTP routing or gRPC; the server wires the manager in.

pub mod alert;
pub mod api;
pub mod duration;
pub mod file;
pub mod group;
pub mod manager;
pub mod notify;
pub mod template;
pub mod unittest;

pub use self::{
    file::RuleFileError,
    manager::{RuleManager, RulesOptions},
    notify::{AlertmanagerUrl, Notifier},
};

/// Reloads the rules on every SIGHUP until `shutdown`.
pub async fn reload_on_sighup(
    manager: std::sync::Arc<RuleManager>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload with POST /-/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP received, reloading rules");
                let _ = manager.reload().await;
            }
        }
    }
}
