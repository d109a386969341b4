//! HTTP/1.x in the kernel: recognise requests (method prefix) and responses
//! (`HTTP/1.x NNN`) in the data of a read or write, keep the request in its connection's
//! `CONNS` entry, and submit one [`HttpEvent`] to `HTTP_EVENTS` when its response starts.
//!
//! Owns: the per-connection pairing and everything copied out of user buffers.
//! Must not: copy more than [`HTTP_WINDOW`] bytes of a message, or let anything beyond the
//! method, the path (cut at `?`, `#`, space or a control byte), the status code, the
//! `Content-Length` value and the decoded `traceparent` (trace id, parent id, flags) leave
//! the kernel. Every loop is bounded by a constant.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_comm as bpf_get_current_comm_raw, bpf_probe_read_user},
    },
};
use sonde_ebpf_common::{
    COMM_LEN, Conn, ConnKey, Counter, HTTP_PATH_LEN, HTTP_WINDOW, HttpEvent, Inflight,
    http::{body, conn_kind, direction, flags, method},
};

use crate::{
    filter,
    maps::{
        CONNS, HTTP_EVENTS, LOCAL_ADDRS, RING_HTTP, SCRATCH, SSL_ARGS, Scratch, WINDOW_MASK,
        WINDOW_PAD, bump, copy_words, set, slot_index, wakeup_flags, zero_words,
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
    /// `CONNS` key: the fd, or the `SSL *` for TLS.
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

/// A request needs only its method and the space after it in this buffer (bytes past the
/// data are zero, so a shorter buffer never matches a longer method): a client may write
/// `GET ` and the rest of the request line separately (the path then comes from the next
/// buffer, see [`on_data`]).
#[inline(always)]
fn classify(head: &[u64; 2], len: u64) -> Start {
    if len < 4 {
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

/// Copies the first `min(scratch.len, HTTP_WINDOW)` bytes of user data at `ptr` into the
/// window, after zeroing [`ZEROED_WORDS`] words from the one holding the data's end (the
/// copy then fills that word's first bytes): every read past the data (a header name or
/// value, a `traceparent`, the path's end) sees zeros, never an earlier message's bytes, so
/// scans need no length checks. The rest of the window is left as it was (zeroing all of
/// it cost more than the scans); the header scan stops at the data's last word.
#[inline(always)]
fn load_window(scratch: &mut Scratch, ptr: u64) -> Result<(), ()> {
    let mut n = launder(&scratch.len);
    if n > HTTP_WINDOW as u64 {
        n = HTTP_WINDOW as u64;
    }
    // SAFETY: `n` <= HTTP_WINDOW, so the words zeroed end within the padded window
    // (asserted below), which is 8-byte aligned at the start of the scratch value.
    unsafe {
        zero_words(
            scratch.window.as_mut_ptr().add((n as usize / 8) * 8),
            ZEROED_WORDS,
        )
    };
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

/// Words zeroed by [`load_window`] from the one holding the data's end: at least 73 bytes
/// past the data, more than the farthest any scan reads past it (a `traceparent` value
/// starting on its last byte: 13 + 1 + 55 bytes; header names 18; a `Content-Length`
/// value 16 + 24).
const ZEROED_WORDS: usize = 10;
const _: () = assert!(HTTP_WINDOW + 8 * ZEROED_WORDS <= HTTP_WINDOW + WINDOW_PAD);

/// Scans the header block in the window for `Content-Length`, `Transfer-Encoding` and
/// `traceparent`; stores a [`body`] code and the length in
/// `scratch.body`/`scratch.content_length`, and where a `traceparent` value starts in
/// `scratch.tp_at`. The scan ends at the blank line ending the headers or with the data
/// (at most [`HTTP_WINDOW`] bytes of it).
///
/// Newlines are found eight bytes at a time (SWAR); only line starts are examined. The loop
/// only records what it found and where; the value is parsed once after it, so the verifier
/// does not explore a number parse at each position.
#[inline(always)]
fn scan_headers(scratch: &mut Scratch) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    set(&mut scratch.body, body::UNKNOWN as u64);
    set(&mut scratch.content_length, 0);
    set(&mut scratch.value_at, 0);
    set(&mut scratch.tp_at, 0);
    let words = scratch.window.as_ptr().cast::<u64>();
    // The words holding data: past them the window holds zeros, then older bytes.
    let data_words = launder(&scratch.len).div_ceil(8) as usize;
    let mut w = 0usize;
    let mut done = false;
    while w < HTTP_WINDOW / 8 && w < data_words {
        // SAFETY: `w` < 32 words of the 8-byte aligned 512-byte window at the start of the
        // scratch value (an aligned load: one instruction, not eight byte loads).
        let x = unsafe { core::ptr::read(words.add(w)) };
        let y = x ^ NEWLINES;
        // Bit 7 of every byte that is '\n' (and possibly of a byte right after one: each
        // candidate is checked below).
        let mut hits = y.wrapping_sub(ONES) & !y & HIGHS;
        let mut k = 0;
        while k < 8 {
            if hits == 0 {
                break;
            }
            let lowest = hits & hits.wrapping_neg();
            // `lowest` is 1 << (8b + 7): the byte index b via a multiply (no ctz in BPF).
            let b = ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize;
            if line_start(scratch, w * 8 + (b & 7)) {
                done = true;
                break;
            }
            hits &= hits - 1;
            k += 1;
        }
        if done {
            break;
        }
        w += 1;
    }
    if launder(&scratch.body) == body::CONTENT_LENGTH as u64 {
        parse_length(scratch);
    }
}

/// Examines the line after position `i` if it holds a newline; true when the scan is over
/// (the blank line ending the headers). The first of `Content-Length`/`Transfer-Encoding`
/// decides the body code; a `traceparent` line records where its value starts.
#[inline(always)]
fn line_start(scratch: &mut Scratch, i: usize) -> bool {
    if at(scratch, i) != b'\n' {
        return false;
    }
    let first = at(scratch, i + 1);
    if first == b'\r' || first == b'\n' {
        if launder(&scratch.body) == body::UNKNOWN as u64 {
            scratch.body = body::NO_LENGTH as u64;
        }
        return true;
    }
    let first = first | 0x20;
    if first == b'c'
        && at(scratch, i + 8) == b'-'
        && at(scratch, i + 9) | 0x20 == b'l'
        && at(scratch, i + 10) | 0x20 == b'e'
        && at(scratch, i + 15) == b':'
    {
        if launder(&scratch.body) == body::UNKNOWN as u64 {
            scratch.body = body::CONTENT_LENGTH as u64;
            scratch.value_at = (i + 16) as u64;
        }
        return false;
    }
    if first == b't'
        && at(scratch, i + 9) == b'-'
        && at(scratch, i + 10) | 0x20 == b'e'
        && at(scratch, i + 18) == b':'
    {
        if launder(&scratch.body) == body::UNKNOWN as u64 {
            scratch.body = body::CHUNKED as u64;
        }
        return false;
    }
    if first == b't'
        && at(scratch, i + 2) | 0x20 == b'r'
        && at(scratch, i + 6) | 0x20 == b'p'
        && at(scratch, i + 11) | 0x20 == b't'
        && at(scratch, i + 12) == b':'
    {
        scratch.tp_at = (i + 13) as u64;
    }
    false
}

/// A lowercase hex digit's value and 0, or (0, 1) for any other byte; branch-free, so the
/// decode loop below is one path for the verifier.
#[inline(always)]
fn nibble(c: u8) -> (u8, u32) {
    let d = c.wrapping_sub(b'0') as u32;
    let l = c.wrapping_sub(b'a') as u32;
    let is_d = d.wrapping_sub(10) >> 31;
    let is_l = l.wrapping_sub(6) >> 31;
    let v = (d & is_d.wrapping_neg()) | ((l + 10) & is_l.wrapping_neg());
    (v as u8, 1 ^ (is_d | is_l))
}

/// Decodes the `traceparent` value at `scratch.tp_at` (`vv-<32 hex>-<16 hex>-<2 hex>`,
/// after an optional space) into `scratch.tp`; `scratch.tp_valid` = 1 when well-formed
/// (lowercase hex, dashes in place, version not `ff`). All-zero ids are left to user space.
#[inline(always)]
fn decode_traceparent(scratch: &mut Scratch) {
    set(&mut scratch.tp_valid, 0);
    let start = launder(&scratch.tp_at);
    if start == 0 {
        return;
    }
    let mut from = (start & WINDOW_MASK as u64) as usize;
    from += (at(scratch, from) == b' ') as usize;
    if at(scratch, from + 2) != b'-'
        || at(scratch, from + 35) != b'-'
        || at(scratch, from + 52) != b'-'
    {
        return;
    }
    let (v1, b1) = nibble(at(scratch, from));
    let (v2, b2) = nibble(at(scratch, from + 1));
    let mut bad = b1 | b2 | (((v1 << 4) | v2) == 0xff) as u32;
    let mut k = 0usize;
    while k < 25 {
        // Trace id bytes at 3.., parent id at 36.., flags at 53 (each byte two digits).
        let off = 3 + 2 * k + (k >= 16) as usize + (k >= 24) as usize;
        let (hi, bh) = nibble(at(scratch, from + off));
        let (lo, bl) = nibble(at(scratch, from + off + 1));
        bad |= bh | bl;
        // SAFETY: k < 25 < 32 bytes of `tp`.
        unsafe { *scratch.tp.as_mut_ptr().add(k & 31) = (hi << 4) | lo };
        k += 1;
    }
    if bad == 0 {
        scratch.tp_valid = 1;
    }
}

/// Parses the decimal value at `scratch.value_at` (after optional spaces).
///
/// The offset is masked to the window, nothing narrower: `HTTP_WINDOW + 31` (287, not a
/// range mask) once moved every value at offsets 32 to 255 elsewhere, so the response
/// sizes of nginx (value at ~116) were unknown and those of Python's `http.server` read
/// `200` from the status line (regression checks in `agent_http_accuracy.rs` and
/// `agent_http_split_request.rs`).
#[inline(always)]
fn parse_length(scratch: &mut Scratch) {
    let from = (launder(&scratch.value_at) & WINDOW_MASK as u64) as usize;
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
/// [`HTTP_PATH_LEN`] bytes) into `inflight`, with its length and the cut flag.
#[inline(always)]
fn copy_path(scratch: &Scratch, inflight: &mut Inflight) {
    // SAFETY: the path is HTTP_PATH_LEN bytes.
    unsafe { zero_words(inflight.path.as_mut_ptr(), HTTP_PATH_LEN / 8) };
    let from = (launder(&scratch.path_at) & 15) as usize;
    let mut len = 0usize;
    while len < HTTP_PATH_LEN {
        let b = at(scratch, from + len);
        if b <= b' ' || b == b'?' || b == b'#' || b == 0x7f {
            break;
        }
        // SAFETY: len < HTTP_PATH_LEN.
        unsafe { *inflight.path.as_mut_ptr().add(len) = b };
        len += 1;
    }
    inflight.path_len = len as u16;
    // Not ended within the path buffer, or ended because the data ran out (a request line
    // split over several reads; bytes after the data are zero): cut.
    if len == HTTP_PATH_LEN || at(scratch, from + len) == 0 {
        inflight.flags |= flags::PATH_TRUNCATED;
    }
}

/// Handles one read or write on a traced connection whose `CONNS` entry is `conn` (`None`
/// only for a TLS connection not seen before).
#[inline(always)]
pub fn on_data(channel: &Channel, conn: Option<*mut Conn>, data: &Data, tls: bool) {
    if data.len == 0 {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let scratch = unsafe { &mut *scratch };
    // One copy of the first bytes serves the classification and, for a request or response,
    // the path and header scans.
    scratch.len = data.len;
    if load_window(scratch, data.ptr).is_err() {
        bump(Counter::HttpReadError);
        return;
    }
    let words = scratch.window.as_ptr().cast::<u64>();
    // SAFETY: the window is 8-byte aligned and holds at least two words.
    let head = unsafe { [core::ptr::read(words), core::ptr::read(words.add(1))] };
    match classify(&head, data.len) {
        Start::Request { method, path_at } => {
            let dir = if data.ingress {
                direction::SERVER
            } else {
                direction::CLIENT
            };
            on_request(channel, conn, scratch, data, tls, method, path_at, dir);
        }
        Start::Response { status } => {
            // 1xx (but 101) are interim: the final response follows.
            if status < 200 && status != 101 {
                return;
            }
            on_response(channel, conn, scratch, data, tls, status);
        }
        Start::Other => {
            // An SSL_* call in progress on this thread reads or writes through this socket:
            // tell it the fd (its exchanges get this socket's peer). Only non-HTTP data can
            // be TLS, so plaintext HTTP never pays for this.
            if channel.key.kind == conn_kind::FD {
                let pid_tgid = bpf_get_current_pid_tgid();
                if let Some(ssl) = SSL_ARGS.get_ptr_mut(slot_index(pid_tgid)) {
                    // SAFETY: a live array slot; written only if it is this thread's call.
                    unsafe {
                        if (*ssl).pid_tgid == pid_tgid {
                            (*ssl).fd = channel.fd;
                        }
                    }
                }
            }
            // More of a request (body, or a header block split over reads).
            if let Some(conn) = conn {
                // SAFETY: a live map value; concurrent access for one connection is as racy
                // as the application's own use of it and only affects byte counts.
                unsafe {
                    let inflight = &mut (*conn).inflight;
                    let same_way = (inflight.direction == direction::SERVER) == data.ingress;
                    if inflight.method != method::NONE && same_way {
                        inflight.request_bytes += data.total;
                        // The method came alone (`GET `): the path starts this buffer.
                        if inflight.path_len == 0
                            && inflight.flags & flags::PATH_TRUNCATED != 0
                            && at(scratch, 0) == b'/'
                        {
                            inflight.flags &= !flags::PATH_TRUNCATED;
                            scratch.path_at = 0;
                            copy_path(scratch, inflight);
                        }
                    }
                }
            }
        }
    }
}

/// The connection's `CONNS` entry; TLS connections get one at their first request.
#[inline(always)]
fn conn_for_request(
    channel: &Channel,
    conn: Option<*mut Conn>,
    scratch: &mut Scratch,
) -> Option<*mut Conn> {
    if conn.is_some() {
        return conn;
    }
    if channel.key.kind != conn_kind::SSL {
        return None;
    }
    // SAFETY: a `Conn` is a whole number of words.
    unsafe { zero_words((&raw mut scratch.conn).cast(), size_of::<Conn>() / 8) };
    if CONNS
        .insert(&channel.key, &scratch.conn, BPF_ANY as u64)
        .is_err()
    {
        bump(Counter::HttpInflightFull);
        return None;
    }
    CONNS.get_ptr_mut(&channel.key)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn on_request(
    channel: &Channel,
    conn: Option<*mut Conn>,
    scratch: &mut Scratch,
    data: &Data,
    tls: bool,
    method: u8,
    path_at: usize,
    dir: u8,
) {
    if !filter::allowed() {
        bump(Counter::HttpFiltered);
        return;
    }
    // The method, its length and the direction are constants per path here: store them
    // before the loops below so the verifier can merge the paths (see `Scratch`).
    scratch.path_at = path_at as u64;
    let Some(conn) = conn_for_request(channel, conn, scratch) else {
        return;
    };
    // SAFETY: a live map value; only this connection's own (sequential) I/O writes it.
    let inflight = unsafe { &mut (*conn).inflight };
    if inflight.method != method::NONE && inflight.direction == dir {
        bump(Counter::HttpRequestReplaced);
    }
    // Everything path-specific goes to memory first (see `Scratch`).
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
    copy_path(scratch, inflight);
    scan_headers(scratch);
    inflight.request_body = launder(&scratch.body) as u8;
    inflight.request_content_length = launder(&scratch.content_length);
    decode_traceparent(scratch);
    // SAFETY (copies): `tp` holds 32 bytes; the ids are 16 and 8.
    unsafe {
        if launder(&scratch.tp_valid) == 1 {
            copy_words(inflight.trace_id.as_mut_ptr(), scratch.tp.as_ptr(), 2);
            copy_words(
                inflight.parent_span_id.as_mut_ptr(),
                scratch.tp.as_ptr().add(16),
                1,
            );
            inflight.trace_flags = scratch.tp[24];
            inflight.flags |= flags::TRACEPARENT;
        } else {
            zero_words(inflight.trace_id.as_mut_ptr(), 2);
            zero_words(inflight.parent_span_id.as_mut_ptr(), 1);
            inflight.trace_flags = 0;
        }
    }
    bump(Counter::HttpRequests);
}

#[inline(always)]
fn on_response(
    channel: &Channel,
    conn: Option<*mut Conn>,
    scratch: &mut Scratch,
    data: &Data,
    tls: bool,
    status: u16,
) {
    let expected = if data.ingress {
        direction::CLIENT
    } else {
        direction::SERVER
    };
    // SAFETY: a live map value; copied field by field below.
    let pending = conn.filter(|c| unsafe {
        (**c).inflight.method != method::NONE && (**c).inflight.direction == expected
    });
    let Some(conn) = pending else {
        // SAFETY: a live map value.
        let retried = conn.is_some_and(|c| unsafe { (*c).inflight.flags & flags::RESPONDED != 0 });
        // A retried write of the status line, or the request of a filtered task (never
        // kept): not a loss.
        if !retried && filter::allowed() {
            bump(Counter::HttpResponseUnmatched);
        }
        return;
    };
    // SAFETY: as above.
    let inflight = unsafe { &mut (*conn).inflight };
    scratch.status = status as u64;
    scan_headers(scratch);
    let response_body = launder(&scratch.body) as u8;
    let content_length = launder(&scratch.content_length);
    let status = launder(&scratch.status) as u16;

    let Some(mut entry) = HTTP_EVENTS.reserve::<HttpEvent>(0) else {
        bump(Counter::HttpRingbufFull);
        responded(channel, inflight);
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
        core::ptr::write((&raw mut (*event)._pad).cast::<u32>(), 0);
        if bpf_get_current_comm_raw((&raw mut (*event).comm).cast(), COMM_LEN as u32) < 0 {
            zero_words((&raw mut (*event).comm).cast(), 2);
        }
        // Only the words holding the path (see `HttpEvent::path`).
        let mut path_words = (inflight.path_len as usize).div_ceil(8);
        if path_words > HTTP_PATH_LEN / 8 {
            path_words = HTTP_PATH_LEN / 8;
        }
        copy_words(
            (&raw mut (*event).path).cast(),
            inflight.path.as_ptr(),
            path_words,
        );
        let mut event_flags = inflight.flags | if tls { flags::TLS } else { 0 };
        copy_words(
            (&raw mut (*event).trace_id).cast(),
            inflight.trace_id.as_ptr(),
            2,
        );
        copy_words(
            (&raw mut (*event).parent_span_id).cast(),
            inflight.parent_span_id.as_ptr(),
            1,
        );
        core::ptr::write((&raw mut (*event).local_port).cast::<u64>(), 0);
        (*event).trace_flags = inflight.trace_flags;
        zero_words((&raw mut (*event).local_addr).cast(), 2);
        if fd >= 0 {
            // This end: copied into the connection's entry by its first response that finds
            // it (`LOCAL_ADDRS` values always carry AF_INET/AF_INET6, so family 0 = not yet).
            let local = &raw mut (*conn).local;
            if (*local).family == 0 {
                let socket = ConnKey {
                    tgid: channel.key.tgid,
                    kind: conn_kind::FD,
                    id: fd as u64,
                };
                if let Some(found) = LOCAL_ADDRS.get_ptr(&socket) {
                    *local = *found;
                }
            }
            if (*local).family != 0 {
                copy_words(
                    (&raw mut (*event).local_addr).cast(),
                    (&raw const (*local).addr).cast(),
                    2,
                );
                (*event).local_port = (*local).port;
                event_flags |= flags::LOCAL_KNOWN;
            }
        }
        zero_words((&raw mut (*event).peer_addr).cast(), 2);
        (*event).peer_port = 0;
        (*event).family = 0;
        // The peer: this connection's own entry for plain sockets, the socket under the
        // SSL * for TLS.
        let info = if channel.key.kind == conn_kind::FD {
            Some(&raw const (*conn).info)
        } else if fd >= 0 {
            let socket = ConnKey {
                tgid: channel.key.tgid,
                kind: conn_kind::FD,
                id: fd as u64,
            };
            CONNS.get_ptr(&socket).map(|c| &raw const (*c).info)
        } else {
            None
        };
        if let Some(info) = info
            && (*info).family != 0
        {
            copy_words(
                (&raw mut (*event).peer_addr).cast(),
                (&raw const (*info).peer_addr).cast(),
                2,
            );
            (*event).peer_port = (*info).peer_port;
            (*event).family = (*info).family;
            event_flags |= flags::PEER_KNOWN;
        }
        (*event).flags = event_flags & !flags::RESPONDED;
    }
    entry.submit(wakeup_flags(&HTTP_EVENTS, RING_HTTP));
    responded(channel, inflight);
    bump(Counter::HttpExchanges);
}

/// The request on `channel` got its response: nothing is pending any more.
///
/// A plain socket keeps its entry (until `close`), marked [`flags::RESPONDED`] so that a
/// retried write of the same status line is recognised. A TLS connection's entry goes: no
/// `close` tells when an `SSL *` is freed, so kept entries would pile up until the LRU
/// evicted live sockets; and TLS needs no retry mark, because a failed `SSL_write` is never
/// seen as data (the uretprobe ignores it).
#[inline(always)]
fn responded(channel: &Channel, inflight: &mut Inflight) {
    if channel.key.kind == conn_kind::SSL {
        let _ = CONNS.remove(&channel.key);
    } else {
        inflight.method = method::NONE;
        inflight.flags |= flags::RESPONDED;
    }
}
