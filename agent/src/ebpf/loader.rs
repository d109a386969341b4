//! Loading the embedded eBPF object and attaching each program independently.

use std::{path::Path, sync::Arc};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use sonde_ebpf_common::{Counter, globals, maps, programs};

use tokio::io::{Interest, unix::AsyncFd};
use tokio_util::sync::CancellationToken;

use super::tracefs::{Format, FormatError};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde-agent-ebpf.o"));

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
    /// A map has an unexpected type.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// The map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
}

/// Whether one program is attached, and why not if it is not.
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
    /// Keeps programs, links and remaining maps alive.
    _ebpf: Ebpf,
    /// Per-hook attach status.
    pub hooks: Vec<HookStatus>,
    /// Exec events, when `sched_process_exec` is attached.
    pub exec_events: Option<RingBuf<MapData>>,
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

/// Loads the object and attaches every program it can. Fails only when eBPF as a whole is
/// unavailable; a missing hook is reported in [`Probes::hooks`].
pub fn load(tracefs: Option<&Path>) -> Result<Probes, EbpfError> {
    let mut hooks = Vec::new();
    let exec_hook = "tracepoint:sched:sched_process_exec".to_owned();
    let offsets = exec_offsets(tracefs);
    let [filename, pid, old_pid] = offsets.as_ref().copied().unwrap_or([8, 12, 16]);

    let mut ebpf = EbpfLoader::new()
        .override_global(globals::EXEC_FILENAME_OFFSET, &filename, true)
        .override_global(globals::EXEC_PID_OFFSET, &pid, true)
        .override_global(globals::EXEC_OLD_PID_OFFSET, &old_pid, true)
        .load(OBJECT)
        .map_err(|source| EbpfError::Load { source })?;

    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(error) => {
            tracing::debug!(%error, "no eBPF log records (the programs log nothing)");
            None
        }
    };

    let exec_result = match offsets {
        Err(error) => Err(error.to_string()),
        Ok(_) => attach_tracepoint(
            &mut ebpf,
            programs::SCHED_PROCESS_EXEC,
            "sched",
            "sched_process_exec",
        ),
    };
    hooks.push(HookStatus {
        program: programs::SCHED_PROCESS_EXEC,
        hook: exec_hook,
        result: exec_result,
    });

    let exec_events = if hooks[0].attached() {
        let map = ebpf
            .take_map(maps::EXEC_EVENTS)
            .ok_or(EbpfError::MissingMap {
                name: maps::EXEC_EVENTS,
            })?;
        Some(RingBuf::try_from(map).map_err(|source| EbpfError::Map {
            name: maps::EXEC_EVENTS,
            source,
        })?)
    } else {
        None
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
    Ok(Probes {
        _ebpf: ebpf,
        hooks,
        exec_events,
        counters,
        logger,
    })
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?;
    let tracepoint: &mut TracePoint = prog
        .try_into()
        .map_err(|e| format!("program {program} is not a tracepoint: {e}"))?;
    tracepoint.load().map_err(|e| {
        format!(
            "the verifier or kernel refused {program}: {}",
            error_chain(&e)
        )
    })?;
    tracepoint
        .attach(category, name)
        .map_err(|e| format!("cannot attach to {category}:{name}: {}", error_chain(&e)))?;
    Ok(())
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
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
