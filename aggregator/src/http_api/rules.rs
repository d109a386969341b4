//! `/api/v1/rules` and `/api/v1/alerts`. Sonde has no rule engine yet, so both answer
//! Prometheus' empty results (no groups, no alerts) in its exact envelope; Grafana's alerting
//! and rule views then show "no rules" instead of an error. The rules engine will fill them.

use axum::{extract::State, response::Response};

use super::{ApiState, error::ApiError, json, params::Params};

/// `GET /api/v1/rules?type=alert|record`
pub async fn rules(State(_state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    match params.get("type") {
        None | Some("alert" | "record") => {}
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"type\": not supported value {other:?}"
            )));
        }
    }
    Ok(json::success(r#"{"groups":[]}"#.to_owned()))
}

/// `GET /api/v1/alerts`
pub async fn alerts(State(_state): State<ApiState>) -> Response {
    json::success(r#"{"alerts":[]}"#.to_owned())
}
