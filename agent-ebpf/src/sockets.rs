//! Which file descriptors are sockets worth watching: `accept`/`accept4` (server side) and
//! `connect` (client side) add them to `CONNS` with their peer address; `close` removes them
//! (and any request still waiting on them).
//!
//! Must not: look at data; that is [`crate::io`].

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sonde_ebpf_common::{
    COMM_LEN, ConnInfo, ConnKey, Counter, PeerKey, ProcessHint, SyscallArgs, TcpSock,
    http::method,
    http::{conn_kind, io_kind, role},
};

use crate::{
    filter,
    maps::{
        ACCEPTED_LOCAL, CONNS, HTTP_EVENTS, LOCAL_ADDRS, PEER_OWNERS, SCRATCH, SEEN_TGIDS,
        SYSCALL_ARGS_OFFSET, SYSCALL_RET_OFFSET, bump, ctx_u64, global, mark_watched,
        put_syscall_args, take_syscall_args, zero_words,
    },
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;

/// `accept(fd, addr, addrlen)` and `accept4(fd, addr, addrlen, flags)`.
#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    remember(&ctx, io_kind::ACCEPT);
    0
}

/// `connect(fd, addr, addrlen)`.
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    remember(&ctx, io_kind::CONNECT);
    0
}

#[inline(always)]
fn remember(ctx: &TracePointContext, kind: u32) {
    let base = global(&SYSCALL_ARGS_OFFSET);
    let fd = ctx_u64(ctx, base);
    let ptr = ctx_u64(ctx, base + 8);
    put_syscall_args(&SyscallArgs {
        pid_tgid: bpf_get_current_pid_tgid(),
        ptr,
        fd: fd as u32,
        kind,
    });
}

/// Exit of `accept`, `accept4` and `connect`.
#[tracepoint]
pub fn sys_exit_sock(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_syscall_args(pid_tgid) else {
        return 0;
    };
    let ret = ctx_u64(&ctx, global(&SYSCALL_RET_OFFSET)) as i64;
    let (fd, conn_role) = match args.kind {
        io_kind::ACCEPT if ret >= 0 => (ret as u32, role::ACCEPTED),
        io_kind::CONNECT if ret == 0 || ret == -EINPROGRESS => (args.fd, role::CONNECTED),
        _ => return 0,
    };
    if !filter::allowed() {
        bump(Counter::HttpFiltered);
        return 0;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, exclusively ours while this program runs.
    let conn = unsafe { &mut (*scratch).conn };
    // SAFETY: a `Conn` is a whole number of words.
    unsafe {
        zero_words(
            (conn as *mut sonde_ebpf_common::Conn).cast(),
            size_of::<sonde_ebpf_common::Conn>() / 8,
        )
    };
    // SAFETY: helper without memory arguments.
    conn.info.opened_ns = unsafe { bpf_ktime_get_ns() };
    conn.info.role = conn_role;
    conn.inflight.method = method::NONE;
    if args.ptr != 0 {
        read_sockaddr(args.ptr, &mut conn.info);
    }
    let info = conn.info;
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        kind: conn_kind::FD,
        id: fd as u64,
    };
    mark_watched(key.tgid);
    // A new socket on a reused fd number replaces the old entry and its pending request.
    if CONNS.insert(&key, &*conn, BPF_ANY as u64).is_err() {
        bump(Counter::HttpConnsFull);
    }
    announce(key.tgid);
    if conn_role == role::ACCEPTED && info.family != 0 {
        // Who owns the connection from this peer: attributes inbound TCP retransmits, which
        // happen outside the process's context.
        let owner = TcpSock {
            start_ns: info.opened_ns,
            // SAFETY: helper without memory arguments.
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            tgid: key.tgid,
            established: 1,
            comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        };
        let peer = peer_key(&info);
        let _ = PEER_OWNERS.insert(&peer, &owner, BPF_ANY as u64);
        // Its local endpoint, seen at ESTABLISHED (spans match connection ends by it).
        if let Some(local) = ACCEPTED_LOCAL.get_ptr(&peer) {
            // SAFETY: a live map value, copied before the entry is removed.
            let local = unsafe { *local };
            let _ = LOCAL_ADDRS.insert(&key, &local, BPF_ANY as u64);
            let _ = ACCEPTED_LOCAL.remove(&peer);
        } else {
            let _ = LOCAL_ADDRS.remove(&key);
        }
    }
    0
}

/// Sends a [`ProcessHint`] the first time a process opens a connection, waking the reader
/// at once so it can read the process's identity while the process exists.
#[inline(always)]
fn announce(tgid: u32) {
    if SEEN_TGIDS.get_ptr(&tgid).is_some() {
        return;
    }
    let _ = SEEN_TGIDS.insert(&tgid, &1, BPF_ANY as u64);
    let hint = ProcessHint {
        tgid,
        _pad: 0,
        // SAFETY: helper without memory arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    // A lost hint only costs the identity of a process that exits very quickly.
    let _ =
        HTTP_EVENTS.output::<ProcessHint>(&hint, aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64);
}

#[inline(always)]
fn peer_key(info: &ConnInfo) -> PeerKey {
    PeerKey {
        addr: info.peer_addr,
        port: info.peer_port,
        family: info.family,
        _pad: 0,
    }
}

/// Fills the peer address from a user `sockaddr` (IPv4 or IPv6; others stay unknown).
#[inline(always)]
fn read_sockaddr(ptr: u64, info: &mut ConnInfo) {
    // SAFETY (all reads): user memory read through the fault-safe helper.
    let Ok(family) = (unsafe { bpf_probe_read_user((ptr) as *const u16) }) else {
        return;
    };
    let Ok(port) = (unsafe { bpf_probe_read_user((ptr + 2) as *const u16) }) else {
        return;
    };
    match family {
        AF_INET => {
            if let Ok(addr) = unsafe { bpf_probe_read_user((ptr + 4) as *const [u8; 4]) } {
                info.peer_addr[0] = addr[0];
                info.peer_addr[1] = addr[1];
                info.peer_addr[2] = addr[2];
                info.peer_addr[3] = addr[3];
                info.family = AF_INET;
                info.peer_port = u16::from_be(port);
            }
        }
        AF_INET6 => {
            if let Ok(addr) = unsafe { bpf_probe_read_user((ptr + 8) as *const [u8; 16]) } {
                info.peer_addr = addr;
                info.family = AF_INET6;
                info.peer_port = u16::from_be(port);
            }
        }
        _ => {}
    }
}

/// `close(fd)`: the socket (if it was one) is gone.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let fd = ctx_u64(&ctx, global(&SYSCALL_ARGS_OFFSET));
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        kind: conn_kind::FD,
        id: fd as u32 as u64,
    };
    if let Some(conn) = CONNS.get_ptr(&key) {
        // SAFETY: a live map value, copied before the entry is removed.
        let (info, pending) = unsafe { ((*conn).info, (*conn).inflight.method) };
        let _ = CONNS.remove(&key);
        let _ = LOCAL_ADDRS.remove(&key);
        if pending != method::NONE {
            bump(Counter::HttpUnanswered);
        }
        if info.role == role::ACCEPTED && info.family != 0 {
            let _ = PEER_OWNERS.remove(&peer_key(&info));
        }
    }
    0
}
