//! Linking traces across hosts at query time, by connection.
//!
//! An agent links a server span to the client span that called it only when it saw both ends
//! (same host). When the two ends are on different observed hosts, each agent sends its own
//! span and neither has the other's ids. The aggregator holds both, so a trace is assembled
//! here: a **root** server span (no parent) is shown as the child of the client span whose
//! connection mirrors its own (client `network.local.*` = server `network.peer.*`, client
//! `server.*` = server `server.*`), whose `host.name` differs, and whose time contains it
//! (± [`SKEW_NS`] for the two hosts' clocks), and every span of the server's trace is shown
//! in the client's trace.
//! Linking repeats downstream (the server's own client calls, to [`MAX_TRACES`] traces) and
//! upstream (a trace whose root server span has such a caller is shown from the caller's
//! trace root).
//!
//! Not linked: server spans that already have a parent (from a `traceparent` header or from
//! the agent's own linking), two ends on one host (the agent links those itself: a root
//! server span there had an untraced caller), connections rewritten in between (NAT,
//! proxies that are not traced), clocks more than [`SKEW_NS`] apart, and callers whose span
//! started more than [`UPSTREAM_WINDOW_NS`] before the server span. A 4-tuple reused by an
//! untraced client within [`SKEW_NS`] of a traced call's end can be mislinked.
//!
//! Owns: choosing links and rewriting the ids of the spans returned. Must not: change stored
//! spans (links are recomputed on every query, so late spans, replicas and restarts need no
//! state).

use std::collections::HashSet;

use crate::store::{AttrValue, Span, StoreError, spans::SpanQuery};

/// How far apart two hosts' clocks may be for their spans to be linked (NTP keeps hosts
/// within milliseconds; a larger window would pair a span with the next connection that
/// reuses the same 4-tuple).
pub const SKEW_NS: i64 = 25_000_000;
/// How long before a server span its caller's span may have started.
pub const UPSTREAM_WINDOW_NS: i64 = 300_000_000_000;
/// Most traces merged into one answer.
pub const MAX_TRACES: usize = 64;

const SPAN_KIND_SERVER: u8 = 2;
const SPAN_KIND_CLIENT: u8 = 3;

/// Where spans are looked up (the store; a vector in tests).
pub trait SpanSource {
    /// Spans matching `query`.
    fn find(&self, query: &SpanQuery) -> Result<Vec<Span>, StoreError>;
}

impl SpanSource for crate::store::Store {
    fn find(&self, query: &SpanQuery) -> Result<Vec<Span>, StoreError> {
        self.find_spans(query)
    }
}

