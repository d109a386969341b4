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
    http::{conn_kind, io_kind, role},
};

use crate::{
    filter,
    maps::{
        CONNS, HTTP_EVENTS, INFLIGHT, PEER_OWNERS, SEEN_TGIDS, SYS_ARGS, SYSCALL_ARGS_OFFSET,
        SYSCALL_RET_OFFSET, bump, global,
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
    // SAFETY (both reads): offsets checked against this tracepoint's tracefs format.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(base) }) else {
        bump(Counter::HttpReadError);
        return;
    };
    let Ok(ptr) = (unsafe { ctx.read_at::<u64>(base + 8) }) else {
        bump(Counter::HttpReadError);
        return;
    };
    let args = SyscallArgs {
        ptr,
        fd: fd as u32,
        kind,
    };
    if SYS_ARGS
        .insert(bpf_get_current_pid_tgid(), args, BPF_ANY as u64)
        .is_err()
    {
        bump(Counter::HttpArgsFull);
    }
}

/// Exit of `accept`, `accept4` and `connect`.
#[tracepoint]
pub fn sys_exit_sock(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = SYS_ARGS.get_ptr(&pid_tgid) else {
        return 0;
    };
    // SAFETY: a live map value, copied before the entry is removed.
    let args = unsafe { *args };
    let _ = SYS_ARGS.remove(&pid_tgid);
    // SAFETY: offset checked against this tracepoint's tracefs format.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(global(&SYSCALL_RET_OFFSET)) }) else {
        bump(Counter::HttpReadError);
        return 0;
    };
    let (fd, conn_role) = match args.kind {
        io_kind::ACCEPT if ret >= 0 => (ret as u32, role::ACCEPTED),
        io_kind::CONNECT if ret == 0 || ret == -EINPROGRESS => (args.fd, role::CONNECTED),
        _ => return 0,
    };
    if !filter::allowed() {
        bump(Counter::HttpFiltered);
        return 0;
    }
    let mut info = ConnInfo {
        // SAFETY: helper without memory arguments.
        opened_ns: unsafe { bpf_ktime_get_ns() },
        peer_addr: [0; 16],
        peer_port: 0,
        family: 0,
        role: conn_role,
    };
    if args.ptr != 0 {
        read_sockaddr(args.ptr, &mut info);
    }
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        kind: conn_kind::FD,
        id: fd as u64,
    };
    // A new socket on a reused fd number: forget what the old one was waiting for.
    let _ = INFLIGHT.remove(&key);
    if CONNS.insert(&key, &info, BPF_ANY as u64).is_err() {
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
        let _ = PEER_OWNERS.insert(&peer_key(&info), &owner, BPF_ANY as u64);
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
    let _ = HTTP_EVENTS.output::<ProcessHint>(&hint, aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64);
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
    // SAFETY: offset checked against this tracepoint's tracefs format.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(global(&SYSCALL_ARGS_OFFSET)) }) else {
        return 0;
    };
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        kind: conn_kind::FD,
        id: fd as u32 as u64,
    };
    if let Some(info) = CONNS.get_ptr(&key) {
        // SAFETY: a live map value, copied before the entry is removed.
        let info = unsafe { *info };
        let _ = CONNS.remove(&key);
        let _ = INFLIGHT.remove(&key);
        if info.role == role::ACCEPTED && info.family != 0 {
            let _ = PEER_OWNERS.remove(&peer_key(&info));
        }
    }
    0
}
