//! Recording and alerting rules (Prometheus rule files), evaluated with our PromQL engine.

pub mod duration;
pub mod template;
