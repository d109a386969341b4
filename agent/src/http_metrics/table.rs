//! The HTTP series table: exchanges become per-series histograms keyed by the labels of the
//! OpenTelemetry HTTP semantic conventions, bounded by a per-service route cap and a global
//! series cap, and emitted as classic histograms every tick.
//!
//! Must not: export a series whose labels could be unbounded (routes are normalised and
//! capped; peer addresses appear only on client series, as `server_address`/`server_port`).

use std::{
    collections::{BTreeMap, HashMap},
    hash::BuildHasher,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    histogram::{Buckets, DURATION_BOUNDS, Latency, SIZE_BOUNDS},
    identity::Identity,
    route::{self, OVERFLOW, RouteCap},
};
use sonde_proto::v1::{Exemplar, Label};

use crate::{
    collect::{Emitter, emitter::HistogramValue},
    ebpf::http::{Direction, Exchange},
};

/// The labels of one HTTP series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// Server or client side.
    pub direction: Direction,
    /// `service_name`.
    pub service_name: String,
    /// `container_id` (empty: none).
    pub container_id: String,
    /// `http_request_method`.
    pub method: &'static str,
    /// `http_response_status_code`.
    pub status: u16,
    /// `http_route`.
    pub route: String,
    /// `server_address` (client series only).
    pub server_address: String,
    /// `server_port` (client series only; 0 when unknown).
    pub server_port: u16,
}

impl SeriesKey {
    /// Label pairs, empty values left out.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            ("service_name", self.service_name.clone()),
            ("http_request_method", self.method.to_owned()),
            ("http_response_status_code", self.status.to_string()),
            ("http_route", self.route.clone()),
        ];
        if !self.container_id.is_empty() {
            labels.push(("container_id", self.container_id.clone()));
        }
        if !self.server_address.is_empty() {
            labels.push(("server_address", self.server_address.clone()));
        }
        if self.server_port != 0 {
            labels.push(("server_port", self.server_port.to_string()));
        }
        labels
    }
}

/// What one series accumulates.
#[derive(Debug, Clone)]
pub struct SeriesStats {
    /// Request duration.
    pub duration: Latency,
    /// Request body sizes (bytes), when known.
    pub request_size: Buckets,
    /// Response body sizes (bytes), when known.
    pub response_size: Buckets,
    /// Exemplars of the duration histogram not yet emitted (the trace ids of recent
    /// exchanges of this series, newest last, at most [`EXEMPLARS_PER_TICK`]).
    pub exemplars: Vec<Exemplar>,
    last_seen: Instant,
}

/// Exemplars kept per series between two ticks (the newest win).
pub const EXEMPLARS_PER_TICK: usize = 4;

impl SeriesStats {
    fn new(now: Instant) -> Self {
        Self {
            duration: Latency::default(),
            request_size: Buckets::new(&SIZE_BOUNDS, 1.0),
            response_size: Buckets::new(&SIZE_BOUNDS, 1.0),
            exemplars: Vec::new(),
            last_seen: now,
        }
    }
}

/// Limits of the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Distinct routes per service and direction.
    pub routes_per_service: usize,
    /// Series in the table.
    pub max_series: usize,
    /// A series not updated for this long is dropped.
    pub idle_expiry: Duration,
}

/// Why an exchange was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table holds `max_series` series.
    SeriesLimit,
}

/// Counters of what the table did with exchanges.
#[derive(Debug, Default, Clone, Copy)]
pub struct TableStats {
    /// Exchanges recorded.
    pub recorded: u64,
    /// Exchanges whose route was folded into [`OVERFLOW`].
    pub route_overflow: u64,
    /// Exchanges refused at the series limit.
    pub series_limit: u64,
    /// Request bodies of unknown size (not observed in the size histogram).
    pub request_size_unknown: u64,
    /// Response bodies of unknown size.
    pub response_size_unknown: u64,
    /// Series dropped after `idle_expiry`.
    pub expired: u64,
}

/// Every HTTP series of the node.
/// Distinct exchange shapes whose series key is cached at most; beyond, the cache starts
/// again.
const KEY_CACHE_ENTRIES: usize = 4096;

