//! Data syscalls on watched sockets: `read`/`recvfrom`/`readv`/`recvmsg` and
//! `write`/`sendto`/`writev`/`sendmsg`. The enter programs keep the buffer pointer of calls on
//! fds in `CONNS`; the shared exit program hands the returned data to [`crate::http`].
//!
//! Also links TLS: an `SSL_read`/`SSL_write` in progress on this thread learns the fd of the
//! socket its nested syscall uses, which gives the TLS exchange its peer address.
//! Must not: read user data itself (that is [`crate::http`]'s bounded window).

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sonde_ebpf_common::{
    ConnKey, Counter, SyscallArgs,
    http::{conn_kind, io_kind},
};

use crate::{
    http::{self, Channel, Data},
    maps::{CONNS, SSL_ARGS, SYS_ARGS, SYSCALL_ARGS_OFFSET, SYSCALL_RET_OFFSET, bump, global},
};

/// `read(fd, buf, count)` and `recvfrom(fd, buf, len, flags, addr, addrlen)`.
#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_kind::READ);
    0
}

/// `readv(fd, iov, iovcnt)`.
#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_kind::READV);
    0
}

/// `recvmsg(fd, msg, flags)`.
#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_kind::RECVMSG);
    0
}

/// `write(fd, buf, count)` and `sendto(fd, buf, len, flags, addr, addrlen)`.
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_kind::WRITE);
    0
}

/// `writev(fd, iov, iovcnt)`.
#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_kind::WRITEV);
    0
}

/// `sendmsg(fd, msg, flags)`.
#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter(&ctx, io_kind::SENDMSG);
    0
}

#[inline(always)]
fn enter(ctx: &TracePointContext, kind: u32) {
    let base = global(&SYSCALL_ARGS_OFFSET);
    // SAFETY: offset checked against this tracepoint's tracefs format.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(base) }) else {
        return;
    };
    let fd = fd as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = ConnKey {
        tgid: (pid_tgid >> 32) as u32,
        kind: conn_kind::FD,
        id: fd as u64,
    };
    if CONNS.get_ptr(&key).is_none() {
        return;
    }
    if let Some(ssl) = SSL_ARGS.get_ptr_mut(&pid_tgid) {
        // SAFETY: a live map value of this thread's call in progress.
        unsafe { (*ssl).fd = fd as i32 };
    }
    // SAFETY: as above.
    let Ok(ptr) = (unsafe { ctx.read_at::<u64>(base + 8) }) else {
        bump(Counter::HttpReadError);
        return;
    };
    let args = SyscallArgs {
        ptr,
        fd,
        kind,
    };
    if SYS_ARGS.insert(pid_tgid, args, BPF_ANY as u64).is_err() {
        bump(Counter::HttpArgsFull);
    }
}

/// Exit of every data syscall above.
#[tracepoint]
pub fn sys_exit_io(ctx: TracePointContext) -> u32 {
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
    if ret <= 0 {
        return 0;
    }
    let total = ret as u64;
    let Some((ptr, len)) = first_segment(&args, total) else {
        bump(Counter::HttpReadError);
        return 0;
    };
    let channel = Channel {
        key: ConnKey {
            tgid: (pid_tgid >> 32) as u32,
            kind: conn_kind::FD,
            id: args.fd as u64,
        },
        fd: args.fd as i32,
    };
    let data = Data {
        ptr,
        len,
        total,
        ingress: io_kind::is_ingress(args.kind),
    };
    http::on_data(&channel, &data, false);
    0
}

/// The first contiguous piece of the call's data: the buffer, or `iov[0]` (directly or
/// through a `msghdr`), clamped to the bytes transferred.
#[inline(always)]
fn first_segment(args: &SyscallArgs, total: u64) -> Option<(u64, u64)> {
    let iov = match args.kind {
        io_kind::READ | io_kind::WRITE => return Some((args.ptr, total)),
        io_kind::READV | io_kind::WRITEV => args.ptr,
        io_kind::RECVMSG | io_kind::SENDMSG => {
            // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov; … }
            // SAFETY: user memory read through the fault-safe helper.
            unsafe { bpf_probe_read_user((args.ptr + 16) as *const u64) }.ok()?
        }
        _ => return None,
    };
    // struct iovec { void *iov_base; size_t iov_len; }
    // SAFETY: user memory read through the fault-safe helper.
    let iov0 = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    let len = if iov0[1] < total { iov0[1] } else { total };
    Some((iov0[0], len))
}
