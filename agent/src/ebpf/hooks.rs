//! The tracepoint hooks of Sonde's eBPF object: which program attaches where, which feature
//! it serves, and the tracefs fields it reads, checked against the running kernel before
//! anything is attached.
//!
//! Owns: the hook table and the offset checks (pure functions over [`Format`]s, so they are
//! unit-tested without a kernel). Must not: load or attach anything (that is `loader`).

use sonde_ebpf_common::{
    SockStateOffsets, TcpRetransmitOffsets,
    http::{RegisterReads, SocketData},
    programs,
};

use super::tracefs::{Format, FormatError};

/// The feature a hook serves; disabled features' programs are not even loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `node_process_execs_total`.
    Exec,
    /// HTTP over plain sockets (and the fd ↔ TLS link).
    Http,
    /// TCP connects, connection ends, retransmits.
    Tcp,
}

/// Where a syscall tracepoint field must be.
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    /// Argument `n` of a `sys_enter_*` record.
    Arg(u32),
    /// `ret` of a `sys_exit_*` record.
    Ret,
    /// `__syscall_nr` of a `sys_exit_*` record.
    Nr,
}

/// How the data programs see socket reads and writes. The loader uses one per run; the hooks
/// of the others are not attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// The raw tracepoints `sock_recv_length` and `sock_send_length` (Linux 6.3+): they fire
    /// on socket reads and writes only, so no syscall hook sees data and other file I/O
    /// pays nothing; arguments from the task's saved registers.
    Socket,
    /// `sys_exit_read_regs` alone for reads (arguments from the saved registers: one
    /// tracepoint hit per read), the `sys_enter_*` hooks for writes (Linux 5.15+).
    Registers,
    /// Enter hooks keep the read arguments for `sys_exit_io` (two hits per read), and the
    /// `sys_enter_*` hooks for writes; for older kernels and architectures whose register
    /// layout the agent does not know.
    EnterExit,
}

/// One program attached to one tracepoint.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// Program name in the object.
    pub program: &'static str,
    /// Tracepoint category.
    pub category: &'static str,
    /// Tracepoint name.
    pub name: &'static str,
    /// The feature it serves.
    pub feature: Feature,
    /// Syscall fields the program reads (empty for non-syscall tracepoints, which are
    /// checked by [`sock_state_offsets`]/[`tcp_retransmit_offsets`] or `exec_offsets`).
    pub fields: &'static [(&'static str, Slot)],
    /// For the data syscalls' hooks, the [`DataPath`]s they belong to (empty: every path).
    pub data_paths: &'static [DataPath],
}

impl Hook {
    /// `tracepoint:<category>:<name>`.
    pub fn describe(&self) -> String {
        format!("tracepoint:{}:{}", self.category, self.name)
    }
}

const fn sys(
    program: &'static str,
    name: &'static str,
    fields: &'static [(&'static str, Slot)],
) -> Hook {
    Hook {
        program,
        category: "syscalls",
        name,
        feature: Feature::Http,
        fields,
        data_paths: &[],
    }
}

/// A hook of the data syscalls, used only with `paths`.
const fn data(
    program: &'static str,
    name: &'static str,
    fields: &'static [(&'static str, Slot)],
    paths: &'static [DataPath],
) -> Hook {
    Hook {
        data_paths: paths,
        ..sys(program, name, fields)
    }
}

/// The syscall paths (all but [`DataPath::Socket`]): where writes are hooked at entry.
const SYSCALL_PATHS: &[DataPath] = &[DataPath::Registers, DataPath::EnterExit];
const ENTER_EXIT: &[DataPath] = &[DataPath::EnterExit];
const REGISTERS: &[DataPath] = &[DataPath::Registers];

const RET: &[(&str, Slot)] = &[("ret", Slot::Ret)];
const RET_NR: &[(&str, Slot)] = &[("ret", Slot::Ret), ("__syscall_nr", Slot::Nr)];

