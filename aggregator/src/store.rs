//! Storage of samples and spans: what is kept, how it is made durable, how it is found.
//!
//! Owns: series identity ([`Labels`]), the write-ahead log ([`wal`]), the in-memory head of
//! recent samples ([`head`]), immutable Parquet blocks ([`block`]), their compaction
//! ([`compact`]) and retention ([`retention`]), spans ([`spans`]), metric metadata
//! ([`meta`]) and the data directory ([`dir`]). Must not: know about PromQL, HTTP or gRPC;
//! callers hand it plain labels, samples, spans and matchers.
//!
//! Write path: an append is checked (too-old samples are refused whole), reduced to the
//! samples the store does not have yet, written to the WAL as one record, applied to the
//! head, and fsynced per [`FsyncPolicy`] before it returns. Flushes move head samples older
//! than the out-of-order window into blocks aligned to [`StoreOptions::block_duration`].
//!
//! Invariant: a selection returns, per series, samples sorted by timestamp with one sample
//! per timestamp; when sources overlap, the earliest write wins (older blocks before newer
//! ones, blocks before the head).

pub mod block;
pub mod compact;
pub mod dir;
pub mod exemplars;
pub mod head;
pub mod index;
pub mod inspect;
pub mod labels;
pub mod matcher;
pub mod meta;
pub mod retention;
pub mod spans;
pub mod wal;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

pub use self::{
    block::{Block, BlockError, BlockMeta},
    dir::{DataDir, DirError},
    exemplars::{Exemplar, SeriesExemplars},
    head::{AppendOutcome, Head, SeriesSamples},
    index::SeriesId,
    labels::{Label, Labels},
    matcher::{MatchOp, Matcher},
    meta::{Metadata, MetricType},
    spans::{AttrValue, Span},
    wal::WalError,
};
use self::{
    exemplars::{AddOutcome, ExemplarRing},
    spans::{SpanQuery, SpanStore},
    wal::{Entry, RecordBuf, ReplayEvent, Wal},
};

/// One float sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value; bit-exact (stale markers are a NaN payload).
    pub v: f64,
}

/// When WAL writes are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every append returns (concurrent appends share one fsync).
    Always,
    /// By a background task every interval; an append returns once written to the OS, so
    /// it survives a process crash but not a power loss within the interval.
    Interval(Duration),
    /// Never explicitly (the OS writes back when it likes).
    Never,
}

/// Tunables of the store (the server fills them from its configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// When WAL writes are made durable.
    pub fsync: FsyncPolicy,
    /// Time range of a block flushed from the head (blocks are aligned to multiples of it).
    pub block_duration: Duration,
    /// Time range blocks are compacted into (a multiple of `block_duration`).
    pub compacted_block_duration: Duration,
    /// How far behind the newest sample an append may still write.
    pub out_of_order_window: Duration,
    /// Blocks entirely older than this (behind the newest sample) are deleted; zero keeps all.
    pub retention_time: Duration,
    /// Oldest blocks are deleted while blocks + WAL exceed this many bytes; zero: no limit.
    pub retention_bytes: u64,
    /// A WAL segment is sealed once it reaches this size.
    pub wal_segment_bytes: u64,
    /// Exemplars kept in memory (one ring shared by all series); 0 disables them.
    pub max_exemplars: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            block_duration: Duration::from_secs(2 * 3600),
            compacted_block_duration: Duration::from_secs(24 * 3600),
            out_of_order_window: Duration::from_secs(3600),
            retention_time: Duration::from_secs(15 * 24 * 3600),
            retention_bytes: 0,
            wal_segment_bytes: 128 << 20,
            max_exemplars: 100_000,
        }
    }
}

impl StoreOptions {
    fn block_ms(&self) -> i64 {
        self.block_duration.as_millis().max(1) as i64
    }
    fn ooo_ms(&self) -> i64 {
        self.out_of_order_window.as_millis() as i64
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is unusable.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The write-ahead log failed (the append was not stored; retrying may succeed).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A block could not be written or read.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A sample is older than the out-of-order window allows (permanent: nothing of the
    /// append was stored).
    #[error(
        "series {series}: sample at {t} ms is too old: the store accepts samples from {min_t} ms \
         on (newest sample minus the out-of-order window)"
    )]
    TooOld {
        /// The series.
        series: String,
        /// The sample's timestamp.
        t: i64,
        /// The oldest timestamp accepted.
        min_t: i64,
    },
    /// A batch named series by head ids handed out under an earlier generation (a flush
    /// renumbered them since); nothing was stored, resend with labels.
    #[error("series ids of head generation {given} are stale (now {current})")]
    StaleSeriesIds {
        /// The generation the ids came from.
        given: u64,
        /// The head's generation.
        current: u64,
    },
    /// Other file-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether resending the same data can never succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::TooOld { .. })
    }
}

