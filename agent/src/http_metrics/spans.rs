//! Spans from the HTTP exchanges: links each exchange to the span that caused it, then hands
//! it to [`SpanBuilder::from_exchange`] (ids, sampling, budget, OpenTelemetry shape) and
//! attaches the resulting trace id to the metrics series as an exemplar.
//!
//! Linking, within this agent's exchanges (ARCHITECTURE.md "Spans from eBPF" lists the limits):
//! - thread: a client exchange whose (pid, tid) also served a server exchange whose interval
//!   encloses it becomes that server span's child (thread-per-request servers); when two
//!   server exchanges of the thread enclose it (an async runtime), it stays unlinked;
//! - connection: a server exchange whose connection mirrors a client exchange's (the
//!   server's peer = the client's local endpoint and, when both are known, the server's
//!   local endpoint = the client's peer) becomes the child of the client span whose
//!   interval it overlaps most (exchanges on one connection follow each other; see
//!   [`overlap_ns`] for why not containment). A `traceparent` naming another trace wins over
//!   this link.
//!
//! Under a load far beyond the span budget most exchanges are shed before linking (the
//! builder's admission keeps those in flight during a window of each second, and with them
//! every exchange enclosing them, so a kept child always finds its parent).
//!
//! Exchanges complete bottom-up (a callee's response precedes its caller's), so every
//! exchange waits `hold` in a pending set before its span is built, parents first. Built
//! exchanges stay a further `hold` so that late children still find them. The set is bounded
//! (`max_pending`): at the bound the oldest exchange is built at once (counted as `forced`).
//!
//! Must not: read kernel events or resolve processes (the pipeline does), or block: the
//! caller holds the lock only for [`Linker::add`]/[`Linker::poll`].

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sonde_proto::v1::Span;

use super::{identity::Identity, route, table::HttpTable};
use crate::{
    ebpf::{
        http::{Direction, Exchange},
        ringbuf::monotonic_ns,
    },
    trace::{
        builder::{self, SpanBuilder},
        context::{TraceContext, hex},
    },
};

/// How an exchange found its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    None,
    Thread,
    Connection,
}

/// Counters of the linker, exported as `sonde_agent_spans_linked_total{link}` and friends.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Exchanges whose span was built (kept or dropped by sampling/budget).
    pub built: AtomicU64,
    /// Server spans that joined a `traceparent` header.
    pub header: AtomicU64,
    /// Client spans linked to the server span their thread was serving.
    pub thread: AtomicU64,
    /// Server spans linked to the client span on the other end of their connection.
    pub connection: AtomicU64,
    /// Spans that found no parent (a new trace, or a client call outside any observed
    /// server exchange).
    pub unlinked: AtomicU64,
    /// Exchanges built before their hold time because the pending set was full.
    pub forced: AtomicU64,
    /// Exchanges pending at shutdown, never built.
    pub abandoned: AtomicU64,
}

/// Settings of the linker.
#[derive(Debug, Clone, Copy)]
pub struct LinkerOptions {
    /// How long an exchange waits for the exchange that caused it.
    pub hold: Duration,
    /// Exchanges held at most (pending and recently built).
    pub max_pending: usize,
}

struct Node {
    x: Exchange,
    /// Shared with the resolver's cache and the other exchanges of the process.
    who: Arc<Identity>,
    arrived_ns: u64,
    parent: Option<u64>,
    link: Link,
    /// For a client: server exchanges of its thread seen enclosing it. More than one (an
    /// async runtime interleaving requests on one thread) leaves it unlinked: no guessing.
    enclosing: u32,
    ctx: Option<TraceContext>,
}

/// Links exchanges and builds their spans (see the module documentation).
pub struct Linker {
    builder: SpanBuilder,
    options: LinkerOptions,
    /// The exchanges held, in arrival order: `nodes[i]` has id `first + i`. Ids are handed
    /// out in arrival order and exchanges are forgotten oldest first, so a deque is the map.
    nodes: VecDeque<Node>,
    /// Id of `nodes[0]`.
    first: u64,
    /// Keyed by thread and role (server or not): a scan looks only at the other role's
    /// exchanges, so a thread that only serves (or only calls) never scans its own.
    by_thread: HashMap<(u32, u32, bool), VecDeque<Held>, foldhash::fast::RandomState>,
    /// Keyed by the client's local endpoint (= the server's peer) and role, as `by_thread`.
    by_conn: HashMap<(SocketAddr, bool), VecDeque<Held>, foldhash::fast::RandomState>,
    out: Vec<Span>,
    /// Scratch for [`Linker::build`].
    chain: Vec<u64>,
    table: Option<Arc<Mutex<HttpTable>>>,
    stats: Arc<LinkStats>,
    /// Monotonic → Unix offset; `None`: this host's clocks at build time.
    unix_offset_ns: Option<i64>,
    /// This host's offset as last read (at [`Linker::advance`], every span poll): builds
    /// forced by [`Linker::add`] do not read two clocks per exchange.
    host_offset_ns: i64,
}

