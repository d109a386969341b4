//! Kernel instrumentation: loading Sonde's eBPF object, attaching its programs where the
//! running kernel allows, and reading their ring buffers.
//!
//! Owns: the embedded object ([`loader::OBJECT`]), tracefs/bpffs discovery and mounting
//! ([`fs`]), tracepoint format parsing ([`tracefs`]) that gives the programs their field
//! offsets, per-hook attach status, and the exec event reader ([`exec`]).
//! Must not: fail agent start-up because one hook (or eBPF altogether) is unavailable; every
//! hook is optional and its status is logged and exported as a metric.

pub mod exec;
pub mod fs;
pub mod loader;
pub mod tracefs;

pub use loader::{EbpfError, HookStatus, KernelCounters, Probes};
