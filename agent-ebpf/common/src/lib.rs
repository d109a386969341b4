//! Types shared by the kernel programs (`agent-ebpf`) and the agent (user space).
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of pointers and padding-explicit, so the
//! same bytes mean the same thing on both sides of a ring buffer or map. This crate is
//! `no_std` and must stay dependency-free on the kernel side; the `user` feature adds the
//! `aya::Pod` impls the agent needs.
//!
//! Invariant: a layout change here is a change to both sides at once; the agent embeds the
//! object built from the same commit, so the two can never disagree at run time. Compile-time
//! size assertions below catch accidental layout changes.

#![no_std]

pub mod http;
pub mod tcp;

pub use http::{
    Conn, ConnInfo, ConnKey, FilterRule, HTTP_PATH_LEN, HTTP_WINDOW, HttpEvent, Inflight,
    ProcessHint, SslArgs, SyscallArgs,
};
pub use tcp::{PeerKey, SockStateOffsets, TcpEvent, TcpRetransmitOffsets, TcpSock};

/// Length of `task_struct::comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Bytes of an exec'd file name kept in an [`ExecEvent`] (longer names are truncated).
pub const EXEC_FILENAME_LEN: usize = 256;

/// Names of the eBPF programs in the object, as the agent looks them up.
pub mod programs {
    /// Tracepoint program attached to `sched:sched_process_exec`.
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// Attached to `syscalls:sys_enter_accept` and `sys_enter_accept4`.
    pub const SYS_ENTER_ACCEPT: &str = "sys_enter_accept";
    /// Attached to `syscalls:sys_enter_connect`.
    pub const SYS_ENTER_CONNECT: &str = "sys_enter_connect";
    /// Attached to `syscalls:sys_exit_accept`, `sys_exit_accept4` and `sys_exit_connect`.
    pub const SYS_EXIT_SOCK: &str = "sys_exit_sock";
    /// Attached to `syscalls:sys_enter_close`.
    pub const SYS_ENTER_CLOSE: &str = "sys_enter_close";
    /// Attached to `syscalls:sys_enter_read` and `sys_enter_recvfrom` (data at arg 1).
    pub const SYS_ENTER_READ: &str = "sys_enter_read";
    /// Attached to `syscalls:sys_enter_readv`.
    pub const SYS_ENTER_READV: &str = "sys_enter_readv";
    /// Attached to `syscalls:sys_enter_recvmsg`.
    pub const SYS_ENTER_RECVMSG: &str = "sys_enter_recvmsg";
    /// Attached to `syscalls:sys_enter_write` and `sys_enter_sendto` (data at arg 1).
    pub const SYS_ENTER_WRITE: &str = "sys_enter_write";
    /// Attached to `syscalls:sys_enter_writev`.
    pub const SYS_ENTER_WRITEV: &str = "sys_enter_writev";
    /// Attached to `syscalls:sys_enter_sendmsg`.
    pub const SYS_ENTER_SENDMSG: &str = "sys_enter_sendmsg";
    /// Attached to the `sys_exit_*` of the read syscalls above (writes are handled at entry).
    pub const SYS_EXIT_IO: &str = "sys_exit_io";
    /// Attached to `syscalls:sys_exit_read`, `sys_exit_recvfrom`, `sys_exit_readv` and
    /// `sys_exit_recvmsg` instead of the enter hooks and [`SYS_EXIT_IO`]: takes the arguments
    /// from the task's saved registers (see [`crate::http::RegisterReads`]).
    pub const SYS_EXIT_READ_REGS: &str = "sys_exit_read_regs";
    /// Raw tracepoint `sock_recv_length` (Linux 6.3+): every read of a socket, where its data
    /// is, with the arguments from the saved registers (see [`crate::http::SocketData`]).
    /// With [`SOCK_SEND_LENGTH`] it replaces every data syscall hook above.
    pub const SOCK_RECV_LENGTH: &str = "sock_recv_length";
    /// Raw tracepoint `sock_send_length` (Linux 6.3+): every write of a socket, after it.
    pub const SOCK_SEND_LENGTH: &str = "sock_send_length";
    /// Tracepoint `sock:inet_sock_set_state`.
    pub const INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
    /// Tracepoint `tcp:tcp_retransmit_skb`.
    pub const TCP_RETRANSMIT_SKB: &str = "tcp_retransmit_skb";
    /// Uprobe on `SSL_read`.
    pub const SSL_READ_ENTER: &str = "ssl_read_enter";
    /// Uprobe on `SSL_read_ex`.
    pub const SSL_READ_EX_ENTER: &str = "ssl_read_ex_enter";
    /// Uprobe on `SSL_write`.
    pub const SSL_WRITE_ENTER: &str = "ssl_write_enter";
    /// Uprobe on `SSL_write_ex`.
    pub const SSL_WRITE_EX_ENTER: &str = "ssl_write_ex_enter";
    /// Uretprobe on `SSL_read`, `SSL_read_ex`, `SSL_write` and `SSL_write_ex`.
    pub const SSL_EXIT: &str = "ssl_exit";
}

