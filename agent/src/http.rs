//! The agent's HTTP endpoint: `/metrics` (our own metrics) and `/-/healthy`.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::metrics::Metrics;

/// The router.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/-/healthy", get(|| async { "Sonde agent is Healthy.\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") })
        .with_state(metrics)
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
