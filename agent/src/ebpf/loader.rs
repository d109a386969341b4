//! Loading the embedded eBPF object and attaching each program independently.
//!
//! Every hook is optional: a tracepoint whose format differs from what the program reads, a
//! program the verifier refuses or a tracepoint that does not exist costs only the metrics
//! it feeds; the result per hook is in [`Probes::hooks`].

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint, UProbe},
};
use sonde_ebpf_common::{
    Conn, ConnKey, Counter, FilterRule, SockStateOffsets, TcpRetransmitOffsets, globals,
    http::{RegisterReads, SocketData},
    maps, programs,
};
use tokio::io::{Interest, unix::AsyncFd};
use tokio_util::sync::CancellationToken;

use super::{
    hooks::{self, DataPath, Feature, HOOKS, SyscallLayout},
    tracefs::{Format, FormatError},
};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde-agent-ebpf.o"));

/// The uprobe programs for OpenSSL, in the order [`super::tls`] attaches them.
pub const TLS_PROGRAMS: [&str; 5] = [
    programs::SSL_READ_ENTER,
    programs::SSL_READ_EX_ENTER,
    programs::SSL_WRITE_ENTER,
    programs::SSL_WRITE_EX_ENTER,
    programs::SSL_EXIT,
];

/// Why eBPF as a whole is unavailable (individual hooks fail softly, see [`HookStatus`]).
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The kernel refused the object (no CAP_BPF, no BPF support, verifier).
    #[error(
        "the kernel refused Sonde's eBPF object ({source}); eBPF-based metrics are off. \
         The agent needs root or CAP_BPF + CAP_PERFMON and a kernel with BPF ring buffers (5.8+)"
    )]
    Load {
        /// aya's error.
        #[source]
        source: aya::EbpfError,
    },
    /// A map the agent needs is missing from the object (build mismatch).
    #[error("the eBPF object has no map {name} (was it built from this commit?)")]
    MissingMap {
        /// The map name.
        name: &'static str,
    },
    /// A map has an unexpected type or refused an update.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// The map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
}

/// What to load, from the configuration.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// HTTP over plain sockets (syscall hooks).
    pub http: bool,
    /// HTTPS through OpenSSL (uprobes; attached per library by [`super::tls`]).
    pub tls: bool,
    /// TCP connection metrics.
    pub tcp: bool,
    /// Size of the connection map (each entry holds the connection's pending request).
    pub max_connections: u32,
    /// Size of the HTTP event ring buffer in bytes (a power of two).
    pub http_ring_bytes: u32,
    /// Include/exclude rules evaluated in the kernel.
    pub filter: Vec<FilterRule>,
    /// The preferred way to see socket data; the loader falls back along
    /// [`DataPath::Socket`] → [`DataPath::Registers`] → [`DataPath::EnterExit`] where the
    /// kernel or the architecture does not allow it.
    pub data_path: DataPath,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            http: true,
            tls: true,
            tcp: true,
            max_connections: 32768,
            http_ring_bytes: 2 * 1024 * 1024,
            filter: Vec::new(),
            data_path: DataPath::Socket,
        }
    }
}

/// Whether one program is attached to one hook, and why not if it is not.
#[derive(Debug, Clone)]
pub struct HookStatus {
    /// Program name in the object.
    pub program: &'static str,
    /// What it attaches to, e.g. `tracepoint:sched:sched_process_exec`.
    pub hook: String,
    /// `Ok` when attached; otherwise the reason.
    pub result: Result<(), String>,
}

impl HookStatus {
    /// Whether the program is attached.
    pub fn attached(&self) -> bool {
        self.result.is_ok()
    }
}

/// Kernel-side counters (the per-CPU `COUNTERS` array), summed over CPUs on read.
pub struct KernelCounters {
    array: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCounters").finish_non_exhaustive()
    }
}

impl KernelCounters {
    /// Current value of every counter.
    pub fn read(&self) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .filter_map(|&c| {
                let values = self.array.get(&(c as u32), 0).ok()?;
                Some((c, values.iter().sum()))
            })
            .collect()
    }
}

