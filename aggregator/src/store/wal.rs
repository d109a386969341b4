//! The write-ahead log: every accepted append is written here (one CRC-framed record per
//! batch) before the head applies it, and fsynced per the configured policy before the
//! append returns.
//!
//! Layout: `wal/<seq>.wal` segments (8-digit sequence numbers), each opening with the magic
//! `SONDWAL1`. A new segment is started at every head flush and when the current one passes
//! its size limit; a sealed segment is deleted once every sample in it is older than the
//! flushed watermark. Replay reads segments in order; a torn or corrupt record at the end of
//! the last segment is cut off (the append it belonged to was never acknowledged), one in an
//! earlier segment ends that segment's replay; both are logged.
//!
//! Must not: interpret entries beyond framing and refs (the store applies them).

pub mod record;

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use self::record::{Entry, RecordBuf};

/// Magic bytes at the start of every segment.
pub const MAGIC: &[u8; 8] = b"SONDWAL1";

/// Why the WAL failed.
#[derive(Debug, thiserror::Error)]
#[error("write-ahead log {path}: {source}")]
pub struct WalError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug)]
struct Sealed {
    path: PathBuf,
    max_t: Option<i64>,
}

#[derive(Debug)]
struct Current {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    max_t: Option<i64>,
}

/// What replay reports, in log order.
#[derive(Debug)]
pub enum ReplayEvent {
    /// A new segment begins: refs from earlier segments no longer apply.
    Segment(PathBuf),
    /// An entry of the current segment.
    Entry(Entry),
}

/// The open log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    sealed: Vec<Sealed>,
    current: Current,
    /// Bytes written since open, across segments (the position fsyncs are tracked by).
    written: u64,
    /// Head series ids whose definition is in the current segment.
    defined: Vec<bool>,
    segment_bytes: u64,
}

fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wal")?.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir))
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Replays one segment's bytes; returns the length of its valid prefix and its newest sample.
fn replay_segment(
    path: &Path,
    data: &[u8],
    on_event: &mut impl FnMut(ReplayEvent),
) -> (usize, Option<i64>, Option<String>) {
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return (0, None, Some("missing segment header".to_owned()));
    }
    on_event(ReplayEvent::Segment(path.to_owned()));
    let mut pos = MAGIC.len();
    let mut max_t = None;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < record::HEADER {
            return (
                pos,
                max_t,
                Some(format!("torn record header at byte {pos}")),
            );
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let Some(payload) = rest.get(record::HEADER..record::HEADER + len) else {
            return (pos, max_t, Some(format!("torn record at byte {pos}")));
        };
        if crc32fast::hash(payload) != crc {
            return (pos, max_t, Some(format!("checksum mismatch at byte {pos}")));
        }
        let Some(entries) = record::decode(payload) else {
            return (pos, max_t, Some(format!("malformed record at byte {pos}")));
        };
        for entry in entries {
            if let Entry::Samples { samples, .. } = &entry {
                max_t = max_opt(max_t, samples.iter().map(|s| s.t).max());
            }
            on_event(ReplayEvent::Entry(entry));
        }
        pos += record::HEADER + len;
    }
    (pos, max_t, None)
}

