//! HTTP/1.x tracing: the completed-exchange event and the kernel-side state behind it.
//!
//! The kernel pairs a request with its response per connection and sends one [`HttpEvent`]
//! per exchange. What leaves the kernel is limited to what the metrics need: the method, the
//! path up to the first `?`, `#`, space or control byte (never the query string, headers or
//! body), the status code, byte counts, `Content-Length` values, the peer address and, for
//! spans, the decoded W3C `traceparent` header (trace id, parent id, flags) and the local
//! address of the connection.

use crate::COMM_LEN;

/// Bytes of the request path kept (longer paths are truncated and flagged).
pub const HTTP_PATH_LEN: usize = 128;

/// Bytes at the start of a read or write that the kernel inspects (method or status line,
/// path, `Content-Length`/`Transfer-Encoding` headers). A power of two.
pub const HTTP_WINDOW: usize = 256;

const _: () = assert!(HTTP_WINDOW.is_power_of_two() && HTTP_PATH_LEN < HTTP_WINDOW);

/// HTTP methods as the kernel encodes them in [`HttpEvent::method`].
pub mod method {
    /// Not a request (never sent in an event).
    pub const NONE: u8 = 0;
    /// `GET`.
    pub const GET: u8 = 1;
    /// `POST`.
    pub const POST: u8 = 2;
    /// `PUT`.
    pub const PUT: u8 = 3;
    /// `DELETE`.
    pub const DELETE: u8 = 4;
    /// `HEAD`.
    pub const HEAD: u8 = 5;
    /// `PATCH`.
    pub const PATCH: u8 = 6;
    /// `OPTIONS`.
    pub const OPTIONS: u8 = 7;
    /// `TRACE`.
    pub const TRACE: u8 = 8;

    /// The method's name, or `None` for an unknown code.
    pub const fn name(code: u8) -> Option<&'static str> {
        Some(match code {
            GET => "GET",
            POST => "POST",
            PUT => "PUT",
            DELETE => "DELETE",
            HEAD => "HEAD",
            PATCH => "PATCH",
            OPTIONS => "OPTIONS",
            TRACE => "TRACE",
            _ => return None,
        })
    }
}

/// Which side of the exchange the traced process is on ([`HttpEvent::direction`]).
pub mod direction {
    /// The process read the request and wrote the response.
    pub const SERVER: u8 = 1;
    /// The process wrote the request and read the response.
    pub const CLIENT: u8 = 2;
}

/// Bits of [`HttpEvent::flags`].
pub mod flags {
    /// The exchange went through OpenSSL (`SSL_read`/`SSL_write`), i.e. HTTPS.
    pub const TLS: u8 = 1;
    /// The path filled [`super::HTTP_PATH_LEN`] bytes without ending: it is truncated.
    pub const PATH_TRUNCATED: u8 = 2;
    /// The peer address came from `accept`/`connect` and is valid.
    pub const PEER_KNOWN: u8 = 4;
    /// The request carried a well-formed W3C `traceparent` header within the inspected
    /// window; [`super::HttpEvent::trace_id`], `parent_span_id` and `trace_flags` hold it.
    pub const TRACEPARENT: u8 = 8;
    /// The local address of the connection is known ([`super::HttpEvent::local_addr`]).
    pub const LOCAL_KNOWN: u8 = 16;
    /// Kernel-internal (in a `Conn`, never in an event): the connection's last request got
    /// its response. Another status line before the next request is a retried write (a
    /// non-blocking send that returned EAGAIN), not a lost request.
    pub const RESPONDED: u8 = 0x80;
}

/// What the kernel saw of a message's headers within the inspected window
/// ([`HttpEvent::request_body`], [`HttpEvent::response_body`]).
pub mod body {
    /// The header block did not end within the window and had no `Content-Length` before
    /// that point: the body size is unknown.
    pub const UNKNOWN: u8 = 0;
    /// A `Content-Length` header was found; its value is in the event.
    pub const CONTENT_LENGTH: u8 = 1;
    /// A `Transfer-Encoding` header was found (chunked): the body size is unknown.
    pub const CHUNKED: u8 = 2;
    /// The header block ended within the window with neither header.
    pub const NO_LENGTH: u8 = 3;
}

