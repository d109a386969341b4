//! Turning one observed HTTP exchange into one OpenTelemetry-shaped span.
//!
//! The HTTP pipeline hands [`SpanBuilder::from_exchange`] plain fields ([`Exchange`]) and,
//! when the linker ([`super`] documents the heuristics) found one, the context of the span
//! that caused this one. Precedence for a span's parent:
//! 1. server span: the request's `traceparent` header; else the upstream client span matched
//!    by connection 4-tuple and timing; else none (a new trace);
//!    When the header and the matched upstream client span are of the same trace, the
//!    client span is the parent (it is the nearer observed ancestor);
//! 2. client span: the server span the same thread was serving when it made the call; else
//!    the outgoing `traceparent` the app wrote itself; else none (a new trace).
//!
//! Head sampling and the span budget are applied here; the returned [`Built`] carries the
//! span's context whether or not the span was kept, so children decide alike. So is the
//! admission of exchanges to linking ([`SpanBuilder::admit`]), sized from both.
//!
//! Must not: read kernel events, resolve processes, or send spans.

use std::net::SocketAddr;

use sonde_proto::v1::{AnyValue, KeyValue, Span, SpanKind, SpanStatus, any_value::Value};

use super::{
    context::{FLAG_SAMPLED, TraceContext, parse_traceparent},
    ids,
    sampler::{Admission, DropCounters, DropReason, HeadSampler, SpanBudget},
};

/// Which side of the exchange the observed process was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// It read the request and wrote the response: a server span.
    Server,
    /// It wrote the request and read the response: a client span.
    Client,
}

/// One completed HTTP exchange, as plain fields.
#[derive(Debug, Clone, Default)]
pub struct Exchange<'a> {
    /// Server or client side (`None` is not allowed: use [`Direction`]).
    pub direction: Option<Direction>,
    /// Request start, ns since the Unix epoch (the pipeline converts from monotonic time).
    pub start_unix_nano: i64,
    /// Response start, ns since the Unix epoch.
    pub end_unix_nano: i64,
    /// Request method.
    pub method: &'a str,
    /// Request path without the query string.
    pub path: &'a str,
    /// Normalised route (`/users/{id}`), when known.
    pub route: Option<&'a str>,
    /// Response status code.
    pub status: u16,
    /// The other end: the client of a server span, the server of a client span.
    pub peer: Option<SocketAddr>,
    /// This end of the connection.
    pub local: Option<SocketAddr>,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Executable name.
    pub executable: &'a str,
    /// Service name (from the container or process, after the configured mapping).
    pub service: &'a str,
    /// Container id, when in a container.
    pub container_id: Option<&'a str>,
    /// Kubernetes pod name, when known.
    pub pod_name: Option<&'a str>,
    /// The request's `traceparent` header, when it had one.
    pub traceparent: Option<&'a str>,
}

/// A built span and its context.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The span's own context (flags carry the sampling decision).
    pub context: TraceContext,
    /// The span, unless sampling or the budget dropped it.
    pub span: Option<Span>,
}

/// What [`SpanBuilder::decide`] decided for one exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The span's own context (flags carry the sampling decision).
    pub context: TraceContext,
    /// Its parent, when it has one.
    pub parent: Option<TraceContext>,
    /// Whether the span is kept (sampled and within the budget).
    pub keep: bool,
}

/// Builds spans with the agent's sampling and budget.
#[derive(Debug)]
pub struct SpanBuilder {
    host_name: String,
    sampler: HeadSampler,
    budget: SpanBudget,
    admission: Admission,
    drops: std::sync::Arc<DropCounters>,
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

impl SpanBuilder {
    /// A builder for spans of `host_name`.
    pub fn new(
        host_name: impl Into<String>,
        sampler: HeadSampler,
        budget: SpanBudget,
        drops: std::sync::Arc<DropCounters>,
    ) -> Self {
        Self {
            host_name: host_name.into(),
            admission: Admission::for_budget(budget.per_second(), sampler.ratio()),
            sampler,
            budget,
            drops,
        }
    }

