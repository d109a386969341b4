//! Label, series and metadata endpoints, and build information.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    response::Response,
};

use super::{ApiState, error::ApiError, json, params::Params};
use crate::store::Matcher;

/// Parses `match[]` selectors into matcher conjunctions.
fn selectors(params: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut out = Vec::new();
    for selector in params.all("match[]") {
        let groups = crate::promql::parse_series_selector(selector)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        out.extend(groups);
    }
    Ok(out)
}

/// `start`/`end` with Prometheus' defaults (all time).
fn time_range(params: &Params) -> Result<(i64, i64), ApiError> {
    Ok((
        params.time("start")?.unwrap_or(i64::MIN),
        params.time("end")?.unwrap_or(i64::MAX),
    ))
}

fn limit(params: &Params) -> Result<Option<usize>, ApiError> {
    params
        .get("limit")
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                ApiError::bad_data(format!(
                    "invalid parameter \"limit\": {v:?} is not a number"
                ))
            })
        })
        .transpose()
        .map(|l| l.filter(|&l| l > 0))
}

fn truncate<T>(mut items: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    items
}

/// `GET|POST /api/v1/labels`
pub async fn labels(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let selectors = selectors(&params)?;
    let (start, end) = time_range(&params)?;
    let names = state.store.label_names(&selectors, start, end)?;
    Ok(json::success_json(&truncate(names, limit(&params)?)))
}

/// `GET /api/v1/label/<name>/values`
pub async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    if !crate::ingest::validate::is_label_name(&name) && name != sonde_proto::names::METRIC_NAME {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let selectors = selectors(&params)?;
    let (start, end) = time_range(&params)?;
    let values = state.store.label_values(&name, &selectors, start, end)?;
    Ok(json::success_json(&truncate(values, limit(&params)?)))
}

/// `GET|POST /api/v1/series`
pub async fn series(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let selectors = selectors(&params)?;
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = time_range(&params)?;
    let series = truncate(state.store.series(&selectors, start, end)?, limit(&params)?);
    let mut out = String::from("[");
    for (i, labels) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_labels(&mut out, labels);
    }
    out.push(']');
    Ok(json::success(out))
}

/// `GET /api/v1/metadata?metric=…&limit=…`
pub async fn metadata(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let metric = params.get("metric");
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (family, m) in state.store.metadata() {
        if metric.is_some_and(|wanted| wanted != family) {
            continue;
        }
        out.insert(
            family,
            vec![serde_json::json!({
                "type": m.metric_type.as_str(),
                "help": m.help,
                "unit": m.unit,
            })],
        );
    }
    if let Some(limit) = limit(&params)? {
        let keep: Vec<String> = out.keys().take(limit).cloned().collect();
        out.retain(|k, _| keep.contains(k));
    }
    Ok(json::success_json(&out))
}

/// `GET /api/v1/status/buildinfo`. `features` stays absent: Grafana would take a non-empty
/// object for Mimir.
pub async fn buildinfo(State(_state): State<ApiState>) -> Response {
    json::success_json(&serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("SONDE_GIT_REVISION").unwrap_or("unknown"),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": "sonde-aggregator",
    }))
}
