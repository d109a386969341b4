//! `sched_process_exec` (tracepoint `sched:sched_process_exec`): one [`ExecEvent`] per exec
//! into the `EXEC_EVENTS` ring buffer.
//!
//! Must not: read more than the tracepoint record and the current task's comm/ids.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use sonde_ebpf_common::{Counter, ExecEvent};

use crate::maps::{
    EXEC_EVENTS, EXEC_FILENAME_OFFSET, EXEC_OLD_PID_OFFSET, EXEC_PID_OFFSET, SEEN_TGIDS, bump,
    global,
};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    bump(Counter::ExecSeen);
    // A new program: its identity (service name) may differ; announce it again.
    let _ = SEEN_TGIDS.remove(&((bpf_get_current_pid_tgid() >> 32) as u32));
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
