//! Data syscalls on watched sockets, seen one of three ways the agent chooses at load (the
//! hooks of the others are not attached):
//! - socket (Linux 6.3+): the raw tracepoints `sock_recv_length` and `sock_send_length` fire
//!   inside every socket read and write, after the data moved; syscall number, `fd`, buffer
//!   and length come from the task's saved registers, and only the hooked syscalls below
//!   are handled. No syscall tracepoint sees data.
//! - syscall exit (5.15+): reads (`read`/`recvfrom`/`readv`/`recvmsg`) at their exit by
//!   `sys_exit_read_regs` alone, taking `fd` and the buffer from the saved registers.
//! - enter + exit (older kernels, unknown register layouts): the enter programs keep the
//!   buffer pointer of reads on fds in `CONNS` for the shared exit program `sys_exit_io`.
//!
//! On both syscall paths writes (`write`/`sendto`/`writev`/`sendmsg`) are handled at entry,
//! where the data already is, with no per-call map entry and no exit program (the bytes
//! asked to be written stand for the bytes written). Every path hands the data to
//! [`crate::http`].
//!
//! Must not: read user data itself (that is [`crate::http`]'s bounded window), beyond the
//! iovec/msghdr headers that locate it.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sonde_ebpf_common::{
    Conn, ConnKey, Counter, SyscallArgs,
    http::{conn_kind, io_kind},
};

use crate::{
    http::{self, Channel, Data},
    maps::{
        CONNS, REGISTER_READS, SOCKET_DATA, SYSCALL_ARGS_OFFSET, SYSCALL_RET_OFFSET, bump, ctx_i32,
        ctx_u64, global, global_of, maybe_watched, put_syscall_args, set, take_syscall_args,
    },
};

/// iovecs whose lengths are summed for a vectored write's size.
const MAX_IOVECS: u64 = 4;

/// `read(fd, buf, count)` and `recvfrom(fd, buf, len, flags, addr, addrlen)`.
#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    enter_read(&ctx, io_kind::READ);
    0
}

/// `readv(fd, iov, iovcnt)`.
#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    enter_read(&ctx, io_kind::READV);
    0
}

/// `recvmsg(fd, msg, flags)`.
#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    enter_read(&ctx, io_kind::RECVMSG);
    0
}

/// `write(fd, buf, count)` and `sendto(fd, buf, len, flags, addr, addrlen)`.
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    enter_write(&ctx, io_kind::WRITE);
    0
}

/// `writev(fd, iov, iovcnt)`.
#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    enter_write(&ctx, io_kind::WRITEV);
    0
}

/// `sendmsg(fd, msg, flags)`.
#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    enter_write(&ctx, io_kind::SENDMSG);
    0
}

/// The channel and its `CONNS` entry when the fd argument is a watched socket.
#[inline(always)]
fn watched(ctx: &TracePointContext) -> Option<(Channel, *mut Conn)> {
    let fd = ctx_u64(ctx, global(&SYSCALL_ARGS_OFFSET)) as u32;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !maybe_watched(tgid) {
        return None;
    }
    connection(tgid, fd, 0)
}

/// The channel and `CONNS` entry of fd `fd` of process `tgid` when it is a watched socket
/// and, from the socket hooks, still the socket `sk` (0 from the syscall hooks: unchecked).
#[inline(always)]
fn connection(tgid: u32, fd: u32, sk: u64) -> Option<(Channel, *mut Conn)> {
    let key = ConnKey {
        tgid,
        kind: conn_kind::FD,
        id: fd as u64,
    };
    let conn = CONNS.get_ptr_mut(&key)?;
    if !same_socket(conn, sk) {
        return None;
    }
    Some((Channel { key, fd: fd as i32 }, conn))
}

#[inline(always)]
fn enter_read(ctx: &TracePointContext, kind: u32) {
    let Some((channel, _)) = watched(ctx) else {
        return;
    };
    put_syscall_args(&SyscallArgs {
        pid_tgid: bpf_get_current_pid_tgid(),
        ptr: ctx_u64(ctx, global(&SYSCALL_ARGS_OFFSET) + 8),
        fd: channel.fd as u32,
        kind,
    });
}

#[inline(always)]
fn enter_write(ctx: &TracePointContext, kind: u32) {
    let Some((channel, conn)) = watched(ctx) else {
        return;
    };
    let base = global(&SYSCALL_ARGS_OFFSET);
    let data = outgoing(kind, ctx_u64(ctx, base + 8), ctx_u64(ctx, base + 16));
    match data {
        Some(data) if data.total > 0 => http::on_data(&channel, Some(conn), &data, false),
        Some(_) => {}
        None => bump(Counter::HttpReadError),
    }
}

