//! Every map and loader-set global of the object, and the small helpers around them.
//!
//! Owns: map definitions (sizes are defaults; the agent may resize the LRU maps and ring
//! buffers before loading), the globals the agent overrides, the `COUNTERS` bump.
//! Must not: hold program logic.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use sonde_ebpf_common::{
    Conn, ConnKey, Counter, FilterRule, HTTP_WINDOW, PeerKey, SockStateOffsets, SslArgs,
    SyscallArgs, TcpRetransmitOffsets, TcpSock,
    http::{
        ARG_SLOTS, FILTER_RULES_MAX, RegisterReads, SocketData, WATCHED_TGID_SLOTS,
        watched_tgid_slot,
    },
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
/// Syscall numbers and register offsets for `sys_exit_read_regs` (disabled by default).
#[unsafe(no_mangle)]
pub static REGISTER_READS: RegisterReads = RegisterReads::DISABLED;
/// Syscall numbers and register offsets for the socket data hooks (disabled by default).
#[unsafe(no_mangle)]
pub static SOCKET_DATA: SocketData = SocketData::DISABLED;
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

#[map]
pub static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

#[map]
pub static TCP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
pub static CONNS: LruHashMap<ConnKey, Conn> = LruHashMap::with_max_entries(32768, 0);

/// Per-thread slots (thread id modulo `ARG_SLOTS`): an array access costs a fraction of a
/// hash insert + lookup + delete, paid on every traced read.
#[map]
pub static SYS_ARGS: Array<SyscallArgs> = Array::with_max_entries(ARG_SLOTS, 0);

#[map]
pub static SSL_ARGS: Array<SslArgs> = Array::with_max_entries(ARG_SLOTS, 0);

#[map]
pub static TCP_SOCKS: LruHashMap<u64, TcpSock> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static PEER_OWNERS: LruHashMap<PeerKey, TcpSock> = LruHashMap::with_max_entries(65536, 0);

/// Outbound socket (kernel address) → its `{tgid, fd}`, from SYN_SENT to ESTABLISHED.
#[map]
pub static SOCK_FDS: LruHashMap<u64, ConnKey> = LruHashMap::with_max_entries(16384, 0);

/// Remote endpoint → local endpoint of a passively opened connection, until accepted.
#[map]
pub static ACCEPTED_LOCAL: LruHashMap<PeerKey, PeerKey> = LruHashMap::with_max_entries(16384, 0);

/// Local endpoint of a socket `{tgid, fd}` (spans match both ends of a connection).
#[map]
pub static LOCAL_ADDRS: LruHashMap<ConnKey, PeerKey> = LruHashMap::with_max_entries(32768, 0);

#[map]
pub static WATCHED_TGIDS: Array<u32> = Array::with_max_entries(WATCHED_TGID_SLOTS, 0);
#[map]
pub static SEEN_TGIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static FILTER_RULES: Array<FilterRule> = Array::with_max_entries(FILTER_RULES_MAX, 0);

/// Room after the window, so header checks a few bytes past any position stay in bounds
/// (with the index masked by [`WINDOW_MASK`]) without comparisons against the data length;
/// the bytes right after the data are zeroed before each copy (`http::load_window`).
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
    /// The first bytes of the data, zero for at least 73 bytes after them (older bytes
    /// beyond).
    pub window: [u8; HTTP_WINDOW + WINDOW_PAD],
    /// A new `CONNS` value (for TLS connections, created at their first request).
    pub conn: Conn,
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
    /// Header scan: where a `traceparent` value starts in `window` (0: none seen).
    pub tp_at: u64,
    /// The decoded `traceparent`: trace id (16), parent id (8), flags (1); zero-padded.
    pub tp: [u8; 32],
    /// 1 when `tp` holds a well-formed header.
    pub tp_valid: u64,
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

/// Reads the 4-byte tracepoint field at `offset`, as [`ctx_u64`]: a direct context load
/// for `__syscall_nr` where every kernel so far has it (offset 8).
#[inline(always)]
pub fn ctx_i32(ctx: &TracePointContext, offset: usize) -> i32 {
    // SAFETY (direct load): every syscall tracepoint record starts with its 8-byte common
    // header followed by `int __syscall_nr`; offsets are checked against tracefs.
    unsafe {
        match offset {
            8 => core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(8).cast::<i32>()),
            _ => ctx.read_at::<i32>(offset).unwrap_or_else(|_| {
                bump(Counter::HttpReadError);
                -1
            }),
        }
    }
}

/// Reads the 8-byte tracepoint field at `offset` (a loader-set global from tracefs).
///
/// `.rodata` is frozen, so the verifier knows the offset's value and explores only the
/// matching arm: for the layout of every syscall tracepoint so far (arguments from 16, `ret`
/// at 16) that is a direct context load with a constant offset, far cheaper than
/// `bpf_probe_read_kernel`, which remains the path for any other layout. (The verifier
/// rejects context loads through a pointer moved by a register, hence the constant arms.)
#[inline(always)]
pub fn ctx_u64(ctx: &TracePointContext, offset: usize) -> u64 {
    let base = ctx.as_ptr().cast::<u64>();
    // SAFETY (direct loads): a syscall tracepoint record holds at least 6 arguments after
    // its 16-byte header; offsets are checked against the tracefs format before attaching.
    unsafe {
        match offset {
            16 => core::ptr::read_volatile(base.add(2)),
            24 => core::ptr::read_volatile(base.add(3)),
            32 => core::ptr::read_volatile(base.add(4)),
            _ => ctx.read_at::<u64>(offset).unwrap_or_else(|_| {
                bump(Counter::HttpReadError);
                0
            }),
        }
    }
}

