//! Wiring from the loaded probes to collectors: one reader thread per ring buffer (decode →
//! identify → filter → aggregate), one maintenance thread (OpenSSL discovery, cgroup rules
//! resolved again), the seeding of connections that predate the agent, and the collectors
//! that emit the tables every tick.
//!
//! Must not: fail because a part is unavailable; each part starts only when its probes
//! exist, and says so in the log.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::Array;
use sonde_ebpf_common::{Conn, FilterRule, Inflight, PeerKey, maps};
use tokio_util::sync::CancellationToken;

use super::{
    PipelineStats,
    filter::{self, Filter},
    identity::{Identity, Resolver},
    spans::{LinkStats, Linker, LinkerOptions},
    table::{HttpTable, Limits},
    tcp::TcpTable,
};
use crate::{
    capture::EventTap,
    collect::{CollectError, Collector, Emitter},
    config::EbpfConfig,
    ebpf::{self, Probes, ringbuf::monotonic_ns, tls::TlsAttacher},
    trace::{
        TraceConfig,
        builder::SpanBuilder,
        otlp::OtlpSender,
        sampler::{DropCounters, DropReason, HeadSampler, SpanBudget},
    },
};

/// What the pipeline needs to turn exchanges into spans.
#[derive(Debug)]
pub struct SpanSetup {
    /// `[traces]` settings.
    pub config: TraceConfig,
    /// `host.name` of every span.
    pub host_name: String,
    /// Sampling and budget drops (the agent's metrics read them).
    pub drops: Arc<DropCounters>,
    /// Link counters (the agent's metrics read them).
    pub links: Arc<LinkStats>,
    /// Optional OTLP export of every kept span.
    pub otlp: Option<OtlpSender>,
    /// Where span batches go between collection ticks (see [`SpanBatches`]); without it the
    /// spans wait for the tick.
    pub batches: Option<SpanBatches>,
}

/// The sending end of the span batches: the agent's main loop sends each as a batch of its
/// own. Spans go out in batches of at most [`SPAN_BATCH`] (or every [`SPAN_BATCH_AGE`])
/// instead of waiting for the collection tick: at the default budget of 5000 spans per
/// second a 15 s tick held 75 000 spans (~2 KiB each as protobuf structs), most of the
/// agent's memory.
pub type SpanBatches = tokio::sync::mpsc::Sender<Vec<sonde_proto::v1::Span>>;

/// Spans per batch at most.
pub const SPAN_BATCH: usize = 1024;
/// Longest time a built span waits for its batch.
pub const SPAN_BATCH_AGE: Duration = Duration::from_secs(1);
/// Batches waiting for the exporter at most (the capacity of the [`SpanBatches`] channel).
pub const SPAN_BATCHES_QUEUED: usize = 4;
/// Built spans the linker keeps at most while the exporter is behind; beyond, the oldest
/// are dropped (`sonde_agent_spans_dropped_total{reason="batch_queue_full"}`).
const MAX_SPANS_WAITING: usize = 8 * SPAN_BATCH;
/// How often the span thread builds the spans whose hold time passed.
const SPAN_POLL: Duration = Duration::from_millis(100);

/// How often a reader drains its ring buffer. The kernel wakes it sooner only when a ring is
/// half full (at 20 ms, beyond ~170k HTTP events per second with the default 2 MiB ring):
/// a wakeup per record would cost the traced processes a self-IPI each.
const READ_INTERVAL: Duration = Duration::from_millis(20);

