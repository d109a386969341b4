//! HTTP/1.x in the kernel: recognise requests (method prefix) and responses
//! (`HTTP/1.x NNN`) in the data of a read or write, keep the request in `INFLIGHT` per
//! connection, and submit one [`HttpEvent`] to `HTTP_EVENTS` when its response starts.
//!
//! Owns: the per-connection pairing and everything copied out of user buffers.
//! Must not: copy more than [`HTTP_WINDOW`] bytes of a message, or let anything beyond the
//! method, the path (cut at `?`, `#`, space or a control byte), the status code and the
//! `Content-Length` value leave the kernel. Every loop is bounded by a constant.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, generated::bpf_probe_read_user,
    },
};
use sonde_ebpf_common::{
    COMM_LEN, ConnKey, Counter, HTTP_PATH_LEN, HTTP_WINDOW, HttpEvent,
    http::{body, conn_kind, direction, flags, method},
};

use crate::{
    filter,
    maps::{CONNS, HTTP_EVENTS, HTTP_WAKEUP_BYTES, INFLIGHT, SCRATCH, bump, global_of},
};

const MASK: usize = HTTP_WINDOW - 1;

/// One read or write that returned data.
pub struct Data {
    /// Start of the data in user memory.
    pub ptr: u64,
    /// Bytes of data at `ptr` (for vectored I/O: in the first segment).
    pub len: u64,
    /// Bytes the call transferred in total.
    pub total: u64,
    /// Whether the data came in (read) or went out (write).
    pub ingress: bool,
}

/// Where the exchange was seen.
pub struct Channel {
    /// `INFLIGHT` key: the fd, or the `SSL *` for TLS.
    pub key: ConnKey,
    /// The socket fd, when known (for TLS: learnt from the nested syscall), else -1.
    pub fd: i32,
}

/// What the first bytes of a message are.
enum Start {
    Request { method: u8, path_at: usize },
    Response { status: u16 },
    Other,
}