/// One end of a connection, as attribute text (`address`, `port`).
type Endpoint = (String, String);

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AttrValue> {
    span.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn endpoint(span: &Span, address: &str, port: &str) -> Option<Endpoint> {
    Some((attr(span, address)?.to_text(), attr(span, port)?.to_text()))
}

/// A client span's (local, server) endpoints.
fn client_ends(span: &Span) -> Option<(Endpoint, Endpoint)> {
    Some((
        endpoint(span, "network.local.address", "network.local.port")?,
        endpoint(span, "server.address", "server.port")?,
    ))
}

/// A server span's (peer, local) endpoints.
fn server_ends(span: &Span) -> Option<(Endpoint, Endpoint)> {
    Some((
        endpoint(span, "network.peer.address", "network.peer.port")?,
        endpoint(span, "server.address", "server.port")
            .or_else(|| endpoint(span, "network.local.address", "network.local.port"))?,
    ))
}

fn host(span: &Span) -> Option<&AttrValue> {
    span.resource
        .iter()
        .find(|(k, _)| k == "host.name")
        .map(|(_, v)| v)
}

/// Spans of two different (named) hosts: on one host, the agent saw both ends and its own
/// linking (exact kernel times) is the answer; a root server span there had an untraced
/// caller.
fn other_hosts(a: &Span, b: &Span) -> bool {
    matches!((host(a), host(b)), (Some(x), Some(y)) if x != y)
}

fn contains(client: &Span, server: &Span) -> bool {
    client.start_unix_nano - SKEW_NS <= server.start_unix_nano
        && server.end_unix_nano <= client.end_unix_nano + SKEW_NS
}

/// How far `server` is from sitting exactly inside `client` (smaller is better).
fn distance(client: &Span, server: &Span) -> i64 {
    (server.start_unix_nano - client.start_unix_nano).abs()
        + (client.end_unix_nano - server.end_unix_nano).abs()
}

fn tags(
    end_a: &Endpoint,
    keys_a: [&str; 2],
    end_b: &Endpoint,
    keys_b: [&str; 2],
) -> Vec<(String, String)> {
    vec![
        (keys_a[0].to_owned(), end_a.0.clone()),
        (keys_a[1].to_owned(), end_a.1.clone()),
        (keys_b[0].to_owned(), end_b.0.clone()),
        (keys_b[1].to_owned(), end_b.1.clone()),
    ]
}

/// The root server span called over `client`'s connection, in another trace.
fn callee(src: &impl SpanSource, client: &Span) -> Result<Option<Span>, StoreError> {
    let Some((local, server)) = client_ends(client) else {
        return Ok(None);
    };
    let candidates = src.find(&SpanQuery {
        kind: Some(SPAN_KIND_SERVER),
        start_min_ns: Some(client.start_unix_nano - SKEW_NS),
        start_max_ns: Some(client.end_unix_nano + SKEW_NS),
        tags: tags(
            &local,
            ["network.peer.address", "network.peer.port"],
            &server,
            ["server.address", "server.port"],
        ),
        ..Default::default()
    })?;
    Ok(candidates
        .into_iter()
        .filter(|s| s.parent_span_id.is_none() && s.trace_id != client.trace_id)
        .filter(|s| other_hosts(client, s))
        .filter(|s| server_ends(s).is_some_and(|(p, l)| p == local && l == server))
        .filter(|s| contains(client, s))
        .min_by_key(|s| distance(client, s)))
}

/// The client span whose connection called root server span `server`, in another trace.
fn caller(src: &impl SpanSource, server: &Span) -> Result<Option<Span>, StoreError> {
    let Some((peer, local)) = server_ends(server) else {
        return Ok(None);
    };
    let candidates = src.find(&SpanQuery {
        kind: Some(SPAN_KIND_CLIENT),
        start_min_ns: Some(server.start_unix_nano - UPSTREAM_WINDOW_NS),
        start_max_ns: Some(server.start_unix_nano + SKEW_NS),
        tags: tags(
            &peer,
            ["network.local.address", "network.local.port"],
            &local,
            ["server.address", "server.port"],
        ),
        ..Default::default()
    })?;
    Ok(candidates
        .into_iter()
        .filter(|c| c.trace_id != server.trace_id && other_hosts(c, server))
        .filter(|c| client_ends(c).is_some_and(|(l, s)| l == peer && s == local))
        .filter(|c| contains(c, server))
        .min_by_key(|c| distance(c, server)))
}

fn trace_spans(src: &impl SpanSource, id: [u8; 16]) -> Result<Vec<Span>, StoreError> {
    src.find(&SpanQuery {
        trace_id: Some(id),
        ..Default::default()
    })
}

/// Root server spans of a trace (no parent).
fn roots(spans: &[Span]) -> impl Iterator<Item = &Span> {
    spans
        .iter()
        .filter(|s| s.kind == SPAN_KIND_SERVER && s.parent_span_id.is_none())
}

/// Trace `id` with the traces linked to it by connection: returns the id it is shown under
/// (the top caller's trace) and every span, with trace ids and the linked server spans'
/// parents rewritten. Empty when the trace is unknown.
pub fn linked_trace(
    src: &impl SpanSource,
    id: [u8; 16],
) -> Result<([u8; 16], Vec<Span>), StoreError> {
    let mut spans = trace_spans(src, id)?;
    if spans.is_empty() {
        return Ok((id, spans));
    }
    // Upstream: walk to the top caller.
    let mut top = id;
    let mut seen = HashSet::from([id]);
    while seen.len() < MAX_TRACES {
        let mut up = None;
        for root in roots(&spans) {
            if let Some(c) = caller(src, root)? {
                up = Some(c.trace_id);
                break;
            }
        }
        match up {
            Some(t) if seen.insert(t) => {
                top = t;
                spans = trace_spans(src, t)?;
            }
            _ => break,
        }
    }
    // Downstream: merge every callee's trace under its caller.
    let mut included = HashSet::from([top]);
    let mut i = 0;
    while i < spans.len() && included.len() < MAX_TRACES {
        if spans[i].kind == SPAN_KIND_CLIENT
            && let Some(server) = callee(src, &spans[i])?
            && included.insert(server.trace_id)
        {
            let parent = spans[i].span_id;
            for mut s in trace_spans(src, server.trace_id)? {
                if s.span_id == server.span_id {
                    s.parent_span_id = Some(parent);
                }
                s.trace_id = top;
                spans.push(s);
            }
        }
        i += 1;
    }
    for s in &mut spans {
        s.trace_id = top;
    }
    Ok((top, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Spans(Vec<Span>);

    impl SpanSource for Spans {
        fn find(&self, query: &SpanQuery) -> Result<Vec<Span>, StoreError> {
            Ok(self
                .0
                .iter()
                .filter(|s| query.matches(s))
                .cloned()
                .collect())
        }
    }

    const MS: i64 = 1_000_000;

    #[allow(clippy::too_many_arguments)]
    fn span(
        trace: u8,
        id: u8,
        parent: Option<u8>,
        kind: u8,
        start_ms: i64,
        end_ms: i64,
        local: (&str, i64),
        remote: (&str, i64),
    ) -> Span {
        let s = |v: &str| AttrValue::Str(v.to_owned());
        let mut attributes = vec![
            ("network.local.address".to_owned(), s(local.0)),
            ("network.local.port".to_owned(), AttrValue::Int(local.1)),
        ];
        let (server, peer) = if kind == SPAN_KIND_CLIENT {
            (remote, remote)
        } else {
            (local, remote)
        };
        attributes.extend([
            ("server.address".to_owned(), s(server.0)),
            ("server.port".to_owned(), AttrValue::Int(server.1)),
            ("network.peer.address".to_owned(), s(peer.0)),
            ("network.peer.port".to_owned(), AttrValue::Int(peer.1)),
        ]);
        Span {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            service: format!("svc-{trace}"),
            name: "GET /".into(),
            kind,
            start_unix_nano: start_ms * MS,
            end_unix_nano: end_ms * MS,
            status_code: 0,
            status_message: String::new(),
            attributes,
            resource: vec![("host.name".to_owned(), s(&format!("host-{trace}")))],
        }
    }

    const A: (&str, i64) = ("10.0.0.1", 40_000);
    const B: (&str, i64) = ("10.0.0.2", 8080);
    const B_OUT: (&str, i64) = ("10.0.0.2", 41_000);
    const C: (&str, i64) = ("10.0.0.3", 9090);

    /// Host A: frontend server span 1 → client span 2 (to B). Host B: server span 3 (root of
    /// its own trace) → client span 4 (to C). Host C: server span 5 (root).
    fn three_hosts() -> Spans {
        Spans(vec![
            span(
                1,
                1,
                None,
                SPAN_KIND_SERVER,
                0,
                100,
                ("10.0.0.1", 80),
                ("10.9.9.9", 5555),
            ),
            span(1, 2, Some(1), SPAN_KIND_CLIENT, 10, 90, A, B),
            span(2, 3, None, SPAN_KIND_SERVER, 12, 88, B, A),
            span(2, 4, Some(3), SPAN_KIND_CLIENT, 20, 80, B_OUT, C),
            span(3, 5, None, SPAN_KIND_SERVER, 21, 79, C, B_OUT),
        ])
    }

    fn shape(spans: &[Span]) -> Vec<(u8, Option<u8>, u8)> {
        let mut v: Vec<_> = spans
            .iter()
            .map(|s| (s.span_id[0], s.parent_span_id.map(|p| p[0]), s.trace_id[0]))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn links_hops_across_hosts_from_any_trace_of_the_chain() {
        let src = three_hosts();
        let expected = vec![
            (1, None, 1),
            (2, Some(1), 1),
            (3, Some(2), 1),
            (4, Some(3), 1),
            (5, Some(4), 1),
        ];
        for asked in [1, 2, 3] {
            let (id, spans) = linked_trace(&src, [asked; 16]).unwrap();
            assert_eq!(id, [1; 16], "asked for trace {asked}");
            assert_eq!(shape(&spans), expected, "asked for trace {asked}");
        }
    }

    #[test]
    fn a_server_span_outside_the_clients_time_is_not_linked() {
        let mut src = three_hosts();
        // B's server span starts 200 ms after A's client span ended: another request.
        src.0[2].start_unix_nano = 290 * MS;
        src.0[2].end_unix_nano = 300 * MS;
        let (_, spans) = linked_trace(&src, [1; 16]).unwrap();
        assert_eq!(shape(&spans), vec![(1, None, 1), (2, Some(1), 1)]);
    }

    #[test]
    fn clock_skew_within_the_tolerance_still_links() {
        let mut src = three_hosts();
        // Host B's clock is 20 ms ahead.
        src.0[2].start_unix_nano += 20 * MS;
        src.0[2].end_unix_nano += 20 * MS;
        let (_, spans) = linked_trace(&src, [2; 16]).unwrap();
        assert!(shape(&spans).contains(&(3, Some(2), 1)));
    }

    #[test]
    fn a_different_port_or_a_server_span_with_a_parent_is_not_linked() {
        let mut src = three_hosts();
        src.0[2].attributes[5].1 = AttrValue::Int(40_001); // network.peer.port
        let (_, spans) = linked_trace(&src, [1; 16]).unwrap();
        assert_eq!(spans.len(), 2);

        let mut src = three_hosts();
        src.0[2].parent_span_id = Some([9; 8]); // joined a traceparent header
        let (id, spans) = linked_trace(&src, [2; 16]).unwrap();
        assert_eq!(id, [2; 16]);
        assert_eq!(spans.iter().filter(|s| s.trace_id == [2; 16]).count(), 3);
    }

    #[test]
    fn keep_alive_requests_on_one_connection_pair_by_time() {
        let src = Spans(vec![
            span(1, 1, None, SPAN_KIND_CLIENT, 0, 10, A, B),
            span(2, 2, None, SPAN_KIND_CLIENT, 20, 30, A, B),
            span(3, 3, None, SPAN_KIND_SERVER, 1, 9, B, A),
            span(4, 4, None, SPAN_KIND_SERVER, 21, 29, B, A),
        ]);
        assert_eq!(
            shape(&linked_trace(&src, [1; 16]).unwrap().1),
            vec![(1, None, 1), (3, Some(1), 1)]
        );
        assert_eq!(
            shape(&linked_trace(&src, [4; 16]).unwrap().1),
            vec![(2, None, 2), (4, Some(2), 2)]
        );
    }

    #[test]
    fn two_ends_on_one_host_are_left_to_the_agent() {
        // A root server span whose caller was not traced, on the host of a client span that
        // happened to use the same 4-tuple just before (ephemeral port reuse).
        let mut src = three_hosts();
        src.0[2].resource = src.0[1].resource.clone();
        let (_, spans) = linked_trace(&src, [1; 16]).unwrap();
        assert_eq!(shape(&spans), vec![(1, None, 1), (2, Some(1), 1)]);
    }

    #[test]
    fn unknown_trace_is_empty() {
        assert!(linked_trace(&three_hosts(), [7; 16]).unwrap().1.is_empty());
    }
}
