//! Decoding `HTTP_EVENTS` records into [`Exchange`]s: one completed HTTP/1.x exchange each.
//!
//! Must not: aggregate (that is `http_metrics`) or resolve processes to services.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::trace::context::TraceContext;
use sonde_ebpf_common::{
    HttpEvent, ProcessHint,
    http::{body, direction, flags, method},
};

/// Which side of the exchange the traced process was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// It read the request and wrote the response.
    Server,
    /// It wrote the request and read the response.
    Client,
}

impl Direction {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Server => "server",
            Direction::Client => "client",
        }
    }
}

/// What the kernel learnt about a message body from the headers it inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHint {
    /// `Content-Length: n`.
    ContentLength(u64),
    /// `Transfer-Encoding` (chunked): size unknown.
    Chunked,
    /// The header block ended with neither header.
    NoLength,
    /// The header block did not end within the inspected bytes.
    Unknown,
}

impl BodyHint {
    fn from_raw(code: u8, value: u64) -> Self {
        match code {
            body::CONTENT_LENGTH => BodyHint::ContentLength(value),
            body::CHUNKED => BodyHint::Chunked,
            body::NO_LENGTH => BodyHint::NoLength,
            _ => BodyHint::Unknown,
        }
    }
}

/// One completed HTTP/1.x exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Server or client side.
    pub direction: Direction,
    /// Seen through OpenSSL (HTTPS).
    pub tls: bool,
    /// Request method.
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
    /// Request path without query string (lossy UTF-8).
    pub path: String,
    /// The path was longer than the kernel keeps.
    pub path_truncated: bool,
    /// Request start (monotonic ns).
    pub start_ns: u64,
    /// Response start (monotonic ns).
    pub end_ns: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread that saw the response.
    pub tid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Thread name.
    pub comm: String,
    /// The peer (client for server exchanges, server for client exchanges), when known.
    pub peer: Option<SocketAddr>,
    /// Request bytes seen (headers and body).
    pub request_bytes: u64,
    /// Bytes of the read/write that carried the status line.
    pub response_bytes: u64,
    /// What the request headers said about the body.
    pub request_body: BodyHint,
    /// What the response headers said about the body.
    pub response_body: BodyHint,
    /// This end of the connection, when the kernel learnt it (spans match the two ends of a
    /// connection by it).
    pub local: Option<SocketAddr>,
    /// The request's W3C `traceparent` as the kernel decoded it (`trace_id`, `span_id` = the
    /// caller's parent id, flags); not yet checked for all-zero ids.
    pub traceparent: Option<TraceContext>,
}

impl Exchange {
    /// Request start to response start, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Request body size when it is known: `Content-Length`, or 0 for a request whose
    /// headers ended without `Content-Length`/`Transfer-Encoding` (RFC 9112 §6.3).
    pub fn request_body_size(&self) -> Option<u64> {
        match self.request_body {
            BodyHint::ContentLength(n) => Some(n),
            BodyHint::NoLength => Some(0),
            BodyHint::Chunked | BodyHint::Unknown => None,
        }
    }