impl std::fmt::Debug for Linker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linker")
            .field("nodes", &self.nodes.len())
            .field("out", &self.out.len())
            .finish_non_exhaustive()
    }
}

/// Nanoseconds to add to a monotonic time to get Unix time.
pub fn unix_offset_ns() -> i64 {
    // `SystemTime` is `CLOCK_REALTIME`.
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    unix - monotonic_ns() as i64
}

/// How far out of completion order the reader may see two exchanges: the kernel takes the
/// end time just before it reserves the ring-buffer record, so the order of records is the
/// order of ends to within an interrupt's delay.
const ARRIVAL_SLACK_NS: u64 = 2_000_000;

/// An exchange in the thread and connection indexes, with what a scan checks first (no
/// lookup of the node).
#[derive(Debug, Clone, Copy)]
struct Held {
    id: u64,
    end_ns: u64,
}

impl Held {
    /// Whether it (seen before `x`) ended before `x` started, beyond the arrival slack: then
    /// it cannot contain `x` nor lie inside it, and neither can anything seen before it. The
    /// indexes are in arrival order, so scans stop there: a busy thread or keep-alive
    /// connection holds thousands of exchanges in a hold period, and scanning them all for
    /// every exchange made the linker quadratic.
    fn ended_before(&self, x: &Exchange) -> bool {
        self.end_ns.saturating_add(ARRIVAL_SLACK_NS) < x.start_ns
    }
}

/// Removes `id` from an index; it is almost always the oldest (forgetting goes in order).
fn remove_id(ids: &mut VecDeque<Held>, id: u64) {
    if ids.front().is_some_and(|h| h.id == id) {
        ids.pop_front();
    } else {
        ids.retain(|h| h.id != id);
    }
}

/// Node `id` of `nodes` whose first id is `first` (a function, so the indexes can be borrowed
/// meanwhile).
fn node_mut(nodes: &mut VecDeque<Node>, first: u64, id: u64) -> Option<&mut Node> {
    let at = usize::try_from(id.checked_sub(first)?).ok()?;
    nodes.get_mut(at)
}

fn inside(inner: &Exchange, outer: &Exchange) -> bool {
    outer.start_ns <= inner.start_ns && inner.end_ns <= outer.end_ns
}

/// How long `a` and `b` overlap (0 when they do not).
///
/// Connection links ask for overlap, not containment: where a write is seen when it returns
/// (the socket data hooks), the far end of a same-host connection may read the data, and
/// even answer, before the writer's hook runs, so the server's exchange can start (and
/// end) a few microseconds outside the client's.
fn overlap_ns(a: &Exchange, b: &Exchange) -> u64 {
    a.end_ns
        .min(b.end_ns)
        .saturating_sub(a.start_ns.max(b.start_ns))
}

/// Whether `server` is the far end of `client`'s connection.
fn mirrors(server: &Exchange, client: &Exchange) -> bool {
    server.peer.is_some()
        && server.peer == client.local
        && (server.local.is_none() || client.peer.is_none() || server.local == client.peer)
}

impl Linker {
    /// A linker building with `builder`; exemplars go into `table` when given.
    pub fn new(
        builder: SpanBuilder,
        options: LinkerOptions,
        table: Option<Arc<Mutex<HttpTable>>>,
        stats: Arc<LinkStats>,
    ) -> Self {
        Self {
            builder,
            options,
            nodes: VecDeque::new(),
            first: 0,
            by_thread: HashMap::default(),
            by_conn: HashMap::default(),
            out: Vec::new(),
            chain: Vec::new(),
            table,
            stats,
            unix_offset_ns: None,
            host_offset_ns: unix_offset_ns(),
        }
    }

    /// Uses a fixed monotonic → Unix offset (that of the host and time the exchanges were
    /// captured on), instead of reading this host's clocks.
    pub fn set_unix_offset(&mut self, offset_ns: i64) {
        self.unix_offset_ns = Some(offset_ns);
    }

    /// Exchanges held (pending or recently built).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Exchanges whose span is not built yet.
    pub fn pending(&self) -> usize {
        self.nodes.iter().filter(|n| n.ctx.is_none()).count()
    }

    /// Spans built and not yet taken.
    pub fn built(&self) -> usize {
        self.out.len()
    }