/// Names of the maps in the object.
pub mod maps {
    /// Ring buffer of [`crate::ExecEvent`].
    pub const EXEC_EVENTS: &str = "EXEC_EVENTS";
    /// Per-CPU array of `u64` counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Ring buffer of [`crate::HttpEvent`].
    pub const HTTP_EVENTS: &str = "HTTP_EVENTS";
    /// Ring buffer of [`crate::TcpEvent`].
    pub const TCP_EVENTS: &str = "TCP_EVENTS";
    /// LRU hash [`crate::ConnKey`] → [`crate::Conn`]: sockets accepted or connected (and
    /// TLS connections), each with its pending request.
    pub const CONNS: &str = "CONNS";
    /// Array of [`crate::SyscallArgs`], one slot per thread id modulo
    /// [`crate::http::ARG_SLOTS`]: arguments between syscall enter and exit. Array slots
    /// cost no hash insert/delete per call, which every traced read pays.
    pub const SYS_ARGS: &str = "SYS_ARGS";
    /// Array of [`crate::SslArgs`], as `SYS_ARGS`: arguments between an SSL call and its
    /// return.
    pub const SSL_ARGS: &str = "SSL_ARGS";
    /// LRU hash socket address → [`crate::TcpSock`]: outbound TCP connections being tracked.
    pub const TCP_SOCKS: &str = "TCP_SOCKS";
    /// LRU hash [`crate::PeerKey`] → [`crate::TcpSock`]: who accepted a connection from
    /// this remote endpoint (attributes inbound retransmits).
    pub const PEER_OWNERS: &str = "PEER_OWNERS";
    /// LRU hash socket address → [`crate::ConnKey`]: the `{tgid, fd}` of an outbound socket,
    /// learnt at SYN_SENT in the connecting task (its `connect` arguments).
    pub const SOCK_FDS: &str = "SOCK_FDS";
    /// LRU hash [`crate::PeerKey`] (remote endpoint) → [`crate::PeerKey`] (local endpoint) of a
    /// passively opened connection, from its ESTABLISHED transition, until it is accepted.
    pub const ACCEPTED_LOCAL: &str = "ACCEPTED_LOCAL";
    /// LRU hash [`crate::ConnKey`] → [`crate::PeerKey`]: the local endpoint of a socket
    /// (spans match the two ends of a connection by its 4-tuple).
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    /// Array of `u32`, [`crate::http::WATCHED_TGID_SLOTS`] slots: 1 in the slot of every
    /// process that ever had a socket in `CONNS` (set before the entry, never cleared).
    /// The data hooks look a call's `{tgid, fd}` up in `CONNS` only when its process's slot
    /// is set: processes without sockets (and those sharing a slot only with them) skip the
    /// hash lookup. A slot shared with a socket-holding process costs only that lookup.
    pub const WATCHED_TGIDS: &str = "WATCHED_TGIDS";
    /// LRU hash tgid → 1: processes already announced with a [`crate::ProcessHint`].
    pub const SEEN_TGIDS: &str = "SEEN_TGIDS";
    /// Array of [`crate::FilterRule`]: include/exclude rules set by the agent.
    pub const FILTER_RULES: &str = "FILTER_RULES";
}

