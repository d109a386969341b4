//! The disk buffer: an append-only log of encoded batches in segment files, with one
//! acknowledgement tracker per replica.
//!
//! Layout under the buffer directory:
//! - `epoch`: the stream epoch (decimal), fixed when the directory is first used; sequence
//!   numbers are unique within it, so a restarted agent continues the same stream and the
//!   aggregators recognise resent batches.
//! - `<first sequence, 20 digits>.seg`: records `[len u32][crc32 u32][samples u32][seq u64]`
//!   (little endian) followed by `len` bytes of an encoded `sonde.v1.Batch`.
//! - `cursors`: per replica URL the watermark below which it acknowledged everything, and the
//!   next sequence number. Written atomically (temp file + rename) at most once a second and
//!   on close; a stale cursor only causes resends, which aggregators deduplicate.
//!
//! Recovery: a torn or corrupt record ends its segment (the file is truncated there, with a
//! log line); later segments are still read. Bound: when the log exceeds its size, whole
//! oldest segments are dropped and every sample a replica had not acknowledged is counted
//! as dropped for that replica.
//!
//! All methods do blocking file I/O: call them from the blocking pool.

use std::{
    collections::BTreeSet,
    collections::{BTreeMap, VecDeque},
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prost::Message;
use sonde_proto::{codec, sequence::SequenceTracker, v1::Batch};

use crate::metrics::Metrics;

const HEADER: usize = 20;
const CURSOR_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the buffer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// File system error on a path.
    #[error("buffer {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another agent uses the directory.
    #[error("buffer directory {path} is in use by another agent (lock file {path}/LOCK)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A file the buffer wrote has content it cannot parse.
    #[error("buffer {path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    last: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// `first` of the segment holding the record.
    segment: u64,
    offset: u64,
    len: u32,
    samples: u32,
}

#[derive(Debug)]
struct Inner {
    next_sequence: u64,
    segments: VecDeque<Segment>,
    index: BTreeMap<u64, Entry>,
    trackers: Vec<SequenceTracker>,
    /// Per replica: batches sent on the current stream and not acknowledged yet.
    in_flight: Vec<BTreeSet<u64>>,
    /// Per replica: in-flight batches the size bound dropped, with their samples. An ack
    /// still delivers them; when the stream ends without one they count as dropped.
    unsettled: Vec<BTreeMap<u64, u64>>,
    bytes: u64,
    last_cursor_write: Option<Instant>,
}

/// Settings of a buffer.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory (created if absent).
    pub dir: PathBuf,
    /// Largest total size of the segment files.
    pub max_bytes: u64,
    /// fsync after every append (the default); otherwise the OS flushes when it likes.
    pub fsync: bool,
    /// Replica URLs, in the order trackers are addressed.
    pub replicas: Vec<String>,
    /// Acknowledgements that make a batch delivered.
    pub write_quorum: usize,
    /// Agent identity written into every batch.
    pub agent_id: String,
    /// zstd level of payloads.
    pub compression_level: i32,
}

/// The buffer shared by the exporter (appends) and the replica tasks (reads, acks).
#[derive(Debug)]
pub struct Buffer {
    options: Options,
    epoch: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    _lock: File,
}