#[inline(always)]
fn classify(head: &[u8; 16], len: u64) -> Start {
    if len < 8 {
        return Start::Other;
    }
    let word = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    let w4 = word & 0xffff_ffff;
    let w5 = word & 0xff_ffff_ffff;
    let w6 = word & 0xffff_ffff_ffff;
    let w7 = word & 0xff_ffff_ffff_ffff;
    let (method, path_at) = if w4 == le4(b"GET ") {
        (method::GET, 4)
    } else if w5 == le5(b"POST ") {
        (method::POST, 5)
    } else if w4 == le4(b"PUT ") {
        (method::PUT, 4)
    } else if w7 == le7(b"DELETE ") {
        (method::DELETE, 7)
    } else if w5 == le5(b"HEAD ") {
        (method::HEAD, 5)
    } else if w6 == le6(b"PATCH ") {
        (method::PATCH, 6)
    } else if word == le8(b"OPTIONS ") {
        (method::OPTIONS, 8)
    } else if w6 == le6(b"TRACE ") {
        (method::TRACE, 6)
    } else if w7 == le7(b"HTTP/1.") && len >= 12 && head[8] == b' ' {
        let (a, b, c) = (head[9], head[10], head[11]);
        if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() && a != b'0' {
            let status = (a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16;
            return Start::Response { status };
        }
        return Start::Other;
    } else {
        return Start::Other;
    };
    Start::Request { method, path_at }
}

const fn le4(s: &[u8; 4]) -> u64 {
    u32::from_le_bytes(*s) as u64
}
const fn le5(s: &[u8; 5]) -> u64 {
    le4(&[s[0], s[1], s[2], s[3]]) | (s[4] as u64) << 32
}
const fn le6(s: &[u8; 6]) -> u64 {
    le5(&[s[0], s[1], s[2], s[3], s[4]]) | (s[5] as u64) << 40
}
const fn le7(s: &[u8; 7]) -> u64 {
    le6(&[s[0], s[1], s[2], s[3], s[4], s[5]]) | (s[6] as u64) << 48
}
const fn le8(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

/// Byte `i` of the window (masked, so always in bounds for the verifier).
#[inline(always)]
fn at(window: &[u8; HTTP_WINDOW], i: usize) -> u8 {
    // SAFETY: the mask keeps the index inside the array.
    unsafe { *window.as_ptr().add(i & MASK) }
}

/// Copies the first `min(len, HTTP_WINDOW)` bytes of user data into `window`; returns how
/// many are valid.
#[inline(always)]
fn read_window(window: &mut [u8; HTTP_WINDOW], ptr: u64, len: u64) -> Result<usize, ()> {
    let n = if len > HTTP_WINDOW as u64 {
        HTTP_WINDOW as u32
    } else {
        len as u32
    };
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: `window` has room for HTTP_WINDOW bytes and `n` is at most that; the helper
    // faults safely on a bad user pointer.
    let rc = unsafe { bpf_probe_read_user(window.as_mut_ptr().cast(), n, ptr as *const _) };
    if rc < 0 { Err(()) } else { Ok(n as usize) }
}

/// Scans the header block in `window[..n]` for `Content-Length` and `Transfer-Encoding`.
/// Returns a [`body`] code and the length when known.
#[inline(always)]
fn scan_headers(window: &[u8; HTTP_WINDOW], n: usize) -> (u8, u64) {
    let mut i = 0usize;
    while i < HTTP_WINDOW - 1 {
        if i + 1 >= n {
            break;
        }
        if at(window, i) == b'\n' {
            let first = at(window, i + 1);
            if first == b'\r' || first == b'\n' {
                return (body::NO_LENGTH, 0);
            }
            let first = first | 0x20;
            if first == b'c'
                && i + 16 < n
                && at(window, i + 8) == b'-'
                && at(window, i + 9) | 0x20 == b'l'
                && at(window, i + 10) | 0x20 == b'e'
                && at(window, i + 15) == b':'
            {
                return parse_length(window, n, i + 16);
            }
            if first == b't'
                && i + 18 < n
                && at(window, i + 9) == b'-'
                && at(window, i + 10) | 0x20 == b'e'
                && at(window, i + 18) == b':'
            {
                return (body::CHUNKED, 0);
            }
        }
        i += 1;
    }
    (body::UNKNOWN, 0)
}

/// Parses the decimal value of a header starting at `from` (after optional spaces).
#[inline(always)]
fn parse_length(window: &[u8; HTTP_WINDOW], n: usize, from: usize) -> (u8, u64) {
    let mut j = from;
    let mut value = 0u64;
    let mut digits = 0u32;
    let mut k = 0;
    while k < 24 {
        if j >= n {
            // The value runs to the end of what we copied: it may be cut.
            return (body::UNKNOWN, 0);
        }
        let b = at(window, j);
        if b == b' ' && digits == 0 {
            // leading space
        } else if b.is_ascii_digit() && digits < 19 {
            value = value * 10 + (b - b'0') as u64;
            digits += 1;
        } else {
            break;
        }
        j += 1;
        k += 1;
    }
    if digits == 0 {
        (body::UNKNOWN, 0)
    } else {
        (body::CONTENT_LENGTH, value)
    }
}

/// Copies the request path (from `from`, up to a terminator or [`HTTP_PATH_LEN`] bytes)
/// into `path`, zeroing the rest. Returns its length and whether it was cut.
#[inline(always)]
fn copy_path(
    window: &[u8; HTTP_WINDOW],
    n: usize,
    from: usize,
    path: &mut [u8; HTTP_PATH_LEN],
) -> (u16, bool) {
    let mut len = 0u16;
    let mut ended = false;
    let mut i = 0usize;
    while i < HTTP_PATH_LEN {
        let idx = from + i;
        let b = if ended || idx >= n { 0 } else { at(window, idx) };
        if !ended && (b <= b' ' || b == b'?' || b == b'#' || b == 0x7f) {
            ended = true;
        }
        let out = if ended { 0 } else { b };
        // SAFETY: i < HTTP_PATH_LEN.
        unsafe { *path.as_mut_ptr().add(i) = out };
        if !ended {
            len += 1;
        }
        i += 1;
    }
    // Not ended within the path buffer: cut; ended because the data ran out (a request line
    // split over several reads): also cut.
    let cut = !ended || from + (len as usize) >= n;
    (len, cut)
}

/// Handles one read or write on a traced connection.
#[inline(always)]
pub fn on_data(channel: &Channel, data: &Data, tls: bool) {
    let mut head = [0u8; 16];
    let head_len = if data.len < 16 { data.len } else { 16 };
    if head_len == 0 {
        return;
    }
    // SAFETY: `head` has 16 bytes and `head_len` is at most 16.
    let rc = unsafe {
        bpf_probe_read_user(
            head.as_mut_ptr().cast(),
            head_len as u32,
            data.ptr as *const _,
        )
    };
    if rc < 0 {
        bump(Counter::HttpReadError);
        return;
    }
    match classify(&head, data.len) {
        Start::Request { method, path_at } => {
            let dir = if data.ingress {
                direction::SERVER
            } else {
                direction::CLIENT
            };
            on_request(channel, data, tls, method, path_at, dir);
        }
        Start::Response { status } => {
            // 1xx (but 101) are interim: the final response follows.
            if status < 200 && status != 101 {
                return;
            }
            on_response(channel, data, tls, status);
        }
        Start::Other => {
            // More of a request (body, or a header block split over reads).
            if let Some(inflight) = INFLIGHT.get_ptr_mut(&channel.key) {
                // SAFETY: a live map value; concurrent access for one connection is as racy
                // as the application's own use of it and only affects byte counts.
                unsafe {
                    let same_way = ((*inflight).direction == direction::SERVER) == data.ingress;
                    if same_way {
                        (*inflight).request_bytes += data.total;
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn on_request(channel: &Channel, data: &Data, tls: bool, method: u8, path_at: usize, dir: u8) {
    if !filter::allowed() {
        bump(Counter::HttpFiltered);
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let scratch = unsafe { &mut *scratch };
    let Ok(n) = read_window(&mut scratch.window, data.ptr, data.len) else {
        bump(Counter::HttpReadError);
        return;
    };
    let inflight = &mut scratch.inflight;
    let (path_len, cut) = copy_path(&scratch.window, n, path_at, &mut inflight.path);
    let (request_body, content_length) = scan_headers(&scratch.window, n);
    // SAFETY: helper without memory arguments.
    inflight.start_ns = unsafe { bpf_ktime_get_ns() };
    inflight.request_bytes = data.total;
    inflight.request_content_length = content_length;
    // SAFETY: helper without memory arguments.
    inflight.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    inflight.direction = dir;
    inflight.method = method;
    inflight.flags = (if tls { flags::TLS } else { 0 }) | (if cut { flags::PATH_TRUNCATED } else { 0 });
    inflight.request_body = request_body;
    inflight.path_len = path_len;
    inflight._pad = 0;
    inflight.peer_fd = channel.fd;
    inflight._pad2 = 0;

    if let Some(previous) = INFLIGHT.get_ptr(&channel.key) {
        // SAFETY: a live map value.
        if unsafe { (*previous).direction } == dir {
            bump(Counter::HttpRequestReplaced);
        }
    }
    if INFLIGHT.insert(&channel.key, &*inflight, BPF_ANY as u64).is_err() {
        bump(Counter::HttpInflightFull);
        return;
    }
    bump(Counter::HttpRequests);
}

#[inline(always)]
fn on_response(channel: &Channel, data: &Data, tls: bool, status: u16) {
    let Some(inflight) = INFLIGHT.get_ptr(&channel.key) else {
        bump(Counter::HttpResponseUnmatched);
        return;
    };
    // SAFETY: a live map value; copied field by field below.
    let inflight = unsafe { &*inflight };
    let expected = if data.ingress {
        direction::CLIENT
    } else {
        direction::SERVER
    };
    if inflight.direction != expected {
        bump(Counter::HttpResponseUnmatched);
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let scratch = unsafe { &mut *scratch };
    let Ok(n) = read_window(&mut scratch.window, data.ptr, data.len) else {
        bump(Counter::HttpReadError);
        return;
    };
    let (response_body, content_length) = scan_headers(&scratch.window, n);

    let Some(mut entry) = HTTP_EVENTS.reserve::<HttpEvent>(0) else {
        bump(Counter::HttpRingbufFull);
        let _ = INFLIGHT.remove(&channel.key);
        return;
    };
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = if channel.fd >= 0 {
        channel.fd
    } else {
        inflight.peer_fd
    };
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer slot of the right
    // size; every field is written before submit.
    unsafe {
        (*event).start_ns = inflight.start_ns;
        (*event).end_ns = bpf_ktime_get_ns();
        (*event).cgroup_id = inflight.cgroup_id;
        (*event).request_bytes = inflight.request_bytes;
        (*event).response_bytes = data.total;
        (*event).request_content_length = inflight.request_content_length;
        (*event).response_content_length = content_length;
        (*event).tgid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).status = status;
        (*event).direction = inflight.direction;
        (*event).method = inflight.method;
        (*event).request_body = inflight.request_body;
        (*event).response_body = response_body;
        (*event).path_len = inflight.path_len as u8;
        (*event)._pad = [0; 4];
        (*event).comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        (*event).path = inflight.path;
        let mut event_flags = inflight.flags | if tls { flags::TLS } else { 0 };
        (*event).peer_addr = [0; 16];
        (*event).peer_port = 0;
        (*event).family = 0;
        if fd >= 0 {
            let conn = ConnKey {
                tgid: channel.key.tgid,
                kind: conn_kind::FD,
                id: fd as u64,
            };
            if let Some(info) = CONNS.get_ptr(&conn) {
                (*event).peer_addr = (*info).peer_addr;
                (*event).peer_port = (*info).peer_port;
                (*event).family = (*info).family;
                if (*info).family != 0 {
                    event_flags |= flags::PEER_KNOWN;
                }
            }
        }
        (*event).flags = event_flags;
    }
    let _ = INFLIGHT.remove(&channel.key);
    entry.submit(wakeup_flags());
    bump(Counter::HttpExchanges);
}

/// Wake the reader only once enough data is waiting; it also polls on a timer.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if HTTP_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= global_of(&HTTP_WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
