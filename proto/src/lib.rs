//! Sonde's wire protocol.
//!
//! Owns: the `sonde.v1` protobuf package (`proto/sonde/v1/*.proto`, with its compatibility
//! policy), the tonic/prost code generated from it (`src/gen/`, committed; regenerate with
//! `cargo xtask codegen`) and the [`codec`] that turns a [`v1::BatchPayload`] into the bytes of
//! a [`v1::Batch`] and back, with bounded decompression.
//!
//! Must not: know about storage, queries or the kernel. Both the agent and the aggregator
//! depend on this crate; it depends on neither.

pub mod codec;
pub mod sequence;

/// The `sonde.v1` package: generated messages, `ingest_client` and `ingest_server`.
#[allow(clippy::all, missing_docs, unused_qualifications)]
pub mod v1 {
    include!("gen/sonde.v1.rs");
}

/// Prometheus' remote write 1.0 messages (the subset Sonde receives).
#[allow(clippy::all, missing_docs, unused_qualifications)]
pub mod prometheus {
    include!("gen/prometheus.rs");
}

/// Metric names, label names and label values Sonde itself attaches.
pub mod names {
    /// The metric name label.
    pub const METRIC_NAME: &str = "__name__";
}