/// The loaded object with its attached programs. Dropping it detaches everything.
pub struct Probes {
    /// Keeps programs, links and remaining maps alive; uprobes attach through it later.
    pub ebpf: Arc<Mutex<Ebpf>>,
    /// Per-hook attach status.
    pub hooks: Vec<HookStatus>,
    /// How socket data is seen (when HTTP tracing is on).
    pub data_path: DataPath,
    /// Exec events, when `sched_process_exec` is attached.
    pub exec_events: Option<RingBuf<MapData>>,
    /// HTTP exchanges, when the HTTP hooks or the TLS programs are in use.
    pub http_events: Option<RingBuf<MapData>>,
    /// TCP events, when a TCP hook is attached.
    pub tcp_events: Option<RingBuf<MapData>>,
    /// The connection map, for seeding connections opened before the agent started.
    pub conns: Option<BpfHashMap<MapData, ConnKey, Conn>>,
    /// `WATCHED_TGIDS`, whose slot a seeded connection's process needs set first.
    pub watched_tgids: Option<Array<MapData, u32>>,
    /// Whether the OpenSSL uprobe programs loaded (they attach per library).
    pub tls_loaded: bool,
    /// Kernel-side counters.
    pub counters: Arc<KernelCounters>,
    /// Reader of the programs' aya-log records, when the object has them.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// Offsets for `sched:sched_process_exec`, from tracefs when readable.
fn exec_offsets(tracefs: Option<&Path>) -> Result<[u32; 3], FormatError> {
    let Some(root) = tracefs else {
        // The layout has been stable since Linux 3.x; attaching needs tracefs anyway.
        return Ok([8, 12, 16]);
    };
    let format = Format::read(root, "sched", "sched_process_exec")?;
    Ok([
        format.field("filename")?.offset,
        format.field("pid")?.offset,
        format.field("old_pid")?.offset,
    ])
}

/// Everything read from tracefs before loading: offsets for the globals and, per hook,
/// whether its format matches what the program reads.
struct Layouts {
    exec: Result<[u32; 3], FormatError>,
    syscalls: Result<SyscallLayout, String>,
    sock_state: Result<SockStateOffsets, String>,
    retransmit: Result<TcpRetransmitOffsets, String>,
}

impl Layouts {
    fn read(tracefs: Option<&Path>) -> Self {
        let read = |category: &str, name: &str| match tracefs {
            Some(root) => Format::read(root, category, name).map_err(|e| e.to_string()),
            None => Err("tracefs is not mounted".to_owned()),
        };
        let syscalls = read("syscalls", "sys_enter_read").and_then(|enter| {
            let exit = read("syscalls", "sys_exit_read")?;
            SyscallLayout::from_formats(&enter, &exit).map_err(|e| e.to_string())
        });
        let sock_state = read("sock", "inet_sock_set_state")
            .and_then(|f| hooks::sock_state_offsets(&f).map_err(|e| e.to_string()));
        let retransmit = read("tcp", "tcp_retransmit_skb")
            .and_then(|f| hooks::tcp_retransmit_offsets(&f).map_err(|e| e.to_string()));
        Self {
            exec: exec_offsets(tracefs),
            syscalls,
            sock_state,
            retransmit,
        }
    }