/// Zeroes `words` 8-byte words at `dst`. Volatile stores: LLVM would otherwise turn runs of
/// zero stores into a call to a byte-at-a-time `memset`.
///
/// # Safety
/// `dst` must be valid for `8 * words` bytes of writes.
#[inline(always)]
pub unsafe fn zero_words(dst: *mut u8, words: usize) {
    let dst = dst.cast::<u64>();
    let mut i = 0;
    while i < words {
        // SAFETY: within the caller's bounds.
        unsafe { core::ptr::write_volatile(dst.add(i), 0) };
        i += 1;
    }
}

/// Copies `words` 8-byte words from `src` to `dst` (volatile, for the same reason as
/// [`zero_words`]: no byte-at-a-time `memmove`).
///
/// # Safety
/// Both must be valid for `8 * words` bytes and must not overlap.
#[inline(always)]
pub unsafe fn copy_words(dst: *mut u8, src: *const u8, words: usize) {
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    let mut i = 0;
    while i < words {
        // SAFETY: within the caller's bounds.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        i += 1;
    }
}

/// Stores `value` so it cannot be merged with neighbouring stores into a `memset` call.
#[inline(always)]
pub fn set<T>(slot: &mut T, value: T) {
    // SAFETY: `slot` is a valid, exclusive reference.
    unsafe { core::ptr::write_volatile(slot, value) };
}

/// The current thread's slot in `SYS_ARGS`/`SSL_ARGS`.
#[inline(always)]
pub fn slot_index(pid_tgid: u64) -> u32 {
    (pid_tgid as u32) & (ARG_SLOTS - 1)
}

/// Keeps a syscall's arguments for its exit (counts a slot still held by another thread).
#[inline(always)]
pub fn put_syscall_args(args: &SyscallArgs) {
    if let Some(slot) = SYS_ARGS.get_ptr_mut(slot_index(args.pid_tgid)) {
        // SAFETY: a live array slot; only this thread uses it until its exit (collisions are
        // counted and the newer call wins).
        unsafe {
            let holder = (*slot).pid_tgid;
            if holder != 0 && holder != args.pid_tgid {
                bump(Counter::HttpArgsFull);
            }
            *slot = *args;
        }
    }
}

/// Takes the current thread's syscall arguments, if its slot holds them.
#[inline(always)]
pub fn take_syscall_args(pid_tgid: u64) -> Option<SyscallArgs> {
    let slot = SYS_ARGS.get_ptr_mut(slot_index(pid_tgid))?;
    // SAFETY: a live array slot.
    unsafe {
        if (*slot).pid_tgid != pid_tgid {
            return None;
        }
        let args = *slot;
        (*slot).pid_tgid = 0;
        Some(args)
    }
}

/// Reads any loader-set global.
#[inline(always)]
pub fn global_of<T: Copy>(value: &T) -> T {
    // SAFETY: as in `global`.
    unsafe { core::ptr::read_volatile(value) }
}

/// Whether a ring's reader was woken since the ring was last seen below half full: one
/// slot per ring ([`RING_HTTP`], [`RING_TCP`]), see [`wakeup_flags`].
#[map]
pub static RING_WOKEN: Array<u32> = Array::with_max_entries(2, 0);

/// [`RING_WOKEN`] slot of `HTTP_EVENTS`.
pub const RING_HTTP: u32 = 0;
/// [`RING_WOKEN`] slot of `TCP_EVENTS`.
pub const RING_TCP: u32 = 1;

/// Submit flags for a ring-buffer record: wake the reader once as the ring crosses half
/// full (the first record to find it there and its [`RING_WOKEN`] slot clear), and on
/// every record once it is seven eighths full; the first record to find it below half
/// again clears the slot.
///
/// Readers poll on a short timer and drain what they can before sleeping again (their
/// `poll` returns at once while records wait), so a wakeup is only needed when the timer
/// would be too late, and once is enough. Waking on every record above half full, as
/// before, cost one self-IPI per record whenever a busy host delayed the reader (under
/// virtualisation a VM exit each: ~20 µs measured). Producers on several CPUs may race on
/// the slot: that costs at most an extra wakeup, or one left to the seven-eighths mark and
/// the reader's timer.
#[inline(always)]
pub fn wakeup_flags(ring: &RingBuf, woken: u32) -> u64 {
    let half = ring.query(BPF_RB_RING_SIZE as u64) / 2;
    let avail = ring.query(BPF_RB_AVAIL_DATA as u64);
    if avail >= half + half * 3 / 4 {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let Some(slot) = RING_WOKEN.get_ptr_mut(woken) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // SAFETY: a live array slot; every writer stores 0 or 1 (see above for races).
    unsafe {
        let was = core::ptr::read_volatile(slot);
        if avail < half {
            if was != 0 {
                core::ptr::write_volatile(slot, 0);
            }
            BPF_RB_NO_WAKEUP as u64
        } else if was == 0 {
            core::ptr::write_volatile(slot, 1);
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            BPF_RB_NO_WAKEUP as u64
        }
    }
}

/// Marks process `tgid` as holding watched sockets (before its first `CONNS` entry).
#[inline(always)]
pub fn mark_watched(tgid: u32) {
    if let Some(slot) = WATCHED_TGIDS.get_ptr_mut(watched_tgid_slot(tgid)) {
        // SAFETY: a live array slot; every writer stores the same value.
        unsafe { core::ptr::write_volatile(slot, 1) };
    }
}

/// Whether process `tgid` may hold watched sockets (false: none of its fds is in `CONNS`).
#[inline(always)]
pub fn maybe_watched(tgid: u32) -> bool {
    match WATCHED_TGIDS.get(watched_tgid_slot(tgid)) {
        Some(&v) => v != 0,
        None => true,
    }
}

/// Adds one to a counter slot on this CPU.
#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}
