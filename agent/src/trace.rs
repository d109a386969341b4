//! Spans from observed HTTP exchanges, without instrumenting the applications: the span
//! model the HTTP pipeline feeds, W3C context, sampling and budgets, and optional OTLP export.
//!
//! Owns: `traceparent` parsing/formatting ([`context`]), id generation ([`ids`]), head
//! sampling, the per-second budget and drop counters ([`sampler`]), exchange → span
//! ([`builder`]), OTLP/gRPC export ([`otlp`]) and its settings ([`TraceConfig`]).
//! Must not: read kernel events or resolve processes (the HTTP pipeline does, then calls
//! [`builder::SpanBuilder::from_exchange`]).
//!
//! Linking (what the pipeline will do with [`builder::SpanBuilder::from_exchange`]'s
//! `linked` argument; documented in ARCHITECTURE.md "Traces"):
//! - same thread: a client exchange whose (pid, tid) served a server exchange whose
//!   interval encloses it becomes that server span's child. Exchanges complete
//!   bottom-up (the client call ends before the request it serves), so client exchanges
//!   wait up to a hold time for their enclosing server exchange;
//! - across hosts: a server exchange whose connection 4-tuple mirrors a client exchange's
//!   (its local = their peer and vice versa) and whose interval lies inside it becomes that
//!   client span's child.

pub mod builder;
pub mod context;
pub mod ids;
pub mod otlp;
pub mod sampler;

use serde::{Deserialize, Serialize};

/// `[traces]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Build spans from the eBPF HTTP exchanges.
    pub enabled: bool,
    /// How long an exchange waits for the exchange that caused it (its parent completes
    /// after it) before its span is built; also how long built spans stay linkable.
    #[serde(with = "humantime_serde")]
    pub link_hold: std::time::Duration,
    /// Exchanges held for linking at most; beyond, the oldest is built early (counted).
    pub max_pending: usize,
    /// Share of new traces kept (0–1); requests carrying a `traceparent` follow its flag.
    pub sample_ratio: f64,
    /// Spans kept per second at most (0: no limit).
    pub max_spans_per_second: u64,
    /// Optional OTLP/gRPC export.
    pub otlp: otlp::OtlpConfig,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            link_hold: std::time::Duration::from_secs(1),
            max_pending: 16_384,
            sample_ratio: 1.0,
            max_spans_per_second: 5_000,
            otlp: otlp::OtlpConfig::default(),
        }
    }
}

impl TraceConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "traces.sample_ratio = {} must be between 0 and 1",
                self.sample_ratio
            ));
        }
        if self.max_pending == 0 {
            return Err("traces.max_pending must be at least 1".to_owned());
        }
        if self.link_hold > std::time::Duration::from_secs(60) {
            return Err(format!(
                "traces.link_hold = {:?} is above the maximum of 60s",
                self.link_hold
            ));
        }
        if !self.otlp.endpoint.is_empty() && self.otlp.batch_spans == 0 {
            return Err("traces.otlp.batch_spans must be at least 1".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_validates() {
        let config: TraceConfig = toml::from_str(
            "sample_ratio = 0.25\n[otlp]\nendpoint = \"http://collector:4317\"\nflush_interval = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(config.sample_ratio, 0.25);
        assert_eq!(
            config.otlp.flush_interval,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(config.max_spans_per_second, 5_000);
        assert!(config.validate().is_ok());
        let bad = TraceConfig {
            sample_ratio: 1.5,
            ..TraceConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("traces.sample_ratio"));
        assert!(toml::from_str::<TraceConfig>("bogus = 1").is_err());
    }

    #[test]
    fn drops_are_exported_by_reason() {
        let metrics = crate::metrics::Metrics::new();
        let text = metrics.render();
        assert!(
            text.contains("sonde_agent_spans_dropped_total{reason=\"budget\"} 0"),
            "{text}"
        );
        metrics.traces.drops.add(sampler::DropReason::Budget, 3);
        metrics.traces.drops.add(sampler::DropReason::SampledOut, 1);
        let text = metrics.render();
        assert!(
            text.contains("sonde_agent_spans_dropped_total{reason=\"budget\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sonde_agent_spans_dropped_total{reason=\"sampled_out\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sonde_agent_otlp_spans_exported_total 0"),
            "{text}"
        );
    }
}