/// The data a write of `kind` passes: `ptr` and `arg2` are its arguments 1 and 2 (buffer and
/// length, iovec array and count, or msghdr).
#[inline(always)]
fn outgoing(kind: u32, ptr: u64, arg2: u64) -> Option<Data> {
    match kind {
        io_kind::WRITE => Some(Data {
            ptr,
            len: arg2,
            total: arg2,
            ingress: false,
        }),
        io_kind::WRITEV => vectored(ptr, arg2),
        _ => msghdr_iov(ptr).and_then(|(iov, n)| vectored(iov, n)),
    }
}

/// `msg->msg_iov` and `msg->msg_iovlen` of a user `struct user_msghdr`
/// (`{ void *msg_name; int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen; … }`).
#[inline(always)]
fn msghdr_iov(msg: u64) -> Option<(u64, u64)> {
    // SAFETY: user memory read through the fault-safe helper.
    let fields = unsafe { bpf_probe_read_user((msg + 16) as *const [u64; 2]) }.ok()?;
    Some((fields[0], fields[1]))
}

/// Outgoing data of an iovec array: the first segment, and the total of the first
/// [`MAX_IOVECS`] lengths (one user read for all of them).
#[inline(always)]
fn vectored(iov: u64, count: u64) -> Option<Data> {
    // struct iovec { void *iov_base; size_t iov_len; }
    let mut iovs = [0u64; 2 * MAX_IOVECS as usize];
    for slot in iovs.iter_mut() {
        set(slot, 0);
    }
    let n = if count > MAX_IOVECS {
        MAX_IOVECS
    } else {
        count
    };
    if n == 0 {
        return None;
    }
    // SAFETY: `iovs` holds MAX_IOVECS iovecs and `n` is at most that; the helper faults
    // safely on a bad user pointer.
    let rc = unsafe {
        generated::bpf_probe_read_user(iovs.as_mut_ptr().cast(), (16 * n) as u32, iov as *const _)
    };
    if rc < 0 {
        return None;
    }
    Some(Data {
        ptr: iovs[0],
        len: iovs[1],
        total: iovs[1] + iovs[3] + iovs[5] + iovs[7],
        ingress: false,
    })
}

/// Exit of the read syscalls (and of nothing else: the slot is keyed by thread).
#[tracepoint]
pub fn sys_exit_io(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = take_syscall_args(pid_tgid) else {
        return 0;
    };
    let ret = ctx_u64(&ctx, global(&SYSCALL_RET_OFFSET)) as i64;
    if ret > 0 {
        exit_read(&args, ret as u64, 0);
    }
    0
}

/// Exit of the read syscalls, arguments from the saved registers: no enter hook, no slot.
#[tracepoint]
pub fn sys_exit_read_regs(ctx: TracePointContext) -> u32 {
    let ret = ctx_u64(&ctx, global(&SYSCALL_RET_OFFSET)) as i64;
    let pid_tgid = bpf_get_current_pid_tgid();
    if ret <= 0 || !maybe_watched((pid_tgid >> 32) as u32) {
        return 0;
    }
    let reads = global_of(&REGISTER_READS);
    let Some(kind) = reads.kind(ctx_i32(&ctx, reads.nr as usize)) else {
        return 0;
    };
    let regs = saved_registers();
    let (fd, ptr) = (register(regs, reads.fd), register(regs, reads.buf));
    exit_read(
        &SyscallArgs {
            pid_tgid,
            ptr,
            fd: fd as u32,
            kind,
        },
        ret as u64,
        0,
    );
    0
}

/// `sock:sock_recv_length(sk, ret, flags)`: a socket read returned `ret` bytes. Handled when
/// it is one of the hooked read syscalls (number and arguments in the saved registers) and
/// not a peek.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> i32 {
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    let pid_tgid = bpf_get_current_pid_tgid();
    if ret <= 0 || flags & NOT_STREAM_DATA != 0 || !maybe_watched((pid_tgid >> 32) as u32) {
        return 0;
    }
    let layout = global_of(&SOCKET_DATA);
    let regs = saved_registers();
    let Some(kind) = layout.read_kind(register(regs, layout.nr) as i32) else {
        return 0;
    };
    exit_read(
        &SyscallArgs {
            pid_tgid,
            ptr: register(regs, layout.buf),
            fd: register(regs, layout.fd) as u32,
            kind,
        },
        ret as u64,
        ctx.arg(0),
    );
    0
}

