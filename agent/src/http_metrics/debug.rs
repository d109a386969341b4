//! `GET /debug/http`: every HTTP series with exact count, sum and mean and HDR quantiles
//! (p50/p90/p99/max at 1% precision), as JSON. For checking the agent against a server's
//! own timing; Prometheus gets the classic histograms.
//!
//! Must not: hold the table lock while serialising (summaries are copied out first).

use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use serde::Serialize;

use super::table::{HttpTable, SeriesSummary};

#[derive(Serialize)]
struct Body {
    series: Vec<SeriesSummary>,
}

/// The router (merge it into the agent's HTTP server).
pub fn router(table: Arc<Mutex<HttpTable>>) -> Router {
    Router::new()
        .route("/debug/http", get(render))
        .with_state(table)
}

async fn render(State(table): State<Arc<Mutex<HttpTable>>>) -> impl IntoResponse {
    let series = {
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        table.summaries()
    };
    let body = serde_json::to_string(&Body { series })
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    ([(header::CONTENT_TYPE, "application/json")], body)
}