    /// Whether an exchange from `start_unix_nano` to `end_unix_nano` is linked and decided
    /// at all: under a load far beyond what sampling and the budget keep, most are shed
    /// first (counted as [`DropReason::Shed`]; see [`Admission`]).
    pub fn admit(&self, start_unix_nano: i64, end_unix_nano: i64) -> bool {
        let admitted = self.admission.admit(start_unix_nano, end_unix_nano);
        if !admitted {
            self.drops.add(DropReason::Shed, 1);
        }
        admitted
    }

    /// Builds the span of `ex`. `linked` is the context of the span that caused it (for a
    /// server span: the matched upstream client span; for a client span: the enclosing
    /// server span), used when the request carried no valid `traceparent`. Returns `None`
    /// for an exchange without a direction.
    pub fn from_exchange(&self, ex: &Exchange<'_>, linked: Option<TraceContext>) -> Option<Built> {
        let direction = ex.direction?;
        let header = ex.traceparent.and_then(|h| parse_traceparent(h).ok());
        let decision = self.decide(direction, ex.end_unix_nano, header, linked);
        Some(Built {
            context: decision.context,
            span: decision
                .keep
                .then(|| self.span(ex, direction, &decision.context, decision.parent)),
        })
    }

    /// The context of a span and whether it is kept (sampling, then the budget; drops are
    /// counted), without building it: callers build only kept spans ([`SpanBuilder::span`]),
    /// which spares the formatting of the many that a budget drops under load. `header` is
    /// the request's valid `traceparent`; `linked` as for [`SpanBuilder::from_exchange`].
    pub fn decide(
        &self,
        direction: Direction,
        end_unix_nano: i64,
        header: Option<TraceContext>,
        linked: Option<TraceContext>,
    ) -> Decision {
        let parent = match (direction, header, linked) {
            // The observed upstream client span of the same trace is the nearer parent: an
            // app that forwards the header it received names its caller's span, not its own
            // outgoing call.
            (Direction::Server, Some(h), Some(l)) if h.trace_id == l.trace_id => Some(l),
            (Direction::Server, h, l) => h.or(l),
            // A client call outside any observed server span: the header the app wrote
            // names the span making the call.
            (Direction::Client, h, l) => l.or(h),
        };
        let trace_id = match (direction, parent, header) {
            (_, Some(p), _) => p.trace_id,
            // A client call outside any observed server span that carries a header the app
            // wrote: that header names the trace.
            (Direction::Client, None, Some(h)) => h.trace_id,
            _ => ids::trace_id(),
        };
        let sampled = self.sampler.keep(&trace_id, parent.map(|p| p.sampled()));
        let context = TraceContext {
            trace_id,
            span_id: ids::span_id(),
            flags: if sampled { FLAG_SAMPLED } else { 0 },
        };
        let keep = if !sampled {
            self.drops.add(DropReason::SampledOut, 1);
            false
        } else if !self.budget.take(end_unix_nano) {
            self.drops.add(DropReason::Budget, 1);
            false
        } else {
            true
        };
        Decision {
            context,
            parent,
            keep,
        }
    }