/// Names of the read-only globals the agent sets before loading, and their meaning.
///
/// Rust eBPF cannot emit CO-RE relocations, so tracepoint field offsets are read by the agent
/// from tracefs (`events/<category>/<name>/format`) and passed in as globals.
pub mod globals {
    /// Offset of the `__data_loc char[] filename` field of `sched:sched_process_exec`.
    pub const EXEC_FILENAME_OFFSET: &str = "EXEC_FILENAME_OFFSET";
    /// Offset of the `pid_t pid` field of `sched:sched_process_exec`.
    pub const EXEC_PID_OFFSET: &str = "EXEC_PID_OFFSET";
    /// Offset of the `pid_t old_pid` field of `sched:sched_process_exec`.
    pub const EXEC_OLD_PID_OFFSET: &str = "EXEC_OLD_PID_OFFSET";
    /// Offset of the first argument in `syscalls:sys_enter_*` records (each argument is 8
    /// bytes wide; the agent checks every hooked syscall's format against this).
    pub const SYSCALL_ARGS_OFFSET: &str = "SYSCALL_ARGS_OFFSET";
    /// Offset of `long ret` in `syscalls:sys_exit_*` records.
    pub const SYSCALL_RET_OFFSET: &str = "SYSCALL_RET_OFFSET";
    /// [`crate::http::RegisterReads`] for [`super::programs::SYS_EXIT_READ_REGS`].
    pub const REGISTER_READS: &str = "REGISTER_READS";
    /// [`crate::http::SocketData`] for [`super::programs::SOCK_RECV_LENGTH`] and
    /// [`super::programs::SOCK_SEND_LENGTH`].
    pub const SOCKET_DATA: &str = "SOCKET_DATA";
    /// [`crate::SockStateOffsets`] for `sock:inet_sock_set_state`.
    pub const SOCK_STATE_OFFSETS: &str = "SOCK_STATE_OFFSETS";
    /// [`crate::TcpRetransmitOffsets`] for `tcp:tcp_retransmit_skb`.
    pub const TCP_RETRANSMIT_OFFSETS: &str = "TCP_RETRANSMIT_OFFSETS";
    /// Number of valid entries in `FILTER_RULES` (0: no filtering).
    pub const FILTER_RULE_COUNT: &str = "FILTER_RULE_COUNT";
    /// 1 when at least one rule is an include rule: then only matching tasks are traced.
    pub const FILTER_HAS_INCLUDE: &str = "FILTER_HAS_INCLUDE";
}