/// Every tracepoint hook, in attach order.
pub const HOOKS: &[Hook] = &[
    Hook {
        program: programs::SCHED_PROCESS_EXEC,
        category: "sched",
        name: "sched_process_exec",
        feature: Feature::Exec,
        fields: &[],
        data_paths: &[],
    },
    // Sockets first, so data hooks never see a socket whose accept they missed.
    sys(
        programs::SYS_ENTER_ACCEPT,
        "sys_enter_accept4",
        &[("fd", Slot::Arg(0)), ("upeer_sockaddr", Slot::Arg(1))],
    ),
    sys(
        programs::SYS_ENTER_ACCEPT,
        "sys_enter_accept",
        &[("fd", Slot::Arg(0)), ("upeer_sockaddr", Slot::Arg(1))],
    ),
    sys(
        programs::SYS_ENTER_CONNECT,
        "sys_enter_connect",
        &[("fd", Slot::Arg(0)), ("uservaddr", Slot::Arg(1))],
    ),
    sys(programs::SYS_EXIT_SOCK, "sys_exit_accept4", RET),
    sys(programs::SYS_EXIT_SOCK, "sys_exit_accept", RET),
    sys(programs::SYS_EXIT_SOCK, "sys_exit_connect", RET),
    sys(
        programs::SYS_ENTER_CLOSE,
        "sys_enter_close",
        &[("fd", Slot::Arg(0))],
    ),
    data(
        programs::SYS_ENTER_READ,
        "sys_enter_read",
        &[("fd", Slot::Arg(0)), ("buf", Slot::Arg(1))],
        ENTER_EXIT,
    ),
    data(
        programs::SYS_ENTER_READ,
        "sys_enter_recvfrom",
        &[("fd", Slot::Arg(0)), ("ubuf", Slot::Arg(1))],
        ENTER_EXIT,
    ),
    data(
        programs::SYS_ENTER_READV,
        "sys_enter_readv",
        &[("fd", Slot::Arg(0)), ("vec", Slot::Arg(1))],
        ENTER_EXIT,
    ),
    data(
        programs::SYS_ENTER_RECVMSG,
        "sys_enter_recvmsg",
        &[("fd", Slot::Arg(0)), ("msg", Slot::Arg(1))],
        ENTER_EXIT,
    ),
    // Writes are handled at entry (the data is there before the call): no exit hooks.
    // (On the socket path the `sock_*_length` raw tracepoints replace all of them.)
    data(
        programs::SYS_ENTER_WRITE,
        "sys_enter_write",
        &[
            ("fd", Slot::Arg(0)),
            ("buf", Slot::Arg(1)),
            ("count", Slot::Arg(2)),
        ],
        SYSCALL_PATHS,
    ),
    data(
        programs::SYS_ENTER_WRITE,
        "sys_enter_sendto",
        &[
            ("fd", Slot::Arg(0)),
            ("buff", Slot::Arg(1)),
            ("len", Slot::Arg(2)),
        ],
        SYSCALL_PATHS,
    ),
    data(
        programs::SYS_ENTER_WRITEV,
        "sys_enter_writev",
        &[
            ("fd", Slot::Arg(0)),
            ("vec", Slot::Arg(1)),
            ("vlen", Slot::Arg(2)),
        ],
        SYSCALL_PATHS,
    ),
    data(
        programs::SYS_ENTER_SENDMSG,
        "sys_enter_sendmsg",
        &[("fd", Slot::Arg(0)), ("msg", Slot::Arg(1))],
        SYSCALL_PATHS,
    ),
    data(programs::SYS_EXIT_IO, "sys_exit_read", RET, ENTER_EXIT),
    data(programs::SYS_EXIT_IO, "sys_exit_recvfrom", RET, ENTER_EXIT),
    data(programs::SYS_EXIT_IO, "sys_exit_readv", RET, ENTER_EXIT),
    data(programs::SYS_EXIT_IO, "sys_exit_recvmsg", RET, ENTER_EXIT),
    data(
        programs::SYS_EXIT_READ_REGS,
        "sys_exit_read",
        RET_NR,
        REGISTERS,
    ),
    data(
        programs::SYS_EXIT_READ_REGS,
        "sys_exit_recvfrom",
        RET_NR,
        REGISTERS,
    ),
    data(
        programs::SYS_EXIT_READ_REGS,
        "sys_exit_readv",
        RET_NR,
        REGISTERS,
    ),
    data(
        programs::SYS_EXIT_READ_REGS,
        "sys_exit_recvmsg",
        RET_NR,
        REGISTERS,
    ),
    Hook {
        program: programs::INET_SOCK_SET_STATE,
        category: "sock",
        name: "inet_sock_set_state",
        feature: Feature::Tcp,
        fields: &[],
        data_paths: &[],
    },
    Hook {
        program: programs::TCP_RETRANSMIT_SKB,
        category: "tcp",
        name: "tcp_retransmit_skb",
        feature: Feature::Tcp,
        fields: &[],
        data_paths: &[],
    },
];