    /// The span of `ex` with the `context` and `parent` of [`SpanBuilder::decide`].
    pub fn span(
        &self,
        ex: &Exchange<'_>,
        direction: Direction,
        context: &TraceContext,
        parent: Option<TraceContext>,
    ) -> Span {
        let mut attributes = Vec::with_capacity(13);
        attributes.push(kv("http.request.method", s(ex.method)));
        attributes.push(kv("url.path", s(ex.path)));
        if let Some(route) = ex.route {
            attributes.push(kv("http.route", s(route)));
        }
        if ex.status != 0 {
            attributes.push(kv(
                "http.response.status_code",
                Value::IntValue(i64::from(ex.status)),
            ));
        }
        let server = match direction {
            Direction::Server => ex.local,
            Direction::Client => ex.peer,
        };
        if let Some(server) = server {
            attributes.push(kv("server.address", s(&server.ip().to_string())));
            attributes.push(kv("server.port", Value::IntValue(i64::from(server.port()))));
        }
        if let Some(peer) = ex.peer {
            let address = peer.ip().to_string();
            if direction == Direction::Server {
                attributes.push(kv("client.address", s(&address)));
            }
            attributes.push(kv("network.peer.address", Value::StringValue(address)));
            attributes.push(kv(
                "network.peer.port",
                Value::IntValue(i64::from(peer.port())),
            ));
        }
        // This end of the connection: with the peer, the 4-tuple the aggregator matches a
        // client span on one host with the server span on another by.
        if let Some(local) = ex.local {
            attributes.push(kv("network.local.address", s(&local.ip().to_string())));
            attributes.push(kv(
                "network.local.port",
                Value::IntValue(i64::from(local.port())),
            ));
        }
        attributes.push(kv("thread.id", Value::IntValue(i64::from(ex.tid))));
        let mut resource = vec![
            kv("service.name", s(ex.service)),
            kv("host.name", s(&self.host_name)),
            kv("process.pid", Value::IntValue(i64::from(ex.pid))),
            kv("process.executable.name", s(ex.executable)),
        ];
        if let Some(id) = ex.container_id {
            resource.push(kv("container.id", s(id)));
        }
        if let Some(pod) = ex.pod_name {
            resource.push(kv("k8s.pod.name", s(pod)));
        }
        // OpenTelemetry's HTTP conventions: 5xx is an error for both kinds, 4xx only for
        // clients (the server did its job refusing a bad request).
        let error = ex.status >= 500 || (direction == Direction::Client && ex.status >= 400);
        let (kind, name) = match direction {
            Direction::Server => (SpanKind::Server, ex.route.unwrap_or("")),
            Direction::Client => (SpanKind::Client, ex.route.unwrap_or("")),
        };
        Span {
            trace_id: context.trace_id.to_vec(),
            span_id: context.span_id.to_vec(),
            parent_span_id: parent.map(|p| p.span_id.to_vec()).unwrap_or_default(),
            name: if name.is_empty() {
                ex.method.to_owned()
            } else {
                format!("{} {name}", ex.method)
            },
            kind: kind as i32,
            start_time_unix_nano: ex.start_unix_nano.max(0) as u64,
            end_time_unix_nano: ex.end_unix_nano.max(ex.start_unix_nano).max(0) as u64,
            status: if error {
                SpanStatus::Error as i32
            } else {
                SpanStatus::Unset as i32
            },
            status_message: String::new(),
            attributes,
            resource,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::trace::context::hex;

    fn builder(ratio: f64, budget: u64) -> (SpanBuilder, Arc<DropCounters>) {
        let drops = Arc::new(DropCounters::default());
        (
            SpanBuilder::new(
                "host-1",
                HeadSampler::new(ratio),
                SpanBudget::new(budget),
                drops.clone(),
            ),
            drops,
        )
    }

    fn server<'a>(traceparent: Option<&'a str>) -> Exchange<'a> {
        Exchange {
            direction: Some(Direction::Server),
            start_unix_nano: 1_000,
            end_unix_nano: 5_000,
            method: "GET",
            path: "/users/42",
            route: Some("/users/{id}"),
            status: 503,
            peer: Some("10.0.0.2:40000".parse().unwrap()),
            local: Some("10.0.0.1:8080".parse().unwrap()),
            pid: 7,
            tid: 8,
            cgroup_id: 9,
            executable: "python3",
            service: "users",
            container_id: Some("abc"),
            pod_name: None,
            traceparent,
        }
    }

    fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        kvs.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn server_span_joins_the_traceparent() {
        let (b, _) = builder(1.0, 0);
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let built = b.from_exchange(&server(Some(header)), None).unwrap();
        let span = built.span.unwrap();
        assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(span.span_id, built.context.span_id.to_vec());
        assert_ne!(span.span_id, span.parent_span_id);
        assert_eq!(span.name, "GET /users/{id}");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.status, SpanStatus::Error as i32);
        assert_eq!(
            attr(&span.attributes, "http.response.status_code"),
            Some(&Value::IntValue(503))
        );
        assert_eq!(
            attr(&span.attributes, "server.port"),
            Some(&Value::IntValue(8080))
        );
        assert_eq!(
            attr(&span.attributes, "client.address"),
            Some(&s("10.0.0.2"))
        );
        assert_eq!(attr(&span.resource, "service.name"), Some(&s("users")));
        assert_eq!(attr(&span.resource, "container.id"), Some(&s("abc")));
        assert_eq!(attr(&span.resource, "k8s.pod.name"), None);
        // The header wins over a linked upstream span.
        let other = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            flags: 1,
        };
        let built = b.from_exchange(&server(Some(header)), Some(other)).unwrap();
        assert_eq!(
            hex(&built.context.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // An invalid header is ignored: the link (or a new trace) is used.
        let built = b
            .from_exchange(&server(Some("garbage")), Some(other))
            .unwrap();
        assert_eq!(built.context.trace_id, [1; 16]);
        assert_eq!(built.span.unwrap().parent_span_id, vec![2; 8]);
        let root = b.from_exchange(&server(None), None).unwrap();
        assert!(root.span.unwrap().parent_span_id.is_empty());
    }

    #[test]
    fn client_span_is_a_child_of_the_enclosing_server_span() {
        let (b, _) = builder(1.0, 0);
        let parent = b.from_exchange(&server(None), None).unwrap().context;
        let mut ex = server(None);
        ex.direction = Some(Direction::Client);
        ex.status = 404;
        ex.route = None;
        let built = b.from_exchange(&ex, Some(parent)).unwrap();
        let span = built.span.unwrap();
        assert_eq!(span.trace_id, parent.trace_id.to_vec());
        assert_eq!(span.parent_span_id, parent.span_id.to_vec());
        assert_eq!(span.name, "GET");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.status, SpanStatus::Error as i32, "4xx fails a client");
        assert_eq!(
            attr(&span.attributes, "server.address"),
            Some(&s("10.0.0.2"))
        );
        assert_eq!(attr(&span.attributes, "client.address"), None);
    }

    #[test]
    fn sampling_follows_the_parent_and_budget_counts_drops() {
        let (b, drops) = builder(0.0, 0);
        assert!(b.from_exchange(&server(None), None).unwrap().span.is_none());
        assert_eq!(drops.get(DropReason::SampledOut), 1);
        // A sampled caller overrides the ratio; the child inherits the decision.
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let built = b.from_exchange(&server(Some(header)), None).unwrap();
        assert!(built.span.is_some() && built.context.sampled());
        let mut client = server(None);
        client.direction = Some(Direction::Client);
        assert!(
            b.from_exchange(&client, Some(built.context))
                .unwrap()
                .span
                .is_some()
        );
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let (b, drops) = builder(1.0, 2);
        assert!(
            b.from_exchange(&server(Some(unsampled)), None)
                .unwrap()
                .span
                .is_none()
        );
        assert_eq!(drops.get(DropReason::SampledOut), 1);
        assert!(b.from_exchange(&server(None), None).unwrap().span.is_some());
        assert!(b.from_exchange(&server(None), None).unwrap().span.is_some());
        let over = b.from_exchange(&server(None), None).unwrap();
        assert!(over.span.is_none() && over.context.sampled());
        assert_eq!(drops.get(DropReason::Budget), 1);
        assert!(b.from_exchange(&Exchange::default(), None).is_none());
    }
}