    /// Whether `hook`'s fields are where its program reads them.
    fn check(&self, hook: &hooks::Hook, tracefs: Option<&Path>) -> Result<(), String> {
        match hook.program {
            programs::SCHED_PROCESS_EXEC => {
                self.exec.as_ref().map(|_| ()).map_err(|e| e.to_string())
            }
            programs::INET_SOCK_SET_STATE => {
                self.sock_state.as_ref().map(|_| ()).map_err(Clone::clone)
            }
            programs::TCP_RETRANSMIT_SKB => {
                self.retransmit.as_ref().map(|_| ()).map_err(Clone::clone)
            }
            _ => {
                let layout = self.syscalls.as_ref().map_err(Clone::clone)?;
                let root = tracefs.ok_or("tracefs is not mounted")?;
                let format =
                    Format::read(root, hook.category, hook.name).map_err(|e| e.to_string())?;
                layout.check(hook, &format)
            }
        }
    }
}

/// Loads the object and attaches every program it can. Fails only when eBPF as a whole is
/// unavailable; a missing hook is reported in [`Probes::hooks`].
pub fn load(tracefs: Option<&Path>, options: &LoadOptions) -> Result<Probes, EbpfError> {
    let layouts = Layouts::read(tracefs);
    let [filename, pid, old_pid] = layouts.exec.as_ref().copied().unwrap_or([8, 12, 16]);
    let syscalls = layouts.syscalls.clone().unwrap_or(SyscallLayout::DEFAULT);
    let sock_state = layouts
        .sock_state
        .clone()
        .unwrap_or(SockStateOffsets::DEFAULT);
    let retransmit = layouts
        .retransmit
        .clone()
        .unwrap_or(TcpRetransmitOffsets::DEFAULT);
    let register_reads = if options.data_path == DataPath::EnterExit {
        None
    } else {
        syscalls.register_reads()
    };
    let register_globals = register_reads.unwrap_or(RegisterReads::DISABLED);
    let socket_data = if options.data_path == DataPath::Socket {
        SyscallLayout::socket_data()
    } else {
        None
    };
    let socket_globals = socket_data.unwrap_or(SocketData::DISABLED);
    let rule_count = options.filter.len() as u32;
    let has_include = u32::from(
        options
            .filter
            .iter()
            .any(|r| r.action == sonde_ebpf_common::http::filter_action::INCLUDE),
    );

    let mut loader = EbpfLoader::new();
    loader
        .override_global(globals::EXEC_FILENAME_OFFSET, &filename, true)
        .override_global(globals::EXEC_PID_OFFSET, &pid, true)
        .override_global(globals::EXEC_OLD_PID_OFFSET, &old_pid, true)
        .override_global(globals::SYSCALL_ARGS_OFFSET, &syscalls.args, true)
        .override_global(globals::SYSCALL_RET_OFFSET, &syscalls.ret, true)
        .override_global(globals::REGISTER_READS, &register_globals, true)
        .override_global(globals::SOCKET_DATA, &socket_globals, true)
        .override_global(globals::SOCK_STATE_OFFSETS, &sock_state, true)
        .override_global(globals::TCP_RETRANSMIT_OFFSETS, &retransmit, true)
        .override_global(globals::FILTER_RULE_COUNT, &rule_count, true)
        .override_global(globals::FILTER_HAS_INCLUDE, &has_include, true)
        .map_max_entries(maps::CONNS, options.max_connections)
        .map_max_entries(maps::TCP_SOCKS, options.max_connections)
        .map_max_entries(maps::HTTP_EVENTS, options.http_ring_bytes);
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|source| EbpfError::Load { source })?;

    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(error) => {
            tracing::debug!(%error, "no eBPF log records (the programs log nothing)");
            None
        }
    };

    if !options.filter.is_empty() {
        let mut rules: Array<_, FilterRule> = Array::try_from(
            ebpf.map_mut(maps::FILTER_RULES)
                .ok_or(EbpfError::MissingMap {
                    name: maps::FILTER_RULES,
                })?,
        )
        .map_err(|source| EbpfError::Map {
            name: maps::FILTER_RULES,
            source,
        })?;
        for (i, rule) in options.filter.iter().enumerate() {
            rules
                .set(i as u32, rule, 0)
                .map_err(|source| EbpfError::Map {
                    name: maps::FILTER_RULES,
                    source,
                })?;
        }
    }

    let http_hooks = options.http || options.tls;
    let mut hooks = Vec::new();
    let mut socket_links = Vec::new();
    let data_path = if !http_hooks {
        DataPath::EnterExit
    } else if socket_data.is_some()
        && let Some(links) = attach_socket_hooks(&mut ebpf)
    {
        socket_links = links;
        DataPath::Socket
    } else {
        choose_syscall_path(&mut ebpf, register_reads.is_some())
    };
    let mut refused: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for hook in HOOKS {
        let enabled = match hook.feature {
            Feature::Exec => true,
            Feature::Http => http_hooks,
            Feature::Tcp => options.tcp,
        };
        if !enabled || !(hook.data_paths.is_empty() || hook.data_paths.contains(&data_path)) {
            continue;
        }
        let result = match refused.get(hook.program) {
            Some(reason) => Err(reason.clone()),
            None => layouts.check(hook, tracefs).and_then(|()| {
                attach_tracepoint(&mut ebpf, hook.program, hook.category, hook.name)
            }),
        };
        if let Err(reason) = &result
            && reason.starts_with("the verifier")
        {
            refused.insert(hook.program, reason.clone());
        }
        hooks.push(HookStatus {
            program: hook.program,
            hook: hook.describe(),
            result,
        });
    }

    let mut tls_loaded = false;
    if options.tls {
        let result = load_uprobes(&mut ebpf);
        tls_loaded = result.is_ok();
        hooks.push(HookStatus {
            program: programs::SSL_EXIT,
            hook: "uprobe:libssl:SSL_read,SSL_read_ex,SSL_write,SSL_write_ex (per library)"
                .to_owned(),
            result,
        });
    }

    for hook in &hooks {
        match &hook.result {
            Ok(()) => {
                tracing::info!(program = hook.program, hook = %hook.hook, "eBPF program attached")
            }
            Err(error) => tracing::warn!(
                program = hook.program,
                hook = %hook.hook,
                %error,
                "eBPF program not attached; the metrics it feeds are absent"
            ),
        }
    }

    // The socket data hooks need the fds the socket hooks track (and close forgets): without
    // them the data of a reused fd number would be taken for an older connection's.
    let fds_tracked =
        attached(&hooks, programs::SYS_EXIT_SOCK) && attached(&hooks, programs::SYS_ENTER_CLOSE);
    for (program, link) in socket_links {
        let result = if fds_tracked {
            Ok(())
        } else {
            detach_raw_tracepoint(&mut ebpf, program, link);
            Err(
                "detached: the accept/connect and close hooks, which say which fds are \
                 connections, are not attached"
                    .to_owned(),
            )
        };
        hooks.push(HookStatus {
            program,
            hook: format!("raw_tracepoint:{program}"),
            result,
        });
    }

    let any = |program: &str| attached(&hooks, program);
    let reads_hooked = any(programs::SYS_EXIT_IO)
        || any(programs::SYS_EXIT_READ_REGS)
        || any(programs::SOCK_RECV_LENGTH);
    let exec_events = if any(programs::SCHED_PROCESS_EXEC) {
        Some(take_ring(&mut ebpf, maps::EXEC_EVENTS)?)
    } else {
        None
    };
    let http_events = if reads_hooked || tls_loaded {
        Some(take_ring(&mut ebpf, maps::HTTP_EVENTS)?)
    } else {
        None
    };
    let tcp_events = if any(programs::INET_SOCK_SET_STATE) || any(programs::TCP_RETRANSMIT_SKB) {
        Some(take_ring(&mut ebpf, maps::TCP_EVENTS)?)
    } else {
        None
    };
    let (conns, watched_tgids) = if reads_hooked {
        let map = ebpf
            .take_map(maps::CONNS)
            .ok_or(EbpfError::MissingMap { name: maps::CONNS })?;
        let conns = BpfHashMap::try_from(map).map_err(|source| EbpfError::Map {
            name: maps::CONNS,
            source,
        })?;
        let map = ebpf
            .take_map(maps::WATCHED_TGIDS)
            .ok_or(EbpfError::MissingMap {
                name: maps::WATCHED_TGIDS,
            })?;
        let watched = Array::try_from(map).map_err(|source| EbpfError::Map {
            name: maps::WATCHED_TGIDS,
            source,
        })?;
        (Some(conns), Some(watched))
    } else {
        (None, None)
    };
    let counters = ebpf.take_map(maps::COUNTERS).ok_or(EbpfError::MissingMap {
        name: maps::COUNTERS,
    })?;
    let counters = Arc::new(KernelCounters {
        array: PerCpuArray::try_from(counters).map_err(|source| EbpfError::Map {
            name: maps::COUNTERS,
            source,
        })?,
    });

    Ok(Probes {
        ebpf: Arc::new(Mutex::new(ebpf)),
        hooks,
        data_path,
        exec_events,
        http_events,
        tcp_events,
        conns,
        watched_tgids,
        tls_loaded,
        counters,
        logger,
    })
}

