//! The exec event reader: drains the `EXEC_EVENTS` ring buffer, counts executions and logs
//! each one at trace level (`sonde_agent::ebpf::exec=trace`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, RingBuf};
use sonde_ebpf_common::ExecEvent;
use tokio::io::{Interest, unix::AsyncFd};
use tokio_util::sync::CancellationToken;

/// Counts kept by the reader.
#[derive(Debug, Default)]
pub struct ExecStats {
    /// Exec events received.
    pub execs: AtomicU64,
    /// Records too short to be an [`ExecEvent`] (object/agent mismatch).
    pub malformed: AtomicU64,
}

/// A decoded exec event, as the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Process id.
    pub tgid: u32,
    /// Thread id that exec'd.
    pub pid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// The new program's `comm`.
    pub comm: String,
    /// The path passed to exec.
    pub filename: String,
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Option<Exec> {
    if record.len() < size_of::<ExecEvent>() {
        return None;
    }
    // SAFETY: the record holds at least one `ExecEvent`, a plain-old-data type for which every
    // bit pattern is valid; read_unaligned copes with any alignment.
    let event: ExecEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    Some(Exec {
        tgid: event.tgid,
        pid: event.pid,
        cgroup_id: event.cgroup_id,
        comm: String::from_utf8_lossy(event.comm_bytes()).into_owned(),
        filename: String::from_utf8_lossy(event.filename_bytes()).into_owned(),
    })
}

/// Reads exec events until `shutdown`, also handing every exec to `tap` (capture) when
/// given.
pub async fn run(
    ring: RingBuf<MapData>,
    stats: Arc<ExecStats>,
    shutdown: CancellationToken,
    tap: Option<Arc<dyn crate::capture::EventTap>>,
) {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the
    // AsyncFd owns the ring buffer.
    let mut fd = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(error) => {
            tracing::error!(%error, "cannot poll the exec ring buffer; exec events are lost");
            return;
        }
    };
    loop {
        let mut guard = tokio::select! {
            () = shutdown.cancelled() => return,
            guard = fd.readable_mut() => match guard {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(%error, "polling the exec ring buffer failed");
                    return;
                }
            },
        };
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            match decode(&record) {
                Some(exec) => {
                    if let Some(tap) = &tap {
                        tap.exec(&exec);
                    }
                    stats.execs.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(
                        pid = exec.tgid,
                        tid = exec.pid,
                        cgroup_id = exec.cgroup_id,
                        comm = %exec.comm,
                        filename = %exec.filename,
                        "exec"
                    );
                }
                None => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use sonde_ebpf_common::{COMM_LEN, EXEC_FILENAME_LEN};

    use super::*;

    #[test]
    fn decodes_a_record_and_rejects_short_ones() {
        let mut event = ExecEvent {
            ktime_ns: 1,
            cgroup_id: 77,
            tgid: 10,
            pid: 11,
            old_pid: 11,
            uid: 0,
            filename_len: 9,
            _pad: 0,
            comm: [0; COMM_LEN],
            filename: [0; EXEC_FILENAME_LEN],
        };
        event.comm[..2].copy_from_slice(b"ls");
        event.filename[..7].copy_from_slice(b"/bin/ls");
        // SAFETY: viewing a POD value as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<ExecEvent>())
        };
        let exec = decode(bytes).unwrap();
        assert_eq!(
            exec,
            Exec {
                tgid: 10,
                pid: 11,
                cgroup_id: 77,
                comm: "ls".into(),
                filename: "/bin/ls".into()
            }
        );
        assert!(decode(&bytes[..10]).is_none());
    }
}
