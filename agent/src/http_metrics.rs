//! HTTP RED and TCP connection metrics from the eBPF events: exchanges and TCP events are
//! attributed to a service (`service_name`, `container_id`), filtered, aggregated into
//! per-series histograms and counters, and emitted every tick as Prometheus classic
//! histograms named after the OpenTelemetry HTTP semantic conventions.
//!
//! Owns: route normalisation and caps ([`route`]), process identity ([`identity`]), the
//! include/exclude rules ([`filter`]), histograms ([`histogram`]), the series tables
//! ([`table`], [`tcp`]), the reader threads and collectors ([`pipeline`]), the linking of
//! exchanges into spans ([`spans`]) and the `/debug/http` endpoint ([`debug`]).
//! Must not: load or attach eBPF programs (that is `ebpf`), or block the async runtime
//! (readers run on their own threads; collectors on the blocking pool).

pub mod debug;
pub mod filter;
pub mod histogram;
pub mod identity;
pub mod pipeline;
pub mod route;
pub mod spans;
pub mod table;
pub mod tcp;

use std::sync::{Arc, atomic::AtomicU64};

pub use pipeline::{Started, kernel_rules, new_table, new_tcp_table, start};

use crate::ebpf::tls::TlsStats;

/// Counts kept by the readers, exported as the agent's own metrics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// HTTP exchanges read from the ring buffer.
    pub http_events: AtomicU64,
    /// HTTP records that could not be decoded (lost).
    pub http_decode_errors: AtomicU64,
    /// HTTP exchanges dropped by the include/exclude rules in user space.
    pub http_filtered: AtomicU64,
    /// HTTP exchanges dropped at the series limit (lost).
    pub http_series_limit: AtomicU64,
    /// HTTP exchanges whose route was folded into `{other}`.
    pub http_route_overflow: AtomicU64,
    /// HTTP series held.
    pub http_series: AtomicU64,
    /// TCP events read from the ring buffer.
    pub tcp_events: AtomicU64,
    /// TCP records that could not be decoded (lost).
    pub tcp_decode_errors: AtomicU64,
    /// TCP events dropped by the include/exclude rules in user space.
    pub tcp_filtered: AtomicU64,
    /// TCP events dropped at the series limit (lost).
    pub tcp_series_limit: AtomicU64,
    /// Connections opened before the agent started, seeded into the kernel's map.
    pub seeded_connections: AtomicU64,
    /// OpenSSL discovery.
    pub tls: Arc<TlsStats>,
}
