//! Metric collection: collectors read the host (procfs, sysfs, cgroupfs, eBPF counters) and
//! write samples into an [`Emitter`], which becomes one batch payload per collection tick.
//! That one payload is both what the exporter sends to the aggregators and what the agent's
//! `/metrics` shows (see `http`): there is a single collection path.
//!
//! Owns: the [`Collector`] trait, the emitter, the [`Sources`] reader (missing sources logged
//! once), the collector settings ([`config`]) and the collectors themselves ([`node`]: one
//! small collector per node_exporter collector; [`container`]: cgroups with cAdvisor's names;
//! [`exec`]). Must not: know how batches travel (see `export`) or how they are rendered.
//!
//! Invariant: a collector that fails reports an error for that tick only; the others still
//! emit, and the failure is logged and counted (`sonde_agent_collector_errors_total`). A
//! source that does not exist or cannot be opened (no cgroup v1 hierarchy, no PSI, a file
//! hidden by permissions) is not an error: it is logged once with its path, its metrics are
//! absent, and collection goes on.

pub mod config;
pub mod container;
pub mod emitter;
pub mod exec;
pub mod node;
pub mod sources;

pub use emitter::Emitter;
pub use sources::Sources;

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

/// Builds every enabled node and container collector from the configuration.
pub fn build(
    node: &config::NodeConfig,
    containers: &config::ContainerConfig,
) -> Vec<Box<dyn Collector>> {
    let mut collectors = node::collectors(node);
    if containers.enabled {
        collectors.push(Box::new(container::ContainerCollector::new(
            containers,
            &node.procfs,
            &node.sysfs,
        )));
    }
    collectors
}
