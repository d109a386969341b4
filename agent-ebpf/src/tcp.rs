//! TCP connections: `sock:inet_sock_set_state` tracks outbound connects from SYN_SENT (in the
//! connecting task's context) to ESTABLISHED (success, with the connect time) or CLOSE
//! (failure), and their end; `tcp:tcp_retransmit_skb` reports retransmits, attributed to the
//! connecting task when the socket is tracked.
//!
//! For spans it also learns each connection's local endpoint: an outbound socket's `{tgid,
//! fd}` at SYN_SENT (from the thread's `connect` arguments) and its local address at
//! ESTABLISHED (`LOCAL_ADDRS`); a passively opened socket's local address at its
//! ESTABLISHED, keyed by the remote endpoint until `accept` claims it (`ACCEPTED_LOCAL`).
//!
//! Must not: touch packet data; only tracepoint fields and the current task's ids are read.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sonde_ebpf_common::{
    COMM_LEN, ConnKey, Counter, PeerKey, TcpEvent, TcpSock,
    http::{conn_kind, io_kind},
    tcp::{kind, owner, state},
};

use crate::{
    filter,
    maps::{
        ACCEPTED_LOCAL, LOCAL_ADDRS, PEER_OWNERS, RING_TCP, SOCK_FDS, SOCK_STATE_OFFSETS, SYS_ARGS,
        TCP_EVENTS, TCP_RETRANSMIT_OFFSETS, TCP_SOCKS, bump, global_of, slot_index, wakeup_flags,
    },
};

const IPPROTO_TCP: u16 = 6;
const AF_INET6: u16 = 10;

