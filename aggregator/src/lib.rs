//! The Sonde aggregator: receives batches from agents, stores them, and answers PromQL over
//! the Prometheus HTTP API.
//!
//! Data flows `ingest` (gRPC) → `store` ← `promql` ← `http_api`. Dependencies point one way:
//! `store` knows nothing above it; `promql` knows the store; only `ingest::service` knows
//! gRPC and only `http_api` knows HTTP. `server` wires everything together; `main.rs` only
//! parses the command line and runs it.

pub mod config;
pub mod http_api;
pub mod import;
pub mod ingest;
pub mod jaeger;
pub mod metrics;
pub mod promql;
pub mod remote_write;
pub mod server;
pub mod store;
pub mod telemetry;