/// Whether program `program` is attached to at least one of its hooks.
fn attached(hooks: &[HookStatus], program: &str) -> bool {
    hooks.iter().any(|h| h.program == program && h.attached())
}

fn take_ring(ebpf: &mut Ebpf, name: &'static str) -> Result<RingBuf<MapData>, EbpfError> {
    let map = ebpf.take_map(name).ok_or(EbpfError::MissingMap { name })?;
    RingBuf::try_from(map).map_err(|source| EbpfError::Map { name, source })
}

/// Attaches the socket data programs ([`DataPath::Socket`]) to the raw tracepoints
/// `sock_recv_length` and `sock_send_length`: both or neither. `None` (the reason logged)
/// when the kernel lacks the tracepoints (before 6.3) or refuses the programs; the syscall
/// hooks take over.
fn attach_socket_hooks(
    ebpf: &mut Ebpf,
) -> Option<
    Vec<(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    )>,
> {
    let mut attached = Vec::new();
    let mut failure = None;
    for program in [programs::SOCK_RECV_LENGTH, programs::SOCK_SEND_LENGTH] {
        match attach_raw_tracepoint(ebpf, program) {
            Ok(link) => attached.push((program, link)),
            Err(reason) => {
                failure = Some(reason);
                break;
            }
        }
    }
    if let Some(reason) = failure {
        for (program, link) in attached {
            detach_raw_tracepoint(ebpf, program, link);
        }
        tracing::info!(
            %reason,
            "socket data is seen through syscall tracepoints (the socket tracepoints need Linux 6.3+)"
        );
        return None;
    }
    tracing::debug!("socket data is seen through the sock_*_length tracepoints");
    Some(attached)
}