    fn node(&self, id: u64) -> Option<&Node> {
        let at = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.nodes.get(at)
    }

    /// Adds a completed exchange of process `who`, seen at monotonic time `now_ns`, and links
    /// it with the exchanges held, unless the builder sheds it ([`SpanBuilder::admit`]).
    pub fn add(&mut self, x: Exchange, who: impl Into<Arc<Identity>>, now_ns: u64) {
        let offset = self.offset();
        if !self
            .builder
            .admit(x.start_ns as i64 + offset, x.end_ns as i64 + offset)
        {
            return;
        }
        while self.nodes.len() >= self.options.max_pending.max(1) {
            let oldest = self.first;
            if self.node(oldest).is_some_and(|n| n.ctx.is_none()) {
                self.stats.forced.fetch_add(1, Ordering::Relaxed);
                self.build(oldest, offset);
            }
            self.forget_oldest();
        }
        let id = self.first + self.nodes.len() as u64;
        let mut parent = None;
        let mut link = Link::None;
        let mut enclosing = 0;
        let server = x.direction == Direction::Server;
        match x.direction {
            Direction::Server => {
                if let Some(peer) = x.peer {
                    // The client exchange this one overlaps most: exchanges on one
                    // connection follow each other, so it is the request being served.
                    let mut best = 0;
                    for held in self.by_conn.get(&(peer, false)).into_iter().flatten().rev() {
                        if held.ended_before(&x) {
                            break;
                        }
                        let c = self.node(held.id).expect("indexed node exists");
                        let overlap = overlap_ns(&x, &c.x);
                        // Newest first: on a tie the earlier client wins.
                        if mirrors(&x, &c.x) && overlap > 0 && overlap >= best {
                            best = overlap;
                            parent = Some(held.id);
                            link = Link::Connection;
                        }
                    }
                }
                // Client calls this thread made while serving this request, seen earlier.
                if let Some(ids) = self.by_thread.get(&(x.tgid, x.tid, false)) {
                    for held in ids.iter().rev() {
                        if held.ended_before(&x) {
                            break;
                        }
                        let c = node_mut(&mut self.nodes, self.first, held.id)
                            .expect("indexed node exists");
                        if c.ctx.is_some() || !inside(&c.x, &x) {
                            continue;
                        }
                        c.enclosing += 1;
                        if c.enclosing == 1 && c.parent.is_none() {
                            c.parent = Some(id);
                            c.link = Link::Thread;
                        } else if c.link == Link::Thread {
                            // A second request in flight on the thread: ambiguous.
                            c.parent = None;
                            c.link = Link::None;
                        }
                    }
                }
            }
            Direction::Client => {
                if let Some(ids) = self.by_thread.get(&(x.tgid, x.tid, true)) {
                    for held in ids.iter().rev() {
                        if held.ended_before(&x) {
                            break;
                        }
                        let s = self.node(held.id).expect("indexed node exists");
                        if inside(&x, &s.x) {
                            enclosing += 1;
                            parent = Some(held.id);
                            link = Link::Thread;
                        }
                    }
                    if enclosing > 1 {
                        parent = None;
                        link = Link::None;
                    }
                }
                // Servers on the other end of this connection, seen earlier.
                if let Some(local) = x.local {
                    for held in self.by_conn.get(&(local, true)).into_iter().flatten().rev() {
                        if held.ended_before(&x) {
                            break;
                        }
                        let s = node_mut(&mut self.nodes, self.first, held.id)
                            .expect("indexed node exists");
                        if s.parent.is_none()
                            && s.ctx.is_none()
                            && mirrors(&s.x, &x)
                            && overlap_ns(&s.x, &x) > 0
                        {
                            s.parent = Some(id);
                            s.link = Link::Connection;
                        }
                    }
                }
            }
        }
        let held = Held {
            id,
            end_ns: x.end_ns,
        };
        self.by_thread
            .entry((x.tgid, x.tid, server))
            .or_default()
            .push_back(held);
        let conn_key = match x.direction {
            Direction::Server => x.peer,
            Direction::Client => x.local,
        };
        if let Some(key) = conn_key {
            self.by_conn
                .entry((key, server))
                .or_default()
                .push_back(held);
        }
        self.nodes.push_back(Node {
            x,
            who: who.into(),
            arrived_ns: now_ns,
            parent,
            link,
            enclosing,
            ctx: None,
        });
    }

    /// Builds the spans of exchanges held for `hold` (parents first), forgets those built
    /// more than `hold` ago, and returns the spans kept since the last call.
    pub fn poll(&mut self, now_ns: u64) -> Vec<Span> {
        self.advance(now_ns);
        self.take()
    }

