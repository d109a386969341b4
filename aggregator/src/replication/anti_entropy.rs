//! Anti-entropy: one thread per peer compares what this replica holds with what the peer
//! holds, window by window, and pulls what is missing, so a replica that was down or cut off
//! converges without operator action.
//!
//! A round with a peer: ask for the window digests of the recent stretch
//! (`replication.recent`, up to now − `settle`) and of `sweep_windows` older windows (a
//! cursor walking back through the retention period, wrapping around); compute ours; for
//! each window that differs ask for per-series digests; pull the series where the peer has
//! more samples (or as many with other content) and store them ([`super::apply`]). A round
//! pulls at most `max_pull_samples`; when it had to stop there the next round starts at
//! once, otherwise after `interval`. An unreachable peer is retried with exponential
//! backoff and jitter up to `max_backoff`.
//!
//! Pulling only where the peer has more relies on every replica running anti-entropy with
//! the others (peers list each other): if A and B each hold samples the other lacks, the one
//! with fewer pulls first, then holds more, and the other pulls from it.
//!
//! Must not: run on the async runtime (it blocks on HTTP and on the store), or hold any
//! store lock across a peer request; ingest and queries go on meanwhile.

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    Replication,
    digest::{SeriesDigest, series_digests, window_digests},
    peer::{Peer, PeerError},
    state::{PeerLabels, lag_seconds},
};
use crate::store::StoreError;

/// Series asked for in one samples request.
const SERIES_PER_REQUEST: usize = 2000;

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The peer did not answer properly.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Storing pulled samples or reading ours failed (e.g. the disk is full).
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    /// The peer is this replica (misconfiguration).
    #[error("peer {0} answers with this replica's own id; remove it from replication.peers")]
    SelfPeer(String),
}

/// What one round found and did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    /// The recent stretch is verified up to here (ms) when `complete`.
    pub cutoff: i64,
    /// Whether every difference in the recent stretch was pulled (budget not exhausted).
    pub complete: bool,
    /// Whether the budget ran out (go on at once).
    pub exhausted: bool,
    /// New samples stored.
    pub pulled: u64,
    /// Samples the peer held that we lacked, as compared.
    pub missing: u64,
    /// Windows that differed.
    pub differing: u64,
}

