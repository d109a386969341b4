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
    maps::{
        CONNS, HTTP_EVENTS, HTTP_WAKEUP_BYTES, INFLIGHT, SCRATCH, Scratch, WINDOW_MASK,
        WINDOW_PAD, bump, global_of,
    },
};

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
fn classify(head: &[u64; 2], len: u64) -> Start {
    if len < 8 {
        return Start::Other;
    }
    let word = head[0];
    let byte = |i: u32| (head[1] >> (8 * (i - 8))) as u8;
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
    } else if w7 == le7(b"HTTP/1.") && len >= 12 && byte(8) == b' ' {
        let (a, b, c) = (byte(9), byte(10), byte(11));
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


/// Byte `i` of the window; the mask keeps every index in bounds for LLVM and the verifier.
#[inline(always)]
fn at(scratch: &Scratch, i: usize) -> u8 {
    // SAFETY: the mask keeps the index inside the (power-of-two sized) window.
    unsafe { *scratch.window.as_ptr().add(i & WINDOW_MASK) }
}

/// Reads a value back from map memory, so the verifier forgets what it knew about it.
#[inline(always)]
fn launder(value: &u64) -> u64 {
    // SAFETY: reading our own scratch field.
    unsafe { core::ptr::read_volatile(value) }
}

/// Zeroes the window, then copies the first `min(scratch.len, HTTP_WINDOW)` bytes of user
/// data at `ptr` into it. Bytes after the data stay zero, so scans need no length checks.
#[inline(always)]
fn load_window(scratch: &mut Scratch, ptr: u64) -> Result<(), ()> {
    let words = scratch.window.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < (HTTP_WINDOW + WINDOW_PAD) / 8 {
        // SAFETY: `i` stays within the window's 8-byte words. Volatile, so LLVM keeps 8-byte
        // stores instead of calling a byte-wise memset.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    let mut n = launder(&scratch.len);
    if n > HTTP_WINDOW as u64 {
        n = HTTP_WINDOW as u64;
    }
    if n == 0 {
        return Ok(());
    }
    // SAFETY: the window has room for HTTP_WINDOW bytes and `n` is at most that; the helper
    // faults safely on a bad user pointer.
    let rc = unsafe {
        bpf_probe_read_user(
            scratch.window.as_mut_ptr().cast(),
            n as u32,
            ptr as *const _,
        )
    };
    if rc < 0 { Err(()) } else { Ok(()) }
}

/// Scans the header block in the window for `Content-Length` and `Transfer-Encoding`;
/// stores a [`body`] code and the length in `scratch.body`/`scratch.content_length`.
///
/// The loop only records what it found and where; the value is parsed once after it, so
/// the verifier does not explore a number parse at each of the window's positions.
#[inline(always)]
fn scan_headers(scratch: &mut Scratch) {
    scratch.body = body::UNKNOWN as u64;
    scratch.content_length = 0;
    scratch.value_at = 0;
    let mut i = 0usize;
    while i < HTTP_WINDOW {
        if at(scratch, i) == b'\n' {
            let first = at(scratch, i + 1);
            if first == b'\r' || first == b'\n' {
                scratch.body = body::NO_LENGTH as u64;
                break;
            }
            let first = first | 0x20;
            if first == b'c'
                && at(scratch, i + 8) == b'-'
                && at(scratch, i + 9) | 0x20 == b'l'
                && at(scratch, i + 10) | 0x20 == b'e'
                && at(scratch, i + 15) == b':'
            {
                scratch.body = body::CONTENT_LENGTH as u64;
                scratch.value_at = (i + 16) as u64;
                break;
            }
            if first == b't'
                && at(scratch, i + 9) == b'-'
                && at(scratch, i + 10) | 0x20 == b'e'
                && at(scratch, i + 18) == b':'
            {
                scratch.body = body::CHUNKED as u64;
                break;
            }
        }
        i += 1;
    }
    if launder(&scratch.body) == body::CONTENT_LENGTH as u64 {
        parse_length(scratch);
    }
}

/// Parses the decimal value at `scratch.value_at` (after optional spaces).
#[inline(always)]
fn parse_length(scratch: &mut Scratch) {
    let from = (launder(&scratch.value_at) & (HTTP_WINDOW as u64 + 31)) as usize;
    let mut value = 0u64;
    let mut digits = 0u32;
    let mut k = 0;
    while k < 24 {
        let b = at(scratch, from + k);
        if b == b' ' && digits == 0 {
            // leading space
        } else if b.is_ascii_digit() && digits < 19 {
            value = value * 10 + (b - b'0') as u64;
            digits += 1;
        } else {
            break;
        }
        k += 1;
    }
    if digits == 0 {
        scratch.body = body::UNKNOWN as u64;
    }
    scratch.content_length = value;
}

/// Copies the request path (from `scratch.path_at`, up to a terminator or
/// [`HTTP_PATH_LEN`] bytes) into `scratch.inflight`, with its length and the cut flag.
#[inline(always)]
fn copy_path(scratch: &mut Scratch) {
    let words = scratch.inflight.path.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < HTTP_PATH_LEN / 8 {
        // SAFETY: `i` stays within the path's 8-byte words (volatile: see `load_window`).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    let from = (launder(&scratch.path_at) & 15) as usize;
    let mut len = 0usize;
    while len < HTTP_PATH_LEN {
        let b = at(scratch, from + len);
        if b <= b' ' || b == b'?' || b == b'#' || b == 0x7f {
            break;
        }
        // SAFETY: len < HTTP_PATH_LEN.
        unsafe { *scratch.inflight.path.as_mut_ptr().add(len) = b };
        len += 1;
    }
    scratch.inflight.path_len = len as u16;
    // Not ended within the path buffer, or ended because the data ran out (a request line
    // split over several reads; bytes after the data are zero): cut.
    if len == HTTP_PATH_LEN || at(scratch, from + len) == 0 {
        scratch.inflight.flags |= flags::PATH_TRUNCATED;
    }
}

/// Handles one read or write on a traced connection.
#[inline(always)]
pub fn on_data(channel: &Channel, data: &Data, tls: bool) {
    let mut head = [0u64; 2];
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
    // Everything path-specific goes to map memory first (see `Scratch`).
    let inflight = &mut scratch.inflight;
    // SAFETY (both): helpers without memory arguments.
    inflight.start_ns = unsafe { bpf_ktime_get_ns() };
    inflight.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    inflight.request_bytes = data.total;
    inflight.direction = dir;
    inflight.method = method;
    inflight.flags = if tls { flags::TLS } else { 0 };
    inflight._pad = 0;
    inflight.peer_fd = channel.fd;
    inflight._pad2 = 0;
    scratch.path_at = path_at as u64;
    scratch.len = data.len;
    if load_window(scratch, data.ptr).is_err() {
        bump(Counter::HttpReadError);
        return;
    }
    copy_path(scratch);
    scan_headers(scratch);
    scratch.inflight.request_body = launder(&scratch.body) as u8;
    scratch.inflight.request_content_length = launder(&scratch.content_length);

    if let Some(previous) = INFLIGHT.get_ptr(&channel.key) {
        // SAFETY: a live map value.
        if unsafe { (*previous).direction } == scratch.inflight.direction {
            bump(Counter::HttpRequestReplaced);
        }
    }
    if INFLIGHT
        .insert(&channel.key, &scratch.inflight, BPF_ANY as u64)
        .is_err()
    {
        bump(Counter::HttpInflightFull);
        return;
    }
    bump(Counter::HttpRequests);
}

#[inline(always)]
fn on_response(channel: &Channel, data: &Data, tls: bool, status: u16) {
    let Some(inflight) = INFLIGHT.get_ptr(&channel.key) else {
        // The request of a filtered task was never kept: not a loss.
        if filter::allowed() {
            bump(Counter::HttpResponseUnmatched);
        }
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
    scratch.len = data.len;
    scratch.status = status as u64;
    if load_window(scratch, data.ptr).is_err() {
        bump(Counter::HttpReadError);
        return;
    }
    scan_headers(scratch);
    let response_body = launder(&scratch.body) as u8;
    let content_length = launder(&scratch.content_length);
    let status = launder(&scratch.status) as u16;

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
