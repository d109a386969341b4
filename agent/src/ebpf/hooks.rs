//! The tracepoint hooks of Sonde's eBPF object: which program attaches where, which feature
//! it serves, and the tracefs fields it reads, checked against the running kernel before
//! anything is attached.
//!
//! Owns: the hook table and the offset checks (pure functions over [`Format`]s, so they are
//! unit-tested without a kernel). Must not: load or attach anything (that is `loader`).

use sonde_ebpf_common::{SockStateOffsets, TcpRetransmitOffsets, programs};

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
    }
}

const RET: &[(&str, Slot)] = &[("ret", Slot::Ret)];

/// Every tracepoint hook, in attach order.
pub const HOOKS: &[Hook] = &[
    Hook {
        program: programs::SCHED_PROCESS_EXEC,
        category: "sched",
        name: "sched_process_exec",
        feature: Feature::Exec,
        fields: &[],
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
    sys(
        programs::SYS_ENTER_READ,
        "sys_enter_read",
        &[("fd", Slot::Arg(0)), ("buf", Slot::Arg(1))],
    ),
    sys(
        programs::SYS_ENTER_READ,
        "sys_enter_recvfrom",
        &[("fd", Slot::Arg(0)), ("ubuf", Slot::Arg(1))],
    ),
    sys(
        programs::SYS_ENTER_READV,
        "sys_enter_readv",
        &[("fd", Slot::Arg(0)), ("vec", Slot::Arg(1))],
    ),
    sys(
        programs::SYS_ENTER_RECVMSG,
        "sys_enter_recvmsg",
        &[("fd", Slot::Arg(0)), ("msg", Slot::Arg(1))],
    ),
    // Writes are handled at entry (the data is there before the call): no exit hooks.
    sys(
        programs::SYS_ENTER_WRITE,
        "sys_enter_write",
        &[
            ("fd", Slot::Arg(0)),
            ("buf", Slot::Arg(1)),
            ("count", Slot::Arg(2)),
        ],
    ),
    sys(
        programs::SYS_ENTER_WRITE,
        "sys_enter_sendto",
        &[
            ("fd", Slot::Arg(0)),
            ("buff", Slot::Arg(1)),
            ("len", Slot::Arg(2)),
        ],
    ),
    sys(
        programs::SYS_ENTER_WRITEV,
        "sys_enter_writev",
        &[
            ("fd", Slot::Arg(0)),
            ("vec", Slot::Arg(1)),
            ("vlen", Slot::Arg(2)),
        ],
    ),
    sys(
        programs::SYS_ENTER_SENDMSG,
        "sys_enter_sendmsg",
        &[("fd", Slot::Arg(0)), ("msg", Slot::Arg(1))],
    ),
    sys(programs::SYS_EXIT_IO, "sys_exit_read", RET),
    sys(programs::SYS_EXIT_IO, "sys_exit_recvfrom", RET),
    sys(programs::SYS_EXIT_IO, "sys_exit_readv", RET),
    sys(programs::SYS_EXIT_IO, "sys_exit_recvmsg", RET),
    Hook {
        program: programs::INET_SOCK_SET_STATE,
        category: "sock",
        name: "inet_sock_set_state",
        feature: Feature::Tcp,
        fields: &[],
    },
    Hook {
        program: programs::TCP_RETRANSMIT_SKB,
        category: "tcp",
        name: "tcp_retransmit_skb",
        feature: Feature::Tcp,
        fields: &[],
    },
];

/// Offsets of syscall records: the first argument of `sys_enter_*`, `ret` of `sys_exit_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallLayout {
    /// Offset of argument 0 (arguments are 8 bytes apart).
    pub args: u32,
    /// Offset of `ret`.
    pub ret: u32,
}

impl SyscallLayout {
    /// The layout of every Linux since syscall tracepoints exist.
    pub const DEFAULT: Self = Self { args: 16, ret: 16 };

    /// Derives the layout from `sys_enter_read` (`fd`) and `sys_exit_read` (`ret`).
    pub fn from_formats(enter_read: &Format, exit_read: &Format) -> Result<Self, FormatError> {
        Ok(Self {
            args: enter_read.field("fd")?.offset,
            ret: exit_read.field("ret")?.offset,
        })
    }

    /// Checks that `format` has each of `hook`'s fields where the program will read it.
    pub fn check(&self, hook: &Hook, format: &Format) -> Result<(), String> {
        for &(name, slot) in hook.fields {
            let field = format.field(name).map_err(|e| e.to_string())?;
            let (expected, size) = match slot {
                Slot::Arg(n) => (self.args + 8 * n, 8),
                Slot::Ret => (self.ret, 8),
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
                assert!(
                    (h.category, h.name) != (other.category, other.name),
                    "{} twice",
                    h.name
                );
            }
        }
    }
}