/// Offsets of syscall records: the first argument of `sys_enter_*`, `ret` of `sys_exit_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallLayout {
    /// Offset of argument 0 (arguments are 8 bytes apart).
    pub args: u32,
    /// Offset of `ret`.
    pub ret: u32,
    /// Offset of `__syscall_nr` (in both records).
    pub nr: u32,
}

impl SyscallLayout {
    /// The layout of every Linux since syscall tracepoints exist.
    pub const DEFAULT: Self = Self {
        args: 16,
        ret: 16,
        nr: 8,
    };

    /// Derives the layout from `sys_enter_read` (`fd`) and `sys_exit_read` (`ret`,
    /// `__syscall_nr`).
    pub fn from_formats(enter_read: &Format, exit_read: &Format) -> Result<Self, FormatError> {
        Ok(Self {
            args: enter_read.field("fd")?.offset,
            ret: exit_read.field("ret")?.offset,
            nr: exit_read.field("__syscall_nr")?.offset,
        })
    }

    /// What `sys_exit_read_regs` needs on this architecture, or `None` when the agent does
    /// not know where its saved registers keep the arguments (the reads then take the
    /// [`DataPath::EnterExit`] path).
    pub fn register_reads(&self) -> Option<RegisterReads> {
        // `struct pt_regs` offsets of argument 0 (fd) and 1 (buffer) at syscall exit. Only
        // where the end-to-end tests have run: a wrong offset would lose reads silently.
        // (arm64 would be `orig_x0` 272, since x0 holds the return value by then, and
        // `regs[1]` 8; untested, so it keeps the enter hooks.)
        #[cfg(target_arch = "x86_64")]
        let (fd, buf) = (Some(112u32), 104u32); // `di`, `si`
        #[cfg(not(target_arch = "x86_64"))]
        let (fd, buf) = (None::<u32>, 0u32);
        Some(RegisterReads {
            fd: fd?,
            buf,
            read: i32::try_from(libc::SYS_read).ok()?,
            recvfrom: i32::try_from(libc::SYS_recvfrom).ok()?,
            readv: i32::try_from(libc::SYS_readv).ok()?,
            recvmsg: i32::try_from(libc::SYS_recvmsg).ok()?,
            nr: self.nr,
        })
    }

    /// What the socket data hooks need on this architecture ([`DataPath::Socket`]), or `None`
    /// when the agent does not know its saved-register layout.
    pub fn socket_data() -> Option<SocketData> {
        // `struct pt_regs` offsets of `orig_ax` (the syscall number) and of arguments 0-2
        // (`di`, `si`, `dx`). Only where the end-to-end tests have run.
        #[cfg(target_arch = "x86_64")]
        let offsets = Some((120u32, 112u32, 104u32, 96u32));
        #[cfg(not(target_arch = "x86_64"))]
        let offsets = None::<(u32, u32, u32, u32)>;
        let (nr, fd, buf, len) = offsets?;
        let nr_of = |n: libc::c_long| i32::try_from(n).ok();
        Some(SocketData {
            nr,
            fd,
            buf,
            len,
            reads: [
                nr_of(libc::SYS_read)?,
                nr_of(libc::SYS_recvfrom)?,
                nr_of(libc::SYS_readv)?,
                nr_of(libc::SYS_recvmsg)?,
            ],
            writes: [
                nr_of(libc::SYS_write)?,
                nr_of(libc::SYS_sendto)?,
                nr_of(libc::SYS_writev)?,
                nr_of(libc::SYS_sendmsg)?,
            ],
        })
    }