/// What one [`Store::append_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Samples stored.
    pub appended: u64,
    /// Samples ignored as duplicates (first write wins).
    pub duplicates: u64,
    /// Series created in the head.
    pub created_series: u64,
    /// Spans stored.
    pub spans: u64,
    /// Exemplars kept.
    pub exemplars: u64,
    /// Exemplars dropped as equal to their series' newest one.
    pub exemplars_duplicate: u64,
    /// Exemplars dropped as not newer than their series' newest one.
    pub exemplars_out_of_order: u64,
}

/// How a batch names one of its series.
#[derive(Debug, Clone)]
pub enum SeriesKey {
    /// By its labels (found or created).
    Labels(Labels),
    /// By the head id a previous append returned, under head generation `generation`.
    Id {
        /// The head series id.
        id: SeriesId,
        /// [`KeyedOutcome::generation`] of the append that returned it.
        generation: u64,
    },
}

/// What one [`Store::append_keyed`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyedOutcome {
    /// The counts.
    pub outcome: BatchOutcome,
    /// Per series of the batch, in order: its head id, if it is in the head (a new series
    /// without samples is not created).
    pub ids: Vec<Option<SeriesId>>,
    /// The head generation the ids belong to.
    pub generation: u64,
}

/// Sizes of the persistent part, for self-monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Blocks on disk.
    pub blocks: usize,
    /// Samples in blocks.
    pub block_samples: u64,
    /// Bytes of blocks.
    pub block_bytes: u64,
    /// Bytes of WAL segments.
    pub wal_bytes: u64,
}

#[derive(Debug, Default)]
struct SyncState {
    synced: u64,
}