/// Stop signal shared by the threads.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleeps up to `d`; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// The running anti-entropy threads; [`AntiEntropy::stop`] ends them.
#[derive(Debug)]
pub struct AntiEntropy {
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl AntiEntropy {
    /// Starts one thread per peer.
    pub fn start(replication: Arc<Replication>) -> Self {
        let stop = Arc::new(Stop::default());
        let threads = replication
            .clients
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let (replication, stop, peer) = (replication.clone(), stop.clone(), peer.clone());
                std::thread::Builder::new()
                    .name(format!("sonde-repl-{i}"))
                    .spawn(move || run_peer(&replication, i, &peer, &stop))
                    .expect("spawn an anti-entropy thread")
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the threads, waiting for rounds in progress to end (each request is bounded by
    /// `replication.peer_timeout`).
    pub fn stop(&mut self) {
        self.stop.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn jitter(d: Duration) -> Duration {
    // Half to full: spreads retries of many replicas without a random number generator.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

fn run_peer(replication: &Replication, i: usize, peer: &Peer, stop: &Stop) {
    let labels = PeerLabels {
        peer: peer.url().to_owned(),
    };
    let metrics = &replication.metrics;
    // Every series exists from the start (an error counter at 0 is information too).
    let _ = metrics.errors.get_or_create(&labels);
    let _ = metrics.pulled.get_or_create(&labels);
    let _ = metrics.rounds.get_or_create(&labels);
    let _ = metrics.missing.get_or_create(&labels);
    let _ = metrics.up.get_or_create(&labels);
    let mut cursor = i64::MIN;
    let mut failures: u32 = 0;
    let interval = replication.config.interval;
    // First round soon after start: a restarted replica catches up at once.
    let mut pause = Duration::from_millis(500);
    loop {
        // Sleep in slices so the lag gauge keeps growing while a peer is away.
        let wake_at = Instant::now() + pause;
        loop {
            let in_sync = replication.in_sync_until(i);
            metrics
                .lag
                .get_or_create(&labels)
                .set(lag_seconds(in_sync, super::now_ms()));
            let left = wake_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if stop.sleep(left.min(Duration::from_secs(1))) {
                return;
            }
        }
        let started = Instant::now();
        match round(replication, peer, &mut cursor) {
            Ok(r) => {
                failures = 0;
                metrics.rounds.get_or_create(&labels).inc();
                metrics.pulled.get_or_create(&labels).inc_by(r.pulled);
                metrics.missing.get_or_create(&labels).set(r.missing as i64);
                metrics.up.get_or_create(&labels).set(1);
                if r.pulled > 0 {
                    tracing::info!(
                        peer = peer.url(),
                        pulled = r.pulled,
                        differing_windows = r.differing,
                        complete = r.complete,
                        elapsed = ?started.elapsed(),
                        "replication: pulled missing samples"
                    );
                }
                replication.peers.update(i, |p| {
                    p.up = true;
                    p.rounds += 1;
                    p.pulled_samples += r.pulled;
                    p.missing_samples = r.missing;
                    p.differing_windows = r.differing;
                    p.consecutive_failures = 0;
                    p.last_error = None;
                    p.last_round_ms = super::now_ms();
                    p.last_round_seconds = started.elapsed().as_secs_f64();
                    if r.complete {
                        p.in_sync_until_ms = p.in_sync_until_ms.max(r.cutoff);
                    }
                });
                pause = if r.exhausted {
                    Duration::ZERO
                } else {
                    interval
                };
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics.errors.get_or_create(&labels).inc();
                metrics.up.get_or_create(&labels).set(match error {
                    RoundError::Peer(_) | RoundError::SelfPeer(_) => 0,
                    RoundError::Store(_) => 1,
                });
                let backoff = interval
                    .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
                    .min(replication.config.max_backoff);
                pause = jitter(backoff).max(Duration::from_millis(100));
                let message = error.to_string();
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(peer = peer.url(), failures, retry_in = ?pause, error = %message, "replication round failed");
                }
                replication.peers.update(i, |p| {
                    p.up = matches!(error, RoundError::Store(_));
                    p.errors += 1;
                    p.consecutive_failures = failures;
                    p.last_error = Some(message);
                    p.last_round_ms = super::now_ms();
                    p.last_round_seconds = started.elapsed().as_secs_f64();
                });
            }
        }
    }
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// One anti-entropy round with `peer`.
pub fn round(
    replication: &Replication,
    peer: &Peer,
    cursor: &mut i64,
) -> Result<Round, RoundError> {
    let config = &replication.config;
    let w = replication.window_ms;
    let now = super::now_ms();
    let cutoff = now - config.settle.as_millis() as i64;
    let recent_start = floor_to(cutoff - config.recent.as_millis() as i64, w);
    let mut ranges = vec![(recent_start, cutoff, true)];
    if config.sweep_windows > 0 {
        let retention = replication.store.options().retention_time.as_millis() as i64;
        // Without retention, sweep back 30 days.
        let horizon = if retention > 0 {
            retention
        } else {
            30 * 86_400_000
        };
        let oldest = floor_to(now - horizon, w);
        if *cursor <= oldest || *cursor > recent_start {
            *cursor = recent_start;
        }
        let start = (*cursor - config.sweep_windows as i64 * w).max(oldest);
        if start < *cursor {
            ranges.push((start, *cursor, false));
        }
        *cursor = start;
    }
    let mut budget = config.max_pull_samples;
    let mut out = Round {
        cutoff,
        complete: true,
        ..Round::default()
    };
    for (start, end, recent) in ranges {
        if end <= start {
            continue;
        }
        let theirs = peer.digest(start, end, w)?;
        if theirs.replica_id == replication.replica_id {
            return Err(RoundError::SelfPeer(peer.url().to_owned()));
        }
        let ours = window_digests(
            &replication.store.select(&[], start, end - 1)?,
            start,
            end,
            w,
        );
        for (t, o) in theirs.windows.iter().zip(&ours) {
            if t.start != o.start || t.same_content(o) || t.samples == 0 {
                continue;
            }
            out.differing += 1;
            if budget == 0 {
                out.exhausted = true;
                if recent {
                    out.complete = false;
                }
                continue;
            }
            let their_series = peer.series_digest(t.start, t.end)?;
            let our_series: HashMap<u64, SeriesDigest> = series_digests(
                &replication.store.select(&[], t.start, t.end - 1)?,
                t.start,
                t.end,
            )
            .into_iter()
            .map(|d| (d.series, d))
            .collect();
            let mut want = Vec::new();
            for d in their_series {
                let ours = our_series.get(&d.series);
                let ours_n = ours.map_or(0, |o| o.samples);
                out.missing += d.samples.saturating_sub(ours_n);
                let needed = match ours {
                    None => true,
                    Some(o) => {
                        d.samples > o.samples || (d.samples == o.samples && d.hash != o.hash)
                    }
                };
                if needed {
                    want.push(d.series);
                }
            }
            for chunk in want.chunks(SERIES_PER_REQUEST) {
                let got = peer.samples(t.start, t.end, chunk.to_vec())?;
                let n: u64 = got.iter().map(|s| s.samples.len() as u64).sum();
                let stored = replication.backfill.store(&replication.store, got)?;
                out.pulled += stored.new_samples();
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    out.exhausted = true;
                    if recent {
                        out.complete = false;
                    }
                    break;
                }
            }
        }
    }
    Ok(out)
}
