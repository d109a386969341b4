//! The replay engine: feeds capture records, in file order, into the agent's own aggregation
//! (the same [`HttpTable`], [`TcpTable`] and [`ExecCollector`] the live agent uses) on a
//! virtual clock, and turns each captured tick into the payload the agent would have sent.
//!
//! Must not: do I/O or read the real clock; time is the records' `t` only.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use sonde_proto::v1::BatchPayload;

use crate::{
    capture::{Reading, Record, run::EVENT_COLLECTORS},
    collect::{Collector, Emitter, exec::ExecCollector},
    config::EbpfConfig,
    ebpf::exec::ExecStats,
    http_metrics::{
        self,
        spans::{LinkStats, Linker, LinkerOptions},
        table::HttpTable,
        tcp::TcpTable,
    },
    trace::{
        TraceConfig,
        builder::SpanBuilder,
        sampler::{HeadSampler, SpanBudget},
    },
};

/// Counts of what was replayed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Ticks (payloads produced).
    pub ticks: u64,
    /// HTTP exchanges fed to the HTTP table.
    pub http: u64,
    /// TCP events fed to the TCP table.
    pub tcp: u64,
    /// Execs counted.
    pub exec: u64,
    /// Collector readings re-emitted (readings of event collectors are recomputed instead).
    pub readings: u64,
    /// Spans built from the HTTP exchanges.
    pub spans: u64,
}

/// What replay needs to build the spans the live agent would have sent.
#[derive(Debug, Clone)]
pub struct SpanSource {
    /// Linking, sampling and budget, as configured for the replay.
    pub config: TraceConfig,
    /// `host.name` (the capturing host's).
    pub host_name: String,
    /// The capture's `CLOCK_REALTIME - CLOCK_MONOTONIC`, ns; `None` (captures that predate
    /// it): estimated from the first HTTP exchange, whose row time follows its end by the
    /// ring-buffer delay only (milliseconds).
    pub unix_offset_ns: Option<i64>,
}

/// A virtual agent: the tables and the collectors fed from a capture.
pub struct Engine {
    http: Arc<Mutex<HttpTable>>,
    linker: Option<Linker>,
    unix_offset_ns: Option<i64>,
    shift_ns: i64,
    tcp: TcpTable,
    exec_stats: Arc<ExecStats>,
    exec: ExecCollector,
    sources: HashSet<String>,
    pending: Vec<Reading>,
    /// The instant standing for the capture's first row.
    base: Instant,
    t0: Option<i64>,
    last_t: i64,
    since_tick: bool,
    counts: Counts,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with the tables `config` gives the live agent; `sources` are the event
    /// sources that were live during the capture (`http`, `tcp`, `exec`). With `spans`
    /// (and HTTP live, and spans enabled in it) the HTTP exchanges also go through the
    /// live agent's span linker, on the capture's clock.
    pub fn new(
        config: &EbpfConfig,
        sources: impl IntoIterator<Item = String>,
        spans: Option<SpanSource>,
    ) -> Self {
        let http = http_metrics::new_table(config);
        let sources: HashSet<String> = sources.into_iter().collect();
        let unix_offset_ns = spans.as_ref().and_then(|s| s.unix_offset_ns);
        let linker = spans
            .filter(|s| s.config.enabled && sources.contains("http"))
            .map(|s| {
                let builder = SpanBuilder::new(
                    s.host_name,
                    HeadSampler::new(s.config.sample_ratio),
                    SpanBudget::new(s.config.max_spans_per_second),
                    Arc::default(),
                );
                let mut linker = Linker::new(
                    builder,
                    LinkerOptions {
                        hold: s.config.link_hold,
                        max_pending: s.config.max_pending,
                    },
                    Some(http.clone()),
                    Arc::new(LinkStats::default()),
                );
                if let Some(offset) = s.unix_offset_ns {
                    linker.set_unix_offset(offset);
                }
                linker
            });
        let exec_stats = Arc::new(ExecStats::default());
        Self {
            http,
            linker,
            unix_offset_ns,
            shift_ns: 0,
            tcp: http_metrics::new_tcp_table(config),
            exec: ExecCollector::new(exec_stats.clone()),
            exec_stats,
            sources,
            pending: Vec::new(),
            base: Instant::now(),
            t0: None,
            last_t: 0,
            since_tick: false,
            counts: Counts::default(),
        }
    }

    /// Moves every record `shift_ns` later: ticks, samples, exemplars and spans (the
    /// exchanges' monotonic times stay; their Unix offset moves).
    pub fn shifted(mut self, shift_ns: i64) -> Self {
        self.shift_ns = shift_ns;
        if let Some(offset) = self.unix_offset_ns {
            self.set_offset(offset + shift_ns);
        }
        self
    }

    fn set_offset(&mut self, offset: i64) {
        self.unix_offset_ns = Some(offset);
        if let Some(linker) = &mut self.linker {
            linker.set_unix_offset(offset);
        }
    }

    /// What was replayed so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The virtual instant of time `t_ns`.
    fn instant(&self, t_ns: i64) -> Instant {
        let offset = t_ns.saturating_sub(self.t0.unwrap_or(t_ns)).max(0);
        self.base + Duration::from_nanos(offset as u64)
    }

