//! The replication endpoints a replica serves its peers on the HTTP listener, and the
//! status endpoint operators read:
//!
//! - `GET /api/v1/replication/digest?start=&end=&window=` → [`DigestResponse`] (JSON)
//! - `GET /api/v1/replication/series_digest?start=&end=` → [`SeriesDigestResponse`] (JSON)
//! - `POST /api/v1/replication/samples` ([`SamplesRequest`], JSON) → samples (binary, [`wire`])
//! - `POST /api/v1/replication/select` ([`SelectRequest`], JSON) → samples (binary, [`wire`])
//! - `GET /api/v1/status/replication` → this replica and every peer ([`PeerStatus`])
//!
//! Times are milliseconds; ranges are `[start, end)` except `select` (`[mint, maxt]`, as the
//! store's). Every store read runs on the blocking pool. Must not: change the store.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{
    Replication,
    digest::{series_digests, window_digests},
    state::PeerStatus,
    wire::{self, DigestResponse, SamplesRequest, SelectRequest, SeriesDigestResponse},
};
use crate::store::SeriesSamples;

/// Most windows one digest request may ask for.
const MAX_WINDOWS: i64 = 10_000;

/// The routes above, over `replication`.
pub fn router(replication: Arc<Replication>) -> Router {
    Router::new()
        .route("/api/v1/replication/digest", get(digest))
        .route("/api/v1/replication/series_digest", get(series_digest))
        .route("/api/v1/replication/samples", post(samples))
        .route("/api/v1/replication/select", post(select))
        .route("/api/v1/status/replication", get(status))
        .with_state(replication)
}

/// A failed replication request: status and message.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn bad(message: String) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message)
}

fn internal(message: String) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, message)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("replication request failed: {e}")))?
}

/// `[start, end)` query parameters.
#[derive(Debug, Deserialize)]
struct RangeParams {
    start: i64,
    end: i64,
    window: Option<i64>,
}

impl RangeParams {
    fn check(&self) -> Result<(), Failure> {
        if self.end <= self.start {
            return Err(bad(format!(
                "end ({}) must be after start ({})",
                self.end, self.start
            )));
        }
        Ok(())
    }
}

fn select_all(
    replication: &Replication,
    start: i64,
    end: i64,
) -> Result<Vec<SeriesSamples>, Failure> {
    replication
        .store
        .select(&[], start, end - 1)
        .map_err(|e| internal(format!("store read failed: {e}")))
}

async fn digest(
    State(replication): State<Arc<Replication>>,
    Query(params): Query<RangeParams>,
) -> Response {
    if let Err(failure) = params.check() {
        return failure.into_response();
    }
    let window = params.window.unwrap_or(replication.window_ms).max(1);
    if (params.end - params.start) / window > MAX_WINDOWS {
        return bad(format!("more than {MAX_WINDOWS} windows requested")).into_response();
    }
    let result = blocking(move || {
        let selected = select_all(&replication, params.start, params.end)?;
        Ok(DigestResponse {
            replica_id: replication.replica_id.clone(),
            windows: window_digests(&selected, params.start, params.end, window),
        })
    })
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(failure) => failure.into_response(),
    }
}

async fn series_digest(
    State(replication): State<Arc<Replication>>,
    Query(params): Query<RangeParams>,
) -> Response {
    if let Err(failure) = params.check() {
        return failure.into_response();
    }
    let result = blocking(move || {
        let selected = select_all(&replication, params.start, params.end)?;
        Ok(SeriesDigestResponse {
            replica_id: replication.replica_id.clone(),
            series: series_digests(&selected, params.start, params.end),
        })
    })
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(failure) => failure.into_response(),
    }
}

fn samples_body(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, wire::SAMPLES)], bytes).into_response()
}

async fn samples(State(replication): State<Arc<Replication>>, body: Bytes) -> Response {
    let request: SamplesRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid samples request: {e}")).into_response(),
    };
    if request.end <= request.start {
        return bad("end must be after start".to_owned()).into_response();
    }
    let result = blocking(move || {
        let wanted: std::collections::HashSet<u64> = request.series.iter().copied().collect();
        let selected: Vec<SeriesSamples> = select_all(&replication, request.start, request.end)?
            .into_iter()
            .filter(|s| wanted.contains(&super::digest::series_hash(&s.labels)))
            .collect();
        Ok(wire::encode_samples(&selected))
    })
    .await;
    match result {
        Ok(bytes) => samples_body(bytes),
        Err(failure) => failure.into_response(),
    }
}

async fn select(State(replication): State<Arc<Replication>>, body: Bytes) -> Response {
    let request: SelectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid select request: {e}")).into_response(),
    };
    let matchers = match wire::matchers_from_wire(&request.matchers) {
        Ok(m) => m,
        Err(e) => return bad(e.to_string()).into_response(),
    };
    let result = blocking(move || {
        let selected = replication
            .store
            .select(&matchers, request.mint, request.maxt)
            .map_err(|e| internal(format!("store read failed: {e}")))?;
        Ok(wire::encode_samples(&selected))
    })
    .await;
    match result {
        Ok(bytes) => samples_body(bytes),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /api/v1/status/replication` data.
#[derive(Debug, Serialize)]
pub struct StatusData {
    /// This replica.
    pub replica_id: String,
    /// Whether queries merge peers' samples unless told otherwise.
    pub read_merge_default: bool,
    /// Digest window, seconds.
    pub window_seconds: f64,
    /// The worst lag over the peers (seconds; -1 when a peer was never in sync).
    pub max_lag_seconds: f64,
    /// Every configured peer.
    pub peers: Vec<PeerStatus>,
}

async fn status(State(replication): State<Arc<Replication>>) -> Response {
    let peers = replication.peers.snapshot(super::now_ms());
    let max_lag_seconds = peers.iter().fold(0.0f64, |acc, p| {
        if acc < 0.0 || p.lag_seconds < 0.0 {
            -1.0
        } else {
            acc.max(p.lag_seconds)
        }
    });
    crate::http_api::json::success_json(&StatusData {
        replica_id: replication.replica_id.clone(),
        read_merge_default: replication.read_merge_default,
        window_seconds: replication.window_ms as f64 / 1000.0,
        max_lag_seconds,
        peers,
    })
}