impl Buffer {
    /// Opens or creates the buffer, recovering what a previous run left.
    pub fn open(options: Options, metrics: Arc<Metrics>) -> Result<Self, BufferError> {
        let dir = options.dir.clone();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock = lock_dir(&dir)?;
        let epoch = read_or_create_epoch(&dir)?;
        let (cursors, next_from_file) = read_cursors(&dir)?;

        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                names.push((first, path));
            }
        }
        names.sort();

        let mut segments = VecDeque::new();
        let mut index = BTreeMap::new();
        let mut bytes = 0;
        for (first, path) in names {
            match recover_segment(first, &path, &mut index)? {
                Some(segment) => {
                    bytes += segment.len;
                    segments.push_back(segment);
                }
                None => {
                    tracing::warn!(path = %path.display(), "buffer segment holds no valid record; removed");
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
            }
        }
        let oldest = index.keys().next().copied();
        let newest = index.keys().next_back().copied().unwrap_or(0);
        let trackers: Vec<SequenceTracker> = options
            .replicas
            .iter()
            .map(|url| {
                // A replica we know resumes after its watermark; a new one receives everything
                // still buffered.
                let watermark = cursors
                    .get(url)
                    .copied()
                    .unwrap_or_else(|| oldest.map_or(newest, |o| o.saturating_sub(1)));
                let mut tracker = SequenceTracker::default();
                tracker.mark_through(watermark);
                tracker
            })
            .collect();
        let next_sequence = next_from_file.max(newest + 1).max(1);
        let segment_bytes = (options.max_bytes / 8).clamp(4 * 1024, 16 << 20);
        let buffer = Self {
            options,
            epoch,
            segment_bytes,
            inner: Mutex::new(Inner {
                next_sequence,
                segments,
                index,
                in_flight: vec![BTreeSet::new(); trackers.len()],
                unsettled: vec![BTreeMap::new(); trackers.len()],
                trackers,
                bytes,
                last_cursor_write: None,
            }),
            metrics,
            _lock: lock,
        };
        {
            let inner = buffer.lock();
            buffer.update_metrics(&inner);
            if !inner.index.is_empty() {
                tracing::info!(
                    dir = %buffer.options.dir.display(),
                    batches = inner.index.len(),
                    bytes = inner.bytes,
                    "buffer recovered; unacknowledged batches will be resent"
                );
            }
        }
        Ok(buffer)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream epoch of this buffer.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Encodes `payload` as the next batch and appends it durably (under the fsync setting).
    /// Returns its sequence number.
    pub fn append(
        &self,
        payload: &sonde_proto::v1::BatchPayload,
        samples: u32,
    ) -> Result<u64, BufferError> {
        let mut inner = self.lock();
        let sequence = inner.next_sequence;
        let batch = codec::encode_batch(
            &self.options.agent_id,
            self.epoch,
            sequence,
            payload,
            self.options.compression_level,
        );
        let body = batch.encode_to_vec();
        let mut record = Vec::with_capacity(HEADER + body.len());
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&samples.to_le_bytes());
        record.extend_from_slice(&sequence.to_le_bytes());
        record.extend_from_slice(&body);

        let needs_new = inner
            .segments
            .back()
            .is_none_or(|s| s.len > 0 && s.len + record.len() as u64 > self.segment_bytes);
        if needs_new {
            let path = self.options.dir.join(format!("{sequence:020}.seg"));
            let file = File::options()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            if self.options.fsync {
                sync_dir(&self.options.dir)?;
            }
            inner.segments.push_back(Segment {
                first: sequence,
                last: sequence,
                path,
                file,
                len: 0,
            });
        }
        let fsync = self.options.fsync;
        let segment = inner.segments.back_mut().expect("a tail segment exists");
        let offset = segment.len;
        let mut file = &segment.file;
        file.write_all(&record).map_err(io_error(&segment.path))?;
        if fsync {
            segment.file.sync_data().map_err(io_error(&segment.path))?;
        }
        segment.len += record.len() as u64;
        segment.last = sequence;
        let segment_first = segment.first;
        inner.index.insert(
            sequence,
            Entry {
                segment: segment_first,
                offset,
                len: body.len() as u32,
                samples,
            },
        );
        inner.bytes += record.len() as u64;
        inner.next_sequence = sequence + 1;
        self.enforce_bound(&mut inner)?;
        self.maybe_write_cursors(&mut inner, false)?;
        self.update_metrics(&inner);
        Ok(sequence)
    }

    /// Drops whole oldest segments while over the size bound, counting what each replica
    /// loses.
    fn enforce_bound(&self, inner: &mut Inner) -> Result<(), BufferError> {
        while inner.bytes > self.options.max_bytes && inner.segments.len() > 1 {
            let segment = inner.segments.pop_front().expect("more than one segment");
            let dropped: Vec<(u64, Entry)> = inner
                .index
                .range(segment.first..=segment.last)
                .map(|(s, e)| (*s, *e))
                .collect();
            for (i, url) in self.options.replicas.iter().enumerate() {
                let mut lost = 0;
                let mut batches = 0;
                for (s, e) in &dropped {
                    if inner.trackers[i].seen(*s) {
                        continue;
                    }
                    if inner.in_flight[i].remove(s) {
                        // Sent: its ack may still come and deliver it.
                        inner.unsettled[i].insert(*s, u64::from(e.samples));
                    } else {
                        lost += u64::from(e.samples);
                        batches += 1;
                    }
                }
                if batches > 0 {
                    self.metrics.buffer_dropped(url, batches, lost);
                    tracing::warn!(
                        aggregator = %url,
                        batches,
                        samples = lost,
                        "buffer full: dropped the oldest unacknowledged batches"
                    );
                }
                inner.trackers[i].mark_through(segment.last);
            }
            for (s, _) in &dropped {
                inner.index.remove(s);
            }
            inner.bytes = inner.bytes.saturating_sub(segment.len);
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        Ok(())
    }

    /// The next sequence above `after` that replica `replica` has not acknowledged.
    pub fn next_for(&self, replica: usize, after: u64) -> Option<u64> {
        let inner = self.lock();
        let tracker = &inner.trackers[replica];
        let from = after.max(tracker.watermark()) + 1;
        inner
            .index
            .range(from..)
            .map(|(s, _)| *s)
            .find(|s| !tracker.seen(*s))
    }

    /// Reads batch `sequence` to send it to `replica`, if still buffered, and records it as in
    /// flight on that replica's stream until [`Buffer::ack`] or [`Buffer::stream_ended`].
    pub fn read_for(&self, replica: usize, sequence: u64) -> Result<Option<Batch>, BufferError> {
        let mut inner = self.lock();
        let batch = Self::read_locked(&inner, sequence)?;
        if batch.is_some() {
            inner.in_flight[replica].insert(sequence);
        }
        Ok(batch)
    }

    /// The stream to `replica` ended: batches the bound dropped while they were in flight and
    /// that were not acknowledged are lost for that replica, and counted.
    pub fn stream_ended(&self, replica: usize) {
        let mut inner = self.lock();
        inner.in_flight[replica].clear();
        let unsettled = std::mem::take(&mut inner.unsettled[replica]);
        if unsettled.is_empty() {
            return;
        }
        let lost: u64 = unsettled.values().sum();
        let url = &self.options.replicas[replica];
        self.metrics.buffer_dropped(url, unsettled.len(), lost);
        tracing::warn!(
            aggregator = %url,
            batches = unsettled.len(),
            samples = lost,
            "buffer full: dropped batches that were in flight when the stream ended"
        );
    }

    /// Reads batch `sequence`, if still buffered.
    pub fn read(&self, sequence: u64) -> Result<Option<Batch>, BufferError> {
        Self::read_locked(&self.lock(), sequence)
    }

    fn read_locked(inner: &Inner, sequence: u64) -> Result<Option<Batch>, BufferError> {
        let Some(entry) = inner.index.get(&sequence).copied() else {
            return Ok(None);
        };
        let segment = inner
            .segments
            .iter()
            .find(|s| s.first == entry.segment)
            .expect("indexed records belong to a live segment");
        let mut body = vec![0; entry.len as usize];
        segment
            .file
            .read_exact_at(&mut body, entry.offset + HEADER as u64)
            .map_err(io_error(&segment.path))?;
        Batch::decode(body.as_slice())
            .map(Some)
            .map_err(|e| BufferError::Corrupt {
                path: segment.path.clone(),
                problem: format!("record {sequence} does not decode: {e}"),
            })
    }

    /// Records that `replica` acknowledged `sequence` (stored, or permanently rejected).
    /// Returns true when this acknowledgement made the batch reach the write quorum.
    pub fn ack(&self, replica: usize, sequence: u64) -> Result<bool, BufferError> {
        let mut inner = self.lock();
        inner.in_flight[replica].remove(&sequence);
        if inner.unsettled[replica].remove(&sequence).is_some() {
            // Dropped by the bound while in flight, and delivered after all.
            return Ok(false);
        }
        if inner.trackers[replica].seen(sequence) {
            return Ok(false);
        }
        inner.trackers[replica].mark(sequence);
        let acks = inner.trackers.iter().filter(|t| t.seen(sequence)).count();
        let reached = acks == self.options.write_quorum;
        self.collect_garbage(&mut inner)?;
        self.maybe_write_cursors(&mut inner, false)?;
        self.update_metrics(&inner);
        Ok(reached)
    }

    /// Deletes segments every replica acknowledged completely.
    fn collect_garbage(&self, inner: &mut Inner) -> Result<(), BufferError> {
        let everyone = inner
            .trackers
            .iter()
            .map(SequenceTracker::watermark)
            .min()
            .unwrap_or(0);
        // Keep the tail segment open for appends.
        while inner.segments.len() > 1 && inner.segments[0].last <= everyone {
            let segment = inner.segments.pop_front().expect("checked");
            let done: Vec<u64> = inner
                .index
                .range(segment.first..=segment.last)
                .map(|(s, _)| *s)
                .collect();
            for s in done {
                inner.index.remove(&s);
            }
            inner.bytes = inner.bytes.saturating_sub(segment.len);
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        // The tail alone: once fully acknowledged, truncate it.
        if inner.segments.len() == 1
            && inner.segments[0].last <= everyone
            && !inner.index.is_empty()
        {
            let segment = inner.segments.pop_front().expect("checked");
            inner.index.clear();
            inner.bytes = 0;
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        Ok(())
    }

    /// Batches some replica still has to acknowledge, and those below the write quorum.
    pub fn pending(&self) -> (usize, usize) {
        let inner = self.lock();
        let mut unacked = 0;
        let mut below_quorum = 0;
        for s in inner.index.keys() {
            let acks = inner.trackers.iter().filter(|t| t.seen(*s)).count();
            if acks < inner.trackers.len() {
                unacked += 1;
            }
            if acks < self.options.write_quorum {
                below_quorum += 1;
            }
        }
        (unacked, below_quorum)
    }

    /// Persists the cursors now.
    pub fn close(&self) -> Result<(), BufferError> {
        let mut inner = self.lock();
        self.maybe_write_cursors(&mut inner, true)
    }

    fn maybe_write_cursors(&self, inner: &mut Inner, force: bool) -> Result<(), BufferError> {
        if !force
            && inner
                .last_cursor_write
                .is_some_and(|t| t.elapsed() < CURSOR_WRITE_INTERVAL)
        {
            return Ok(());
        }
        let mut text = format!("next {}\n", inner.next_sequence);
        for (url, tracker) in self.options.replicas.iter().zip(&inner.trackers) {
            text.push_str(&format!("watermark {} {url}\n", tracker.watermark()));
        }
        let path = self.options.dir.join("cursors");
        let tmp = self.options.dir.join("cursors.tmp");
        fs::write(&tmp, text).map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        inner.last_cursor_write = Some(Instant::now());
        Ok(())
    }

    fn update_metrics(&self, inner: &Inner) {
        for (url, tracker) in self.options.replicas.iter().zip(&inner.trackers) {
            let pending = inner
                .index
                .range(tracker.watermark() + 1..)
                .filter(|(s, _)| !tracker.seen(**s))
                .count();
            self.metrics.buffer_size(url, pending);
        }
        self.metrics.buffer_state(inner.bytes, inner.next_sequence);
    }
}

/// Takes an exclusive `flock` on `<dir>/LOCK` for the buffer's lifetime.
fn lock_dir(dir: &Path) -> Result<File, BufferError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            BufferError::Locked {
                path: dir.to_owned(),
            }
        } else {
            io_error(&path)(error)
        });
    }
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn read_or_create_epoch(dir: &Path) -> Result<u64, BufferError> {
    let path = dir.join("epoch");
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| BufferError::Corrupt {
            path: path.clone(),
            problem: format!("epoch {:?} is not a number", text.trim()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            let tmp = dir.join("epoch.tmp");
            fs::write(&tmp, format!("{epoch}\n")).map_err(io_error(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_error(&path))?;
            sync_dir(dir)?;
            Ok(epoch)
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// `(watermark per replica URL, next sequence)` from the cursors file, if any.
fn read_cursors(dir: &Path) -> Result<(std::collections::HashMap<String, u64>, u64), BufferError> {
    let path = dir.join("cursors");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let mut cursors = std::collections::HashMap::new();
    let mut next = 0;
    for (n, line) in text.lines().enumerate() {
        let bad = || BufferError::Corrupt {
            path: path.clone(),
            problem: format!("line {}: {line:?}", n + 1),
        };
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("next"), Some(v), None) => next = v.parse().map_err(|_| bad())?,
            (Some("watermark"), Some(v), Some(url)) => {
                cursors.insert(url.to_owned(), v.parse().map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    Ok((cursors, next))
}

/// Scans a segment, indexing valid records and truncating at the first invalid one.
fn recover_segment(
    first: u64,
    path: &Path,
    index: &mut BTreeMap<u64, Entry>,
) -> Result<Option<Segment>, BufferError> {
    let file = File::options()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    let mut offset = 0u64;
    let mut last = None;
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= size {
        file.read_exact_at(&mut header, offset)
            .map_err(io_error(path))?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let samples = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let sequence = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let end = offset + HEADER as u64 + u64::from(len);
        if end > size || last.is_some_and(|l| sequence <= l) {
            break;
        }
        let mut body = vec![0; len as usize];
        file.read_exact_at(&mut body, offset + HEADER as u64)
            .map_err(io_error(path))?;
        if crc32fast::hash(&body) != crc {
            break;
        }
        index.insert(
            sequence,
            Entry {
                segment: first,
                offset,
                len,
                samples,
            },
        );
        last = Some(sequence);
        offset = end;
    }
    if offset < size {
        tracing::warn!(
            path = %path.display(),
            valid_bytes = offset,
            file_bytes = size,
            "buffer segment ends in a torn or corrupt record; truncated"
        );
        file.set_len(offset).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
    }
    Ok(last.map(|last| Segment {
        first,
        last,
        path: path.to_owned(),
        file,
        len: offset,
    }))
}

#[cfg(test)]
mod tests {
    use sonde_proto::v1::{BatchPayload, Label, Sample, Series};

    use super::*;

    fn options(dir: &Path, replicas: &[&str], max_bytes: u64) -> Options {
        Options {
            dir: dir.to_owned(),
            max_bytes,
            fsync: false,
            replicas: replicas.iter().map(|s| (*s).to_owned()).collect(),
            write_quorum: replicas.len() / 2 + 1,
            agent_id: "agent".to_owned(),
            compression_level: 0,
        }
    }

    fn payload(value: f64, padding: usize) -> BatchPayload {
        BatchPayload {
            series: vec![Series {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "x".into(),
                    },
                    Label {
                        name: "pad".into(),
                        value: "p".repeat(padding),
                    },
                ],
                samples: vec![Sample {
                    timestamp_ms: value as i64,
                    value,
                }],
                exemplars: vec![],
            }],
            ..Default::default()
        }
    }

    fn open(opts: Options) -> Buffer {
        Buffer::open(opts, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn batches_survive_a_restart_and_replicas_resume_after_their_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let epoch;
        {
            let b = open(options(dir.path(), &["a", "b"], 1 << 20));
            epoch = b.epoch();
            for i in 1..=5 {
                assert_eq!(b.append(&payload(i as f64, 10), 1).unwrap(), i);
            }
            for s in 1..=3 {
                b.ack(0, s).unwrap();
            }
            b.close().unwrap();
        }
        let b = open(options(dir.path(), &["a", "b"], 1 << 20));
        assert_eq!(b.epoch(), epoch, "the stream epoch is kept");
        assert_eq!(b.next_for(0, 0), Some(4));
        assert_eq!(b.next_for(1, 0), Some(1));
        let batch = b.read(4).unwrap().unwrap();
        assert_eq!((batch.sequence, batch.stream_epoch), (4, epoch));
        let decoded = codec::decode_payload(&batch, 1 << 20).unwrap();
        assert_eq!(decoded.series[0].samples[0].value, 4.0);
        // Sequence numbers continue.
        assert_eq!(b.append(&payload(6.0, 10), 1).unwrap(), 6);
    }

    #[test]
    fn quorum_is_reported_once_and_fully_acked_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(options(dir.path(), &["a", "b", "c"], 1 << 20));
        b.append(&payload(1.0, 10), 1).unwrap();
        assert!(!b.ack(0, 1).unwrap());
        assert!(b.ack(2, 1).unwrap(), "second of three reaches the quorum");
        assert!(!b.ack(1, 1).unwrap());
        assert!(!b.ack(1, 1).unwrap(), "a repeated ack changes nothing");
        assert_eq!(b.pending(), (0, 0));
        let segments = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert_eq!(segments, 0, "a fully acknowledged buffer keeps no segment");
    }

    /// Regression: batches dropped by the bound while in flight were counted as dropped even
    /// when their ack arrived, so "produced = stored + dropped" did not hold.
    #[test]
    fn batches_dropped_in_flight_count_only_when_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let b = Buffer::open(options(dir.path(), &["a"], 64 * 1024), metrics.clone()).unwrap();
        b.append(&payload(1.0, 1000), 7).unwrap();
        b.append(&payload(2.0, 1000), 7).unwrap();
        assert!(b.read_for(0, 1).unwrap().is_some());
        assert!(b.read_for(0, 2).unwrap().is_some());
        // Not sent: dropped and counted at once. Sent: settled by the ack or the stream's end.
        let mut i = 3;
        while b.next_for(0, 0).is_some_and(|s| s <= 2) {
            b.append(&payload(i as f64, 1000), 7).unwrap();
            i += 1;
        }
        let dropped = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("sonde_agent_buffer_dropped_samples_total{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .unwrap_or(0)
        };
        let before = dropped(&metrics.render());
        assert!(
            !b.ack(0, 1).unwrap(),
            "dropped batches do not count as delivered"
        );
        b.stream_ended(0);
        let after = dropped(&metrics.render());
        assert_eq!(
            after - before,
            7,
            "only batch 2 (never acknowledged) is lost"
        );
    }

    #[test]
    fn bound_drops_oldest_and_counts_per_replica() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let b = Buffer::open(options(dir.path(), &["a", "b"], 64 * 1024), metrics.clone()).unwrap();
        for i in 1..=200u64 {
            b.append(&payload(i as f64, 1000), 7).unwrap();
            b.ack(0, i).unwrap(); // replica a keeps up; b is away
        }
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= 64 * 1024, "{on_disk} bytes on disk");
        let first = b.next_for(1, 0).unwrap();
        assert!(first > 1, "the oldest batches were dropped for b");
        let text = metrics.render();
        let dropped_samples = (first - 1) * 7;
        assert!(
            text.contains(&format!(
                "sonde_agent_buffer_dropped_samples_total{{aggregator=\"b\"}} {dropped_samples}"
            )),
            "{text}"
        );
        assert!(!text.contains("sonde_agent_buffer_dropped_samples_total{aggregator=\"a\"}"));
    }

    #[test]
    fn a_torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(options(dir.path(), &["a"], 1 << 20));
            for i in 1..=3 {
                b.append(&payload(i as f64, 10), 1).unwrap();
            }
        }
        let segment = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let len = fs::metadata(&segment).unwrap().len();
        // Cut the last record in half, and flip a byte in the second one.
        File::options()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let b = open(options(dir.path(), &["a"], 1 << 20));
        assert!(b.read(2).unwrap().is_some());
        assert!(b.read(3).unwrap().is_none(), "the torn record is gone");
        assert_eq!(
            b.append(&payload(4.0, 10), 1).unwrap(),
            3,
            "its sequence is reused"
        );
        drop(b);
        let bytes = fs::read(&segment).unwrap();
        let mut corrupted = bytes.clone();
        let second = bytes.len() / 3 + HEADER + 2;
        corrupted[second] ^= 0xff;
        fs::write(&segment, corrupted).unwrap();
        let b = open(options(dir.path(), &["a"], 1 << 20));
        assert!(b.read(1).unwrap().is_some());
        assert_eq!(
            b.next_for(0, 1),
            None,
            "nothing after the corrupt record survives"
        );
    }

    #[test]
    fn a_directory_is_used_by_one_agent_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(options(dir.path(), &["a"], 1 << 20));
        let err = Buffer::open(
            options(dir.path(), &["a"], 1 << 20),
            Arc::new(Metrics::new()),
        )
        .unwrap_err();
        assert!(matches!(err, BufferError::Locked { .. }), "{err}");
    }
}