/// What [`start`] set up.
pub struct Started {
    /// Collectors to run every tick.
    pub collectors: Vec<Box<dyn Collector>>,
    /// Counters for the agent's own metrics.
    pub stats: Arc<PipelineStats>,
    /// The threads; they stop within [`READ_INTERVAL`] of `stop`.
    pub threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("collectors", &self.collectors.len())
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// The kernel rules for `config`, to pass to the loader.
pub fn kernel_rules(config: &EbpfConfig) -> Vec<FilterRule> {
    Filter::new(&config.filter, filter::cgroup_root()).kernel_rules()
}

/// The (empty) HTTP table for `config`; [`start`] fills it, `/debug/http` reads it.
pub fn new_table(config: &EbpfConfig) -> Arc<Mutex<HttpTable>> {
    Arc::new(Mutex::new(HttpTable::new(Limits {
        routes_per_service: config.http.max_routes_per_service,
        max_series: config.http.max_series,
        idle_expiry: config.http.series_idle_expiry,
    })))
}

/// The (empty) TCP table for `config`.
pub fn new_tcp_table(config: &EbpfConfig) -> TcpTable {
    TcpTable::new(
        config.tcp.max_destinations_per_service,
        config.tcp.max_series,
        config.http.series_idle_expiry,
    )
}

/// Starts readers, maintenance and collectors for whatever `probes` provides; exchanges go
/// into `http` (from [`new_table`]), and every event the tables record also to `tap`
/// (capture) when given.
pub fn start(
    config: &EbpfConfig,
    probes: &mut Probes,
    stop: &CancellationToken,
    http: Arc<Mutex<HttpTable>>,
    spans: Option<SpanSetup>,
    tap: Option<Arc<dyn EventTap>>,
) -> Started {
    let stats = Arc::new(PipelineStats::default());
    let filter = Filter::new(&config.filter, filter::cgroup_root());
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    let mut threads = Vec::new();

    // Identities of the processes seeding finds, for the HTTP reader's resolver.
    let (known_tx, known_rx) = std::sync::mpsc::channel::<(u32, Arc<Identity>)>();
    if let Some(ring) = probes.http_events.take() {
        let table = http.clone();
        let mut batches = None;
        let mut drops = None;
        let (linker, otlp) = match spans.filter(|s| s.config.enabled) {
            Some(setup) => {
                batches = setup.batches;
                drops = Some(setup.drops.clone());
                let builder = SpanBuilder::new(
                    setup.host_name,
                    HeadSampler::new(setup.config.sample_ratio),
                    SpanBudget::new(setup.config.max_spans_per_second),
                    setup.drops,
                );
                let linker = Linker::new(
                    builder,
                    LinkerOptions {
                        hold: setup.config.link_hold,
                        max_pending: setup.config.max_pending,
                    },
                    Some(http.clone()),
                    setup.links,
                );
                (Some(Arc::new(Mutex::new(linker))), setup.otlp)
            }
            None => (None, None),
        };
        let linker_r = linker.clone();
        let stats_r = stats.clone();
        let filter_r = filter.clone();
        let tap_r = tap.clone();
        let mut resolver = Resolver::host();
        let reader = ebpf::ringbuf::spawn(
            "http",
            ring,
            READ_INTERVAL,
            stop.clone(),
            move |record, drain| {
                for (tgid, who) in known_rx.try_iter() {
                    resolver.remember(tgid, who);
                }
                if let Some((tgid, cgroup_id)) = ebpf::http::decode_hint(record) {
                    let _ = resolver.refresh(tgid, cgroup_id);
                    return;
                }
                stats_r.http_events.fetch_add(1, Ordering::Relaxed);
                let exchange = match ebpf::http::decode(record) {
                    Ok(x) => x,
                    Err(error) => {
                        stats_r.http_decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%error, "undecodable HTTP event");
                        return;
                    }
                };
                let who = resolver.identify_at(
                    exchange.tgid,
                    &exchange.comm,
                    exchange.cgroup_id,
                    drain.at,
                );
                if !filter_r.allows(&exchange.comm, who.cgroup_path.as_deref()) {
                    stats_r.http_filtered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tracing::trace!(
                    direction = exchange.direction.as_str(),
                    method = exchange.method,
                    path = %exchange.path,
                    status = exchange.status,
                    duration_us = exchange.duration_ns() / 1000,
                    pid = exchange.tgid,
                    service = %who.service_name,
                    "http exchange"
                );
                if let Some(tap) = &tap_r {
                    tap.http(&exchange, &who);
                }
                {
                    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
                    if table.record(&exchange, &who, drain.at).is_err() {
                        stats_r.http_series_limit.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // The table lock is released first: the linker takes it for exemplars.
                if let Some(linker) = &linker_r {
                    let mut linker = linker.lock().unwrap_or_else(|p| p.into_inner());
                    linker.add(exchange, who, drain.monotonic_ns);
                }
            },
        );
        match reader {
            Ok(handle) => {
                threads.push(handle);
                // Before the HTTP collector, so exemplars of the spans built now go out in
                // the same tick.
                if let Some(linker) = linker {
                    if let (Some(batches), Some(drops)) = (batches, drops) {
                        let shipper = SpanShipper {
                            linker: linker.clone(),
                            otlp: otlp.clone(),
                            batches,
                            drops,
                        };
                        let stop = stop.clone();
                        match std::thread::Builder::new()
                            .name("sonde-spans".to_owned())
                            .spawn(move || shipper.run(&stop))
                        {
                            Ok(handle) => threads.push(handle),
                            Err(error) => {
                                tracing::warn!(%error, "cannot start the span thread; spans wait for the collection tick")
                            }
                        }
                    }
                    collectors.push(Box::new(SpanCollector { linker, otlp }));
                }
                collectors.push(Box::new(HttpCollector {
                    table: http.clone(),
                    stats: stats.clone(),
                }));
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the HTTP event reader; HTTP metrics are off")
            }
        }
    }

    if let Some(ring) = probes.tcp_events.take() {
        let table = Arc::new(Mutex::new(new_tcp_table(config)));
        let table_r = table.clone();
        let stats_r = stats.clone();
        let filter_r = filter.clone();
        let tap_r = tap.clone();
        let mut resolver = Resolver::host();
        let reader = ebpf::ringbuf::spawn(
            "tcp",
            ring,
            READ_INTERVAL,
            stop.clone(),
            move |record, drain| {
                stats_r.tcp_events.fetch_add(1, Ordering::Relaxed);
                let event = match ebpf::tcp::decode(record) {
                    Ok(e) => e,
                    Err(error) => {
                        stats_r.tcp_decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%error, "undecodable TCP event");
                        return;
                    }
                };
                let who = event.owner.as_ref().map(|o| {
                    (
                        resolver.identify_at(o.tgid, &o.comm, o.cgroup_id, drain.at),
                        o.comm.clone(),
                    )
                });
                if let Some((who, comm)) = &who
                    && !filter_r.allows(comm, who.cgroup_path.as_deref())
                {
                    stats_r.tcp_filtered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tracing::trace!(kind = ?event.kind, remote = ?event.remote, duration_ns = event.duration_ns, "tcp event");
                if let Some(tap) = &tap_r {
                    tap.tcp(&event, who.as_ref().map(|(w, _)| &**w));
                }
                let mut table = table_r.lock().unwrap_or_else(|p| p.into_inner());
                table.record(&event, who.as_ref().map(|(w, _)| &**w), drain.at);
            },
        );
        match reader {
            Ok(handle) => {
                threads.push(handle);
                collectors.push(Box::new(TcpCollector {
                    table,
                    stats: stats.clone(),
                }));
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the TCP event reader; TCP metrics are off")
            }
        }
    }

    seed_existing_connections(probes, &filter, &stats, &known_tx);
    drop(known_tx);

    let tls = probes
        .tls_loaded
        .then(|| TlsAttacher::new(probes.ebpf.clone(), Path::new("/proc"), stats.tls.clone()));
    let cgroup_rules =
        !config.filter.include_cgroups.is_empty() || !config.filter.exclude_cgroups.is_empty();
    if tls.is_some() || cgroup_rules {
        let ebpf = probes.ebpf.clone();
        let interval = config.http.tls_scan_interval;
        let stop = stop.clone();
        let filter = filter.clone();
        let spawned = std::thread::Builder::new()
            .name("sonde-maintain".to_owned())
            .spawn(move || {
                maintain(tls, cgroup_rules.then_some(filter), &ebpf, interval, &stop);
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                tracing::error!(%error, "cannot start the OpenSSL discovery thread; HTTPS is not measured")
            }
        }
    }

    Started {
        collectors,
        stats,
        threads,
    }
}

/// Seeds the kernel's connection map with the connections opened before the agent started
/// (the hooks are attached already, so none falls between the scan and the hooks), marks
/// their processes as traced and hands their identities, read now while they are alive, to
/// the HTTP reader through `known`: a process that exits before its first exchange is read
/// is still named as it was.
fn seed_existing_connections(
    probes: &mut Probes,
    filter: &Filter,
    stats: &PipelineStats,
    known: &std::sync::mpsc::Sender<(u32, Arc<Identity>)>,
) {
    let (Some(mut conns), Some(mut watched)) = (probes.conns.take(), probes.watched_tgids.take())
    else {
        return;
    };
    let found = ebpf::seed::existing_connections(Path::new("/proc"), |pid, comm| {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| super::identity::unified_path(&t));
        pid != std::process::id() && filter.allows(comm, cgroup.as_deref())
    });
    let mut resolver = Resolver::host();
    let mut identified = std::collections::HashSet::new();
    let mut seeded = 0u64;
    for (key, info) in &found {
        // Before the connection is in the map, so before any exchange of it is read. A
        // process gone already is left to the events' comm; a closed reader (HTTP metrics
        // off) needs no names.
        if identified.insert(key.tgid)
            && let Some(who) = resolver.refresh(key.tgid, 0)
        {
            let _ = known.send((key.tgid, who));
        }
        let conn = Conn {
            info: *info,
            local: PeerKey::UNKNOWN,
            sk: 0,
            inflight: Inflight::EMPTY,
        };
        // The process's slot first: the data hooks skip processes whose slot is unset.
        let slot = sonde_ebpf_common::http::watched_tgid_slot(key.tgid);
        if let Err(error) = watched.set(slot, 1, 0) {
            tracing::warn!(%error, pid = key.tgid, "cannot mark a process as traced");
            continue;
        }
        // Only if the kernel has not seen the socket itself in the meantime.
        if conns.get(key, 0).is_err() && conns.insert(key, conn, 0).is_ok() {
            seeded += 1;
        }
    }
    stats.seeded_connections.store(seeded, Ordering::Relaxed);
    tracing::info!(
        connections = seeded,
        "connections opened before the agent started are traced"
    );
}

/// OpenSSL discovery and cgroup rule refresh, until `stop`.
fn maintain(
    mut tls: Option<TlsAttacher>,
    rules: Option<Filter>,
    ebpf: &Mutex<aya::Ebpf>,
    interval: Duration,
    stop: &CancellationToken,
) {
    if let Some(tls) = tls.as_mut() {
        tls.scan_host();
    }
    let mut last: Option<Vec<FilterRule>> = None;
    loop {
        if let Some(tls) = tls.as_mut() {
            tls.scan_processes();
        }
        if let Some(filter) = &rules {
            let current = filter.kernel_rules();
            if last.as_ref() != Some(&current) {
                if let Err(error) = write_rules(ebpf, &current) {
                    tracing::warn!(%error, "cannot update the kernel's filter rules");
                }
                last = Some(current);
            }
        }
        // Sleep in small steps so shutdown is prompt.
        let until = Instant::now() + interval;
        while Instant::now() < until {
            if stop.is_cancelled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn write_rules(ebpf: &Mutex<aya::Ebpf>, rules: &[FilterRule]) -> Result<(), aya::maps::MapError> {
    let mut ebpf = ebpf.lock().unwrap_or_else(|p| p.into_inner());
    let Some(map) = ebpf.map_mut(maps::FILTER_RULES) else {
        return Ok(());
    };
    let mut array: Array<_, FilterRule> = Array::try_from(map)?;
    for (i, rule) in rules.iter().enumerate() {
        array.set(i as u32, rule, 0)?;
    }
    Ok(())
}

/// Emits the HTTP table every tick.
struct HttpCollector {
    table: Arc<Mutex<HttpTable>>,
    stats: Arc<PipelineStats>,
}

impl Collector for HttpCollector {
    fn name(&self) -> &'static str {
        "http"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.expire(Instant::now());
        table.emit(out);
        let s = table.stats();
        set(&self.stats.http_series, table.len() as u64);
        set(&self.stats.http_route_overflow, s.route_overflow);
        Ok(())
    }
}

/// Builds the spans whose hold time passed and adds them to the tick's batch (and to the
/// OTLP export).
struct SpanCollector {
    linker: Arc<Mutex<Linker>>,
    otlp: Option<OtlpSender>,
}

impl Collector for SpanCollector {
    fn name(&self) -> &'static str {
        "spans"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let spans = {
            let mut linker = self.linker.lock().unwrap_or_else(|p| p.into_inner());
            linker.poll(monotonic_ns())
        };
        if let Some(otlp) = &self.otlp {
            for span in &spans {
                otlp.send(span.clone());
            }
        }
        out.spans(spans);
        Ok(())
    }
}

/// Builds spans as their hold time passes and sends them in batches of [`SPAN_BATCH`] (or
/// every [`SPAN_BATCH_AGE`]), so that built spans do not pile up until the collection tick.
struct SpanShipper {
    linker: Arc<Mutex<Linker>>,
    otlp: Option<OtlpSender>,
    batches: SpanBatches,
    drops: Arc<DropCounters>,
}

impl SpanShipper {
    fn run(self, stop: &CancellationToken) {
        let mut last_sent = Instant::now();
        while !stop.is_cancelled() {
            std::thread::sleep(SPAN_POLL);
            self.ship(monotonic_ns(), &mut last_sent);
        }
    }

    /// Builds the spans due at `now_ns`; sends one batch when [`SPAN_BATCH`] spans wait or
    /// the last batch went out [`SPAN_BATCH_AGE`] ago.
    fn ship(&self, now_ns: u64, last_sent: &mut Instant) {
        let mut linker = self.linker.lock().unwrap_or_else(|p| p.into_inner());
        linker.advance(now_ns);
        let waiting = linker.built();
        if waiting == 0 || (waiting < SPAN_BATCH && last_sent.elapsed() < SPAN_BATCH_AGE) {
            return;
        }
        let mut spans = linker.take();
        let rest = spans.split_off(spans.len().min(SPAN_BATCH));
        // Copies for OTLP go out only with the batch, so a batch sent again later is not
        // exported twice.
        let copies = self.otlp.as_ref().map(|_| spans.clone());
        // Sent under the linker's lock: the final collection (which takes it) then sees
        // every span that did not reach the channel before the main loop closed it.
        let mut unsent = match self.batches.try_send(spans) {
            Ok(()) => {
                *last_sent = Instant::now();
                if let (Some(otlp), Some(copies)) = (&self.otlp, copies) {
                    for span in copies {
                        otlp.send(span);
                    }
                }
                Vec::new()
            }
            // Full (the exporter is behind) or closed (shutting down): the spans wait in
            // the linker for the next attempt or the final collection.
            Err(error) => error.into_inner(),
        };
        unsent.extend(rest);
        let dropped = linker.give_back(unsent, MAX_SPANS_WAITING);
        self.drops.add(DropReason::BatchQueueFull, dropped as u64);
    }
}

/// Emits the TCP table every tick.
struct TcpCollector {
    table: Arc<Mutex<TcpTable>>,
    stats: Arc<PipelineStats>,
}

impl Collector for TcpCollector {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.expire(Instant::now());
        table.emit(out);
        set(&self.stats.tcp_series_limit, table.stats().series_limit);
        Ok(())
    }
}

fn set(counter: &AtomicU64, value: u64) {
    counter.store(value, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ebpf::http::{BodyHint, Direction, Exchange},
        http_metrics::identity::Identity,
    };

    fn exchange(port: u16) -> Exchange {
        Exchange {
            direction: Direction::Server,
            tls: false,
            method: "GET",
            status: 200,
            path: "/x".to_owned(),
            path_truncated: false,
            start_ns: 1_000,
            end_ns: 2_000,
            tgid: 1,
            tid: 1,
            cgroup_id: 0,
            comm: "nginx".into(),
            peer: Some(format!("127.0.0.1:{port}").parse().unwrap()),
            request_bytes: 10,
            response_bytes: 10,
            request_body: BodyHint::NoLength,
            response_body: BodyHint::NoLength,
            local: Some("127.0.0.1:80".parse().unwrap()),
            traceparent: None,
        }
    }

    fn shipper(
        capacity: usize,
    ) -> (
        SpanShipper,
        tokio::sync::mpsc::Receiver<Vec<sonde_proto::v1::Span>>,
    ) {
        let drops = Arc::new(DropCounters::default());
        let builder = SpanBuilder::new(
            "host",
            HeadSampler::new(1.0),
            SpanBudget::new(0),
            drops.clone(),
        );
        let linker = Linker::new(
            builder,
            LinkerOptions {
                hold: Duration::from_millis(1),
                max_pending: 100_000,
            },
            None,
            Arc::default(),
        );
        let (batches, rx) = tokio::sync::mpsc::channel(capacity);
        let shipper = SpanShipper {
            linker: Arc::new(Mutex::new(linker)),
            otlp: None,
            batches,
            drops,
        };
        (shipper, rx)
    }

    fn add(shipper: &SpanShipper, n: usize) {
        let who = Arc::new(Identity {
            service_name: "nginx".to_owned(),
            container_id: String::new(),
            cgroup_path: None,
            pod_name: None,
        });
        let mut linker = shipper.linker.lock().unwrap();
        for i in 0..n {
            linker.add(exchange(1024 + (i % 60_000) as u16), who.clone(), 0);
        }
    }

    /// Regression: built spans waited for the 15 s collection tick (75 000 spans at the
    /// default budget, most of the agent's 190 MiB under load); they now leave in batches.
    #[test]
    fn spans_leave_in_bounded_batches_between_ticks() {
        let (shipper, mut rx) = shipper(8);
        add(&shipper, 2_500);
        let recent = Instant::now();
        let mut last = recent;
        let later = 10_000_000_000;
        shipper.ship(later, &mut last);
        assert_eq!(
            rx.try_recv().unwrap().len(),
            SPAN_BATCH,
            "a full batch goes at once"
        );
        shipper.ship(later, &mut last);
        assert_eq!(rx.try_recv().unwrap().len(), SPAN_BATCH);
        // 452 left: fewer than a batch, sent once the last batch is SPAN_BATCH_AGE old.
        shipper.ship(later, &mut last);
        assert!(rx.try_recv().is_err());
        let mut old = Instant::now() - SPAN_BATCH_AGE;
        shipper.ship(later, &mut old);
        assert_eq!(rx.try_recv().unwrap().len(), 2_500 - 2 * SPAN_BATCH);
        assert_eq!(shipper.linker.lock().unwrap().built(), 0);
    }

    /// A full or closed channel loses nothing up to the bound: the spans wait in the linker
    /// (the final collection takes them); beyond the bound the oldest are dropped, counted.
    #[test]
    fn unsent_spans_wait_in_the_linker_within_a_bound() {
        let (shipper, mut rx) = shipper(1);
        rx.close();
        add(&shipper, 3 * SPAN_BATCH);
        let mut old = Instant::now() - SPAN_BATCH_AGE;
        shipper.ship(10_000_000_000, &mut old);
        assert_eq!(shipper.linker.lock().unwrap().built(), 3 * SPAN_BATCH);
        assert_eq!(shipper.drops.get(DropReason::BatchQueueFull), 0);
        add(&shipper, MAX_SPANS_WAITING);
        shipper.ship(20_000_000_000, &mut old);
        assert_eq!(shipper.linker.lock().unwrap().built(), MAX_SPANS_WAITING);
        assert_eq!(
            shipper.drops.get(DropReason::BatchQueueFull),
            3 * SPAN_BATCH as u64
        );
        let spans = shipper.linker.lock().unwrap().poll(20_000_000_000);
        assert_eq!(spans.len(), MAX_SPANS_WAITING);
    }
}