impl Wal {
    /// Opens the log in `dir`, replaying every segment through `on_event`, and starts a new
    /// segment for writing.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        mut on_event: impl FnMut(ReplayEvent),
    ) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(err(dir))?
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| segment_seq(&p).map(|s| (s, p)))
            .collect();
        paths.sort();
        let mut sealed = Vec::new();
        let last = paths.len().saturating_sub(1);
        for (i, (_, path)) in paths.iter().enumerate() {
            let data = std::fs::read(path).map_err(err(path))?;
            let (valid, max_t, problem) = replay_segment(path, &data, &mut on_event);
            if let Some(problem) = problem {
                if i == last {
                    tracing::warn!(
                        segment = %path.display(),
                        %problem,
                        kept_bytes = valid,
                        dropped_bytes = data.len() - valid,
                        "WAL: truncating the torn tail of the last segment (an unacknowledged write)"
                    );
                    let file = File::options().write(true).open(path).map_err(err(path))?;
                    file.set_len(valid.max(MAGIC.len()) as u64)
                        .and_then(|()| {
                            if valid < MAGIC.len() {
                                (&file).write_all(MAGIC)?;
                            }
                            file.sync_all()
                        })
                        .map_err(err(path))?;
                } else {
                    tracing::error!(
                        segment = %path.display(),
                        %problem,
                        lost_bytes = data.len() - valid,
                        "WAL: corrupt record inside a sealed segment; the rest of this segment \
                         cannot be replayed"
                    );
                }
            }
            sealed.push(Sealed {
                path: path.clone(),
                max_t,
            });
        }
        let next = paths.last().map_or(1, |(s, _)| s + 1);
        let current = Self::create_segment(dir, next)?;
        Ok(Self {
            dir: dir.to_owned(),
            sealed,
            current,
            written: 0,
            defined: Vec::new(),
            segment_bytes,
        })
    }

    fn create_segment(dir: &Path, seq: u64) -> Result<Current, WalError> {
        let path = dir.join(format!("{seq:08}.wal"));
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(err(&path))?;
        file.write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(err(&path))?;
        sync_dir(dir)?;
        Ok(Current {
            seq,
            path,
            file: Arc::new(file),
            len: MAGIC.len() as u64,
            max_t: None,
        })
    }

    /// Whether head series `id` is defined in the current segment.
    pub fn is_defined(&self, id: u32) -> bool {
        self.defined.get(id as usize).copied().unwrap_or(false)
    }

    /// Records that head series `id` is defined in the current segment.
    pub fn mark_defined(&mut self, id: u32) {
        let i = id as usize;
        if self.defined.len() <= i {
            self.defined.resize(i + 1, false);
        }
        self.defined[i] = true;
    }

    /// Writes one framed record whose newest sample is `max_t`; returns the log position
    /// after it (for [`Self::sync_target`]). On failure the segment is cut back to its
    /// previous length so no torn record stays behind.
    pub fn append(&mut self, record: &[u8], max_t: Option<i64>) -> Result<u64, WalError> {
        let current = &mut self.current;
        if let Err(source) = (&*current.file).write_all(record) {
            let _ = current.file.set_len(current.len);
            return Err(WalError {
                path: current.path.clone(),
                source,
            });
        }
        current.len += record.len() as u64;
        current.max_t = max_opt(current.max_t, max_t);
        self.written += record.len() as u64;
        Ok(self.written)
    }

    /// Sequence number of the segment being written.
    pub fn current_segment(&self) -> u64 {
        self.current.seq
    }

    /// Whether the current segment is over its size limit (the caller rotates, since
    /// rotation resets series definitions the head must know about).
    pub fn wants_rotation(&self) -> bool {
        self.current.len >= self.segment_bytes
    }

    /// Seals the current segment (fsynced) and starts a new one.
    pub fn rotate(&mut self) -> Result<(), WalError> {
        self.current
            .file
            .sync_data()
            .map_err(err(&self.current.path))?;
        let next = Self::create_segment(&self.dir, self.current.seq + 1)?;
        let old = std::mem::replace(&mut self.current, next);
        self.sealed.push(Sealed {
            path: old.path,
            max_t: old.max_t,
        });
        self.defined.clear();
        Ok(())
    }

    /// The current segment's file and the log position a `sync_data` on it makes durable.
    pub fn sync_target(&self) -> (Arc<File>, u64) {
        (self.current.file.clone(), self.written)
    }

    /// Deletes sealed segments whose every sample is older than `cut` (all of them when
    /// `cut` is `None`); returns how many.
    pub fn delete_sealed_before(&mut self, cut: Option<i64>) -> Result<usize, WalError> {
        let mut deleted = 0;
        let mut keep = Vec::new();
        for segment in std::mem::take(&mut self.sealed) {
            let obsolete = match (cut, segment.max_t) {
                (None, _) | (_, None) => true,
                (Some(cut), Some(max_t)) => max_t < cut,
            };
            // Segments go in order: stop at the first one still needed so replay never sees
            // a later segment without the earlier ones it follows.
            if obsolete && keep.is_empty() {
                std::fs::remove_file(&segment.path).map_err(err(&segment.path))?;
                deleted += 1;
            } else {
                keep.push(segment);
            }
        }
        self.sealed = keep;
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }

    /// Bytes of all segments on disk.
    pub fn bytes(&self) -> u64 {
        self.sealed
            .iter()
            .filter_map(|s| std::fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + self.current.len
    }
}
