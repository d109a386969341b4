//! Sonde's kernel-side programs.
//!
//! Owns: the eBPF programs and maps the agent loads. Each program is attached by the agent
//! only if its hook exists on the running kernel; none may assume another one is attached.
//! Must not: use kprobes or fentry (refused on hardened kernels), rely on CO-RE relocations
//! (Rust cannot emit them: field offsets arrive as globals set by the agent from tracefs), or
//! put more than a few hundred bytes on the 512-byte stack (use ring-buffer reservations or
//! per-CPU scratch maps).
//!
//! Modules: [`maps`] (every map and global), [`exec`] (process execs), [`sockets`]
//! (accept/connect/close: which fds are sockets), [`io`] (read/write syscalls), [`tls`]
//! (OpenSSL uprobes), [`http`] (HTTP/1.x detection and request/response pairing), [`tcp`]
//! (connect outcomes, connection ends, retransmits), [`filter`] (include/exclude rules).

#![no_std]
#![no_main]

mod exec;
mod filter;
mod http;
mod io;
mod maps;
mod sockets;
mod tcp;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
