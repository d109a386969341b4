//! Ingest: turns agents' batches into stored samples.
//!
//! Owns: the `sonde.v1.Ingest` gRPC service ([`service`]), batch validation against the
//! configured limits ([`validate`]), conversion of proto series and histograms into store
//! series ([`convert`]). Replay detection per agent stream uses
//! [`sonde_proto::sequence::SequenceTracker`].
//! Must not: reach into query code. Only [`service`] knows gRPC.
//!
//! Invariant: a batch is applied whole or not at all (validated before anything is stored),
//! and a batch seen before (same agent, epoch and sequence) is acknowledged without being
//! stored again.

pub mod apply;
pub mod convert;
pub mod security;
pub mod service;
pub mod validate;

pub use self::{
    apply::{Applied, Applier, ApplyError},
    convert::{ConvertedBatch, convert_batch},
    service::IngestService,
    validate::ValidationError,
};