    /// Checks that `format` has each of `hook`'s fields where the program will read it.
    pub fn check(&self, hook: &Hook, format: &Format) -> Result<(), String> {
        for &(name, slot) in hook.fields {
            let field = format.field(name).map_err(|e| e.to_string())?;
            let (expected, size) = match slot {
                Slot::Arg(n) => (self.args + 8 * n, 8),
                Slot::Ret => (self.ret, 8),
                Slot::Nr => (self.nr, 4),
            };
            if field.offset != expected || field.size != size {
                return Err(format!(
                    "{}: field {name} is at offset {} (size {}), the program reads offset \
                     {expected} (size {size})",
                    hook.describe(),
                    field.offset,
                    field.size
                ));
            }
        }
        Ok(())
    }
}

/// Offsets of `sock:inet_sock_set_state` from its format.
pub fn sock_state_offsets(format: &Format) -> Result<SockStateOffsets, FormatError> {
    let f = |name: &str| format.field(name).map(|f| f.offset);
    Ok(SockStateOffsets {
        skaddr: f("skaddr")?,
        oldstate: f("oldstate")?,
        newstate: f("newstate")?,
        sport: f("sport")?,
        dport: f("dport")?,
        family: f("family")?,
        protocol: f("protocol")?,
        saddr: f("saddr")?,
        daddr: f("daddr")?,
        saddr_v6: f("saddr_v6")?,
        daddr_v6: f("daddr_v6")?,
        _pad: 0,
    })
}

