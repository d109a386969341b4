//! TCP connection tracing: outbound connect outcomes and times, connection ends and
//! retransmits, from `sock:inet_sock_set_state` and `tcp:tcp_retransmit_skb`.

use crate::COMM_LEN;

/// [`TcpEvent::kind`] values.
pub mod kind {
    /// An outbound connection reached ESTABLISHED (`duration_ns` = connect time).
    pub const CONNECT_OK: u8 = 1;
    /// An outbound connection went from SYN_SENT to CLOSE (refused, timed out, aborted).
    pub const CONNECT_FAILED: u8 = 2;
    /// A tracked outbound connection left ESTABLISHED (it is no longer active).
    pub const CLOSED: u8 = 3;
    /// A segment was retransmitted.
    pub const RETRANSMIT: u8 = 4;
}

/// Linux TCP states (`include/net/tcp_states.h`).
pub mod state {
    /// `TCP_ESTABLISHED`.
    pub const ESTABLISHED: i32 = 1;
    /// `TCP_SYN_SENT`.
    pub const SYN_SENT: i32 = 2;
    /// `TCP_SYN_RECV` (a passively opened socket before its handshake completes).
    pub const SYN_RECV: i32 = 3;
    /// `TCP_CLOSE`.
    pub const CLOSE: i32 = 7;
}

/// An outbound connection being tracked (`TCP_SOCKS`, keyed by the kernel socket address).
/// Filled in process context at SYN_SENT, because later transitions run in softirq context
/// where the current task is unrelated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpSock {
    /// When the SYN was sent.
    pub start_ns: u64,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// Process id of the connecting task.
    pub tgid: u32,
    /// 1 once ESTABLISHED was reached.
    pub established: u32,
    /// `comm` of the connecting task.
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(size_of::<TcpSock>() == 40);

/// [`TcpEvent::tracked`] values: whose connection it is.
pub mod owner {
    /// Unknown (opened before the agent started, or not accepted through a traced call).
    pub const NONE: u8 = 0;
    /// An outbound connection tracked from its connect.
    pub const OUTBOUND: u8 = 1;
    /// An inbound connection tracked from its accept (`PEER_OWNERS`).
    pub const INBOUND: u8 = 2;
}

/// Key of `PEER_OWNERS`: the remote endpoint of an accepted connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Remote address (IPv4 in the first 4 bytes), network order.
    pub addr: [u8; 16],
    /// Remote port (host order).
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

const _: () = assert!(size_of::<PeerKey>() == 24);

impl PeerKey {
    /// No endpoint (family 0).
    pub const UNKNOWN: Self = Self {
        addr: [0; 16],
        port: 0,
        family: 0,
        _pad: 0,
    };
}

/// One TCP event (`TCP_EVENTS` ring buffer record).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpEvent {
    /// `bpf_ktime_get_ns()` of the event.
    pub ts_ns: u64,
    /// Connect time for [`kind::CONNECT_OK`]/[`kind::CONNECT_FAILED`], else 0.
    pub duration_ns: u64,
    /// cgroup v2 id of the task that connected or accepted (0 when unknown).
    pub cgroup_id: u64,
    /// Process id of the task that connected or accepted (0 when unknown).
    pub tgid: u32,
    /// [`kind`].
    pub kind: u8,
    /// [`owner`]: whether and how the process behind the socket is known.
    pub tracked: u8,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    /// TCP state at a retransmit, else 0.
    pub state: u32,
    /// Local address (IPv4 in the first 4 bytes), network order.
    pub saddr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes), network order.
    pub daddr: [u8; 16],
    /// `comm` of the task that connected (zeros when `tracked` is 0).
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(size_of::<TcpEvent>() == 8 * 3 + 4 + 4 + 4 + 4 + 16 * 3);

impl TcpEvent {
    /// `comm` without trailing NULs.
    pub fn comm_bytes(&self) -> &[u8] {
        crate::trim_nul(&self.comm)
    }
}

/// Field offsets of `sock:inet_sock_set_state`, from its tracefs format.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateOffsets {
    /// `const void * skaddr`.
    pub skaddr: u32,
    /// `int oldstate`.
    pub oldstate: u32,
    /// `int newstate`.
    pub newstate: u32,
    /// `__u16 sport`.
    pub sport: u32,
    /// `__u16 dport`.
    pub dport: u32,
    /// `__u16 family`.
    pub family: u32,
    /// `__u16 protocol`.
    pub protocol: u32,
    /// `__u8 saddr[4]`.
    pub saddr: u32,
    /// `__u8 daddr[4]`.
    pub daddr: u32,
    /// `__u8 saddr_v6[16]`.
    pub saddr_v6: u32,
    /// `__u8 daddr_v6[16]`.
    pub daddr_v6: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

impl SockStateOffsets {
    /// The layout of Linux 4.16 to 6.x, used when tracefs cannot be read.
    pub const DEFAULT: Self = Self {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
        _pad: 0,
    };
}

/// Field offsets of `tcp:tcp_retransmit_skb`, from its tracefs format.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRetransmitOffsets {
    /// `const void * skaddr`.
    pub skaddr: u32,
    /// `int state`.
    pub state: u32,
    /// `__u16 sport`.
    pub sport: u32,
    /// `__u16 dport`.
    pub dport: u32,
    /// `__u16 family`.
    pub family: u32,
    /// `__u8 saddr[4]`.
    pub saddr: u32,
    /// `__u8 daddr[4]`.
    pub daddr: u32,
    /// `__u8 saddr_v6[16]`.
    pub saddr_v6: u32,
    /// `__u8 daddr_v6[16]`.
    pub daddr_v6: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

impl TcpRetransmitOffsets {
    /// The layout of Linux 5.x/6.x, used when tracefs cannot be read.
    pub const DEFAULT: Self = Self {
        skaddr: 16,
        state: 24,
        sport: 28,
        dport: 30,
        family: 32,
        saddr: 34,
        daddr: 38,
        saddr_v6: 42,
        daddr_v6: 58,
        _pad: 0,
    };
}

const _: () = assert!(size_of::<SockStateOffsets>() == 48);
const _: () = assert!(size_of::<TcpRetransmitOffsets>() == 40);