/// `sock:sock_send_length(sk, ret, flags)`: a socket write sent `ret` bytes; the data is
/// still in the caller's buffer. Handled like [`sys_enter_write`], with the bytes sent
/// instead of the bytes asked for.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> i32 {
    let ret: i32 = ctx.arg(1);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if ret <= 0 || !maybe_watched(tgid) {
        return 0;
    }
    let layout = global_of(&SOCKET_DATA);
    let regs = saved_registers();
    let Some(kind) = layout.write_kind(register(regs, layout.nr) as i32) else {
        return 0;
    };
    let Some((channel, conn)) = connection(tgid, register(regs, layout.fd) as u32, ctx.arg(0))
    else {
        return 0;
    };
    let sent = ret as u64;
    match outgoing(kind, register(regs, layout.buf), register(regs, layout.len)) {
        Some(mut data) => {
            data.total = sent;
            if data.len > sent {
                data.len = sent;
            }
            http::on_data(&channel, Some(conn), &data, false);
        }
        None => bump(Counter::HttpReadError),
    }
    0
}

/// Receive flags whose data is not the stream's next bytes: `MSG_PEEK` (read again later),
/// `MSG_TRUNC` (discarded, not copied), `MSG_ERRQUEUE` (the error queue).
const NOT_STREAM_DATA: i32 = 0x2 | 0x20 | 0x2000;

/// Whether kernel socket `sk` (0: unknown, the syscall paths) is the one `conn`'s fd held
/// when the socket hooks first saw data on it. The saved registers name the syscall the
/// task is in; io_uring runs socket work on the way out of any syscall, whose fd may be
/// another watched socket: that data is not this connection's.
#[inline(always)]
fn same_socket(conn: *mut Conn, sk: u64) -> bool {
    if sk == 0 {
        return true;
    }
    // SAFETY: `conn` is a live `CONNS` value; a racing update of the same connection only
    // repeats this first write.
    let known = unsafe { (*conn).sk };
    if known == 0 {
        unsafe { (*conn).sk = sk };
        true
    } else if known == sk {
        true
    } else {
        bump(Counter::HttpForeignSocket);
        false
    }
}

/// The current task's saved user registers.
#[inline(always)]
fn saved_registers() -> *const u8 {
    // SAFETY: both helpers are valid in tracing programs since 5.15 (the agent falls back to
    // other hooks when the verifier refuses a program using them); the result is a
    // BTF-typed pointer to the task's `struct pt_regs`.
    unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) as *const u8 }
}

/// The register at byte `offset` of the saved registers.
#[inline(always)]
fn register(regs: *const u8, offset: u32) -> u64 {
    // SAFETY: the verifier lets a program load from a BTF-typed pointer directly, checking
    // the offset against `struct pt_regs` (a fault-safe load).
    unsafe { core::ptr::read_volatile(regs.add(offset as usize).cast::<u64>()) }
}

/// Hands the `total` bytes a read returned to [`crate::http`] when its fd is watched (and,
/// from the socket hooks, still the socket `sk`; 0 from the syscall hooks).
#[inline(always)]
fn exit_read(args: &SyscallArgs, total: u64, sk: u64) {
    let Some((channel, conn)) = connection((args.pid_tgid >> 32) as u32, args.fd, sk) else {
        return;
    };
    let Some((ptr, len)) = first_segment(args, total) else {
        bump(Counter::HttpReadError);
        return;
    };
    let data = Data {
        ptr,
        len,
        total,
        ingress: true,
    };
    http::on_data(&channel, Some(conn), &data, false);
}

/// The first contiguous piece of a read's data: the buffer, or `iov[0]` (directly or through
/// a `msghdr`), clamped to the bytes transferred.
#[inline(always)]
fn first_segment(args: &SyscallArgs, total: u64) -> Option<(u64, u64)> {
    let iov = match args.kind {
        io_kind::READ => return Some((args.ptr, total)),
        io_kind::READV => args.ptr,
        io_kind::RECVMSG => msghdr_iov(args.ptr)?.0,
        _ => return None,
    };
    // SAFETY: user memory read through the fault-safe helper.
    let iov0 = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    let len = if iov0[1] < total { iov0[1] } else { total };
    Some((iov0[0], len))
}
