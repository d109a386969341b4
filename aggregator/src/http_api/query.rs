//! `/api/v1/query` and `/api/v1/query_range`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::{extract::State, response::Response};

use super::{ApiState, error::ApiError, json, params::Params};
use crate::{metrics::QueryLabels, promql::Value};

/// Prometheus' cap on points per series in a range query.
const MAX_POINTS: i64 = 11_000;

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn timeout(state: &ApiState, params: &Params) -> Result<Duration, ApiError> {
    let max = state.engine.config().timeout;
    Ok(params.duration("timeout")?.map_or(max, |t| t.min(max)))
}

/// Runs evaluation on the blocking pool, timing it.
async fn evaluate(
    state: &ApiState,
    kind: &'static str,
    f: impl FnOnce(&crate::promql::Engine) -> Result<Value, crate::promql::QueryError> + Send + 'static,
) -> Result<Value, ApiError> {
    let engine = state.engine.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| ApiError::internal(format!("query evaluation failed: {e}")))?;
    state
        .metrics
        .query_duration
        .get_or_create(&QueryLabels { kind })
        .observe(started.elapsed().as_secs_f64());
    Ok(result?)
}

/// `GET|POST /api/v1/query?query=…&time=…&timeout=…`
pub async fn instant(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let query = params.required("query")?.to_owned();
    let time = params.time("time")?.unwrap_or_else(now_ms);
    let deadline = Instant::now() + timeout(&state, &params)?;
    let value = evaluate(&state, "instant", move |engine| {
        engine.instant(&query, time, deadline)
    })
    .await?;
    Ok(json::success(json::encode_value(&value)))
}

/// `GET|POST /api/v1/query_range?query=…&start=…&end=…&step=…&timeout=…`
pub async fn range(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let query = params.required("query")?.to_owned();
    let start = params
        .time("start")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"start\": missing"))?;
    let end = params
        .time("end")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"end\": missing"))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = params
        .duration("step")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": missing"))?;
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
    if step_ms <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not \
             accepted. Try a positive integer",
        ));
    }
    if (end - start) / step_ms > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the \
             query resolution (?step=XX)",
        ));
    }
    let deadline = Instant::now() + timeout(&state, &params)?;
    let value = evaluate(&state, "range", move |engine| {
        engine.range(&query, start, end, step_ms, deadline)
    })
    .await?;
    Ok(json::success(json::encode_value(&value)))
}
