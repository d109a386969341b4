//! `node_process_execs_total`: programs executed on the node, counted by the
//! `sched:sched_process_exec` eBPF program. Emitted only while that program is attached, so
//! an absent hook shows as an absent series, never as a misleading zero.

use std::sync::{Arc, atomic::Ordering};

use super::{CollectError, Collector, Emitter};
use crate::ebpf::exec::ExecStats;

/// Emits the exec counter from the reader's stats.
#[derive(Debug)]
pub struct ExecCollector {
    stats: Arc<ExecStats>,
}

impl ExecCollector {
    /// A collector over the exec reader's stats.
    pub fn new(stats: Arc<ExecStats>) -> Self {
        Self { stats }
    }
}

impl Collector for ExecCollector {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        out.counter(
            "node_process_execs_total",
            "Programs executed (execve/execveat that succeeded) on the node since the agent started.",
            &[],
            self.stats.execs.load(Ordering::Relaxed) as f64,
        );
        Ok(())
    }
}