/// Series keys by what determines them (direction, method, status, raw path, the client's
/// peer, service and container): normalising the path, admitting the route and building
/// the label strings happen once per distinct shape instead of once per exchange (several
/// allocations and string hashes, the largest user-space cost per exchange under load).
/// Keyed by a hash of those inputs; an entry is used only when its inputs are equal.
#[derive(Debug, Default)]
struct KeyCache {
    state: foldhash::fast::FixedState,
    entries: HashMap<u64, CachedKey, foldhash::fast::RandomState>,
}

#[derive(Debug)]
struct CachedKey {
    direction: Direction,
    method: &'static str,
    status: u16,
    path: Box<str>,
    path_truncated: bool,
    peer: Option<std::net::SocketAddr>,
    service_name: Box<str>,
    container_id: Box<str>,
    key: SeriesKey,
    /// The route was folded into `{other}`: each exchange of this shape counts.
    overflowed: bool,
}

#[derive(Debug)]
pub struct HttpTable {
    series: HashMap<SeriesKey, SeriesStats, foldhash::fast::RandomState>,
    keys: KeyCache,
    routes: RouteCap,
    limits: Limits,
    stats: TableStats,
}

/// A series summary for the debug endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    /// `server` or `client`.
    pub direction: &'static str,
    /// Labels as exported.
    pub labels: BTreeMap<&'static str, String>,
    /// Requests.
    pub count: u64,
    /// Sum of durations, seconds.
    pub sum_seconds: f64,
    /// Mean duration, seconds.
    pub mean_seconds: f64,
    /// Median, seconds (1% precision).
    pub p50_seconds: f64,
    /// 90th percentile, seconds.
    pub p90_seconds: f64,
    /// 99th percentile, seconds.
    pub p99_seconds: f64,
    /// Largest, seconds.
    pub max_seconds: f64,
}

