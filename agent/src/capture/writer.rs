//! The streaming capture writer: a thread that receives [`Record`]s through a bounded
//! channel and writes a Parquet row group every [`ROW_GROUP_ROWS`] rows, so memory stays
//! bounded however long the capture runs. The file is written as `<output>.partial` and
//! renamed once its footer is written: a file at the output path is always complete.
//!
//! Must not: block the agent indefinitely (senders block only while the channel is full,
//! which a running writer drains).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::{metadata::KeyValue, properties::WriterProperties},
};

use super::{
    CaptureError, Record,
    schema::{self, ROW_GROUP_ROWS},
};

/// Records queued between the agent and the writer thread.
const CHANNEL_RECORDS: usize = 16 * 1024;

// Rows are nearly every message; boxing them would allocate once more per row.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Row(Record),
    Meta(String, String),
    Finish,
}

/// Hands records to the writer thread; cloneable, cheap.
#[derive(Clone, Debug)]
pub struct RecordSender {
    tx: SyncSender<Msg>,
    sent: Arc<AtomicU64>,
}

impl RecordSender {
    /// Queues one record (waits while the channel is full). After [`CaptureWriter::finish`]
    /// records are discarded.
    pub fn send(&self, record: Record) {
        if self.tx.send(Msg::Row(record)).is_ok() {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds a key/value pair to the file's metadata (written with the footer).
    pub fn metadata(&self, key: String, value: String) {
        let _ = self.tx.send(Msg::Meta(key, value));
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Row(_) => "Row",
            Msg::Meta(..) => "Meta",
            Msg::Finish => "Finish",
        })
    }
}

/// A capture file being written.
#[derive(Debug)]
pub struct CaptureWriter {
    sender: RecordSender,
    thread: JoinHandle<Result<u64, CaptureError>>,
    path: PathBuf,
}

impl CaptureWriter {
    /// Creates `<path>.partial` with `metadata` (key/value pairs) and starts the thread.
    pub fn create(path: &Path, metadata: Vec<(String, String)>) -> Result<Self, CaptureError> {
        let partial = partial_path(path);
        let file = File::create(&partial).map_err(|source| CaptureError::Io {
            path: partial.clone(),
            source,
        })?;
        let mut kv = vec![KeyValue::new(
            schema::meta::VERSION.to_owned(),
            schema::FORMAT_VERSION.to_owned(),
        )];
        kv.extend(metadata.into_iter().map(|(k, v)| KeyValue::new(k, v)));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_key_value_metadata(Some(kv))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema::schema(), Some(props)).map_err(|source| {
                CaptureError::Parquet {
                    path: partial.clone(),
                    source,
                }
            })?;
        let (tx, rx) = sync_channel(CHANNEL_RECORDS);
        let final_path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("sonde-capture".to_owned())
            .spawn(move || write_loop(rx, writer, &partial, &final_path))
            .map_err(|e| CaptureError::Writer {
                path: path.to_owned(),
                problem: e.to_string(),
            })?;
        Ok(Self {
            sender: RecordSender {
                tx,
                sent: Arc::new(AtomicU64::new(0)),
            },
            thread,
            path: path.to_owned(),
        })
    }

    /// A sender for other threads.
    pub fn sender(&self) -> RecordSender {
        self.sender.clone()
    }

    /// Writes what is queued, the footer, and renames the file into place. Returns the rows
    /// written.
    pub fn finish(self) -> Result<u64, CaptureError> {
        // Even if a sender clone lives on somewhere, `Finish` ends the loop.
        let _ = self.sender.tx.send(Msg::Finish);
        drop(self.sender);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err(CaptureError::Writer {
                path: self.path,
                problem: "the writer thread panicked".to_owned(),
            }),
        }
    }
}

/// `<path>.partial`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn write_loop(
    rx: Receiver<Msg>,
    mut writer: ArrowWriter<File>,
    partial: &Path,
    path: &Path,
) -> Result<u64, CaptureError> {
    let parquet = |source| CaptureError::Parquet {
        path: partial.to_owned(),
        source,
    };
    let mut pending: Vec<Record> = Vec::with_capacity(ROW_GROUP_ROWS);
    let mut rows = 0u64;
    let mut write = |pending: &mut Vec<Record>, writer: &mut ArrowWriter<File>| {
        if pending.is_empty() {
            return Ok(());
        }
        let batch = schema::to_batch(pending).map_err(|source| CaptureError::Arrow {
            path: partial.to_owned(),
            source,
        })?;
        rows += pending.len() as u64;
        pending.clear();
        writer.write(&batch).map_err(parquet)?;
        // Whole row groups go to the file now; only the next group is held in memory.
        if writer.in_progress_rows() >= ROW_GROUP_ROWS {
            writer.flush().map_err(parquet)?;
        }
        Ok(())
    };
    loop {
        match rx.recv() {
            Ok(Msg::Row(record)) => {
                pending.push(record);
                if pending.len() >= ROW_GROUP_ROWS {
                    write(&mut pending, &mut writer)?;
                }
            }
            Ok(Msg::Meta(key, value)) => {
                writer.append_key_value_metadata(KeyValue::new(key, value))
            }
            Ok(Msg::Finish) | Err(_) => break,
        }
    }
    write(&mut pending, &mut writer)?;
    let file = writer.into_inner().map_err(parquet)?;
    file.sync_all().map_err(|source| CaptureError::Io {
        path: partial.to_owned(),
        source,
    })?;
    std::fs::rename(partial, path).map_err(|source| CaptureError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(rows)
}
