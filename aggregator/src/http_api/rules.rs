//! `/api/v1/rules`, `/api/v1/alerts` (Prometheus' JSON shape, from the rule manager's state)
//! and `POST /-/reload` (reloads the rule files; a bad file keeps the previous rules and
//! answers 500 with the error, as Prometheus).

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{ApiState, error::ApiError, json, params::Params};
use crate::rules::api::{self, RuleFilter};

/// `GET /api/v1/rules?type=alert|record`
pub async fn rules(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let filter = match params.get("type") {
        None | Some("") => RuleFilter::All,
        Some("alert") => RuleFilter::Alerting,
        Some("record") => RuleFilter::Recording,
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"type\": not supported value {other:?}"
            )));
        }
    };
    let groups = state.rules.as_ref().map(|r| r.groups()).unwrap_or_default();
    Ok(json::success_json(&api::rules(&groups, filter)))
}

/// `GET /api/v1/alerts`
pub async fn alerts(State(state): State<ApiState>) -> Response {
    let groups = state.rules.as_ref().map(|r| r.groups()).unwrap_or_default();
    json::success_json(&api::alerts(&groups))
}

/// `POST /-/reload`
pub async fn reload(State(state): State<ApiState>) -> Response {
    let Some(rules) = state.rules.as_ref() else {
        return StatusCode::OK.into_response();
    };
    match rules.reload().await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {error}\n"),
        )
            .into_response(),
    }
}
