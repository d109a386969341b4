//! Sonde's wire protocol.
//!
//! Owns: the `sonde.v1` protobuf package (`proto/sonde/v1/*.proto`, with its compatibility
//! policy), the tonic/prost code generated from it (`src/gen/`, committed; regenerate with
//! `cargo xtask codegen`) and the [`codec`] that turns a [`v1::BatchPayload`] into the bytes of
//! a [`v1::Batch`] and back, with bounded decompression, and the [`scan`] that reads a payload's
//! plain series without decoding their labels (the aggregator's fast ingest path).
//!
//! Must not: know about storage, queries or the kernel. Both the agent and the aggregator
//! depend on this crate; it depends on neither.

pub mod codec;
pub mod scan;
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

/// OTLP (OpenTelemetry protocol) trace export: the subset of `opentelemetry-proto` the agent
/// sends (`opentelemetry.proto.*`), with `collector::trace::v1::trace_service_client` and
/// `_server`. Wire-compatible with any OTLP/gRPC receiver (Jaeger, Tempo, the Collector).
#[allow(clippy::all, missing_docs, unused_qualifications)]
pub mod opentelemetry {
    /// `opentelemetry.proto.*`
    pub mod proto {
        /// `opentelemetry.proto.common`
        pub mod common {
            /// `opentelemetry.proto.common.v1`
            pub mod v1 {
                include!("gen/opentelemetry.proto.common.v1.rs");
            }
        }
        /// `opentelemetry.proto.resource`
        pub mod resource {
            /// `opentelemetry.proto.resource.v1`
            pub mod v1 {
                include!("gen/opentelemetry.proto.resource.v1.rs");
            }
        }
        /// `opentelemetry.proto.trace`
        pub mod trace {
            /// `opentelemetry.proto.trace.v1`
            pub mod v1 {
                include!("gen/opentelemetry.proto.trace.v1.rs");
            }
        }
        /// `opentelemetry.proto.collector`
        pub mod collector {
            /// `opentelemetry.proto.collector.trace`
            pub mod trace {
                /// `opentelemetry.proto.collector.trace.v1`
                pub mod v1 {
                    include!("gen/opentelemetry.proto.collector.trace.v1.rs");
                }
            }
        }
    }
}

/// Metric names, label names and label values Sonde itself attaches.
pub mod names {
    /// The metric name label.
    pub const METRIC_NAME: &str = "__name__";
}