/// Detaches `link` of raw tracepoint program `program` (a failure is only logged).
fn detach_raw_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    link: aya::programs::raw_trace_point::RawTracePointLinkId,
) {
    if let Ok(prog) = program_of::<RawTracePoint>(ebpf, program)
        && let Err(error) = prog.detach(link)
    {
        tracing::warn!(program, %error, "cannot detach a socket data program");
    }
}

/// Loads raw tracepoint program `program` and attaches it to the tracepoint of its name.
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
) -> Result<aya::programs::raw_trace_point::RawTracePointLinkId, String> {
    let raw: &mut RawTracePoint = program_of(ebpf, program)?;
    if raw.fd().is_err() {
        raw.load().map_err(|e| refused(program, &e))?;
    }
    raw.attach(program).map_err(|e| {
        format!(
            "cannot attach to raw tracepoint {program}: {}",
            error_chain(&e)
        )
    })
}

/// [`DataPath::Registers`] when wanted (`available`: the architecture's layout is known and
/// the configuration allows it) and the kernel verifies `sys_exit_read_regs` (it needs
/// `bpf_task_pt_regs`, Linux 5.15+); otherwise [`DataPath::EnterExit`], with the reason
/// logged.
fn choose_syscall_path(ebpf: &mut Ebpf, available: bool) -> DataPath {
    if !available {
        tracing::info!(
            "reads are hooked at enter and exit (register reads are off in the configuration \
             or unknown on this architecture)"
        );
        return DataPath::EnterExit;
    }
    match loaded_tracepoint(ebpf, programs::SYS_EXIT_READ_REGS) {
        Ok(_) => {
            tracing::debug!("reads are hooked at exit only (arguments from saved registers)");
            DataPath::Registers
        }
        Err(reason) => {
            tracing::info!(
                %reason,
                "reads are hooked at enter and exit (two tracepoint hits per read)"
            );
            DataPath::EnterExit
        }
    }
}

/// Loads (verifies) the OpenSSL uprobe programs; they are attached per library later.
fn load_uprobes(ebpf: &mut Ebpf) -> Result<(), String> {
    for program in TLS_PROGRAMS {
        let uprobe: &mut UProbe = program_of(ebpf, program)?;
        uprobe.load().map_err(|e| refused(program, &e))?;
    }
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<(), String> {
    loaded_tracepoint(ebpf, program)?
        .attach(category, name)
        .map_err(|e| format!("cannot attach to {category}:{name}: {}", error_chain(&e)))?;
    Ok(())
}

/// The tracepoint program `program`, loaded (verified) unless it already is.
fn loaded_tracepoint<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut TracePoint, String> {
    let tracepoint: &mut TracePoint = program_of(ebpf, program)?;
    if tracepoint.fd().is_err() {
        tracepoint.load().map_err(|e| refused(program, &e))?;
    }
    Ok(tracepoint)
}

/// Program `program` of the object as its type `P`.
fn program_of<'a, P>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?
        .try_into()
        .map_err(|e| format!("program {program} has another type: {e}"))
}

/// Why `program` did not load (the verifier's verdict included).
fn refused(program: &str, error: &aya::programs::ProgramError) -> String {
    format!(
        "the verifier or kernel refused {program}: {}",
        error_chain(error)
    )
}

/// An error with its sources, `a: b: c`; a verifier log is cut to its last lines (the
/// verdict), the full log is at debug level.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    const KEEP: usize = 12;
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() > KEEP + 1 {
        tracing::debug!(log = %out, "full eBPF load error");
        let mut short = lines[0].to_owned();
        short.push_str(" […] ");
        short.push_str(&lines[lines.len() - KEEP..].join(" | "));
        return short;
    }
    out
}

/// Forwards the programs' aya-log records to `tracing` (target `aya_log`) until `stop`.
pub async fn forward_logs(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    stop: CancellationToken,
) {
    // SAFETY: the logger owns its ring buffer's map fd, which stays open and unchanged while
    // the AsyncFd owns the logger.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(error) => {
            tracing::warn!(%error, "cannot poll eBPF log records; they are dropped");
            return;
        }
    };
    loop {
        let mut guard = tokio::select! {
            () = stop.cancelled() => return,
            guard = fd.readable_mut() => match guard {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::warn!(%error, "polling eBPF log records failed");
                    return;
                }
            },
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
