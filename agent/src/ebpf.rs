//! Kernel instrumentation: loading Sonde's eBPF object, attaching its programs where the
//! running kernel allows, and reading their ring buffers.
//!
//! Owns: the embedded object ([`loader::OBJECT`]), the hook table and its tracefs checks
//! ([`hooks`]), tracefs/bpffs discovery and mounting ([`fs`]), tracepoint format parsing
//! ([`tracefs`]) that gives the programs their field offsets, per-hook attach status, the
//! ring-buffer readers ([`exec`], [`ringbuf`]) and decoders ([`http`], [`tcp`]), and OpenSSL
//! discovery for the TLS uprobes ([`tls`]).
//! Must not: fail agent start-up because one hook (or eBPF altogether) is unavailable; every
//! hook is optional and its status is logged and exported as a metric.

pub mod exec;
pub mod fs;
pub mod hooks;
pub mod http;
pub mod loader;
pub mod ringbuf;
pub mod seed;
pub mod tcp;
pub mod tls;
pub mod tracefs;

pub use loader::{EbpfError, HookStatus, KernelCounters, LoadOptions, Probes};