    /// What [`Linker::poll`] does, keeping the built spans for a later [`Linker::take`].
    pub fn advance(&mut self, now_ns: u64) {
        let hold = self.options.hold.as_nanos() as u64;
        if self.unix_offset_ns.is_none() {
            self.host_offset_ns = unix_offset_ns();
        }
        let offset = self.offset();
        let mut at = 0;
        while let Some(node) = self.nodes.get(at) {
            if now_ns.saturating_sub(node.arrived_ns) < hold {
                break;
            }
            if node.ctx.is_none() {
                self.build(self.first + at as u64, offset);
            }
            at += 1;
        }
        while let Some(node) = self.nodes.front() {
            if node.ctx.is_none() || now_ns.saturating_sub(node.arrived_ns) < 2 * hold {
                break;
            }
            self.forget_oldest();
        }
    }

    /// The spans built since the last call.
    pub fn take(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.out)
    }

    /// Puts back spans [`Linker::take`] returned that could not be sent, before those built
    /// since; beyond `max` spans held the oldest are dropped, and their number returned.
    pub fn give_back(&mut self, mut spans: Vec<Span>, max: usize) -> usize {
        spans.append(&mut self.out);
        let excess = spans.len().saturating_sub(max);
        spans.drain(..excess);
        self.out = spans;
        excess
    }

    /// Counts what is still pending (at shutdown) and drops it.
    pub fn abandon(&mut self) {
        let pending = self.pending();
        self.stats
            .abandoned
            .fetch_add(pending as u64, Ordering::Relaxed);
        self.first += self.nodes.len() as u64;
        self.nodes.clear();
        self.by_thread.clear();
        self.by_conn.clear();
    }

    /// Monotonic → Unix offset for spans built now: the fixed one, else this host's as read
    /// at the last [`Linker::advance`].
    fn offset(&self) -> i64 {
        self.unix_offset_ns.unwrap_or(self.host_offset_ns)
    }

    /// Builds node `id`'s span, after its unbuilt ancestors; `offset` turns monotonic times
    /// into Unix times.
    fn build(&mut self, id: u64, offset: i64) {
        // The chain of unbuilt ancestors, nearest first (bounded by the nodes held); its
        // buffer is reused, this runs for every exchange.
        let mut chain = std::mem::take(&mut self.chain);
        chain.clear();
        chain.push(id);
        let mut at = id;
        while let Some(parent) = self.node(at).and_then(|n| n.parent) {
            match self.node(parent) {
                Some(p) if p.ctx.is_none() && !chain.contains(&parent) => {
                    chain.push(parent);
                    at = parent;
                }
                _ => break,
            }
        }
        for &id in chain.iter().rev() {
            let linked = self
                .node(id)
                .and_then(|n| n.parent)
                .and_then(|p| self.node(p))
                .and_then(|p| p.ctx);
            let Some(node) = self.node(id) else {
                continue;
            };
            let x = &node.x;
            let direction = match x.direction {
                Direction::Server => builder::Direction::Server,
                Direction::Client => builder::Direction::Client,
            };
            // What `parse_traceparent` would accept of the header the kernel decoded.
            let header = x
                .traceparent
                .filter(|t| t.trace_id != [0; 16] && t.span_id != [0; 8]);
            // Decided before the span is built: under load the budget drops most exchanges,
            // and they need no route, header text or attributes.
            let decision = self
                .builder
                .decide(direction, x.end_ns as i64 + offset, header, linked);
            let context = decision.context;
            let joined_header = x.direction == Direction::Server
                && header.is_some_and(|h| h.trace_id == context.trace_id)
                && linked.is_none_or(|l| l.trace_id != context.trace_id);
            let counter = match (joined_header, linked.map(|_| node.link)) {
                (true, _) => &self.stats.header,
                (false, Some(Link::Thread)) => &self.stats.thread,
                (false, Some(Link::Connection)) => &self.stats.connection,
                _ => &self.stats.unlinked,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.stats.built.fetch_add(1, Ordering::Relaxed);
            if decision.keep {
                let route = route::normalise(&x.path, x.path_truncated);
                let header = x.traceparent.map(|t| {
                    format!(
                        "00-{}-{}-{:02x}",
                        hex(&t.trace_id),
                        hex(&t.span_id),
                        t.flags
                    )
                });
                let input = builder::Exchange {
                    direction: Some(direction),
                    start_unix_nano: x.start_ns as i64 + offset,
                    end_unix_nano: x.end_ns as i64 + offset,
                    method: x.method,
                    path: &x.path,
                    route: Some(&route),
                    status: x.status,
                    peer: x.peer,
                    local: x.local,
                    pid: x.tgid,
                    tid: x.tid,
                    cgroup_id: x.cgroup_id,
                    executable: &x.comm,
                    service: &node.who.service_name,
                    container_id: (!node.who.container_id.is_empty())
                        .then_some(node.who.container_id.as_str()),
                    pod_name: node.who.pod_name.as_deref(),
                    traceparent: header.as_deref(),
                };
                let span = self
                    .builder
                    .span(&input, direction, &context, decision.parent);
                if let Some(table) = &self.table {
                    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
                    table.exemplar(
                        x,
                        &node.who,
                        &hex(&context.trace_id),
                        &hex(&context.span_id),
                        (x.end_ns as i64 + offset) / 1_000_000,
                    );
                }
                self.out.push(span);
            }
            if let Some(node) = node_mut(&mut self.nodes, self.first, id) {
                node.ctx = Some(context);
            }
        }
        self.chain = chain;
    }

    /// Drops the oldest node and its index entries.
    fn forget_oldest(&mut self) {
        let Some(node) = self.nodes.pop_front() else {
            return;
        };
        let id = self.first;
        self.first += 1;
        let server = node.x.direction == Direction::Server;
        let thread = (node.x.tgid, node.x.tid, server);
        if let Some(ids) = self.by_thread.get_mut(&thread) {
            remove_id(ids, id);
            if ids.is_empty() {
                self.by_thread.remove(&thread);
            }
        }
        let conn_key = match node.x.direction {
            Direction::Server => node.x.peer,
            Direction::Client => node.x.local,
        };
        if let Some(key) = conn_key.map(|k| (k, server))
            && let Some(ids) = self.by_conn.get_mut(&key)
        {
            remove_id(ids, id);
            if ids.is_empty() {
                self.by_conn.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ebpf::http::BodyHint,
        trace::sampler::{DropCounters, DropReason, HeadSampler, SpanBudget},
    };

    const MS: u64 = 1_000_000;

    fn linker() -> (Linker, Arc<LinkStats>) {
        linker_holding(100)
    }

    fn linker_holding(max_pending: usize) -> (Linker, Arc<LinkStats>) {
        let stats = Arc::new(LinkStats::default());
        let builder = SpanBuilder::new(
            "host",
            HeadSampler::new(1.0),
            SpanBudget::new(0),
            Arc::new(DropCounters::default()),
        );
        let options = LinkerOptions {
            hold: Duration::from_millis(100),
            max_pending,
        };
        (Linker::new(builder, options, None, stats.clone()), stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn ex(
        direction: Direction,
        path: &str,
        tgid: u32,
        tid: u32,
        start_ms: u64,
        end_ms: u64,
        local: &str,
        peer: &str,
    ) -> Exchange {
        Exchange {
            direction,
            tls: false,
            method: "GET",
            status: 200,
            path: path.to_owned(),
            path_truncated: false,
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
            tgid,
            tid,
            cgroup_id: 0,
            comm: "python3".into(),
            peer: Some(peer.parse().unwrap()),
            request_bytes: 10,
            response_bytes: 10,
            request_body: BodyHint::NoLength,
            response_body: BodyHint::NoLength,
            local: Some(local.parse().unwrap()),
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

    fn by_path<'a>(spans: &'a [Span], path: &str, kind: i32) -> &'a Span {
        spans
            .iter()
            .find(|s| {
                s.kind == kind
                    && s.attributes.iter().any(|kv| {
                        kv.key == "url.path"
                            && kv.value.as_ref().and_then(|v| v.value.clone())
                                == Some(sonde_proto::v1::any_value::Value::StringValue(
                                    path.to_owned(),
                                ))
                    })
            })
            .unwrap_or_else(|| panic!("no span for {path}"))
    }

    /// A's server exchange (thread 11) calls B (thread 21) over 127.0.0.1:5000 → :8080;
    /// exchanges arrive bottom-up, as they complete.
    #[test]
    fn links_thread_and_connection_bottom_up() {
        let (mut l, stats) = linker();
        let a_in = ex(
            Direction::Server,
            "/a",
            10,
            11,
            0,
            50,
            "127.0.0.1:7000",
            "127.0.0.1:6000",
        );
        let a_out = ex(
            Direction::Client,
            "/b",
            10,
            11,
            10,
            40,
            "127.0.0.1:5000",
            "127.0.0.1:8080",
        );
        let b_in = ex(
            Direction::Server,
            "/b",
            20,
            21,
            12,
            38,
            "127.0.0.1:8080",
            "127.0.0.1:5000",
        );
        // Unrelated: the same thread later, and another connection to B at the same time.
        let other = ex(
            Direction::Server,
            "/o",
            20,
            21,
            13,
            30,
            "127.0.0.1:8080",
            "127.0.0.1:5001",
        );
        l.add(b_in, who("b"), 0);
        l.add(other, who("b"), 0);
        l.add(a_out, who("a"), MS);
        l.add(a_in, who("a"), 2 * MS);
        assert!(l.poll(50 * MS).is_empty(), "held for 100 ms");
        let spans = l.poll(150 * MS);
        assert_eq!(spans.len(), 4);
        let (server, client) = (
            sonde_proto::v1::SpanKind::Server as i32,
            sonde_proto::v1::SpanKind::Client as i32,
        );
        let (a_s, a_c, b_s, o) = (
            by_path(&spans, "/a", server),
            by_path(&spans, "/b", client),
            by_path(&spans, "/b", server),
            by_path(&spans, "/o", server),
        );
        assert!(a_s.parent_span_id.is_empty());
        assert_eq!(a_c.parent_span_id, a_s.span_id);
        assert_eq!(b_s.parent_span_id, a_c.span_id);
        assert_eq!(b_s.trace_id, a_s.trace_id);
        assert!(o.parent_span_id.is_empty(), "other connection: not linked");
        assert_ne!(o.trace_id, a_s.trace_id);
        assert_eq!(stats.thread.load(Ordering::Relaxed), 1);
        assert_eq!(stats.connection.load(Ordering::Relaxed), 1);
        assert_eq!(stats.unlinked.load(Ordering::Relaxed), 2);
        // Built exchanges are forgotten after a second hold.
        assert_eq!(l.len(), 4);
        l.poll(300 * MS);
        assert!(l.is_empty());
    }

    /// Regression: with writes seen when they return (the socket data hooks), the far end of
    /// a same-host connection read the request before the client's write was seen, so its
    /// exchange started before the client's and was not linked. Each server exchange of a
    /// keep-alive connection links to the client exchange it overlaps most, whichever
    /// arrives first.
    #[test]
    fn a_server_exchange_starting_before_its_clients_write_returned_links_to_it() {
        const US: u64 = 1_000;
        let (mut l, stats) = linker();
        let at = |x: &mut Exchange, start_us: u64, end_us: u64| {
            (x.start_ns, x.end_ns) = (start_us * US, end_us * US);
        };
        let conn = |direction, path: &str| {
            let (pid, local, peer) = match direction {
                Direction::Client => (10, "127.0.0.1:5000", "127.0.0.1:8080"),
                Direction::Server => (20, "127.0.0.1:8080", "127.0.0.1:5000"),
            };
            ex(direction, path, pid, pid + 1, 0, 0, local, peer)
        };
        // Three requests on one connection, 30 µs apart; each server exchange starts 3 µs
        // before its client's and ends 2 µs after it.
        let mut pairs = Vec::new();
        for k in 0..3u64 {
            let t = 1_000 + 30 * k;
            let mut c = conn(Direction::Client, &format!("/c/{k}"));
            at(&mut c, t + 5, t + 20);
            let mut s = conn(Direction::Server, &format!("/s/{k}"));
            at(&mut s, t + 2, t + 22);
            pairs.push((c, s));
        }
        // The first server arrives before its client, the others after.
        for (k, (c, s)) in pairs.into_iter().enumerate() {
            if k == 0 {
                l.add(s, who("b"), 0);
                l.add(c, who("a"), 0);
            } else {
                l.add(c, who("a"), 0);
                l.add(s, who("b"), 0);
            }
        }
        let spans = l.poll(150 * MS);
        let (server, client) = (
            sonde_proto::v1::SpanKind::Server as i32,
            sonde_proto::v1::SpanKind::Client as i32,
        );
        for k in 0..3 {
            let c = by_path(&spans, &format!("/c/{k}"), client);
            let s = by_path(&spans, &format!("/s/{k}"), server);
            assert_eq!(s.parent_span_id, c.span_id, "request {k}");
            assert_eq!(s.trace_id, c.trace_id, "request {k}");
        }
        assert_eq!(stats.connection.load(Ordering::Relaxed), 3);
    }

    /// Far beyond the budget most exchanges are shed before linking, but never a parent
    /// whose child is kept: every kept client span still names its server span.
    #[test]
    fn shedding_under_overload_keeps_children_with_their_parents() {
        let stats = Arc::new(LinkStats::default());
        let drops = Arc::new(DropCounters::default());
        let builder = SpanBuilder::new(
            "host",
            HeadSampler::new(1.0),
            SpanBudget::new(100),
            drops.clone(),
        );
        let options = LinkerOptions {
            hold: Duration::from_millis(100),
            max_pending: 100_000,
        };
        let mut l = Linker::new(builder, options, None, stats.clone());
        l.set_unix_offset(0);
        let mut kept = Vec::new();
        // Four seconds of requests 0.3 ms apart: a server exchange of 0.1 to 0.28 ms whose
        // thread calls out in its middle (the call completes first); the lengths vary so
        // that window ends fall between a call's end and its server's.
        for k in 0..13_000u64 {
            let t = 1_000 * MS + k * 3 * MS / 10;
            let jitter = (k * 2_654_435_761 % 1000) * MS * 18 / 100_000;
            let mut call = ex(
                Direction::Client,
                &format!("/b/{k}"),
                10,
                11,
                0,
                0,
                "127.0.0.1:5000",
                "127.0.0.1:8080",
            );
            (call.start_ns, call.end_ns) = (t + MS / 50, t + MS / 20 + jitter / 2);
            let mut serve = ex(
                Direction::Server,
                &format!("/a/{k}"),
                10,
                11,
                0,
                0,
                "127.0.0.1:7000",
                "127.0.0.1:6000",
            );
            (serve.start_ns, serve.end_ns) = (t, t + MS / 10 + jitter);
            l.add(call, who("a"), t);
            l.add(serve, who("a"), t);
            kept.extend(l.poll(t));
        }
        kept.extend(l.poll(10_000 * MS));
        let shed = drops.get(DropReason::Shed);
        let built = stats.built.load(Ordering::Relaxed);
        assert_eq!(shed + built, 26_000);
        // The first second is admitted whole (no rate known yet), then about the budget.
        assert!((6_900..7_300).contains(&built), "built {built}");
        let client = sonde_proto::v1::SpanKind::Client as i32;
        let clients: Vec<&Span> = kept.iter().filter(|s| s.kind == client).collect();
        assert!(clients.len() > 100, "{}", clients.len());
        for span in clients {
            assert!(!span.parent_span_id.is_empty(), "an orphaned client span");
        }
        assert_eq!(
            stats.unlinked.load(Ordering::Relaxed) + stats.thread.load(Ordering::Relaxed),
            built
        );
    }

    /// Regression: every exchange scanned every exchange held on its thread and connection,
    /// so a busy single-threaded keep-alive server (nginx at 30k req/s) made the linker
    /// quadratic and the agent lost most events. The scans stop at exchanges that ended
    /// before this one started; links among recent ones are unchanged.
    #[test]
    fn a_busy_keep_alive_thread_still_links_its_newest_exchanges() {
        let (mut l, stats) = linker_holding(100_000);
        // 20 000 earlier requests on one connection and thread, each [k, k + 1) ms, all
        // held (they all arrive at 0, within the 100 ms hold).
        for k in 0..20_000u64 {
            l.add(
                ex(
                    Direction::Server,
                    "/old",
                    10,
                    11,
                    k,
                    k + 1,
                    "127.0.0.1:7000",
                    "127.0.0.1:6000",
                ),
                who("a"),
                0,
            );
        }
        // Then one request during which the thread calls B: the call is its child.
        let call = ex(
            Direction::Client,
            "/b",
            10,
            11,
            20_010,
            20_020,
            "127.0.0.1:5000",
            "127.0.0.1:8080",
        );
        let serve = ex(
            Direction::Server,
            "/a",
            10,
            11,
            20_005,
            20_030,
            "127.0.0.1:7000",
            "127.0.0.1:6000",
        );
        l.add(call, who("a"), 0);
        l.add(serve, who("a"), 0);
        let spans = l.poll(200 * MS);
        assert_eq!(spans.len(), 20_002);
        let (server, client) = (
            sonde_proto::v1::SpanKind::Server as i32,
            sonde_proto::v1::SpanKind::Client as i32,
        );
        let (a, b) = (by_path(&spans, "/a", server), by_path(&spans, "/b", client));
        assert_eq!(b.parent_span_id, a.span_id);
        assert_eq!(stats.thread.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn spans_carry_the_pod_name_and_both_endpoints() {
        let (mut l, _) = linker();
        let mut pod = who("api");
        pod.pod_name = Some("api-7d9c-x2x9q".to_owned());
        let x = ex(
            Direction::Client,
            "/b",
            10,
            11,
            0,
            5,
            "10.0.0.1:40000",
            "10.0.0.2:8080",
        );
        l.add(x, pod, 5 * MS);
        let spans = l.poll(500 * MS);
        let span = &spans[0];
        let text = |attrs: &[sonde_proto::v1::KeyValue], key: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        let resource = &span.resource;
        assert_eq!(
            text(resource, "k8s.pod.name"),
            Some(sonde_proto::v1::any_value::Value::StringValue(
                "api-7d9c-x2x9q".into()
            ))
        );
        assert_eq!(
            text(&span.attributes, "network.local.port"),
            Some(sonde_proto::v1::any_value::Value::IntValue(40_000))
        );
        assert_eq!(
            text(&span.attributes, "server.port"),
            Some(sonde_proto::v1::any_value::Value::IntValue(8080))
        );
    }

    #[test]
    fn header_names_the_trace_and_timing_must_enclose() {
        let (mut l, stats) = linker();
        let mut a_in = ex(
            Direction::Server,
            "/a",
            10,
            11,
            0,
            50,
            "127.0.0.1:7000",
            "127.0.0.1:6000",
        );
        a_in.traceparent = Some(TraceContext {
            trace_id: [0x4b; 16],
            span_id: [0x0f; 8],
            flags: 1,
        });
        // A call of the same thread that ends after the request it would serve: not its child.
        let late = ex(
            Direction::Client,
            "/late",
            10,
            11,
            40,
            60,
            "127.0.0.1:5002",
            "127.0.0.1:8080",
        );
        l.add(a_in, who("a"), 0);
        l.add(late, who("a"), 0);
        let spans = l.poll(200 * MS);
        let a = by_path(&spans, "/a", sonde_proto::v1::SpanKind::Server as i32);
        assert_eq!(a.trace_id, vec![0x4b; 16]);
        assert_eq!(a.parent_span_id, vec![0x0f; 8]);
        let late = by_path(&spans, "/late", sonde_proto::v1::SpanKind::Client as i32);
        assert!(late.parent_span_id.is_empty());
        assert_eq!(stats.header.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn two_requests_in_flight_on_a_thread_link_nothing() {
        let (mut l, _) = linker();
        let call = ex(
            Direction::Client,
            "/c",
            1,
            1,
            20,
            30,
            "127.0.0.1:5000",
            "127.0.0.1:9",
        );
        let r1 = ex(
            Direction::Server,
            "/r1",
            1,
            1,
            0,
            50,
            "127.0.0.1:80",
            "127.0.0.1:6000",
        );
        let r2 = ex(
            Direction::Server,
            "/r2",
            1,
            1,
            10,
            60,
            "127.0.0.1:80",
            "127.0.0.1:6001",
        );
        l.add(call, who("s"), 0);
        l.add(r1, who("s"), 0);
        l.add(r2, who("s"), 0);
        let spans = l.poll(200 * MS);
        let c = by_path(&spans, "/c", sonde_proto::v1::SpanKind::Client as i32);
        assert!(c.parent_span_id.is_empty(), "ambiguous: left a root");
        // And in the other order (servers seen first).
        let (mut l, _) = linker();
        l.add(
            ex(
                Direction::Server,
                "/r1",
                1,
                1,
                0,
                50,
                "127.0.0.1:80",
                "127.0.0.1:6000",
            ),
            who("s"),
            0,
        );
        l.add(
            ex(
                Direction::Server,
                "/r2",
                1,
                1,
                10,
                60,
                "127.0.0.1:80",
                "127.0.0.1:6001",
            ),
            who("s"),
            0,
        );
        l.add(
            ex(
                Direction::Client,
                "/c",
                1,
                1,
                20,
                30,
                "127.0.0.1:5000",
                "127.0.0.1:9",
            ),
            who("s"),
            0,
        );
        let spans = l.poll(200 * MS);
        let c = by_path(&spans, "/c", sonde_proto::v1::SpanKind::Client as i32);
        assert!(c.parent_span_id.is_empty());
    }

    #[test]
    fn the_bound_builds_the_oldest_early() {
        let (mut l, stats) = linker();
        l.options.max_pending = 2;
        for i in 0..5u64 {
            let port = format!("127.0.0.1:{}", 6000 + i);
            l.add(
                ex(
                    Direction::Server,
                    "/x",
                    1,
                    1,
                    i,
                    i + 1,
                    "127.0.0.1:80",
                    &port,
                ),
                who("s"),
                0,
            );
        }
        assert_eq!(l.len(), 2);
        assert_eq!(stats.forced.load(Ordering::Relaxed), 3);
        assert_eq!(
            l.poll(0).len(),
            3,
            "the forced spans go out at the next poll"
        );
        l.abandon();
        assert_eq!(stats.abandoned.load(Ordering::Relaxed), 2);
    }
}
