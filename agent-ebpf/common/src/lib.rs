//! Types shared by the kernel programs (`agent-ebpf`) and the agent (user space).
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of pointers and padding-explicit, so the
//! same bytes mean the same thing on both sides of a ring buffer or map. This crate is
//! `no_std` and must stay dependency-free on the kernel side; the `user` feature adds the
//! `aya::Pod` impls the agent needs.
//!
//! Invariant: a layout change here is a change to both sides at once; the agent embeds the
//! object built from the same commit, so the two can never disagree at run time. Compile-time
//! size assertions below catch accidental layout changes.

#![no_std]

/// Length of `task_struct::comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Bytes of an exec'd file name kept in an [`ExecEvent`] (longer names are truncated).
pub const EXEC_FILENAME_LEN: usize = 256;

/// Names of the eBPF programs in the object, as the agent looks them up.
pub mod programs {
    /// Tracepoint program attached to `sched:sched_process_exec`.
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
}

/// Names of the maps in the object.
pub mod maps {
    /// Ring buffer of [`crate::ExecEvent`].
    pub const EXEC_EVENTS: &str = "EXEC_EVENTS";
    /// Per-CPU array of `u64` counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
}

/// Names of the read-only globals the agent sets before loading, and their meaning.
///
/// Rust eBPF cannot emit CO-RE relocations, so tracepoint field offsets are read by the agent
/// from tracefs (`events/<category>/<name>/format`) and passed in as globals.
pub mod globals {
    /// Offset of the `__data_loc char[] filename` field of `sched:sched_process_exec`.
    pub const EXEC_FILENAME_OFFSET: &str = "EXEC_FILENAME_OFFSET";
    /// Offset of the `pid_t pid` field of `sched:sched_process_exec`.
    pub const EXEC_PID_OFFSET: &str = "EXEC_PID_OFFSET";
    /// Offset of the `pid_t old_pid` field of `sched:sched_process_exec`.
    pub const EXEC_OLD_PID_OFFSET: &str = "EXEC_OLD_PID_OFFSET";
}

/// Slots of the per-CPU `COUNTERS` array: kernel-side health the agent exports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Exec events seen by the tracepoint program.
    ExecSeen = 0,
    /// Exec events dropped because the ring buffer was full.
    ExecRingbufFull = 1,
    /// Exec events whose tracepoint fields could not be read.
    ExecReadError = 2,
}

impl Counter {
    /// Number of slots; the size of the `COUNTERS` array.
    pub const COUNT: u32 = 3;
    /// Every slot, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::ExecSeen,
        Counter::ExecRingbufFull,
        Counter::ExecReadError,
    ];
}

/// One `sched:sched_process_exec` event: a process replaced its image with a new program.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the tracepoint fired.
    pub ktime_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Thread group id (the process id seen by user space).
    pub tgid: u32,
    /// `pid` field of the tracepoint (the thread that exec'd).
    pub pid: u32,
    /// `old_pid` field of the tracepoint (differs from `pid` when a non-leader thread exec'd).
    pub old_pid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// Bytes of `filename` that are valid (without the NUL).
    pub filename_len: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// `comm` after the exec, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Path passed to exec, NUL-padded, truncated to [`EXEC_FILENAME_LEN`].
    pub filename: [u8; EXEC_FILENAME_LEN],
}

const _: () = assert!(size_of::<ExecEvent>() == 8 + 8 + 4 * 6 + COMM_LEN + 256);

impl ExecEvent {
    /// The `comm` as bytes without trailing NULs.
    pub fn comm_bytes(&self) -> &[u8] {
        trim_nul(&self.comm)
    }

    /// The file name as bytes (the valid prefix, without trailing NULs).
    pub fn filename_bytes(&self) -> &[u8] {
        let len = (self.filename_len as usize).min(EXEC_FILENAME_LEN);
        trim_nul(&self.filename[..len])
    }
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `ExecEvent` is `repr(C)`, `Copy`, has no padding (asserted above) and every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::ExecEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_and_comm_stop_at_nul_and_length() {
        let mut e = ExecEvent {
            ktime_ns: 0,
            cgroup_id: 0,
            tgid: 1,
            pid: 1,
            old_pid: 1,
            uid: 0,
            filename_len: 8,
            _pad: 0,
            comm: [0; COMM_LEN],
            filename: [0; EXEC_FILENAME_LEN],
        };
        e.comm[..4].copy_from_slice(b"true");
        e.filename[..13].copy_from_slice(b"/usr/bin/true");
        assert_eq!(e.comm_bytes(), b"true");
        // Only `filename_len` bytes are valid even if more are non-zero.
        assert_eq!(e.filename_bytes(), b"/usr/bin");
        e.filename_len = 9999;
        assert_eq!(e.filename_bytes(), b"/usr/bin/true");
    }
}
