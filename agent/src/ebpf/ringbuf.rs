//! A ring-buffer reader on its own thread: waits for a wakeup or a timer tick, then hands
//! every record to a callback. The kernel programs wake the reader only as a ring crosses
//! half full (`wakeup_flags` in the eBPF crate's `maps`), so the timer is what normally
//! drains it; a drain reads every submitted record, and `poll` returns at once while
//! records wait.
//!
//! Must not: run on the async runtime (decoding and aggregation are CPU work); block longer
//! than one poll interval after the stop token is cancelled.

use std::{
    os::fd::{AsRawFd, RawFd},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio_util::sync::CancellationToken;

/// When a drain started: records of one drain share it (reading the clocks per record cost
/// more than handling a small record).
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// For expiry bookkeeping.
    pub at: Instant,
    /// `CLOCK_MONOTONIC` in ns (the clock of the kernel's event times).
    pub monotonic_ns: u64,
}

impl Drain {
    /// Now.
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            monotonic_ns: monotonic_ns(),
        }
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`, so of the kernel's event times.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts a thread named `sonde-<name>` that drains `ring` into `on_record` every `interval`
/// (or sooner on a wakeup) until `stop`; it drains once more before returning.
pub fn spawn(
    name: &'static str,
    mut ring: RingBuf<MapData>,
    interval: Duration,
    stop: CancellationToken,
    mut on_record: impl FnMut(&[u8], Drain) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sonde-{name}"))
        .spawn(move || {
            let fd = ring.as_raw_fd();
            let timeout_ms = interval.as_millis().clamp(1, i32::MAX as u128) as i32;
            loop {
                let stopping = stop.is_cancelled();
                wait_readable(fd, timeout_ms);
                let drain = Drain::now();
                while let Some(record) = ring.next() {
                    on_record(&record, drain);
                }
                if stopping {
                    return;
                }
            }
        })
}

fn wait_readable(fd: RawFd, timeout_ms: i32) {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the fd stays open while the ring buffer lives.
    let rc = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if rc < 0 {
        // EINTR or a transient error: sleep so a persistent error cannot spin.
        std::thread::sleep(Duration::from_millis(timeout_ms as u64));
    }
}
