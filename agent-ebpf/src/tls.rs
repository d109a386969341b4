//! HTTPS through OpenSSL: uprobes on `SSL_read`, `SSL_read_ex`, `SSL_write` and
//! `SSL_write_ex` keep the call's arguments; the shared uretprobe hands the plaintext that
//! was read or written to [`crate::http`], keyed by the `SSL *` (one per connection).
//!
//! Must not: read the plaintext itself (that is [`crate::http`]'s bounded window).

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sonde_ebpf_common::{ConnKey, Counter, SslArgs, http::conn_kind};

use crate::{
    http::{self, Channel, Data},
    maps::{SSL_ARGS, bump},
};

/// `int SSL_read(SSL *ssl, void *buf, int num)`.
#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, true, false);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`.
#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, true, true);
    0
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`.
#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, false, false);
    0
}

/// `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`.
#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, false, true);
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, is_read: bool, ex: bool) {
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let out_len = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    if ex && out_len == 0 {
        return;
    }
    let args = SslArgs {
        ssl,
        buf,
        out_len,
        fd: -1,
        is_read: is_read as u32,
    };
    if SSL_ARGS
        .insert(bpf_get_current_pid_tgid(), args, BPF_ANY as u64)
        .is_err()
    {
        bump(Counter::HttpArgsFull);
    }
}

/// Return of all four functions.
#[uretprobe]
pub fn ssl_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = SSL_ARGS.get_ptr(&pid_tgid) else {
        return 0;
    };
    // SAFETY: a live map value, copied before the entry is removed.
    let args = unsafe { *args };
    let _ = SSL_ARGS.remove(&pid_tgid);
    let ret = ctx.ret::<u64>() as i32 as i64;
    let bytes = if args.out_len != 0 {
        if ret != 1 {
            return 0;
        }
        // SAFETY: user memory read through the fault-safe helper.
        match unsafe { bpf_probe_read_user(args.out_len as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                bump(Counter::HttpReadError);
                return 0;
            }
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return 0;
    };
    if bytes == 0 {
        return 0;
    }
    let channel = Channel {
        key: ConnKey {
            tgid: (pid_tgid >> 32) as u32,
            kind: conn_kind::SSL,
            id: args.ssl,
        },
        fd: args.fd,
    };
    let data = Data {
        ptr: args.buf,
        len: bytes,
        total: bytes,
        ingress: args.is_read != 0,
    };
    http::on_data(&channel, &data, true);
    0
}