    /// Feeds one record; a tick returns its `(timestamp ms, payload)`.
    pub fn feed(&mut self, record: Record) -> Option<(i64, BatchPayload)> {
        let t_ns = record.t_ns() + self.shift_ns;
        self.t0.get_or_insert(t_ns);
        self.last_t = self.last_t.max(t_ns);
        let now = self.instant(t_ns);
        match record {
            Record::Http { exchange, who, .. } => {
                self.since_tick = true;
                self.counts.http += 1;
                // Refused at the series limit exactly as live (the capture was made with
                // the same limits unless the replay's configuration differs).
                let _ = self.table().record(&exchange, &who, now);
                if self.unix_offset_ns.is_none() {
                    self.set_offset(t_ns - exchange.end_ns as i64);
                }
                let arrived = self.monotonic(t_ns);
                if let Some(linker) = &mut self.linker {
                    linker.add(exchange, who, arrived);
                }
                None
            }
            Record::Tcp { event, who, .. } => {
                self.since_tick = true;
                self.counts.tcp += 1;
                self.tcp.record(&event, who.as_ref(), now);
                None
            }
            Record::Exec { .. } => {
                self.since_tick = true;
                self.counts.exec += 1;
                self.exec_stats.execs.fetch_add(1, Ordering::Relaxed);
                None
            }
            Record::Reading { reading, .. } => {
                self.since_tick = true;
                self.pending.push(reading);
                None
            }
            Record::Tick { .. } => Some(self.tick(t_ns, false)),
        }
    }

    /// Called at the end of the file: a capture cut short after its last tick, or with
    /// exchanges whose spans are still held for linking, gets one more tick at its last
    /// row's time, so no recorded event is left out.
    pub fn finish(&mut self) -> Option<(i64, BatchPayload)> {
        let held = self.linker.as_ref().is_some_and(|l| l.pending() > 0);
        (self.since_tick || held).then(|| self.tick(self.last_t, true))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HttpTable> {
        self.http.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The capture host's monotonic time at Unix time `t_ns`.
    fn monotonic(&self, t_ns: i64) -> u64 {
        t_ns.saturating_sub(self.unix_offset_ns.unwrap_or(0)).max(0) as u64
    }

    fn tick(&mut self, t_ns: i64, last: bool) -> (i64, BatchPayload) {
        self.since_tick = false;
        self.counts.ticks += 1;
        let t_ms = t_ns.div_euclid(1_000_000);
        let now = self.instant(t_ns);
        let mut out = Emitter::new(t_ms);
        // Before the HTTP table, as live: exemplars of the spans built now go out with it.
        // The last tick builds every span still held.
        let poll_at = if last {
            u64::MAX / 2
        } else {
            self.monotonic(t_ns)
        };
        if let Some(linker) = &mut self.linker {
            let spans = linker.poll(poll_at);
            self.counts.spans += spans.len() as u64;
            out.spans(spans);
        }
        for r in self.pending.drain(..) {
            if EVENT_COLLECTORS.contains(&r.collector.as_str()) {
                continue;
            }
            self.counts.readings += 1;
            out.family(&r.family, r.metric_type, &r.help, &r.unit);
            let labels: Vec<(&str, &str)> = r
                .labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            out.sample(&r.metric, &labels, r.value);
        }
        // The live collectors run in this order (exec, http, tcp), each only when its source
        // was live; expiry uses the virtual clock.
        if self.sources.contains("exec") {
            let _ = self.exec.collect(&mut out);
        }
        if self.sources.contains("http") {
            let mut table = self.table();
            table.expire(now);
            table.emit(&mut out);
        }
        if self.sources.contains("tcp") {
            self.tcp.expire(now);
            self.tcp.emit(&mut out);
        }
        (t_ms, out.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ebpf::http::{BodyHint, Direction, Exchange},
        http_metrics::identity::Identity,
    };

    fn exchange(status: u16, duration_ns: u64) -> Exchange {
        Exchange {
            direction: Direction::Server,
            tls: false,
            method: "GET",
            status,
            path: "/a".into(),
            path_truncated: false,
            start_ns: 1_000,
            end_ns: 1_000 + duration_ns,
            tgid: 1,
            tid: 1,
            cgroup_id: 1,
            comm: "srv".into(),
            peer: None,
            request_bytes: 10,
            response_bytes: 10,
            request_body: BodyHint::NoLength,
            response_body: BodyHint::ContentLength(5),
            local: None,
            traceparent: None,
        }
    }

    #[test]
    fn ticks_emit_the_tables_at_the_captured_time() {
        let config = EbpfConfig::default();
        let mut engine = Engine::new(&config, ["http".to_owned()], None);
        let who = Identity {
            service_name: "srv".into(),
            container_id: String::new(),
            cgroup_path: None,
            pod_name: None,
        };
        let http = |t_ns, status, d| Record::Http {
            t_ns,
            exchange: exchange(status, d),
            who: who.clone(),
        };
        assert!(engine.feed(http(1_000_000_000, 200, 3_000_000)).is_none());
        assert!(engine.feed(http(1_100_000_000, 200, 30_000_000)).is_none());
        let (t, payload) = engine
            .feed(Record::Tick {
                t_ns: 2_000_000_000,
            })
            .expect("a tick");
        assert_eq!(t, 2_000);
        let h = payload
            .histograms
            .iter()
            .find(|h| {
                h.labels
                    .iter()
                    .any(|l| l.value == "http_server_request_duration_seconds")
            })
            .expect("duration histogram");
        assert_eq!(h.points[0].count, 2);
        assert_eq!(h.points[0].timestamp_ms, 2_000);
        // 0.005 holds the 3 ms request, 0.05 both.
        let at = |b: f64| {
            let i = h.upper_bounds.iter().position(|x| *x == b).unwrap();
            h.points[0].bucket_counts[i]
        };
        assert_eq!((at(0.005), at(0.025), at(0.05)), (1, 1, 2));
        assert!(engine.finish().is_none(), "nothing after the last tick");
        assert!(engine.feed(http(3_000_000_000, 500, 1)).is_none());
        let (t, _) = engine.finish().expect("trailing events get a tick");
        assert_eq!(t, 3_000);
    }
}
