//! HTTPS through OpenSSL: uprobes on `SSL_read`, `SSL_read_ex`, `SSL_write` and
//! `SSL_write_ex` keep the call's arguments; the shared uretprobe hands the plaintext that
//! was read or written to [`crate::http`], keyed by the `SSL *` (one per connection).
//!
//! Must not: read the plaintext itself (that is [`crate::http`]'s bounded window).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sonde_ebpf_common::{ConnKey, Counter, SslArgs, http::conn_kind};

use crate::{
    http::{self, Channel, Data},
    maps::{CONNS, SSL_ARGS, bump, slot_index},
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
    let out_len = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    if ex && out_len == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let args = SslArgs {
        pid_tgid,
        ssl,
        buf,
        out_len,
        fd: -1,
        is_read: is_read as u32,
    };
    if let Some(slot) = SSL_ARGS.get_ptr_mut(slot_index(pid_tgid)) {
        // SAFETY: a live array slot; only this thread uses it until the call returns
        // (collisions are counted and the newer call wins).
        unsafe {
            let holder = (*slot).pid_tgid;
            if holder != 0 && holder != pid_tgid {
                bump(Counter::HttpArgsFull);
            }
            *slot = args;
        }
    }
}

/// Return of all four functions.
#[uretprobe]
pub fn ssl_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = SSL_ARGS.get_ptr_mut(slot_index(pid_tgid)) else {
        return 0;
    };
    // SAFETY: a live array slot, copied and freed.
    let args = unsafe {
        if (*slot).pid_tgid != pid_tgid {
            return 0;
        }
        let args = *slot;
        (*slot).pid_tgid = 0;
        args
    };
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
    let conn = CONNS.get_ptr_mut(&channel.key);
    http::on_data(&channel, conn, &data, true);
    0
}
