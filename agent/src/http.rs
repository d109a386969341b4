//! The agent's HTTP endpoint: `/metrics` and `/-/healthy`.
//!
//! `/metrics` shows the samples of the last collection tick — the very payload that was
//! queued for the aggregators ([`Latest`]), so a Prometheus scraping the agent during a
//! migration sees what Sonde stores — followed by the agent's own `sonde_agent_*` metrics.
//! Prometheus text format 0.0.4 by default, OpenMetrics 1.0 when the `Accept` header asks for
//! it ([`exposition`]). Values are as of the last tick (at most one collection interval old),
//! exposed without timestamps like node_exporter.

pub mod exposition;

use std::sync::{Arc, RwLock};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use sonde_proto::v1::BatchPayload;

use crate::metrics::Metrics;

/// The last tick's payload, shared between the collection loop and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Latest(Arc<RwLock<Option<Arc<BatchPayload>>>>);

impl Latest {
    /// Replaces the shown payload.
    pub fn publish(&self, payload: Arc<BatchPayload>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(payload);
    }

    /// The payload shown now, if a tick completed.
    pub fn get(&self) -> Option<Arc<BatchPayload>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    latest: Latest,
}

/// The router.
pub fn router(metrics: Arc<Metrics>, latest: Latest) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/-/healthy", get(|| async { "Sonde agent is Healthy.\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") })
        .with_state(AppState { metrics, latest })
}

async fn render(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let format =
        exposition::Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let AppState { metrics, latest } = state;
    // Rendering thousands of series is CPU work: keep it off the runtime threads.
    let body = tokio::task::spawn_blocking(move || {
        // Self-metrics first: the payload read after them is at least as new as the
        // `last_collection_timestamp` they show.
        let own = metrics.render();
        let mut out = String::with_capacity(256 * 1024);
        if let Some(payload) = latest.get() {
            exposition::render(&payload, format, &mut out);
        }
        exposition::append_self_metrics(&own, format, &mut out);
        out
    })
    .await
    .unwrap_or_else(|error| format!("# rendering failed: {error}\n"));
    ([(header::CONTENT_TYPE, format.content_type())], body)
}
