//! The HTTP server: the Prometheus HTTP API as Grafana calls it, health endpoints and our own
//! `/metrics`.
//!
//! Endpoints (GET, and form-encoded POST where Prometheus accepts it): `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/query_exemplars`,
//! `/api/v1/labels`, `/api/v1/label/<name>/values`, `/api/v1/series`, `/api/v1/metadata`,
//! `/api/v1/status/buildinfo`, `/api/v1/rules` and `/api/v1/alerts` (empty: no rule engine
//! yet), `/federate`, `/-/healthy`, `/-/ready`, `/metrics`.
//!
//! Owns: routing, request parameters ([`params`]), Prometheus' JSON envelope and value
//! formatting ([`json`]), and the one mapping from internal errors to HTTP status codes and
//! Prometheus error types ([`error`]). Must not: evaluate queries or touch storage beyond the
//! [`Engine`] and [`Store`] interfaces.
//!
//! Query evaluation runs on the blocking pool so a heavy query never stalls other requests.

pub mod error;
pub mod exemplars;
mod federate;
mod health;
pub mod json;
mod meta;
pub mod params;
mod query;
mod rules;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::get,
};

use crate::{metrics::Metrics, promql::Engine, store::Store};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Query engine.
    pub engine: Engine,
    /// The store (label and series lookups).
    pub store: Arc<Store>,
    /// Our own metrics.
    pub metrics: Arc<Metrics>,
    /// Set once start-up finished; `/-/ready` answers 503 before.
    pub ready: Arc<AtomicBool>,
    /// When the process started (buildinfo, status).
    pub started: Instant,
}

impl ApiState {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Builds the router with every endpoint.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route("/api/v1/labels", get(meta::labels).post(meta::labels))
        .route("/api/v1/label/{name}/values", get(meta::label_values))
        .route("/api/v1/series", get(meta::series).post(meta::series))
        .route("/api/v1/metadata", get(meta::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(exemplars::query_exemplars).post(exemplars::query_exemplars),
        )
        .route("/api/v1/status/buildinfo", get(meta::buildinfo))
        .route("/api/v1/rules", get(rules::rules))
        .route("/api/v1/alerts", get(rules::alerts))
        .route("/federate", get(federate::federate))
        .route("/-/healthy", get(health::healthy).head(health::healthy))
        .route("/-/ready", get(health::ready).head(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(health::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let handler = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            handler,
            code: response.status().as_u16(),
        })
        .inc();
    response
}