/// Connection roles in [`ConnInfo::role`].
pub mod role {
    /// Returned by `accept`/`accept4`.
    pub const ACCEPTED: u32 = 1;
    /// Passed to a successful (or in-progress) `connect`.
    pub const CONNECTED: u32 = 2;
}

/// [`ConnKey::kind`] values.
pub mod conn_kind {
    /// `id` is a file descriptor (plain socket I/O).
    pub const FD: u32 = 0;
    /// `id` is an OpenSSL `SSL *` (TLS, seen through uprobes).
    pub const SSL: u32 = 1;
}

/// Syscall kinds in [`SyscallArgs::kind`]: how to find the data of the call.
pub mod io_kind {
    /// `read(fd, buf, count)`, `recvfrom(fd, buf, len, …)`: data at `buf`.
    pub const READ: u32 = 1;
    /// `readv(fd, iov, iovcnt)`: data at `iov[0]`.
    pub const READV: u32 = 2;
    /// `recvmsg(fd, msg, flags)`: data at `msg->msg_iov[0]`.
    pub const RECVMSG: u32 = 3;
    /// `write(fd, buf, count)`, `sendto(fd, buf, len, …)`.
    pub const WRITE: u32 = 4;
    /// `writev(fd, iov, iovcnt)`.
    pub const WRITEV: u32 = 5;
    /// `sendmsg(fd, msg, flags)`.
    pub const SENDMSG: u32 = 6;
    /// `accept`/`accept4(fd, addr, addrlen…)`: `ptr` is the peer `sockaddr *` (may be 0).
    pub const ACCEPT: u32 = 7;
    /// `connect(fd, addr, addrlen)`: `ptr` is the `sockaddr *`.
    pub const CONNECT: u32 = 8;

    /// Whether data of this kind flows into the process.
    pub const fn is_ingress(kind: u32) -> bool {
        matches!(kind, READ | READV | RECVMSG)
    }
}

/// Key of a connection in `CONNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Process id.
    pub tgid: u32,
    /// [`conn_kind`]: what `id` is.
    pub kind: u32,
    /// File descriptor or `SSL *`.
    pub id: u64,
}

const _: () = assert!(size_of::<ConnKey>() == 16);

/// A socket the kernel saw being accepted or connected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// `bpf_ktime_get_ns()` when the socket was accepted or connected.
    pub opened_ns: u64,
    /// Peer address: IPv4 in the first 4 bytes, or IPv6 (network order).
    pub peer_addr: [u8; 16],
    /// Peer port (host order).
    pub peer_port: u16,
    /// `AF_INET` (2), `AF_INET6` (10), or 0 when the address is unknown.
    pub family: u16,
    /// [`role`].
    pub role: u32,
}

const _: () = assert!(size_of::<ConnInfo>() == 32);

/// A connection in `CONNS`: what the kernel knows about the socket, and the request waiting
/// for its response (if `inflight.method` is not [`method::NONE`]). Keeping the request in
/// the connection's own entry means no map insert or delete per request.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// Peer and role.
    pub info: ConnInfo,
    /// This end of the connection once a response found it in `LOCAL_ADDRS` (`family` 0:
    /// not yet): later responses on the connection copy it from here instead of a second
    /// hash lookup per response.
    pub local: crate::tcp::PeerKey,
    /// The kernel socket (`struct sock *`) the socket data hooks first saw on this fd (0:
    /// none yet, or another data path): later data of another socket under this fd is not
    /// this connection's.
    pub sk: u64,
    /// The pending request.
    pub inflight: Inflight,
}

const _: () = assert!(
    size_of::<Conn>()
        == size_of::<ConnInfo>()
            + size_of::<crate::tcp::PeerKey>()
            + size_of::<u64>()
            + size_of::<Inflight>()
);

