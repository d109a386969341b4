//! The Jaeger query API (v1 HTTP JSON, as the Jaeger UI and Grafana's Jaeger data source call
//! it) over the span store, on the aggregator's HTTP port:
//!
//! - `GET /api/services`: service names;
//! - `GET /api/services/{service}/operations`: operation names of a service;
//! - `GET /api/operations?service=…&spanKind=…`: operations with their span kind;
//! - `GET /api/traces?service=…&operation=…&tags=…&tag=k:v&start=…&end=…&minDuration=…&
//!   maxDuration=…&limit=…` (times in µs since the epoch, durations as Go durations, `tags` a
//!   JSON object; `traceID=…` repeated fetches those traces instead): whole traces with at
//!   least one span matching every condition, most recent first;
//! - `GET /api/traces/{traceID}`: one trace, 404 when unknown.
//!
//! Answers use Jaeger's envelope (`data`, `total`, `limit`, `offset`, `errors`) and its JSON
//! trace model ([`model`]); parameter errors are 400 with the message Jaeger gives
//! ([`params`]).
//!
//! Owns: the translation between Jaeger's API and [`SpanQuery`]. Must not: read span files
//! itself (only `Store::find_spans`, `find_trace_ids`, `span_catalog`).

pub mod links;
pub mod model;
pub mod params;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use self::params::{ParamError, Query};
use crate::store::{Store, StoreError};

/// Jaeger's response envelope.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    /// The payload (`null` on errors).
    pub data: Option<T>,
    /// Number of items for list answers (0 for traces, as Jaeger does).
    pub total: usize,
    /// Always 0 (Jaeger does not page).
    pub limit: usize,
    /// Always 0.
    pub offset: usize,
    /// `null`, or the errors.
    pub errors: Option<Vec<ErrorItem>>,
}

/// One error in the envelope.
#[derive(Debug, Serialize)]
pub struct ErrorItem {
    /// HTTP status code.
    pub code: u16,
    /// What went wrong.
    pub msg: String,
}

fn respond<T: Serialize>(status: StatusCode, envelope: &Envelope<T>) -> Response {
    let body = serde_json::to_string(envelope).expect("plain data serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn ok<T: Serialize>(data: T, total: usize) -> Response {
    respond(
        StatusCode::OK,
        &Envelope {
            data: Some(data),
            total,
            limit: 0,
            offset: 0,
            errors: None,
        },
    )
}

/// An error answer in Jaeger's shape.
#[derive(Debug)]
pub struct JaegerError {
    status: StatusCode,
    msg: String,
}

impl JaegerError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
        }
    }
}

impl From<ParamError> for JaegerError {
    fn from(e: ParamError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<StoreError> for JaegerError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        respond::<()>(
            self.status,
            &Envelope {
                data: None,
                total: 0,
                limit: 0,
                offset: 0,
                errors: Some(vec![ErrorItem {
                    code: self.status.as_u16(),
                    msg: self.msg,
                }]),
            },
        )
    }
}

/// Routes of the Jaeger API.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{trace_id}", get(trace))
        .with_state(store)
}

/// Runs store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JaegerError> + Send + 'static,
) -> Result<T, JaegerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        JaegerError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query failed: {e}"),
        )
    })?
}

async fn services(State(store): State<Arc<Store>>) -> Response {
    let names: Vec<String> = store
        .span_catalog()
        .into_keys()
        .map(|s| model::service_name(&s).to_owned())
        .collect();
    let total = names.len();
    ok(names, total)
}

async fn service_operations(
    State(store): State<Arc<Store>>,
    Path(service): Path<String>,
) -> Response {
    let catalog = store.span_catalog();
    let mut names: Vec<String> = catalog
        .get(model::stored_service(&service))
        .map(|ops| ops.iter().map(|(name, _)| name.clone()).collect())
        .unwrap_or_default();
    names.dedup();
    let total = names.len();
    ok(names, total)
}

/// One operation of `/api/operations`.
#[derive(Debug, Serialize)]
struct Operation {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: &'static str,
}

async fn operations(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, JaegerError> {
    let query = Query::parse(raw.as_deref().unwrap_or(""));
    let service = query
        .get("service")
        .ok_or(ParamError::ServiceRequired)?
        .to_owned();
    let kind = query.get("spanKind").map(str::to_owned);
    let catalog = store.span_catalog();
    let ops: Vec<Operation> = catalog
        .get(model::stored_service(&service))
        .into_iter()
        .flatten()
        .map(|(name, k)| Operation {
            name: name.clone(),
            span_kind: model::kind_name(*k).unwrap_or(""),
        })
        .filter(|op| kind.as_deref().is_none_or(|k| k == op.span_kind))
        .collect();
    let total = ops.len();
    Ok(ok(ops, total))
}

/// The traces `ids`, each with the traces linked to it across hosts ([`links`]), in order;
/// traces shown under the same caller's trace appear once.
fn linked_traces(store: &Store, ids: &[[u8; 16]]) -> Result<Vec<model::Trace>, StoreError> {
    let mut shown = std::collections::HashSet::new();
    let mut out = Vec::new();
    for &id in ids {
        let (top, spans) = links::linked_trace(store, id)?;
        if !spans.is_empty() && shown.insert(top) {
            out.push(model::trace(spans));
        }
    }
    Ok(out)
}

async fn search(
    State(store): State<Arc<Store>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, JaegerError> {
    let query = Query::parse(raw.as_deref().unwrap_or(""));
    let search = params::parse_search(&query, params::now_us())?;
    let traces = blocking(move || {
        let ids = if search.trace_ids.is_empty() {
            store.find_trace_ids(&search.query, search.limit)?
        } else {
            search.trace_ids
        };
        Ok(linked_traces(&store, &ids)?)
    })
    .await?;
    Ok(ok(traces, 0))
}

async fn trace(
    State(store): State<Arc<Store>>,
    Path(trace_id): Path<String>,
) -> Result<Response, JaegerError> {
    let id = params::parse_trace_id(&trace_id)?;
    let traces = blocking(move || Ok(linked_traces(&store, &[id])?)).await?;
    if traces.is_empty() {
        return Err(JaegerError::new(StatusCode::NOT_FOUND, "trace not found"));
    }
    Ok(ok(traces, 0))
}
