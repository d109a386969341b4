//! Capture files: what the agent observed (decoded kernel events with the service identity
//! resolved at capture time, and every collector reading of every tick), recorded as one
//! plain Parquet file that other tools read and that `replay` feeds back through the agent's
//! aggregation code.
//!
//! Owns: the [`EventTap`] the eBPF readers call, the [`Record`] model ([`record`]), the
//! Parquet schema ([`schema`]), the streaming writer ([`writer`]), the reader ([`reader`])
//! and the `sonde-agent capture` command ([`run`]).
//! Must not: aggregate (the tables do that, live and in replay), or send anything to an
//! aggregator.
//!
//! Invariant: rows are in the order the agent saw them (one writer fed by one bounded
//! channel); a `tick` row closes each collection and follows that collection's `reading` rows,
//! so replaying in file order reproduces the ticks.

pub mod reader;
pub mod record;
pub mod run;
pub mod schema;
pub mod writer;

use std::path::PathBuf;

pub use record::{Reading, Record};
pub use run::{CaptureOptions, CaptureSummary, capture};

use crate::{
    ebpf::{exec::Exec, http::Exchange, tcp::TcpRecord},
    http_metrics::identity::Identity,
};

/// Receives every decoded event the agent aggregates, after identification and filtering.
/// Implementations must be cheap: they run on the ring-buffer reader threads.
pub trait EventTap: Send + Sync {
    /// One HTTP exchange of a process identified as `who`.
    fn http(&self, exchange: &Exchange, who: &Identity);
    /// One TCP event; `who` is the owner's identity when known.
    fn tcp(&self, event: &TcpRecord, who: Option<&Identity>);
    /// One exec.
    fn exec(&self, exec: &Exec);
}

/// Why a capture could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A file could not be created, opened or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet layer failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow arrays could not be assembled into a batch.
    #[error("{path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The file is Parquet but not a Sonde capture (missing or mistyped column).
    #[error("{path} is not a Sonde capture: {problem}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A row has an unknown kind or lacks a field its kind needs.
    #[error("{path}: row {row}: {problem}")]
    Row {
        /// The file.
        path: PathBuf,
        /// Row number in the file (0-based).
        row: u64,
        /// What is wrong.
        problem: String,
    },
    /// The writer thread stopped (it logged why) or could not start.
    #[error("{path}: the capture writer stopped: {problem}")]
    Writer {
        /// The file.
        path: PathBuf,
        /// What happened.
        problem: String,
    },
}
