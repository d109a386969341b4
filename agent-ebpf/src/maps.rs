//! Every map and loader-set global of the object, and the small helpers around them.
//!
//! Owns: map definitions (sizes are defaults; the agent may resize the LRU maps and ring
//! buffers before loading), the globals the agent overrides, the `COUNTERS` bump.
//! Must not: hold program logic.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use sonde_ebpf_common::{
    ConnInfo, ConnKey, Counter, FilterRule, HTTP_WINDOW, Inflight, PeerKey, SockStateOffsets, SslArgs,
    SyscallArgs, TcpRetransmitOffsets, TcpSock, http::FILTER_RULES_MAX,
};

/// Offset of `__data_loc char[] filename` in `sched:sched_process_exec`; set by the agent
/// from tracefs. The defaults are the layout of every kernel since 3.x.
#[unsafe(no_mangle)]
pub static EXEC_FILENAME_OFFSET: u32 = 8;
/// Offset of `pid_t pid` in `sched:sched_process_exec`.
#[unsafe(no_mangle)]
pub static EXEC_PID_OFFSET: u32 = 12;
/// Offset of `pid_t old_pid` in `sched:sched_process_exec`.
#[unsafe(no_mangle)]
pub static EXEC_OLD_PID_OFFSET: u32 = 16;

/// Offset of the first argument in `syscalls:sys_enter_*` (arguments are 8 bytes apart).
#[unsafe(no_mangle)]
pub static SYSCALL_ARGS_OFFSET: u32 = 16;
/// Offset of `ret` in `syscalls:sys_exit_*`.
#[unsafe(no_mangle)]
pub static SYSCALL_RET_OFFSET: u32 = 16;
/// Field offsets of `sock:inet_sock_set_state`.
#[unsafe(no_mangle)]
pub static SOCK_STATE_OFFSETS: SockStateOffsets = SockStateOffsets::DEFAULT;
/// Field offsets of `tcp:tcp_retransmit_skb`.
#[unsafe(no_mangle)]
pub static TCP_RETRANSMIT_OFFSETS: TcpRetransmitOffsets = TcpRetransmitOffsets::DEFAULT;
/// Valid entries of `FILTER_RULES`.
#[unsafe(no_mangle)]
pub static FILTER_RULE_COUNT: u32 = 0;
/// 1 when some rule includes (then unmatched tasks are skipped).
#[unsafe(no_mangle)]
pub static FILTER_HAS_INCLUDE: u32 = 0;
/// Unread bytes in `HTTP_EVENTS` above which a submit wakes the reader.
#[unsafe(no_mangle)]
pub static HTTP_WAKEUP_BYTES: u64 = 256 * 1024;

#[map]
pub static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

#[map]
pub static TCP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
pub static CONNS: LruHashMap<ConnKey, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static INFLIGHT: LruHashMap<ConnKey, Inflight> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static SYS_ARGS: LruHashMap<u64, SyscallArgs> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static SSL_ARGS: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static TCP_SOCKS: LruHashMap<u64, TcpSock> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static PEER_OWNERS: LruHashMap<PeerKey, TcpSock> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static SEEN_TGIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static FILTER_RULES: Array<FilterRule> = Array::with_max_entries(FILTER_RULES_MAX, 0);

/// Zero bytes after the window, so header checks a few bytes past any position stay in
/// bounds without masks or comparisons against the data length.
pub const WINDOW_PAD: usize = 256;

/// Mask keeping window indexes in bounds (the padded window is a power of two).
pub const WINDOW_MASK: usize = HTTP_WINDOW + WINDOW_PAD - 1;

const _: () = assert!((HTTP_WINDOW + WINDOW_PAD).is_power_of_two());

/// Per-CPU scratch space: the inspected window of a read/write and a request being built.
/// Neither fits on the 512-byte stack.
///
/// Values the verifier should not track per path (method, path offset, status, header scan
/// results) are also passed through here: reading them back from map memory yields unknown
/// scalars, so the paths for different methods merge instead of each re-verifying the
/// bounded loops that follow.
#[repr(C)]
pub struct Scratch {
    /// The first bytes of the data, zero after the valid ones.
    pub window: [u8; HTTP_WINDOW + WINDOW_PAD],
    /// A new `INFLIGHT` value.
    pub inflight: Inflight,
    /// Where the path starts in `window` (after the method and a space).
    pub path_at: u64,
    /// Bytes of data to copy into `window`.
    pub len: u64,
    /// Header scan result: a `body` code.
    pub body: u64,
    /// Header scan result: the `Content-Length`.
    pub content_length: u64,
    /// Header scan: where the `Content-Length` value starts in `window`.
    pub value_at: u64,
    /// A response's status code, kept here across the header scan.
    pub status: u64,
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Reads a loader-set `u32` global.
#[inline(always)]
pub fn global(value: &u32) -> usize {
    // SAFETY: reading our own static; volatile so the loader-set value is used, not the
    // compile-time default.
    unsafe { core::ptr::read_volatile(value) as usize }
}

/// Reads any loader-set global.
#[inline(always)]
pub fn global_of<T: Copy>(value: &T) -> T {
    // SAFETY: as in `global`.
    unsafe { core::ptr::read_volatile(value) }
}

/// Adds one to a counter slot on this CPU.
#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}
