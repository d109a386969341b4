//! Health, readiness, self-metrics and fallbacks.

use axum::{
    extract::State,
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

use super::{ApiState, error::ApiError};

/// `/-/healthy`: the process serves HTTP.
pub async fn healthy() -> &'static str {
    "Sonde aggregator is Healthy.\n"
}

/// `/-/ready`: 200 once start-up finished, 503 before (and while shutting down).
pub async fn ready(State(state): State<ApiState>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "Sonde aggregator is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

/// `/metrics`: our own metrics in the OpenMetrics text format.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state.metrics.render(&state.store);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Unknown paths.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}