    /// Response body size when it is known: 0 for HEAD, 1xx, 204 and 304 responses,
    /// otherwise `Content-Length` (a response without one is delimited by the connection
    /// close or chunked, so its size is unknown).
    pub fn response_body_size(&self) -> Option<u64> {
        if self.method == "HEAD" || self.status < 200 || self.status == 204 || self.status == 304 {
            return Some(0);
        }
        match self.response_body {
            BodyHint::ContentLength(n) => Some(n),
            BodyHint::NoLength | BodyHint::Chunked | BodyHint::Unknown => None,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than an [`HttpEvent`] (object/agent mismatch).
    #[error("HTTP event record of {len} bytes, expected {expected}")]
    Short {
        /// Record length.
        len: usize,
        /// `size_of::<HttpEvent>()`.
        expected: usize,
    },
    /// A field out of range (method, direction).
    #[error("HTTP event with invalid {field} {value}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

/// A process the kernel saw opening its first connection: `(tgid, cgroup_id)`, when `record`
/// is a `ProcessHint` rather than an exchange.
pub fn decode_hint(record: &[u8]) -> Option<(u32, u64)> {
    if record.len() != size_of::<ProcessHint>() {
        return None;
    }
    // SAFETY: the record is exactly one `ProcessHint`, a plain-old-data type.
    let hint: ProcessHint = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    Some((hint.tgid, hint.cgroup_id))
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Exchange, DecodeError> {
    if record.len() < size_of::<HttpEvent>() {
        return Err(DecodeError::Short {
            len: record.len(),
            expected: size_of::<HttpEvent>(),
        });
    }
    let copy;
    let e: &HttpEvent = if record.as_ptr().cast::<HttpEvent>().is_aligned() {
        // SAFETY: the record holds at least one `HttpEvent`, suitably aligned (ring-buffer
        // records are 8-byte aligned), a plain-old-data type for which every bit pattern is
        // valid. Read in place, so that only the cache lines used are touched (a short path
        // leaves the end of the record alone).
        unsafe { &*record.as_ptr().cast::<HttpEvent>() }
    } else {
        // SAFETY: as above; read_unaligned copes with any alignment.
        copy = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<HttpEvent>()) };
        &copy
    };
    let method = method::name(e.method).ok_or(DecodeError::Invalid {
        field: "method",
        value: u64::from(e.method),
    })?;
    let direction = match e.direction {
        direction::SERVER => Direction::Server,
        direction::CLIENT => Direction::Client,
        other => {
            return Err(DecodeError::Invalid {
                field: "direction",
                value: u64::from(other),
            });
        }
    };
    let peer = if e.flags & flags::PEER_KNOWN != 0 {
        peer_addr(e.family, &e.peer_addr, e.peer_port)
    } else {
        None
    };
    Ok(Exchange {
        direction,
        tls: e.flags & flags::TLS != 0,
        method,
        status: e.status,
        path: String::from_utf8_lossy(e.path_bytes()).into_owned(),
        path_truncated: e.flags & flags::PATH_TRUNCATED != 0,
        start_ns: e.start_ns,
        end_ns: e.end_ns,
        tgid: e.tgid,
        tid: e.tid,
        cgroup_id: e.cgroup_id,
        comm: String::from_utf8_lossy(e.comm_bytes()).into_owned(),
        peer,
        request_bytes: e.request_bytes,
        response_bytes: e.response_bytes,
        request_body: BodyHint::from_raw(e.request_body, e.request_content_length),
        response_body: BodyHint::from_raw(e.response_body, e.response_content_length),
        local: if e.flags & flags::LOCAL_KNOWN != 0 {
            peer_addr(e.family, &e.local_addr, e.local_port)
        } else {
            None
        },
        traceparent: (e.flags & flags::TRACEPARENT != 0).then_some(TraceContext {
            trace_id: e.trace_id,
            span_id: e.parent_span_id,
            flags: e.trace_flags,
        }),
    })
}

/// An IPv4 (first 4 bytes) or IPv6 address with a port, as the kernel programs store them.
pub fn peer_addr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        10 => {
            let v6 = Ipv6Addr::from(*addr);
            // IPv4-mapped addresses print as IPv4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use sonde_ebpf_common::{COMM_LEN, HTTP_PATH_LEN};

    use super::*;

    pub(crate) fn event() -> HttpEvent {
        let mut e = HttpEvent {
            start_ns: 1_000,
            end_ns: 11_000,
            cgroup_id: 5,
            request_bytes: 80,
            response_bytes: 120,
            request_content_length: 0,
            response_content_length: 2,
            tgid: 42,
            tid: 43,
            status: 404,
            peer_port: 8080,
            family: 2,
            direction: direction::CLIENT,
            method: method::HEAD,
            flags: flags::PEER_KNOWN | flags::TLS,
            request_body: body::NO_LENGTH,
            response_body: body::CONTENT_LENGTH,
            path_len: 9,
            _pad: [0; 4],
            peer_addr: [0; 16],
            comm: [0; COMM_LEN],
            path: [0; HTTP_PATH_LEN],
            trace_id: [0; 16],
            parent_span_id: [0; 8],
            local_addr: [0; 16],
            local_port: 0,
            trace_flags: 0,
            _pad2: [0; 5],
        };
        e.peer_addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        e.comm[..4].copy_from_slice(b"curl");
        e.path[..9].copy_from_slice(b"/users/17");
        e
    }

    fn bytes(e: &HttpEvent) -> Vec<u8> {
        // SAFETY: viewing a POD value as bytes.
        unsafe {
            std::slice::from_raw_parts((e as *const HttpEvent).cast::<u8>(), size_of::<HttpEvent>())
        }
        .to_vec()
    }

    /// The kernel copies only the words holding the path: what follows `path_len` is stale
    /// ring content, never part of the path, whether the record is read in place (aligned)
    /// or copied (unaligned).
    #[test]
    fn bytes_after_the_path_are_ignored_aligned_or_not() {
        let mut e = event();
        e.path[9..].fill(b'x');
        let raw = bytes(&e);
        let mut aligned = vec![0u64; raw.len().div_ceil(8)];
        // SAFETY: `aligned` holds at least `raw.len()` bytes.
        let aligned = unsafe {
            let dst = aligned.as_mut_ptr().cast::<u8>();
            std::ptr::copy_nonoverlapping(raw.as_ptr(), dst, raw.len());
            std::slice::from_raw_parts(dst, raw.len())
        };
        let mut shifted = vec![0u8; raw.len() + 1];
        shifted[1..].copy_from_slice(&raw);
        for record in [aligned, &shifted[1..]] {
            let x = decode(record).unwrap();
            assert_eq!(x.path, "/users/17");
            assert_eq!(x.comm, "curl");
            assert_eq!(x.status, 404);
        }
    }

    #[test]
    fn decodes_every_field() {
        let x = decode(&bytes(&event())).unwrap();
        assert_eq!(x.direction, Direction::Client);
        assert!(x.tls);
        assert_eq!(x.method, "HEAD");
        assert_eq!(x.status, 404);
        assert_eq!(x.path, "/users/17");
        assert!(!x.path_truncated);
        assert_eq!(x.duration_ns(), 10_000);
        assert_eq!(x.comm, "curl");
        assert_eq!(x.peer, Some("10.1.2.3:8080".parse().unwrap()));
        assert_eq!(x.local, None);
        assert_eq!(x.traceparent, None);
        assert_eq!(x.request_body_size(), Some(0));
        // HEAD responses have no body whatever Content-Length says.
        assert_eq!(x.response_body_size(), Some(0));
    }

    #[test]
    fn traceparent_and_local_address_when_flagged() {
        let mut e = event();
        e.flags |= flags::TRACEPARENT | flags::LOCAL_KNOWN;
        e.trace_id = [7; 16];
        e.parent_span_id = [9; 8];
        e.trace_flags = 1;
        e.local_addr[..4].copy_from_slice(&[10, 1, 2, 4]);
        e.local_port = 40_000;
        let x = decode(&bytes(&e)).unwrap();
        assert_eq!(x.local, Some("10.1.2.4:40000".parse().unwrap()));
        let tp = x.traceparent.unwrap();
        assert_eq!((tp.trace_id, tp.span_id, tp.flags), ([7; 16], [9; 8], 1));
    }

    #[test]
    fn body_sizes_follow_the_headers() {
        let mut e = event();
        e.method = method::GET;
        e.status = 200;
        let x = decode(&bytes(&e)).unwrap();
        assert_eq!(x.response_body_size(), Some(2));
        e.response_body = body::CHUNKED;
        assert_eq!(decode(&bytes(&e)).unwrap().response_body_size(), None);
        e.response_body = body::NO_LENGTH;
        assert_eq!(decode(&bytes(&e)).unwrap().response_body_size(), None);
        e.status = 204;
        assert_eq!(decode(&bytes(&e)).unwrap().response_body_size(), Some(0));
        e.request_body = body::CONTENT_LENGTH;
        e.request_content_length = 512;
        assert_eq!(decode(&bytes(&e)).unwrap().request_body_size(), Some(512));
        e.request_body = body::UNKNOWN;
        assert_eq!(decode(&bytes(&e)).unwrap().request_body_size(), None);
    }

    #[test]
    fn rejects_short_and_invalid_records() {
        let b = bytes(&event());
        assert!(matches!(
            decode(&b[..100]),
            Err(DecodeError::Short { len: 100, .. })
        ));
        let mut e = event();
        e.method = 99;
        assert_eq!(
            decode(&bytes(&e)),
            Err(DecodeError::Invalid {
                field: "method",
                value: 99
            })
        );
        let mut e = event();
        e.flags = 0;
        assert_eq!(decode(&bytes(&e)).unwrap().peer, None);
    }

    #[test]
    fn hints_are_told_apart_by_size() {
        let hint = ProcessHint {
            tgid: 7,
            _pad: 0,
            cgroup_id: 99,
        };
        // SAFETY: viewing a POD value as bytes.
        let b = unsafe {
            std::slice::from_raw_parts((&raw const hint).cast::<u8>(), size_of::<ProcessHint>())
        };
        assert_eq!(decode_hint(b), Some((7, 99)));
        assert_eq!(decode_hint(&bytes(&event())), None);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let mut a = [0u8; 16];
        a[15] = 1;
        assert_eq!(peer_addr(10, &a, 80), Some("[::1]:80".parse().unwrap()));
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(peer_addr(10, &m, 80), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(peer_addr(1, &a, 80), None);
    }
}