/// A request waiting for its response (part of a [`Conn`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    /// When the request's first bytes were read (server) or written (client).
    pub start_ns: u64,
    /// Bytes of the request seen so far (headers and body).
    pub request_bytes: u64,
    /// `Content-Length` of the request when [`Inflight::request_body`] says so.
    pub request_content_length: u64,
    /// cgroup v2 id of the task that handled the request.
    pub cgroup_id: u64,
    /// [`direction`].
    pub direction: u8,
    /// [`method`]; [`method::NONE`] when no request is pending.
    pub method: u8,
    /// [`flags`] known at request time (TLS, path truncated).
    pub flags: u8,
    /// [`body`] for the request.
    pub request_body: u8,
    /// Valid bytes of `path`.
    pub path_len: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
    /// For TLS: the socket fd under the `SSL *` when the request was seen, else -1.
    pub peer_fd: i32,
    /// Explicit padding; always zero.
    pub _pad2: u32,
    /// Request path, NUL-padded (no query string).
    pub path: [u8; HTTP_PATH_LEN],
    /// Decoded `traceparent` trace id when [`flags::TRACEPARENT`] is set, else zero.
    pub trace_id: [u8; 16],
    /// Decoded `traceparent` parent id when [`flags::TRACEPARENT`] is set, else zero.
    pub parent_span_id: [u8; 8],
    /// Decoded `traceparent` flags.
    pub trace_flags: u8,
    /// Explicit padding; always zero.
    pub _pad3: [u8; 7],
}

const _: () = assert!(size_of::<Inflight>() == 8 * 4 + 16 + HTTP_PATH_LEN + 32);

impl Inflight {
    /// No request pending.
    pub const EMPTY: Self = Self {
        start_ns: 0,
        request_bytes: 0,
        request_content_length: 0,
        cgroup_id: 0,
        direction: 0,
        method: method::NONE,
        flags: 0,
        request_body: 0,
        path_len: 0,
        _pad: 0,
        peer_fd: -1,
        _pad2: 0,
        path: [0; HTTP_PATH_LEN],
        trace_id: [0; 16],
        parent_span_id: [0; 8],
        trace_flags: 0,
        _pad3: [0; 7],
    };
}

/// One completed HTTP exchange (`HTTP_EVENTS` ring buffer record).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpEvent {
    /// Request start: first request bytes read (server) or written (client), monotonic ns.
    pub start_ns: u64,
    /// Response start: status line written (server) or read (client), monotonic ns.
    pub end_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Request bytes seen (headers and body, possibly over several reads or writes).
    pub request_bytes: u64,
    /// Bytes of the read or write that carried the status line.
    pub response_bytes: u64,
    /// Request `Content-Length` when `request_body` is [`body::CONTENT_LENGTH`].
    pub request_content_length: u64,
    /// Response `Content-Length` when `response_body` is [`body::CONTENT_LENGTH`].
    pub response_content_length: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread that saw the response.
    pub tid: u32,
    /// Response status code (100–999).
    pub status: u16,
    /// Peer port (host order) when [`flags::PEER_KNOWN`].
    pub peer_port: u16,
    /// Peer address family (`AF_INET` 2, `AF_INET6` 10) when [`flags::PEER_KNOWN`].
    pub family: u16,
    /// [`direction`].
    pub direction: u8,
    /// [`method`].
    pub method: u8,
    /// [`flags`].
    pub flags: u8,
    /// [`body`] for the request.
    pub request_body: u8,
    /// [`body`] for the response.
    pub response_body: u8,
    /// Valid bytes of `path`.
    pub path_len: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 4],
    /// Peer address (IPv4 in the first 4 bytes), network order.
    pub peer_addr: [u8; 16],
    /// `comm` of the thread that saw the response.
    pub comm: [u8; COMM_LEN],
    /// The request's `traceparent` trace id when [`flags::TRACEPARENT`], else zero.
    pub trace_id: [u8; 16],
    /// The request's `traceparent` parent id when [`flags::TRACEPARENT`], else zero.
    pub parent_span_id: [u8; 8],
    /// This end of the connection (IPv4 in the first 4 bytes), network order, when
    /// [`flags::LOCAL_KNOWN`]; the family is [`HttpEvent::family`].
    pub local_addr: [u8; 16],
    /// This end's port (host order) when [`flags::LOCAL_KNOWN`].
    pub local_port: u16,
    /// The request's `traceparent` flags when [`flags::TRACEPARENT`].
    pub trace_flags: u8,
    /// Explicit padding; always zero.
    pub _pad2: [u8; 5],
    /// Request path without query string: `path_len` valid bytes. Last, and copied by the
    /// kernel only in the words that hold the path, so that a short path leaves the rest of
    /// the record untouched (bytes after `path_len` are whatever the ring held before): the
    /// ring's cache lines are written by one CPU and read by another, and each costs both.
    pub path: [u8; HTTP_PATH_LEN],
}