/// Offsets of `tcp:tcp_retransmit_skb` from its format.
pub fn tcp_retransmit_offsets(format: &Format) -> Result<TcpRetransmitOffsets, FormatError> {
    let f = |name: &str| format.field(name).map(|f| f.offset);
    Ok(TcpRetransmitOffsets {
        skaddr: f("skaddr")?,
        state: f("state")?,
        sport: f("sport")?,
        dport: f("dport")?,
        family: f("family")?,
        saddr: f("saddr")?,
        daddr: f("daddr")?,
        saddr_v6: f("saddr_v6")?,
        daddr_v6: f("daddr_v6")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTER_READ: &str = "\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;
";
    const EXIT_READ: &str = "\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;
";
    /// `sock:inet_sock_set_state` on Linux 6.18.
    const SET_STATE: &str = "\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";

    #[test]
    fn syscall_layout_checks_each_field() {
        let enter = Format::parse("syscalls/sys_enter_read", ENTER_READ);
        let exit = Format::parse("syscalls/sys_exit_read", EXIT_READ);
        let layout = SyscallLayout::from_formats(&enter, &exit).unwrap();
        assert_eq!(layout, SyscallLayout::DEFAULT);
        let read = HOOKS.iter().find(|h| h.name == "sys_enter_read").unwrap();
        layout.check(read, &enter).unwrap();
        let exit_hook = HOOKS.iter().find(|h| h.name == "sys_exit_read").unwrap();
        layout.check(exit_hook, &exit).unwrap();
        let regs_hook = HOOKS
            .iter()
            .find(|h| h.program == programs::SYS_EXIT_READ_REGS)
            .unwrap();
        layout.check(regs_hook, &exit).unwrap();
        // The register path also reads `__syscall_nr`: a record moving it is refused.
        let moved_nr = Format::parse(
            "syscalls/sys_exit_read",
            &EXIT_READ.replace("offset:8", "offset:12"),
        );
        let err = layout.check(regs_hook, &moved_nr).unwrap_err();
        assert!(err.contains("__syscall_nr"), "{err}");

        // A kernel whose record puts `buf` elsewhere is refused, naming the field.
        let moved = Format::parse(
            "syscalls/sys_enter_read",
            &ENTER_READ.replace("offset:24", "offset:28"),
        );
        let err = layout.check(read, &moved).unwrap_err();
        assert!(err.contains("field buf") && err.contains("28"), "{err}");
        // A missing field is refused too.
        let recvfrom = HOOKS
            .iter()
            .find(|h| h.name == "sys_enter_recvfrom")
            .unwrap();
        let err = layout.check(recvfrom, &enter).unwrap_err();
        assert!(err.contains("ubuf"), "{err}");
    }

    #[test]
    fn sock_state_offsets_match_the_compiled_default() {
        let f = Format::parse("sock/inet_sock_set_state", SET_STATE);
        assert_eq!(sock_state_offsets(&f).unwrap(), SockStateOffsets::DEFAULT);
        let partial = Format::parse("sock/inet_sock_set_state", "");
        assert!(sock_state_offsets(&partial).is_err());
    }

    #[test]
    fn every_program_has_a_hook_and_names_are_unique_per_tracepoint() {
        for (i, h) in HOOKS.iter().enumerate() {
            for other in &HOOKS[..i] {
                // Two data paths may hook the same tracepoint: only one is used.
                let exclusive = !h.data_paths.is_empty()
                    && !other.data_paths.is_empty()
                    && !h.data_paths.iter().any(|p| other.data_paths.contains(p));
                assert!(
                    exclusive || (h.category, h.name) != (other.category, other.name),
                    "{} twice",
                    h.name
                );
            }
        }
    }

    #[test]
    fn each_syscall_path_hooks_every_data_syscall_and_the_socket_path_none() {
        let hooked = |path: DataPath, name: &str| {
            HOOKS
                .iter()
                .any(|h| h.name == name && h.data_paths.contains(&path))
        };
        for path in [DataPath::Registers, DataPath::EnterExit] {
            for name in [
                "sys_exit_read",
                "sys_exit_recvfrom",
                "sys_exit_readv",
                "sys_exit_recvmsg",
                "sys_enter_write",
                "sys_enter_sendto",
                "sys_enter_writev",
                "sys_enter_sendmsg",
            ] {
                assert!(hooked(path, name), "{path:?} misses {name}");
            }
        }
        // The register path has no read enter hooks.
        assert!(!hooked(DataPath::Registers, "sys_enter_read"));
        // The socket path has no syscall data hook at all.
        assert!(
            HOOKS
                .iter()
                .all(|h| !h.data_paths.contains(&DataPath::Socket))
        );
    }

    #[test]
    fn socket_data_names_this_architectures_data_syscalls() {
        use sonde_ebpf_common::http::io_kind;
        let known = cfg!(target_arch = "x86_64");
        let Some(data) = SyscallLayout::socket_data() else {
            assert!(!known, "x86_64 has a register layout");
            return;
        };
        for (nr, read, write) in [
            (libc::SYS_read, Some(io_kind::READ), None),
            (libc::SYS_recvfrom, Some(io_kind::READ), None),
            (libc::SYS_readv, Some(io_kind::READV), None),
            (libc::SYS_recvmsg, Some(io_kind::RECVMSG), None),
            (libc::SYS_write, None, Some(io_kind::WRITE)),
            (libc::SYS_sendto, None, Some(io_kind::WRITE)),
            (libc::SYS_writev, None, Some(io_kind::WRITEV)),
            (libc::SYS_sendmsg, None, Some(io_kind::SENDMSG)),
            (libc::SYS_sendmmsg, None, None),
        ] {
            assert_eq!(data.read_kind(nr as i32), read, "syscall {nr}");
            assert_eq!(data.write_kind(nr as i32), write, "syscall {nr}");
        }
        assert_eq!(SocketData::DISABLED.read_kind(libc::SYS_read as i32), None);
        assert_eq!(
            SocketData::DISABLED.write_kind(libc::SYS_write as i32),
            None
        );
    }

    #[test]
    fn register_reads_name_this_architectures_read_syscalls() {
        let layout = SyscallLayout {
            nr: 12,
            ..SyscallLayout::DEFAULT
        };
        let known = cfg!(target_arch = "x86_64");
        let Some(reads) = layout.register_reads() else {
            // An architecture without a known register layout uses the enter hooks.
            assert!(!known, "x86_64 has a register layout");
            return;
        };
        assert_eq!(reads.nr, 12);
        let io = sonde_ebpf_common::http::io_kind::READ;
        assert_eq!(reads.kind(libc::SYS_read as i32), Some(io));
        assert_eq!(reads.kind(libc::SYS_recvfrom as i32), Some(io));
        assert_eq!(
            reads.kind(libc::SYS_readv as i32),
            Some(sonde_ebpf_common::http::io_kind::READV)
        );
        assert_eq!(
            reads.kind(libc::SYS_recvmsg as i32),
            Some(sonde_ebpf_common::http::io_kind::RECVMSG)
        );
        assert_eq!(reads.kind(libc::SYS_write as i32), None);
        assert_eq!(RegisterReads::DISABLED.kind(libc::SYS_read as i32), None);
    }
}
