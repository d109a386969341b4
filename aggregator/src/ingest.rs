//! Ingest: turns agents' batches into stored samples.
//!
//! Owns: the `sonde.v1.Ingest` gRPC service ([`service`]), batch validation against the
//! configured limits ([`validate`]), conversion of proto series and histograms into store
//! series ([`convert`]) and replay detection per agent stream ([`dedup`]).
//! Must not: reach into query code. Only [`service`] knows gRPC.
//!
//! Invariant: a batch is applied whole or not at all (validated before anything is stored),
//! and a batch seen before (same agent, epoch and sequence) is acknowledged without being
//! stored again.

pub mod convert;
pub mod dedup;
pub mod service;
pub mod validate;

pub use self::{
    convert::{ConvertedBatch, convert_batch},
    dedup::SequenceTracker,
    service::IngestService,
    validate::ValidationError,
};