impl HttpTable {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            series: HashMap::default(),
            keys: KeyCache::default(),
            routes: RouteCap::new(limits.routes_per_service),
            limits,
            stats: TableStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TableStats {
        TableStats {
            route_overflow: self.routes.overflowed,
            ..self.stats
        }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Records one exchange of a process with identity `who`.
    pub fn record(&mut self, x: &Exchange, who: &Identity, now: Instant) -> Result<(), Refused> {
        let at = self.cached_key(x, who, true);
        let key = &self.keys.entries[&at].key;
        let series_count = self.series.len();
        let stats = match self.series.get_mut(key) {
            Some(stats) => stats,
            None => {
                if series_count >= self.limits.max_series {
                    self.stats.series_limit += 1;
                    return Err(Refused::SeriesLimit);
                }
                self.series
                    .entry(key.clone())
                    .or_insert_with(|| SeriesStats::new(now))
            }
        };
        stats.last_seen = now;
        stats.duration.observe(x.duration_ns());
        match x.request_body_size() {
            Some(n) => stats.request_size.observe(n),
            None => self.stats.request_size_unknown += 1,
        }
        match x.response_body_size() {
            Some(n) => stats.response_size.observe(n),
            None => self.stats.response_size_unknown += 1,
        }
        self.stats.recorded += 1;
        Ok(())
    }

    /// Attaches the span of exchange `x` (recorded before) to its series' duration
    /// histogram as an exemplar (`trace_id`, `span_id` labels, value = duration in seconds,
    /// at `timestamp_ms`). Nothing happens when the series is not in the table.
    pub fn exemplar(
        &mut self,
        x: &Exchange,
        who: &Identity,
        trace_id: &str,
        span_id: &str,
        timestamp_ms: i64,
    ) {
        // The route was admitted when the exchange was recorded: do not count it twice.
        let at = self.cached_key(x, who, false);
        let key = &self.keys.entries[&at].key;
        let Some(stats) = self.series.get_mut(key) else {
            return;
        };
        if stats.exemplars.len() >= EXEMPLARS_PER_TICK {
            stats.exemplars.remove(0);
        }
        stats.exemplars.push(Exemplar {
            labels: vec![
                Label {
                    name: "span_id".to_owned(),
                    value: span_id.to_owned(),
                },
                Label {
                    name: "trace_id".to_owned(),
                    value: trace_id.to_owned(),
                },
            ],
            value: x.duration_ns() as f64 / 1e9,
            timestamp_ms,
        });
    }

    /// The entry of [`KeyCache`] holding the series key of `x`, made when missing; a route
    /// folded into `{other}` is counted when `count_overflow`.
    fn cached_key(&mut self, x: &Exchange, who: &Identity, count_overflow: bool) -> u64 {
        let peer = match x.direction {
            Direction::Client => x.peer,
            Direction::Server => None,
        };
        let hash = self.keys.state.hash_one((
            x.direction,
            x.method,
            x.status,
            x.path.as_str(),
            x.path_truncated,
            peer,
            who.service_name.as_str(),
            who.container_id.as_str(),
        ));
        let hit = self.keys.entries.get(&hash).is_some_and(|e| {
            e.direction == x.direction
                && e.method == x.method
                && e.status == x.status
                && *e.path == *x.path
                && e.path_truncated == x.path_truncated
                && e.peer == peer
                && *e.service_name == *who.service_name
                && *e.container_id == *who.container_id
        });
        if !hit {
            let before = self.routes.overflowed;
            let key = self.key(x, who);
            let overflowed = self.routes.overflowed != before;
            self.routes.overflowed = before;
            if self.keys.entries.len() >= KEY_CACHE_ENTRIES {
                self.keys.entries.clear();
            }
            self.keys.entries.insert(
                hash,
                CachedKey {
                    direction: x.direction,
                    method: x.method,
                    status: x.status,
                    path: x.path.as_str().into(),
                    path_truncated: x.path_truncated,
                    peer,
                    service_name: who.service_name.as_str().into(),
                    container_id: who.container_id.as_str().into(),
                    key,
                    overflowed,
                },
            );
        }
        if count_overflow && self.keys.entries[&hash].overflowed {
            self.routes.overflowed += 1;
        }
        hash
    }

    /// The series key of `x` (the route admitted under the per-service cap).
    fn key(&mut self, x: &Exchange, who: &Identity) -> SeriesKey {
        let route = route::normalise(&x.path, x.path_truncated);
        let budget = format!("{}\u{0}{}", x.direction.as_str(), who.service_name);
        let route = self.routes.admit(&budget, route);
        let (server_address, server_port) = match (x.direction, x.peer) {
            (Direction::Client, Some(peer)) => (peer.ip().to_string(), peer.port()),
            _ => (String::new(), 0),
        };
        SeriesKey {
            direction: x.direction,
            service_name: who.service_name.clone(),
            container_id: who.container_id.clone(),
            method: x.method,
            status: x.status,
            route,
            server_address,
            server_port,
        }
    }

    /// Drops series idle for longer than the limit and forgets their routes.
    pub fn expire(&mut self, now: Instant) {
        let before = self.series.len();
        let ttl = self.limits.idle_expiry;
        self.series
            .retain(|_, s| now.duration_since(s.last_seen) < ttl);
        let expired = before - self.series.len();
        if expired == 0 {
            return;
        }
        self.stats.expired += expired as u64;
        // Cached keys hold routes admitted under the old cap.
        self.keys.entries.clear();
        let overflowed = self.routes.overflowed;
        self.routes = RouteCap::new(self.limits.routes_per_service);
        self.routes.overflowed = overflowed;
        let mut keys: Vec<&SeriesKey> = self.series.keys().collect();
        keys.sort();
        for key in keys {
            if key.route != OVERFLOW {
                let budget = format!("{}\u{0}{}", key.direction.as_str(), key.service_name);
                self.routes.admit(&budget, key.route.clone());
            }
        }
    }

    /// Emits every series as classic histograms.
    pub fn emit(&mut self, out: &mut Emitter) {
        let mut keys: Vec<SeriesKey> = self.series.keys().cloned().collect();
        keys.sort();
        for key in &keys {
            let Some(stats) = self.series.get_mut(key) else {
                continue;
            };
            let exemplars = std::mem::take(&mut stats.exemplars);
            let stats = &*stats;
            let side = key.direction.as_str();
            let labels = key.labels();
            let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let duration = stats.duration.buckets.cumulative();
            out.histogram(
                &format!("http_{side}_request_duration_seconds"),
                &format!("Duration of HTTP {side} requests (request start to response start), measured by eBPF."),
                "seconds",
                &labels,
                HistogramValue {
                    upper_bounds: &DURATION_BOUNDS,
                    cumulative: &duration,
                    count: stats.duration.count(),
                    sum: stats.duration.sum_seconds(),
                    // The trace ids of recent exchanges (their spans' ids).
                    exemplars,
                },
            );
            for (what, sizes) in [
                ("request", &stats.request_size),
                ("response", &stats.response_size),
            ] {
                let cumulative = sizes.cumulative();
                out.histogram(
                    &format!("http_{side}_{what}_body_size_bytes"),
                    &format!("Size of HTTP {side} {what} bodies (Content-Length), where known."),
                    "bytes",
                    &labels,
                    HistogramValue {
                        upper_bounds: &SIZE_BOUNDS,
                        cumulative: &cumulative,
                        count: sizes.count(),
                        sum: sizes.sum() as f64,
                        exemplars: Vec::new(),
                    },
                );
            }
        }
    }

    /// Summaries of every series, sorted by labels.
    pub fn summaries(&self) -> Vec<SeriesSummary> {
        let mut keys: Vec<&SeriesKey> = self.series.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|key| {
                let d = &self.series[key].duration;
                let count = d.count();
                SeriesSummary {
                    direction: key.direction.as_str(),
                    labels: key.labels().into_iter().collect(),
                    count,
                    sum_seconds: d.sum_seconds(),
                    mean_seconds: if count == 0 {
                        0.0
                    } else {
                        d.sum_seconds() / count as f64
                    },
                    p50_seconds: d.quantile_seconds(0.5),
                    p90_seconds: d.quantile_seconds(0.9),
                    p99_seconds: d.quantile_seconds(0.99),
                    max_seconds: d.max_seconds(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::http::BodyHint;

    fn exchange(direction: Direction, path: &str, status: u16, ms: u64) -> Exchange {
        Exchange {
            direction,
            tls: false,
            method: "GET",
            status,
            path: path.to_owned(),
            path_truncated: false,
            start_ns: 1_000_000,
            end_ns: 1_000_000 + ms * 1_000_000,
            tgid: 1,
            tid: 1,
            cgroup_id: 0,
            comm: "x".into(),
            peer: Some("10.0.0.9:8080".parse().unwrap()),
            request_bytes: 100,
            response_bytes: 200,
            request_body: BodyHint::NoLength,
            response_body: BodyHint::ContentLength(2),
            local: None,
            traceparent: None,
        }
    }

    fn who(service: &str) -> Identity {
        Identity {
            service_name: service.to_owned(),
            container_id: String::new(),
            cgroup_path: None,
            pod_name: None,
        }
    }

    fn limits(routes: usize, series: usize) -> Limits {
        Limits {
            routes_per_service: routes,
            max_series: series,
            idle_expiry: Duration::from_secs(3600),
        }
    }

    #[test]
    fn groups_by_labels_and_emits_semconv_histograms() {
        let mut t = HttpTable::new(limits(10, 100));
        let now = Instant::now();
        t.record(
            &exchange(Direction::Server, "/users/1", 200, 3),
            &who("api"),
            now,
        )
        .unwrap();
        t.record(
            &exchange(Direction::Server, "/users/2", 200, 20),
            &who("api"),
            now,
        )
        .unwrap();
        t.record(
            &exchange(Direction::Server, "/users/2", 500, 1),
            &who("api"),
            now,
        )
        .unwrap();
        t.record(&exchange(Direction::Client, "/x", 200, 1), &who("api"), now)
            .unwrap();
        assert_eq!(t.len(), 3);
        let mut e = Emitter::new(1);
        t.emit(&mut e);
        let p = e.finish();
        // 3 series × (duration + 2 sizes).
        assert_eq!(p.histograms.len(), 9);
        let server = p
            .histograms
            .iter()
            .find(|h| {
                h.labels
                    .iter()
                    .any(|l| l.value == "http_server_request_duration_seconds")
                    && h.labels.iter().any(|l| l.value == "200")
            })
            .unwrap();
        let point = &server.points[0];
        assert_eq!(point.count, 2);
        assert!((point.sum - 0.023).abs() < 1e-12);
        // 3 ms ≤ 5 ms; 20 ms ≤ 25 ms.
        assert_eq!(point.bucket_counts[0], 1);
        assert_eq!(point.bucket_counts[2], 2);
        let route = server
            .labels
            .iter()
            .find(|l| l.name == "http_route")
            .unwrap();
        assert_eq!(route.value, "/users/{id}");
        assert!(!server.labels.iter().any(|l| l.name == "server_address"));
        let client = p
            .histograms
            .iter()
            .find(|h| {
                h.labels
                    .iter()
                    .any(|l| l.value == "http_client_request_duration_seconds")
            })
            .unwrap();
        assert!(
            client
                .labels
                .iter()
                .any(|l| l.name == "server_address" && l.value == "10.0.0.9")
        );
        assert!(
            client
                .labels
                .iter()
                .any(|l| l.name == "server_port" && l.value == "8080")
        );
        assert_eq!(p.metadata.len(), 6);
    }

    #[test]
    fn caps_routes_and_series_and_expires() {
        let mut t = HttpTable::new(limits(2, 3));
        let now = Instant::now();
        for path in ["/a", "/b", "/c", "/d"] {
            t.record(&exchange(Direction::Server, path, 200, 1), &who("s"), now)
                .unwrap();
        }
        // /c and /d share the overflow route.
        assert_eq!(t.len(), 3);
        assert_eq!(t.stats().route_overflow, 2);
        assert_eq!(
            t.record(&exchange(Direction::Server, "/a", 404, 1), &who("s"), now),
            Err(Refused::SeriesLimit)
        );
        assert_eq!(t.stats().series_limit, 1);
        t.expire(now + Duration::from_secs(7200));
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 3);
        t.record(&exchange(Direction::Server, "/e", 200, 1), &who("s"), now)
            .unwrap();
        assert_eq!(t.summaries()[0].labels["http_route"], "/e");
    }

    /// The series key is cached per exchange shape: repeated exchanges still count every
    /// overflow, land in the same series, and a service or peer that differs only there is
    /// told apart; an exemplar neither counts an overflow nor adds a series.
    #[test]
    fn cached_keys_count_and_separate_like_fresh_ones() {
        let mut t = HttpTable::new(limits(1, 100));
        let now = Instant::now();
        for _ in 0..3 {
            for path in ["/a", "/b"] {
                t.record(&exchange(Direction::Server, path, 200, 1), &who("s"), now)
                    .unwrap();
            }
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().route_overflow, 3, "/b overflows every time");
        t.exemplar(
            &exchange(Direction::Server, "/b", 200, 1),
            &who("s"),
            "t",
            "s",
            1,
        );
        assert_eq!(t.stats().route_overflow, 3);
        // Same path, another service; a client call to another peer.
        t.record(&exchange(Direction::Server, "/b", 200, 1), &who("u"), now)
            .unwrap();
        let mut other_peer = exchange(Direction::Client, "/x", 200, 1);
        t.record(&other_peer, &who("s"), now).unwrap();
        other_peer.peer = Some("10.0.0.10:8080".parse().unwrap());
        t.record(&other_peer, &who("s"), now).unwrap();
        assert_eq!(t.len(), 5);
        let counts: Vec<(String, String, u64)> = t
            .summaries()
            .into_iter()
            .map(|s| {
                (
                    s.labels["service_name"].clone(),
                    s.labels["http_route"].clone(),
                    s.count,
                )
            })
            .collect();
        assert!(counts.contains(&("s".into(), "/a".into(), 3)), "{counts:?}");
        assert!(
            counts.contains(&("s".into(), OVERFLOW.into(), 3)),
            "{counts:?}"
        );
        assert!(counts.contains(&("u".into(), "/b".into(), 1)), "{counts:?}");
    }
}