/// Addresses and ports as the two tracepoints lay them out.
struct Endpoints {
    family: u16,
    sport: u16,
    dport: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// Reads the endpoint fields at the given offsets.
#[inline(always)]
fn endpoints(
    ctx: &TracePointContext,
    family: u32,
    sport: u32,
    dport: u32,
    v4: (u32, u32),
    v6: (u32, u32),
) -> Result<Endpoints, i32> {
    // SAFETY (all reads): offsets come from the tracepoint's tracefs format.
    unsafe {
        let family: u16 = ctx.read_at(family as usize)?;
        let sport: u16 = ctx.read_at(sport as usize)?;
        let dport: u16 = ctx.read_at(dport as usize)?;
        let mut saddr = [0u8; 16];
        let mut daddr = [0u8; 16];
        if family == AF_INET6 {
            saddr = ctx.read_at(v6.0 as usize)?;
            daddr = ctx.read_at(v6.1 as usize)?;
        } else {
            let s: [u8; 4] = ctx.read_at(v4.0 as usize)?;
            let d: [u8; 4] = ctx.read_at(v4.1 as usize)?;
            saddr[..4].copy_from_slice(&s);
            daddr[..4].copy_from_slice(&d);
        }
        Ok(Endpoints {
            family,
            sport,
            dport,
            saddr,
            daddr,
        })
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if try_set_state(&ctx).is_err() {
        bump(Counter::TcpReadError);
    }
    0
}

fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let o = global_of(&SOCK_STATE_OFFSETS);
    // SAFETY (all reads): offsets come from the tracepoint's tracefs format.
    let protocol: u16 = unsafe { ctx.read_at(o.protocol as usize)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let old: i32 = unsafe { ctx.read_at(o.oldstate as usize)? };
    let new: i32 = unsafe { ctx.read_at(o.newstate as usize)? };
    let skaddr: u64 = unsafe { ctx.read_at(o.skaddr as usize)? };

    if new == state::SYN_SENT {
        // connect(): we run in the connecting task.
        if !filter::allowed() {
            return Ok(());
        }
        let sock = TcpSock {
            // SAFETY (both): helpers without memory arguments.
            start_ns: unsafe { bpf_ktime_get_ns() },
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            established: 0,
            comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        };
        if TCP_SOCKS.insert(skaddr, sock, BPF_ANY as u64).is_err() {
            bump(Counter::TcpSocksFull);
        }
        remember_fd(skaddr);
        return Ok(());
    }
    if new == state::ESTABLISHED && old == state::SYN_RECV {
        // A passively opened connection (softirq context): its local endpoint, until the
        // accepting process claims it by the remote endpoint.
        let ends = endpoints(
            ctx,
            o.family,
            o.sport,
            o.dport,
            (o.saddr, o.daddr),
            (o.saddr_v6, o.daddr_v6),
        )?;
        let remote = PeerKey {
            addr: ends.daddr,
            port: ends.dport,
            family: ends.family,
            _pad: 0,
        };
        let local = PeerKey {
            addr: ends.saddr,
            port: ends.sport,
            family: ends.family,
            _pad: 0,
        };
        let _ = ACCEPTED_LOCAL.insert(&remote, &local, BPF_ANY as u64);
        return Ok(());
    }
    let event_kind = if old == state::SYN_SENT {
        if new == state::ESTABLISHED {
            kind::CONNECT_OK
        } else if new == state::CLOSE {
            kind::CONNECT_FAILED
        } else {
            return Ok(());
        }
    } else if old == state::ESTABLISHED {
        kind::CLOSED
    } else {
        return Ok(());
    };
    let Some(sock) = TCP_SOCKS.get_ptr(&skaddr) else {
        return Ok(());
    };
    // SAFETY: a live map value, copied before the entry may be removed.
    let sock = unsafe { *sock };
    let ends = endpoints(
        ctx,
        o.family,
        o.sport,
        o.dport,
        (o.saddr, o.daddr),
        (o.saddr_v6, o.daddr_v6),
    )?;
    // SAFETY: helper without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let duration = if event_kind == kind::CLOSED {
        0
    } else {
        now.saturating_sub(sock.start_ns)
    };
    if event_kind == kind::CONNECT_OK {
        if let Some(s) = TCP_SOCKS.get_ptr_mut(&skaddr) {
            // SAFETY: a live map value.
            unsafe { (*s).established = 1 };
        }
        if let Some(key) = SOCK_FDS.get_ptr(&skaddr) {
            // SAFETY: a live map value, copied before the entry is removed.
            let key = unsafe { *key };
            let local = PeerKey {
                addr: ends.saddr,
                port: ends.sport,
                family: ends.family,
                _pad: 0,
            };
            let _ = LOCAL_ADDRS.insert(&key, &local, BPF_ANY as u64);
            let _ = SOCK_FDS.remove(&skaddr);
        }
    } else {
        if event_kind == kind::CONNECT_FAILED {
            let _ = SOCK_FDS.remove(&skaddr);
        }
        let _ = TCP_SOCKS.remove(&skaddr);
    }
    submit(&TcpEvent {
        ts_ns: now,
        duration_ns: duration,
        cgroup_id: sock.cgroup_id,
        tgid: sock.tgid,
        kind: event_kind,
        tracked: owner::OUTBOUND,
        family: ends.family,
        sport: ends.sport,
        dport: ends.dport,
        state: 0,
        saddr: ends.saddr,
        daddr: ends.daddr,
        comm: sock.comm,
    });
    Ok(())
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    if try_retransmit(&ctx).is_err() {
        bump(Counter::TcpReadError);
    }
    0
}

fn try_retransmit(ctx: &TracePointContext) -> Result<(), i32> {
    let o = global_of(&TCP_RETRANSMIT_OFFSETS);
    // SAFETY (all reads): offsets come from the tracepoint's tracefs format.
    let skaddr: u64 = unsafe { ctx.read_at(o.skaddr as usize)? };
    let tcp_state: i32 = unsafe { ctx.read_at(o.state as usize)? };
    let ends = endpoints(
        ctx,
        o.family,
        o.sport,
        o.dport,
        (o.saddr, o.daddr),
        (o.saddr_v6, o.daddr_v6),
    )?;
    let peer = PeerKey {
        addr: ends.daddr,
        port: ends.dport,
        family: ends.family,
        _pad: 0,
    };
    let (cgroup_id, tgid, comm, tracked) = if let Some(sock) = TCP_SOCKS.get_ptr(&skaddr) {
        // SAFETY: a live map value.
        unsafe {
            (
                (*sock).cgroup_id,
                (*sock).tgid,
                (*sock).comm,
                owner::OUTBOUND,
            )
        }
    } else if let Some(sock) = PEER_OWNERS.get_ptr(&peer) {
        // SAFETY: a live map value.
        unsafe {
            (
                (*sock).cgroup_id,
                (*sock).tgid,
                (*sock).comm,
                owner::INBOUND,
            )
        }
    } else {
        (0, 0, [0; COMM_LEN], owner::NONE)
    };
    submit(&TcpEvent {
        // SAFETY: helper without memory arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        duration_ns: 0,
        cgroup_id,
        tgid,
        kind: kind::RETRANSMIT,
        tracked,
        family: ends.family,
        sport: ends.sport,
        dport: ends.dport,
        state: tcp_state as u32,
        saddr: ends.saddr,
        daddr: ends.daddr,
        comm,
    });
    Ok(())
}

#[inline(always)]
fn submit(event: &TcpEvent) {
    if TCP_EVENTS
        .output::<TcpEvent>(event, wakeup_flags(&TCP_EVENTS, RING_TCP))
        .is_err()
    {
        bump(Counter::TcpRingbufFull);
    } else {
        bump(Counter::TcpEvents);
    }
}

/// At SYN_SENT, in the connecting task: the fd its `connect` call is for (from the thread's
/// `SYS_ARGS` slot), so ESTABLISHED can file the local endpoint under `{tgid, fd}`. Clears
/// what a previous socket on that fd left.
#[inline(always)]
fn remember_fd(skaddr: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = SYS_ARGS.get_ptr(slot_index(pid_tgid)) else {
        return;
    };
    // SAFETY: a live array slot.
    let (holder, call, fd) = unsafe { ((*args).pid_tgid, (*args).kind, (*args).fd) };
    if holder != pid_tgid || call != io_kind::CONNECT {
        return;
    }
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        kind: conn_kind::FD,
        id: fd as u64,
    };
    let _ = LOCAL_ADDRS.remove(&key);
    let _ = SOCK_FDS.insert(&skaddr, &key, BPF_ANY as u64);
}