/// Slots of the per-CPU `COUNTERS` array: kernel-side health the agent exports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Exec events seen by the tracepoint program.
    ExecSeen = 0,
    /// Exec events dropped because the ring buffer was full.
    ExecRingbufFull = 1,
    /// Exec events whose tracepoint fields could not be read.
    ExecReadError = 2,
    /// HTTP requests detected (server and client side, plain and TLS).
    HttpRequests = 3,
    /// Completed exchanges submitted to `HTTP_EVENTS`.
    HttpExchanges = 4,
    /// Exchanges dropped because `HTTP_EVENTS` was full.
    HttpRingbufFull = 5,
    /// Tracepoint fields or user memory that could not be read (the event is lost).
    HttpReadError = 6,
    /// TLS connections not tracked because `CONNS` refused their entry.
    HttpInflightFull = 7,
    /// Sockets not tracked because `CONNS` refused the entry.
    HttpConnsFull = 8,
    /// A thread's `SYS_ARGS`/`SSL_ARGS` slot was still held by another thread (thread ids
    /// equal modulo the slot count, both in a traced call): the other call is lost.
    HttpArgsFull = 9,
    /// A request arrived while the previous one on the connection had no response
    /// (pipelining or an unanswered request); the previous one is dropped.
    HttpRequestReplaced = 10,
    /// A response with no request waiting on its connection (the request was seen before
    /// the agent started, or its entry was evicted).
    HttpResponseUnmatched = 11,
    /// Connections or requests skipped by the include/exclude rules (not a loss).
    HttpFiltered = 12,
    /// TCP events submitted to `TCP_EVENTS`.
    TcpEvents = 13,
    /// TCP events dropped because `TCP_EVENTS` was full.
    TcpRingbufFull = 14,
    /// Outbound connections not tracked because `TCP_SOCKS` refused the entry.
    TcpSocksFull = 15,
    /// TCP tracepoint fields that could not be read.
    TcpReadError = 16,
    /// Requests whose connection was closed (by this process) before a response: the
    /// peer or the process gave up. A property of the traffic, not a loss of the agent's.
    HttpUnanswered = 17,
    /// Socket data whose saved registers name a watched fd of another socket (io_uring work
    /// run on the way out of an unrelated syscall): skipped, not a loss.
    HttpForeignSocket = 18,
}

impl Counter {
    /// Number of slots; the size of the `COUNTERS` array.
    pub const COUNT: u32 = 19;
    /// Every slot, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::ExecSeen,
        Counter::ExecRingbufFull,
        Counter::ExecReadError,
        Counter::HttpRequests,
        Counter::HttpExchanges,
        Counter::HttpRingbufFull,
        Counter::HttpReadError,
        Counter::HttpInflightFull,
        Counter::HttpConnsFull,
        Counter::HttpArgsFull,
        Counter::HttpRequestReplaced,
        Counter::HttpResponseUnmatched,
        Counter::HttpFiltered,
        Counter::TcpEvents,
        Counter::TcpRingbufFull,
        Counter::TcpSocksFull,
        Counter::TcpReadError,
        Counter::HttpUnanswered,
        Counter::HttpForeignSocket,
    ];

    /// Snake-case name used in the agent's metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::ExecSeen => "exec_seen",
            Counter::ExecRingbufFull => "exec_ringbuf_full",
            Counter::ExecReadError => "exec_read_error",
            Counter::HttpRequests => "http_requests",
            Counter::HttpExchanges => "http_exchanges",
            Counter::HttpRingbufFull => "http_ringbuf_full",
            Counter::HttpReadError => "http_read_error",
            Counter::HttpInflightFull => "http_inflight_full",
            Counter::HttpConnsFull => "http_conns_full",
            Counter::HttpArgsFull => "http_args_slot_taken",
            Counter::HttpRequestReplaced => "http_request_replaced",
            Counter::HttpResponseUnmatched => "http_response_unmatched",
            Counter::HttpFiltered => "http_filtered",
            Counter::TcpEvents => "tcp_events",
            Counter::TcpRingbufFull => "tcp_ringbuf_full",
            Counter::TcpSocksFull => "tcp_socks_full",
            Counter::TcpReadError => "tcp_read_error",
            Counter::HttpUnanswered => "http_request_unanswered",
            Counter::HttpForeignSocket => "http_foreign_socket",
        }
    }

    /// For counters that count lost events: the `(program, reason)` of
    /// `sonde_agent_events_lost_total`. `None` for counters of events seen or skipped.
    pub const fn loss(self) -> Option<(&'static str, &'static str)> {
        match self {
            Counter::ExecRingbufFull => Some(("exec", "ringbuf_full")),
            Counter::ExecReadError => Some(("exec", "read_error")),
            Counter::HttpRingbufFull => Some(("http", "ringbuf_full")),
            Counter::HttpReadError => Some(("http", "read_error")),
            Counter::HttpInflightFull => Some(("http", "inflight_map_full")),
            Counter::HttpConnsFull => Some(("http", "conns_map_full")),
            Counter::HttpArgsFull => Some(("http", "args_slot_taken")),
            Counter::HttpRequestReplaced => Some(("http", "request_without_response")),
            Counter::HttpResponseUnmatched => Some(("http", "response_without_request")),
            Counter::TcpRingbufFull => Some(("tcp", "ringbuf_full")),
            Counter::TcpSocksFull => Some(("tcp", "socks_map_full")),
            Counter::TcpReadError => Some(("tcp", "read_error")),
            Counter::ExecSeen
            | Counter::HttpRequests
            | Counter::HttpExchanges
            | Counter::HttpFiltered
            | Counter::HttpUnanswered
            | Counter::HttpForeignSocket
            | Counter::TcpEvents => None,
        }
    }
}