/// The store shared by ingest and queries.
#[derive(Debug)]
pub struct Store {
    options: StoreOptions,
    head: RwLock<Head>,
    blocks: RwLock<Vec<Arc<Block>>>,
    /// `None` when opened without a WAL (offline import).
    wal: Mutex<Option<Wal>>,
    sync: Mutex<SyncState>,
    spans: SpanStore,
    exemplars: Mutex<ExemplarRing>,
    metadata: meta::MetadataStore,
    next_seq: AtomicU64,
    /// Samples before this were flushed to blocks (replay skips them).
    flushed_before: AtomicI64,
    /// Serialises flushes, compactions and retention.
    maintenance: Mutex<()>,
    dir: DataDir,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// Merges `more` into `into` (both sorted by time); on equal timestamps `into` wins.
pub fn merge_first_wins(into: &mut Vec<Sample>, more: &[Sample]) {
    if more.is_empty() {
        return;
    }
    if into.last().is_none_or(|l| l.t < more[0].t) {
        into.extend_from_slice(more);
        return;
    }
    let old = std::mem::take(into);
    into.reserve(old.len() + more.len());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < more.len() {
        match old[i].t.cmp(&more[j].t) {
            std::cmp::Ordering::Less => {
                into.push(old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                into.push(more[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                into.push(old[i]);
                i += 1;
                j += 1;
            }
        }
    }
    into.extend_from_slice(&old[i..]);
    into.extend_from_slice(&more[j..]);
}

/// `series` sorted by labels (checked first: a block's selection already is).
pub fn sorted_by_labels(mut series: Vec<SeriesSamples>) -> Vec<SeriesSamples> {
    if !series.is_sorted_by(|a, b| a.labels <= b.labels) {
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    }
    series
}

/// Merges two selections sorted by labels (each label set at most once per side) into one;
/// a series on both sides gets `a`'s samples merged with `b`'s, `a` winning on equal times.
pub fn merge_sorted(a: Vec<SeriesSamples>, b: Vec<SeriesSamples>) -> Vec<SeriesSamples> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut b = b.into_iter().peekable();
    for mut s in a {
        while let Some(next) = b.peek() {
            match next.labels.cmp(&s.labels) {
                std::cmp::Ordering::Less => out.extend(b.next()),
                std::cmp::Ordering::Equal => {
                    if let Some(same) = b.next() {
                        merge_first_wins(&mut s.samples, &same.samples);
                    }
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        out.push(s);
    }
    out.extend(b);
    out
}

/// Splits series into block-aligned time ranges: `(range start, series parts)`.
fn split_by_range(
    series: Vec<(Labels, Vec<Sample>)>,
    step: i64,
) -> BTreeMap<i64, Vec<(Labels, Vec<Sample>)>> {
    let mut out: BTreeMap<i64, Vec<(Labels, Vec<Sample>)>> = BTreeMap::new();
    for (labels, samples) in series {
        let mut rest = samples.as_slice();
        while let Some(first) = rest.first() {
            let start = floor_to(first.t, step);
            let end = rest.partition_point(|s| s.t < start + step);
            out.entry(start)
                .or_default()
                .push((labels.clone(), rest[..end].to_vec()));
            rest = &rest[end..];
        }
    }
    out
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with default options, which it locks
    /// for its lifetime, replaying the WAL.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens the store with `options`, replaying the WAL.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        Self::open_inner(dir, options, true)
    }

    /// Opens the store without a WAL, for offline writers (import) that write blocks only.
    pub fn open_offline(dir: &Path, options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        Self::open_inner(dir, options, false)
    }

    fn open_inner(
        dir: &Path,
        options: StoreOptions,
        with_wal: bool,
    ) -> Result<Arc<Self>, StoreError> {
        let started = std::time::Instant::now();
        let dir = DataDir::open(dir)?;
        let blocks = Self::load_blocks(dir.path())?;
        let next_seq = blocks.iter().map(|b| b.meta().seq + 1).max().unwrap_or(1);
        let flushed_before = meta::read_flushed_before(dir.path());
        let metadata = meta::MetadataStore::open(dir.path());
        let spans = SpanStore::open(&dir.path().join("spans"))?;
        let mut head = Head::default();
        for block in &blocks {
            head.observe_max_t(block.meta().max_t);
        }
        let (mut replayed_samples, mut replayed_spans) = (0u64, 0u64);
        let mut exemplars = ExemplarRing::new(options.max_exemplars);
        let wal = if with_wal {
            let mut refs: HashMap<u32, Labels> = HashMap::new();
            let wal = Wal::open(
                &dir.path().join("wal"),
                options.wal_segment_bytes,
                |event| match event {
                    ReplayEvent::Segment(_) => refs.clear(),
                    ReplayEvent::Entry(Entry::Series { r, labels }) => {
                        refs.insert(r, labels);
                    }
                    ReplayEvent::Entry(Entry::Samples { r, samples }) => match refs.get(&r) {
                        Some(labels) => {
                            let keep: Vec<Sample> = samples
                                .into_iter()
                                .filter(|s| s.t >= flushed_before)
                                .collect();
                            replayed_samples += head.append(labels.clone(), &keep).appended as u64;
                        }
                        None => tracing::warn!(r, "WAL: samples for an undefined series skipped"),
                    },
                    ReplayEvent::Entry(Entry::Spans(s)) => {
                        replayed_spans += s.len() as u64;
                        spans.add_to_head(s);
                    }
                    ReplayEvent::Entry(Entry::Exemplars(e)) => {
                        for (series, exemplar) in e {
                            exemplars.add(&series, exemplar);
                        }
                    }
                },
            )?;
            Some(wal)
        } else {
            None
        };
        tracing::info!(
            data_dir = %dir.path().display(),
            blocks = blocks.len(),
            replayed_samples,
            replayed_spans,
            replayed_exemplars = exemplars.len(),
            head_series = head.stats().series,
            elapsed = ?started.elapsed(),
            "store opened"
        );
        Ok(Arc::new(Self {
            options,
            head: RwLock::new(head),
            blocks: RwLock::new(blocks),
            wal: Mutex::new(wal),
            sync: Mutex::new(SyncState::default()),
            spans,
            exemplars: Mutex::new(exemplars),
            metadata,
            next_seq: AtomicU64::new(next_seq),
            flushed_before: AtomicI64::new(flushed_before),
            maintenance: Mutex::new(()),
            dir,
        }))
    }

    /// Opens every complete block; removes unfinished (`.tmp-`) ones and moves unreadable
    /// ones to `corrupt/`, logging each; finishes interrupted compactions.
    fn load_blocks(data: &Path) -> Result<Vec<Arc<Block>>, StoreError> {
        let blocks_dir = data.join("blocks");
        std::fs::create_dir_all(&blocks_dir).map_err(io_err(&blocks_dir))?;
        let mut blocks = Vec::new();
        for entry in std::fs::read_dir(&blocks_dir)
            .map_err(io_err(&blocks_dir))?
            .flatten()
        {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                tracing::warn!(dir = %path.display(), "removing an unfinished block (interrupted write)");
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            if !name.starts_with("blk-") {
                continue;
            }
            match Block::open(&path) {
                Ok(block) => blocks.push(Arc::new(block)),
                Err(error) => {
                    let corrupt = data.join("corrupt");
                    std::fs::create_dir_all(&corrupt).map_err(io_err(&corrupt))?;
                    let dest = corrupt.join(format!(
                        "{name}-{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis())
                    ));
                    tracing::error!(
                        block = %path.display(),
                        moved_to = %dest.display(),
                        %error,
                        "unreadable block skipped and moved aside"
                    );
                    std::fs::rename(&path, &dest).map_err(io_err(&path))?;
                }
            }
        }
        blocks.sort_by_key(|b| b.meta().seq);
        // A compacted block lists its sources; if they are still here the compaction was
        // interrupted after the new block was complete: finish it.
        let replaced: BTreeSet<u64> = blocks
            .iter()
            .flat_map(|b| b.meta().sources.iter().copied())
            .collect();
        let mut kept = Vec::with_capacity(blocks.len());
        for block in blocks {
            if replaced.contains(&block.meta().seq) {
                tracing::warn!(block = %block.dir().display(), "removing a block already compacted into a newer one");
                std::fs::remove_dir_all(block.dir()).map_err(io_err(block.dir()))?;
            } else {
                kept.push(block);
            }
        }
        Ok(kept)
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The options the store runs with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Appends samples for one series. Samples at a timestamp the series already has are
    /// ignored (first write wins) and counted as duplicates.
    pub fn append(&self, labels: Labels, samples: &[Sample]) -> Result<AppendOutcome, StoreError> {
        let outcome = self.append_batch(vec![(labels, samples.to_vec())], Vec::new())?;
        Ok(AppendOutcome {
            appended: outcome.appended as usize,
            duplicates: outcome.duplicates as usize,
            created_series: outcome.created_series > 0,
        })
    }

    /// Appends many series' samples and spans as one unit: all or nothing, logged as one
    /// WAL record and durable under the fsync policy when this returns. A sample older
    /// than the out-of-order window fails the whole batch with [`StoreError::TooOld`].
    pub fn append_batch(
        &self,
        series: Vec<(Labels, Vec<Sample>)>,
        spans: Vec<Span>,
    ) -> Result<BatchOutcome, StoreError> {
        self.append_batch_with_exemplars(series, spans, Vec::new())
    }

    /// [`Store::append_batch`] with exemplars (each with its series' labels) in the same
    /// WAL record. Exemplars equal to or not newer than their series' newest are dropped
    /// and counted in the outcome, never failing the batch; with `max_exemplars = 0` none is
    /// kept or logged.
    pub fn append_batch_with_exemplars(
        &self,
        series: Vec<(Labels, Vec<Sample>)>,
        spans: Vec<Span>,
        exemplars: Vec<(Labels, Exemplar)>,
    ) -> Result<BatchOutcome, StoreError> {
        let series = series
            .into_iter()
            .map(|(labels, samples)| (SeriesKey::Labels(labels), samples))
            .collect();
        Ok(self.append_keyed(series, spans, exemplars)?.outcome)
    }

    /// [`Store::append_batch_with_exemplars`] with series named by labels or by the head ids
    /// an earlier append returned (ingest remembers them per agent and skips the label
    /// lookup). Ids from another head generation fail the whole batch with
    /// [`StoreError::StaleSeriesIds`], storing nothing.
    pub fn append_keyed(
        &self,
        series: Vec<(SeriesKey, Vec<Sample>)>,
        spans: Vec<Span>,
        mut exemplars: Vec<(Labels, Exemplar)>,
    ) -> Result<KeyedOutcome, StoreError> {
        if self.options.max_exemplars == 0 {
            exemplars.clear();
        }
        let mut outcome = BatchOutcome::default();
        let mut ids = Vec::with_capacity(series.len());
        let generation;
        let position = {
            let mut wal_guard = self.wal.lock().unwrap_or_else(|p| p.into_inner());
            let mut head = self.head.write().unwrap_or_else(|p| p.into_inner());
            generation = head.generation();
            let describe = |head: &Head, key: &SeriesKey| match key {
                SeriesKey::Labels(labels) => labels.to_string(),
                SeriesKey::Id { id, .. } => head.labels(*id).to_string(),
            };
            for (key, _) in &series {
                if let SeriesKey::Id {
                    generation: given, ..
                } = key
                    && *given != generation
                {
                    return Err(StoreError::StaleSeriesIds {
                        given: *given,
                        current: generation,
                    });
                }
            }
            if let Some(max_t) = head.max_t() {
                let min_t = max_t.saturating_sub(self.options.ooo_ms());
                for (key, samples) in &series {
                    if let Some(s) = samples.iter().find(|s| s.t < min_t) {
                        return Err(StoreError::TooOld {
                            series: describe(&head, key),
                            t: s.t,
                            min_t,
                        });
                    }
                }
            }
            let mut record = RecordBuf::new();
            let mut max_t: Option<i64> = None;
            let mut accepted = Vec::with_capacity(series.len());
            for (key, samples) in series {
                // One index lookup per series (none for a known id): the id serves the
                // dedup, the WAL and the append.
                let known = match &key {
                    SeriesKey::Labels(labels) => head.id(labels),
                    SeriesKey::Id { id, .. } => Some(*id),
                };
                let fresh = head.new_samples_of(known, &samples);
                outcome.duplicates += (samples.len() - fresh.len()) as u64;
                if fresh.is_empty() {
                    ids.push(known);
                    continue;
                }
                let id = match (known, key) {
                    (Some(id), _) => id,
                    (None, SeriesKey::Labels(labels)) => {
                        outcome.created_series += 1;
                        head.create(labels)
                    }
                    (None, SeriesKey::Id { .. }) => unreachable!("an id is always known"),
                };
                ids.push(Some(id));
                if let Some(wal) = wal_guard.as_mut() {
                    if !wal.is_defined(id) {
                        record.series(id, head.labels(id));
                        wal.mark_defined(id);
                    }
                    record.samples(id, &fresh);
                }
                let newest = fresh.iter().map(|s| s.t).max();
                max_t = max_t.max(newest);
                accepted.push((id, fresh));
            }
            if !spans.is_empty() {
                record.spans(&spans);
            }
            if !exemplars.is_empty() {
                record.exemplars(&exemplars);
            }
            let position = match wal_guard.as_mut() {
                Some(wal) if !record.is_empty() => {
                    match wal.append(&record.finish(), max_t) {
                        Ok(position) => Some(position),
                        Err(error) => {
                            // Definitions written in this record are gone with it.
                            let _ = wal.rotate();
                            return Err(error.into());
                        }
                    }
                }
                _ => None,
            };
            for (id, fresh) in accepted {
                outcome.appended += head.append_to(id, &fresh).appended as u64;
            }
            outcome.spans = spans.len() as u64;
            self.spans.add_to_head(spans);
            if !exemplars.is_empty() {
                let mut ring = self.exemplars.lock().unwrap_or_else(|p| p.into_inner());
                for (series, exemplar) in exemplars {
                    match ring.add(&series, exemplar) {
                        AddOutcome::Added => outcome.exemplars += 1,
                        AddOutcome::Duplicate => outcome.exemplars_duplicate += 1,
                        AddOutcome::OutOfOrder => outcome.exemplars_out_of_order += 1,
                        AddOutcome::Disabled => {}
                    }
                }
            }
            if let Some(wal) = wal_guard.as_mut()
                && wal.wants_rotation()
            {
                wal.rotate()?;
            }
            position
        };
        if let (Some(position), FsyncPolicy::Always) = (position, self.options.fsync) {
            self.sync_wal(position)?;
        }
        Ok(KeyedOutcome {
            outcome,
            ids,
            generation,
        })
    }

    /// Makes the WAL durable at least up to `position` (group commit: one fsync covers
    /// every append written before it).
    fn sync_wal(&self, position: u64) -> Result<(), StoreError> {
        let mut state = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        if state.synced >= position {
            return Ok(());
        }
        let target = self
            .wal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Wal::sync_target);
        if let Some((file, written)) = target {
            file.sync_data().map_err(|source| {
                StoreError::Wal(WalError {
                    path: self.dir.path().join("wal"),
                    source,
                })
            })?;
            state.synced = written;
        }
        Ok(())
    }

    /// Fsyncs everything written so far (the interval policy's background task).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.sync_wal(u64::MAX)
    }

    /// Records a metric family's metadata (last write wins); durable when it returns.
    pub fn set_metadata(&self, family: String, metadata: Metadata) {
        if let Err(error) = self.metadata.set(family, metadata) {
            tracing::warn!(%error, "metric metadata not persisted");
        }
    }

    /// All metadata, by family name.
    pub fn metadata(&self) -> BTreeMap<String, Metadata> {
        self.metadata.all()
    }

    fn blocks(&self) -> Vec<Arc<Block>> {
        self.blocks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn head_read(&self) -> std::sync::RwLockReadGuard<'_, Head> {
        // A panic while holding the lock cannot leave the head half-updated in a way readers
        // could misinterpret (appends are per-sample), so poisoning is ignored.
        self.head.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Series matching all `matchers`, with their samples in `[mint, maxt]` (milliseconds),
    /// merged over blocks and head, sorted by labels.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, StoreError> {
        // Each source's series sorted by labels (a block's are already: its ids follow its
        // labels), merged source after source: no hashing or re-sorting of label sets.
        let mut out: Vec<SeriesSamples> = Vec::new();
        for block in self.blocks() {
            out = merge_sorted(out, sorted_by_labels(block.select(matchers, mint, maxt)?));
        }
        let head = sorted_by_labels(self.head_read().select(matchers, mint, maxt));
        Ok(merge_sorted(out, head))
    }

    fn matching_labels(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> BTreeSet<Labels> {
        let mut out = BTreeSet::new();
        for block in self.blocks() {
            out.extend(block.matching_labels(selectors, mint, maxt).cloned());
        }
        out.extend(
            self.head_read()
                .matching_labels(selectors, mint, maxt)
                .cloned(),
        );
        out
    }

    /// Label sets of the series matching any of `selectors` (each a conjunction of
    /// matchers) with a sample in `[mint, maxt]`; every series when `selectors` is empty.
    pub fn series(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StoreError> {
        Ok(self
            .matching_labels(selectors, mint, maxt)
            .into_iter()
            .collect())
    }

    /// Sorted label names of the series matching any of `selectors`.
    pub fn label_names(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StoreError> {
        let names: BTreeSet<String> = self
            .matching_labels(selectors, mint, maxt)
            .iter()
            .flat_map(|l| l.iter().map(|p| p.name.to_string()))
            .collect();
        Ok(names.into_iter().collect())
    }

    /// Sorted values of label `name` over the series matching any of `selectors`.
    pub fn label_values(
        &self,
        name: &str,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StoreError> {
        let values: BTreeSet<String> = self
            .matching_labels(selectors, mint, maxt)
            .iter()
            .filter_map(|l| l.get(name).map(str::to_owned))
            .collect();
        Ok(values.into_iter().collect())
    }

    /// Number of series and samples held in the head.
    pub fn stats(&self) -> head::Stats {
        self.head_read().stats()
    }

    /// Sizes of blocks and WAL.
    pub fn disk_stats(&self) -> DiskStats {
        let blocks = self.blocks();
        DiskStats {
            blocks: blocks.len(),
            block_samples: blocks.iter().map(|b| b.meta().samples).sum(),
            block_bytes: blocks.iter().map(|b| b.bytes()).sum(),
            wal_bytes: self
                .wal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or(0, Wal::bytes),
        }
    }

    /// Approximate heap bytes of the head (index and samples) and the block indexes.
    pub fn heap_bytes(&self) -> usize {
        self.head_read().heap_bytes() + self.blocks().iter().map(|b| b.heap_bytes()).sum::<usize>()
    }

    /// Appends spans (durable under the fsync policy when this returns).
    pub fn append_spans(&self, spans: Vec<Span>) -> Result<u64, StoreError> {
        Ok(self.append_batch(Vec::new(), spans)?.spans)
    }

    /// Traces with a span matching `query`, most recent first, at most `limit` (0: all).
    pub fn find_trace_ids(
        &self,
        query: &SpanQuery,
        limit: usize,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        self.spans.find_trace_ids(query, limit)
    }

    /// Services with spans and, per service, its operations as (name, kind).
    pub fn span_catalog(&self) -> spans::Catalog {
        self.spans.catalog()
    }

    /// Exemplars with `start <= t <= end` (ms) of the series matching any matcher group,
    /// sorted by series labels, each series' oldest first.
    pub fn select_exemplars(
        &self,
        start: i64,
        end: i64,
        groups: &[Vec<Matcher>],
    ) -> Vec<SeriesExemplars> {
        self.exemplars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .select(start, end, groups)
    }

    /// Exemplars held in memory and the series they belong to.
    pub fn exemplar_stats(&self) -> (usize, usize) {
        let ring = self.exemplars.lock().unwrap_or_else(|p| p.into_inner());
        (ring.len(), ring.series_count())
    }

    /// Spans matching `query`, newest first.
    pub fn find_spans(&self, query: &SpanQuery) -> Result<Vec<Span>, StoreError> {
        self.spans.find(query)
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes `series` as blocks aligned to the block duration (one per range) and adds
    /// them to the store. Used by flushes and by import.
    pub fn write_blocks(&self, series: Vec<(Labels, Vec<Sample>)>) -> Result<usize, StoreError> {
        self.write_blocks_aligned(series, self.options.block_ms())
    }

    /// Writes one block from `series` (the caller keeps it within one window) and adds it
    /// to the store; false when there was nothing to write.
    pub fn write_block(&self, series: Vec<(Labels, Vec<Sample>)>) -> Result<bool, StoreError> {
        let blocks_dir = self.dir.path().join("blocks");
        let Some((path, _)) =
            block::write::write_block(&blocks_dir, self.next_seq(), 0, Vec::new(), series)?
        else {
            return Ok(false);
        };
        let block = Arc::new(Block::open(&path)?);
        let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
        blocks.push(block);
        blocks.sort_by_key(|b| b.meta().seq);
        Ok(true)
    }

    fn write_blocks_aligned(
        &self,
        series: Vec<(Labels, Vec<Sample>)>,
        step: i64,
    ) -> Result<usize, StoreError> {
        let blocks_dir = self.dir.path().join("blocks");
        let mut written = 0;
        for (_, part) in split_by_range(series, step) {
            if let Some((path, _)) =
                block::write::write_block(&blocks_dir, self.next_seq(), 0, Vec::new(), part)?
            {
                let block = Arc::new(Block::open(&path)?);
                let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
                blocks.push(block);
                blocks.sort_by_key(|b| b.meta().seq);
                written += 1;
            }
        }
        Ok(written)
    }

    /// Flushes head samples older than the out-of-order window (whole aligned block ranges
    /// only) into blocks, flushes spans, and drops WAL segments no longer needed. With
    /// `all`, flushes the whole head (shutdown; appends wait meanwhile). Returns the number
    /// of blocks written.
    pub fn flush(&self, all: bool) -> Result<usize, StoreError> {
        let _maintenance = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        // A full flush holds the WAL lock throughout so no append slips in between the copy
        // and the removal from the head.
        let mut held = all.then(|| self.wal.lock().unwrap_or_else(|p| p.into_inner()));
        let cut = {
            let head = self.head_read();
            match (head.max_t(), head.min_t()) {
                (Some(max_t), Some(_)) if all => Some(max_t + 1),
                (Some(max_t), Some(min_t)) => {
                    let cut = floor_to(max_t - self.options.ooo_ms(), self.options.block_ms());
                    (min_t < cut).then_some(cut)
                }
                _ => None,
            }
        };
        let mut written = 0;
        if let Some(cut) = cut {
            // Copy, write, then remove from the head: queries see the samples throughout,
            // and appends cannot add samples before `cut` (they would be too old).
            let to_flush: Vec<(Labels, Vec<Sample>)> = {
                let head = self.head_read();
                head.iter()
                    .filter_map(|(_, labels, mut samples)| {
                        let end = samples.partition_point(|s| s.t < cut);
                        samples.truncate(end);
                        (end > 0).then(|| (labels.clone(), samples))
                    })
                    .collect()
            };
            written = self.write_blocks(to_flush)?;
            // Persisted only for a partial flush: its sealed segments survive and replay
            // must skip what is now in blocks. A full flush deletes every sealed segment, and
            // its cut (newest + 1) would wrongly hide samples still accepted afterwards
            // within the out-of-order window.
            if !all {
                meta::write_flushed_before(self.dir.path(), cut)?;
            }
            self.flushed_before.fetch_max(cut, Ordering::Relaxed);
        }
        let spans = {
            let mut wal = match held.take() {
                Some(guard) => guard,
                None => self.wal.lock().unwrap_or_else(|p| p.into_inner()),
            };
            let mut head = self.head.write().unwrap_or_else(|p| p.into_inner());
            if let Some(cut) = cut {
                head.take_range(i64::MIN, cut);
                let old = std::mem::take(&mut *head);
                *head = old.without_empty_series();
            }
            let spans = self.spans.take_head();
            // Seal: every sample removed and every span taken is in a sealed segment.
            if let Some(wal) = wal.as_mut()
                && (cut.is_some() || !spans.is_empty())
            {
                wal.rotate()?;
            }
            spans
        };
        let span_count = spans.len();
        self.spans.write_file(spans)?;
        // Exemplars live only in the WAL: log the ring again before segments go.
        if let Some(position) = self.checkpoint_exemplars()? {
            self.sync_wal(position)?;
        }
        let flushed_before = self.flushed_before.load(Ordering::Relaxed);
        let empty = self.head_read().min_t().is_none();
        if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            wal.delete_sealed_before(if empty { None } else { Some(flushed_before) })?;
        }
        if written > 0 || span_count > 0 {
            tracing::info!(blocks = written, spans = span_count, ?cut, "head flushed");
        }
        Ok(written)
    }

    /// Writes the whole exemplar ring as one WAL record in the current segment when it
    /// changed since the last checkpoint; returns the WAL position to sync.
    fn checkpoint_exemplars(&self) -> Result<Option<u64>, StoreError> {
        let mut wal_guard = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(wal) = wal_guard.as_mut() else {
            return Ok(None);
        };
        let mut ring = self.exemplars.lock().unwrap_or_else(|p| p.into_inner());
        let changed = ring.take_changed();
        let segment = wal.current_segment();
        if ring.is_empty() || (changed == 0 && ring.checkpoint_segment == Some(segment)) {
            return Ok(None);
        }
        let mut record = RecordBuf::new();
        record.exemplars(&ring.entries());
        match wal.append(&record.finish(), None) {
            Ok(position) => {
                ring.checkpoint_segment = Some(segment);
                Ok(Some(position))
            }
            Err(error) => {
                // Try again at the next flush.
                ring.changed_again(changed);
                Err(error.into())
            }
        }
    }

    /// Compacts blocks per [`compact::plan`]; with `force`, every window with two or more
    /// blocks. Returns the number of blocks written.
    pub fn compact(&self, force: bool) -> Result<usize, StoreError> {
        let _maintenance = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let blocks = self.blocks();
        let watermark = self.flushed_before.load(Ordering::Relaxed);
        let window = self.options.compacted_block_duration.as_millis().max(1) as i64;
        let mut written = 0;
        for group in compact::plan(&blocks, window, if force { None } else { Some(watermark) }) {
            let seq = self.next_seq();
            let Some(new) = compact::compact(&self.dir.path().join("blocks"), seq, &group)? else {
                continue;
            };
            let new = Arc::new(new);
            {
                let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
                blocks.retain(|b| !group.iter().any(|g| Arc::ptr_eq(g, b)));
                blocks.push(new.clone());
                blocks.sort_by_key(|b| b.meta().seq);
            }
            for old in &group {
                std::fs::remove_dir_all(old.dir()).map_err(io_err(old.dir()))?;
            }
            tracing::info!(
                block = %new.dir().display(),
                sources = group.len(),
                samples = new.meta().samples,
                "blocks compacted"
            );
            written += 1;
        }
        Ok(written)
    }

    /// Deletes blocks (and span files) past the retention time or size; returns how many.
    pub fn apply_retention(&self) -> Result<usize, StoreError> {
        let _maintenance = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let blocks = self.blocks();
        let newest = self.head_read().max_t();
        let wal_bytes = self.disk_stats().wal_bytes;
        let doomed = retention::plan(&blocks, newest, &self.options, wal_bytes);
        if doomed.is_empty() {
            return Ok(0);
        }
        {
            let mut list = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            list.retain(|b| !doomed.iter().any(|d| Arc::ptr_eq(d, b)));
        }
        for block in &doomed {
            tracing::info!(
                block = %block.dir().display(),
                max_t = block.meta().max_t,
                "block deleted by retention"
            );
            std::fs::remove_dir_all(block.dir()).map_err(io_err(block.dir()))?;
        }
        if let Some(newest) = newest
            && !self.options.retention_time.is_zero()
        {
            self.spans
                .delete_before(newest - self.options.retention_time.as_millis() as i64)?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
pub(crate) mod tests;
