//! The Sonde agent: collects node metrics from procfs, kernel events from eBPF, and streams
//! them as batches to the aggregator replicas.
//!
//! Data flows `ebpf` (kernel events) → `collect` (samples per tick) → `export` (batches over
//! gRPC). Dependencies point one way: `collect` knows nothing of delivery; `export` knows
//! nothing of what batches contain; only `export::replica` knows gRPC and only `http` knows
//! HTTP. `agent` wires everything together; `main.rs` only parses the command line and runs
//! it.

pub mod agent;
pub mod capture;
pub mod collect;
pub mod config;
pub mod ebpf;
pub mod export;
pub mod http;
pub mod http_metrics;
pub mod metrics;
pub mod replay;
pub mod telemetry;
pub mod trace;