const _: () = assert!(
    size_of::<HttpEvent>() == 8 * 7 + 4 * 2 + 2 * 3 + 6 + 4 + 16 + 16 + 16 + 8 + 16 + 8 + 128
);

impl HttpEvent {
    /// The valid bytes of the path.
    pub fn path_bytes(&self) -> &[u8] {
        let len = (self.path_len as usize).min(HTTP_PATH_LEN);
        &self.path[..len]
    }

    /// `comm` without trailing NULs.
    pub fn comm_bytes(&self) -> &[u8] {
        crate::trim_nul(&self.comm)
    }
}

/// A process seen for the first time opening a connection (`HTTP_EVENTS` record, told apart
/// from [`HttpEvent`] by its size). The agent resolves the process's identity right away,
/// while it surely still exists: short-lived clients are often gone by the time their
/// exchanges are read.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessHint {
    /// Process id.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
}

const _: () =
    assert!(size_of::<ProcessHint>() == 16 && size_of::<ProcessHint>() != size_of::<HttpEvent>());

/// Slots of the `SYS_ARGS` and `SSL_ARGS` arrays, indexed by thread id modulo this.
pub const ARG_SLOTS: u32 = 32768;

/// Slots of `WATCHED_TGIDS` (a power of two): a process's slot is its tgid modulo this.
pub const WATCHED_TGID_SLOTS: u32 = 16384;

/// The `WATCHED_TGIDS` slot of process `tgid`.
#[inline(always)]
pub fn watched_tgid_slot(tgid: u32) -> u32 {
    tgid & (WATCHED_TGID_SLOTS - 1)
}

/// Syscall arguments kept between enter and exit, in the `SYS_ARGS` slot of the thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallArgs {
    /// The thread whose call this is (0: slot free).
    pub pid_tgid: u64,
    /// Data buffer, iovec array, msghdr or sockaddr pointer, per [`io_kind`].
    pub ptr: u64,
    /// The file descriptor.
    pub fd: u32,
    /// [`io_kind`].
    pub kind: u32,
}

const _: () = assert!(size_of::<SyscallArgs>() == 24);

/// How the read exits find their arguments without an enter hook: the syscall numbers of the
/// hooked reads and where the task's saved user registers keep `fd` and the buffer.
///
/// At syscall exit the saved registers still hold the arguments (the return value goes to
/// its own register on x86_64; on arm64 it overwrites the first argument's, which
/// `orig_x0` keeps). Set by the agent for the architectures it enables; the default matches
/// no syscall, so the program does nothing until set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterReads {
    /// Offset of the register holding argument 0 (`fd`) in `struct pt_regs`.
    pub fd: u32,
    /// Offset of the register holding argument 1 (buffer, iovec or msghdr).
    pub buf: u32,
    /// Syscall number of `read`.
    pub read: i32,
    /// Syscall number of `recvfrom`.
    pub recvfrom: i32,
    /// Syscall number of `readv`.
    pub readv: i32,
    /// Syscall number of `recvmsg`.
    pub recvmsg: i32,
    /// Offset of `int __syscall_nr` in `syscalls:sys_exit_*` records.
    pub nr: u32,
}

const _: () = assert!(size_of::<RegisterReads>() == 28);

impl RegisterReads {
    /// Matches no syscall.
    pub const DISABLED: Self = Self {
        fd: 0,
        buf: 0,
        read: -1,
        recvfrom: -1,
        readv: -1,
        recvmsg: -1,
        nr: 8,
    };

    /// The [`io_kind`] of syscall `nr`, if it is one of the hooked reads.
    #[inline(always)]
    pub fn kind(&self, nr: i32) -> Option<u32> {
        kind_of(
            nr,
            [self.read, self.recvfrom, self.readv, self.recvmsg],
            [io_kind::READ, io_kind::READV, io_kind::RECVMSG],
        )
    }
}

