//! Metric collection: collectors read the host (procfs, eBPF counters) and write samples
//! into an [`Emitter`], which becomes one batch payload per collection tick.
//!
//! Owns: the [`Collector`] trait, the emitter, and the collectors themselves ([`node`],
//! [`exec`]). Must not: know how batches travel (see `export`).
//!
//! Invariant: a collector that fails reports an error for that tick only; the others still
//! emit, and the failure is logged and counted (`sonde_agent_collector_errors_total`).

pub mod emitter;
pub mod exec;
pub mod node;

pub use emitter::Emitter;

/// Why a collector could not produce its metrics this tick.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file had unexpected content.
    #[error("cannot parse {path}: {problem}")]
    Parse {
        /// The file.
        path: String,
        /// What was wrong.
        problem: String,
    },
}

/// Something that produces metrics each tick.
pub trait Collector: Send {
    /// Short name, used in logs and the `collector` label of self-metrics.
    fn name(&self) -> &'static str;
    /// Emits this tick's samples.
    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError>;
}
