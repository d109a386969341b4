//! TCP connection metrics per service, container and destination: successful and failed
//! connects, connect time, active outbound connections and retransmits (outbound by
//! destination, inbound by listening port).
//!
//! Must not: label by a client's ephemeral port (inbound series use the local port) or grow
//! without bound (destinations per service are capped like routes).

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{
    histogram::{Buckets, CONNECT_BOUNDS},
    identity::Identity,
    route::{OVERFLOW, RouteCap},
};
use crate::{
    collect::{Emitter, emitter::HistogramValue},
    ebpf::tcp::{TcpKind, TcpRecord},
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OutKey {
    service_name: String,
    container_id: String,
    destination: String,
}

#[derive(Debug, Clone)]
struct OutStats {
    ok: u64,
    failed: u64,
    active: i64,
    retransmits: u64,
    connect_time: Buckets,
    last_seen: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct InKey {
    service_name: String,
    container_id: String,
    listen_port: u16,
}

/// Counters of what the table did with events.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTableStats {
    /// Events recorded.
    pub recorded: u64,
    /// Events refused at the series limit.
    pub series_limit: u64,
}

/// Every TCP series of the node.
#[derive(Debug)]
pub struct TcpTable {
    outbound: HashMap<OutKey, OutStats>,
    inbound: HashMap<InKey, (u64, Instant)>,
    destinations: RouteCap,
    max_series: usize,
    idle_expiry: Duration,
    stats: TcpTableStats,
}

/// `ip:port`, with brackets for IPv6.
fn endpoint(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

impl TcpTable {
    /// An empty table.
    pub fn new(destinations_per_service: usize, max_series: usize, idle_expiry: Duration) -> Self {
        Self {
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            destinations: RouteCap::new(destinations_per_service),
            max_series,
            idle_expiry,
            stats: TcpTableStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TcpTableStats {
        self.stats
    }

    /// Records one event; `who` is the identity of its owner, when known.
    pub fn record(&mut self, r: &TcpRecord, who: Option<&Identity>, now: Instant) {
        let (service_name, container_id) = who.map_or((String::new(), String::new()), |w| {
            (w.service_name.clone(), w.container_id.clone())
        });
        let series = self.outbound.len() + self.inbound.len();
        if r.kind == TcpKind::Retransmit && r.owner.as_ref().is_some_and(|o| o.inbound) {
            let key = InKey {
                service_name,
                container_id,
                listen_port: r.local.map_or(0, |a| a.port()),
            };
            if !self.inbound.contains_key(&key) && series >= self.max_series {
                self.stats.series_limit += 1;
                return;
            }
            let entry = self.inbound.entry(key).or_insert((0, now));
            entry.0 += 1;
            entry.1 = now;
            self.stats.recorded += 1;
            return;
        }
        let destination = self.destinations.admit(&service_name, endpoint(r.remote));
        let key = OutKey {
            service_name,
            container_id,
            destination,
        };
        if !self.outbound.contains_key(&key) && series >= self.max_series {
            self.stats.series_limit += 1;
            return;
        }
        let stats = self.outbound.entry(key).or_insert_with(|| OutStats {
            ok: 0,
            failed: 0,
            active: 0,
            retransmits: 0,
            connect_time: Buckets::new(&CONNECT_BOUNDS, 1e9),
            last_seen: now,
        });
        stats.last_seen = now;
        match r.kind {
            TcpKind::ConnectOk => {
                stats.ok += 1;
                stats.active += 1;
                stats.connect_time.observe(r.duration_ns);
            }
            TcpKind::ConnectFailed => stats.failed += 1,
            TcpKind::Closed => stats.active = (stats.active - 1).max(0),
            TcpKind::Retransmit => stats.retransmits += 1,
        }
        self.stats.recorded += 1;
    }

    /// Drops idle series (outbound ones only once no connection is active).
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.idle_expiry;
        let before = self.outbound.len();
        self.outbound
            .retain(|_, s| s.active > 0 || now.duration_since(s.last_seen) < ttl);
        self.inbound
            .retain(|_, (_, at)| now.duration_since(*at) < ttl);
        if self.outbound.len() != before {
            let overflowed = self.destinations.overflowed;
            self.destinations = RouteCap::new(self.destinations.limit());
            self.destinations.overflowed = overflowed;
            let mut keys: Vec<&OutKey> = self.outbound.keys().collect();
            keys.sort();
            for key in keys {
                if key.destination != OVERFLOW {
                    self.destinations
                        .admit(&key.service_name, key.destination.clone());
                }
            }
        }
    }

    /// Emits every series.
    pub fn emit(&self, out: &mut Emitter) {
        let mut keys: Vec<&OutKey> = self.outbound.keys().collect();
        keys.sort();
        for key in keys {
            let s = &self.outbound[key];
            let mut labels = vec![("destination", key.destination.as_str())];
            if !key.service_name.is_empty() {
                labels.push(("service_name", key.service_name.as_str()));
            }
            if !key.container_id.is_empty() {
                labels.push(("container_id", key.container_id.as_str()));
            }
            out.counter(
                "container_net_tcp_successful_connects_total",
                "Outbound TCP connections that reached ESTABLISHED.",
                &labels,
                s.ok as f64,
            );
            out.counter(
                "container_net_tcp_failed_connects_total",
                "Outbound TCP connects that failed (refused, timed out or aborted).",
                &labels,
                s.failed as f64,
            );
            out.gauge(
                "container_net_tcp_active_connections",
                "Outbound TCP connections currently established (opened since the agent started).",
                &labels,
                s.active as f64,
            );
            out.counter(
                "container_net_tcp_retransmits_total",
                "TCP segments retransmitted on outbound connections (or connections of unknown owner).",
                &labels,
                s.retransmits as f64,
            );
            let cumulative = s.connect_time.cumulative();
            out.histogram(
                "container_net_tcp_connect_duration_seconds",
                "Time from SYN to ESTABLISHED of successful outbound TCP connects.",
                "seconds",
                &labels,
                HistogramValue {
                    upper_bounds: &CONNECT_BOUNDS,
                    cumulative: &cumulative,
                    count: s.connect_time.count(),
                    sum: s.connect_time.sum() as f64 / 1e9,
                    exemplars: Vec::new(),
                },
            );
        }
        let mut keys: Vec<&InKey> = self.inbound.keys().collect();
        keys.sort();
        for key in keys {
            let port = key.listen_port.to_string();
            let mut labels = vec![("listen_port", port.as_str())];
            if !key.service_name.is_empty() {
                labels.push(("service_name", key.service_name.as_str()));
            }
            if !key.container_id.is_empty() {
                labels.push(("container_id", key.container_id.as_str()));
            }
            out.counter(
                "container_net_tcp_inbound_retransmits_total",
                "TCP segments retransmitted on inbound (accepted) connections, by local port.",
                &labels,
                self.inbound[key].0 as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::tcp::Owner;

    fn rec(kind: TcpKind, remote: &str, inbound: bool) -> TcpRecord {
        TcpRecord {
            kind,
            duration_ns: 2_000_000,
            owner: Some(Owner {
                tgid: 1,
                cgroup_id: 1,
                comm: "c".into(),
                inbound,
            }),
            local: Some("10.0.0.1:8080".parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
        }
    }

    fn who() -> Identity {
        Identity {
            service_name: "svc".into(),
            container_id: String::new(),
            cgroup_path: None,
            pod_name: None,
        }
    }

    fn value(p: &sonde_proto::v1::BatchPayload, name: &str, label: (&str, &str)) -> f64 {
        p.series
            .iter()
            .find(|s| {
                s.labels.iter().any(|l| l.value == name)
                    && s.labels
                        .iter()
                        .any(|l| l.name == label.0 && l.value == label.1)
            })
            .unwrap_or_else(|| panic!("{name} {label:?}"))
            .samples[0]
            .value
    }

    #[test]
    fn counts_connects_active_and_retransmits() {
        let mut t = TcpTable::new(10, 100, Duration::from_secs(60));
        let now = Instant::now();
        let w = who();
        t.record(
            &rec(TcpKind::ConnectOk, "10.0.0.2:80", false),
            Some(&w),
            now,
        );
        t.record(
            &rec(TcpKind::ConnectOk, "10.0.0.2:80", false),
            Some(&w),
            now,
        );
        t.record(&rec(TcpKind::Closed, "10.0.0.2:80", false), Some(&w), now);
        t.record(
            &rec(TcpKind::ConnectFailed, "10.0.0.2:81", false),
            Some(&w),
            now,
        );
        t.record(
            &rec(TcpKind::Retransmit, "10.0.0.2:80", false),
            Some(&w),
            now,
        );
        t.record(
            &rec(TcpKind::Retransmit, "10.0.0.3:50000", true),
            Some(&w),
            now,
        );
        let mut e = Emitter::new(1);
        t.emit(&mut e);
        let p = e.finish();
        let d80 = ("destination", "10.0.0.2:80");
        assert_eq!(
            value(&p, "container_net_tcp_successful_connects_total", d80),
            2.0
        );
        assert_eq!(value(&p, "container_net_tcp_active_connections", d80), 1.0);
        assert_eq!(value(&p, "container_net_tcp_retransmits_total", d80), 1.0);
        assert_eq!(
            value(
                &p,
                "container_net_tcp_failed_connects_total",
                ("destination", "10.0.0.2:81")
            ),
            1.0
        );
        assert_eq!(
            value(
                &p,
                "container_net_tcp_inbound_retransmits_total",
                ("listen_port", "8080")
            ),
            1.0
        );
        let h = &p.histograms[0];
        assert_eq!(h.points[0].count, 2);
        // Idle series with an active connection survive expiry.
        t.expire(now + Duration::from_secs(120));
        let mut e = Emitter::new(2);
        t.emit(&mut e);
        let p = e.finish();
        assert_eq!(value(&p, "container_net_tcp_active_connections", d80), 1.0);
        assert!(
            !p.series
                .iter()
                .any(|s| s.labels.iter().any(|l| l.value == "10.0.0.2:81"))
        );
    }
}