/// How the socket data hooks (`sock_recv_length`, `sock_send_length`) find the syscall that
/// moved the data: the saved user registers hold its number and arguments.
///
/// Those tracepoints fire inside every socket read and write, whichever path the kernel took
/// there; only the calls of the eight hooked syscalls are handled (others, like `sendmmsg`,
/// io_uring or in-kernel sockets, carry another number). Set by the agent for the
/// architectures it enables; the default matches no syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketData {
    /// Offset of the register holding the syscall number in `struct pt_regs`.
    pub nr: u32,
    /// Offset of the register holding argument 0 (`fd`).
    pub fd: u32,
    /// Offset of the register holding argument 1 (buffer, iovec or msghdr).
    pub buf: u32,
    /// Offset of the register holding argument 2 (length or iovec count).
    pub len: u32,
    /// Syscall numbers of `read`, `recvfrom`, `readv`, `recvmsg`.
    pub reads: [i32; 4],
    /// Syscall numbers of `write`, `sendto`, `writev`, `sendmsg`.
    pub writes: [i32; 4],
}

const _: () = assert!(size_of::<SocketData>() == 48);

impl SocketData {
    /// Matches no syscall (not even -1, the number saved outside any syscall).
    pub const DISABLED: Self = Self {
        nr: 0,
        fd: 0,
        buf: 0,
        len: 0,
        reads: [i32::MIN; 4],
        writes: [i32::MIN; 4],
    };

    /// The [`io_kind`] of syscall `nr`, if it is one of the hooked reads.
    #[inline(always)]
    pub fn read_kind(&self, nr: i32) -> Option<u32> {
        kind_of(
            nr,
            self.reads,
            [io_kind::READ, io_kind::READV, io_kind::RECVMSG],
        )
    }

    /// The [`io_kind`] of syscall `nr`, if it is one of the hooked writes.
    #[inline(always)]
    pub fn write_kind(&self, nr: i32) -> Option<u32> {
        kind_of(
            nr,
            self.writes,
            [io_kind::WRITE, io_kind::WRITEV, io_kind::SENDMSG],
        )
    }
}

/// The kind of syscall `nr` among four syscall numbers: the first two (plain buffer, with
/// or without an address) are `kinds[0]`, the vectored one `kinds[1]`, the msghdr one
/// `kinds[2]`.
#[inline(always)]
fn kind_of(nr: i32, nrs: [i32; 4], kinds: [u32; 3]) -> Option<u32> {
    if nr == nrs[0] || nr == nrs[1] {
        Some(kinds[0])
    } else if nr == nrs[2] {
        Some(kinds[1])
    } else if nr == nrs[3] {
        Some(kinds[2])
    } else {
        None
    }
}

/// OpenSSL call arguments kept between a uprobe and its uretprobe, in the `SSL_ARGS` slot of
/// the thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SslArgs {
    /// The thread whose call this is (0: slot free).
    pub pid_tgid: u64,
    /// The `SSL *`.
    pub ssl: u64,
    /// The data buffer.
    pub buf: u64,
    /// `size_t *readbytes`/`*written` of the `_ex` variants, 0 for the plain ones.
    pub out_len: u64,
    /// The socket fd under this `SSL *`, learnt from the nested read/write syscall; -1 if
    /// none was seen.
    pub fd: i32,
    /// 1 for `SSL_read*`, 0 for `SSL_write*`.
    pub is_read: u32,
}

const _: () = assert!(size_of::<SslArgs>() == 40);

/// [`FilterRule::kind`] values.
pub mod filter_kind {
    /// Matches tasks whose `comm` equals [`super::FilterRule::comm`].
    pub const COMM: u32 = 1;
    /// Matches tasks in cgroup [`super::FilterRule::cgroup_id`] or below it.
    pub const CGROUP: u32 = 2;
}

/// [`FilterRule::action`] values.
pub mod filter_action {
    /// Trace only tasks matching some include rule (when any exists).
    pub const INCLUDE: u32 = 1;
    /// Never trace tasks matching this rule (wins over include).
    pub const EXCLUDE: u32 = 2;
}

/// Maximum number of rules in `FILTER_RULES`.
pub const FILTER_RULES_MAX: u32 = 16;

/// One include/exclude rule, evaluated in the kernel when a socket is accepted/connected and
/// when a request is first seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterRule {
    /// [`filter_kind`].
    pub kind: u32,
    /// [`filter_action`].
    pub action: u32,
    /// For cgroup rules: the depth of the cgroup in the v2 hierarchy (root = 0), as
    /// `bpf_get_current_ancestor_cgroup_id` counts it.
    pub level: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// For cgroup rules: the cgroup v2 id (inode of its directory).
    pub cgroup_id: u64,
    /// For comm rules: the comm, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(size_of::<FilterRule>() == 40);
