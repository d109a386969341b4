//! Sonde's kernel-side programs.
//!
//! Owns: the eBPF programs and maps the agent loads. Each program is attached by the agent
//! only if its hook exists on the running kernel; none may assume another one is attached.
//! Must not: use kprobes or fentry (refused on hardened kernels), rely on CO-RE relocations
//! (Rust cannot emit them: field offsets arrive as globals set by the agent from tracefs), or
//! put more than a few hundred bytes on the 512-byte stack (use ring-buffer reservations or
//! per-CPU scratch maps).
//!
//! Programs:
//! - `sched_process_exec` (tracepoint `sched:sched_process_exec`): one [`ExecEvent`] per exec
//!   into the `EXEC_EVENTS` ring buffer.

#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
    },
    macros::{map, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use sonde_ebpf_common::{Counter, ExecEvent};

/// Offset of `__data_loc char[] filename` in `sched:sched_process_exec`; set by the agent
/// from tracefs. The defaults are the layout of every kernel since 3.x.
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFFSET: u32 = 8;
/// Offset of `pid_t pid` in `sched:sched_process_exec`.
#[unsafe(no_mangle)]
static EXEC_PID_OFFSET: u32 = 12;
/// Offset of `pid_t old_pid` in `sched:sched_process_exec`.
#[unsafe(no_mangle)]
static EXEC_OLD_PID_OFFSET: u32 = 16;

#[map]
static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
fn global(value: &u32) -> usize {
    // SAFETY: reading our own static; volatile so the loader-set value is used, not the
    // compile-time default.
    unsafe { core::ptr::read_volatile(value) as usize }
}

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    bump(Counter::ExecSeen);
    match try_sched_process_exec(&ctx) {
        Ok(()) => 0,
        Err(counter) => {
            if counter == Counter::ExecReadError {
                warn!(
                    &ctx,
                    "sched_process_exec: cannot read the tracepoint fields"
                );
            }
            bump(counter);
            0
        }
    }
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), Counter> {
    // SAFETY (all `read_at`): offsets come from this tracepoint's format in tracefs.
    let filename_loc: u32 = unsafe { ctx.read_at(global(&EXEC_FILENAME_OFFSET)) }
        .map_err(|_| Counter::ExecReadError)?;
    let pid: i32 =
        unsafe { ctx.read_at(global(&EXEC_PID_OFFSET)) }.map_err(|_| Counter::ExecReadError)?;
    let old_pid: i32 =
        unsafe { ctx.read_at(global(&EXEC_OLD_PID_OFFSET)) }.map_err(|_| Counter::ExecReadError)?;

    let Some(mut entry) = EXEC_EVENTS.reserve::<ExecEvent>(0) else {
        return Err(Counter::ExecRingbufFull);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring-buffer slot of the right
    // size; every field is written before submit.
    unsafe {
        (*event).ktime_ns = bpf_ktime_get_ns();
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*event).pid = pid as u32;
        (*event).old_pid = old_pid as u32;
        (*event).uid = bpf_get_current_uid_gid() as u32;
        (*event)._pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        // `__data_loc`: low 16 bits are the offset from the start of the record.
        let name_ptr = (ctx.as_ptr() as *const u8).add((filename_loc & 0xffff) as usize);
        (*event).filename_len =
            match bpf_probe_read_kernel_str_bytes(name_ptr, &mut (*event).filename) {
                Ok(bytes) => bytes.len() as u32,
                Err(_) => 0,
            };
    }
    entry.submit(0);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