/// One `sched:sched_process_exec` event: a process replaced its image with a new program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the tracepoint fired.
    pub ktime_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Thread group id (the process id seen by user space).
    pub tgid: u32,
    /// `pid` field of the tracepoint (the thread that exec'd).
    pub pid: u32,
    /// `old_pid` field of the tracepoint (differs from `pid` when a non-leader thread exec'd).
    pub old_pid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// Bytes of `filename` that are valid (without the NUL).
    pub filename_len: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// `comm` after the exec, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Path passed to exec, NUL-padded, truncated to [`EXEC_FILENAME_LEN`].
    pub filename: [u8; EXEC_FILENAME_LEN],
}

const _: () = assert!(size_of::<ExecEvent>() == 8 + 8 + 4 * 6 + COMM_LEN + 256);

impl ExecEvent {
    /// The `comm` as bytes without trailing NULs.
    pub fn comm_bytes(&self) -> &[u8] {
        trim_nul(&self.comm)
    }

    /// The file name as bytes (the valid prefix, without trailing NULs).
    pub fn filename_bytes(&self) -> &[u8] {
        let len = (self.filename_len as usize).min(EXEC_FILENAME_LEN);
        trim_nul(&self.filename[..len])
    }
}

/// `bytes` up to the first NUL.
pub fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all impls): each type is `repr(C)`, `Copy`, has no implicit padding (sizes are
    // asserted next to the definitions) and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::HttpEvent {}
    unsafe impl aya::Pod for super::ProcessHint {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::FilterRule {}
    unsafe impl aya::Pod for super::TcpEvent {}
    unsafe impl aya::Pod for super::SockStateOffsets {}
    unsafe impl aya::Pod for super::TcpRetransmitOffsets {}
    unsafe impl aya::Pod for super::http::RegisterReads {}
    unsafe impl aya::Pod for super::http::SocketData {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_and_comm_stop_at_nul_and_length() {
        let mut e = ExecEvent {
            ktime_ns: 0,
            cgroup_id: 0,
            tgid: 1,
            pid: 1,
            old_pid: 1,
            uid: 0,
            filename_len: 8,
            _pad: 0,
            comm: [0; COMM_LEN],
            filename: [0; EXEC_FILENAME_LEN],
        };
        e.comm[..4].copy_from_slice(b"true");
        e.filename[..13].copy_from_slice(b"/usr/bin/true");
        assert_eq!(e.comm_bytes(), b"true");
        // Only `filename_len` bytes are valid even if more are non-zero.
        assert_eq!(e.filename_bytes(), b"/usr/bin");
        e.filename_len = 9999;
        assert_eq!(e.filename_bytes(), b"/usr/bin/true");
    }

    #[test]
    fn counters_are_indexed_in_order_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[..i] {
                assert_ne!(c.name(), other.name());
            }
        }
    }
}
