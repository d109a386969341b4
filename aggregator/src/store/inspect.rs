//! `sonde-aggregator inspect`: a read-only report of the blocks in a data directory, with
//! the compressed size of every Parquet column, so encodings are chosen by measurement.
//!
//! Must not: take the data directory lock or change anything (it works beside a running
//! aggregator).

use std::{collections::BTreeMap, fmt::Write as _, fs::File, path::Path};

use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{BlockError, BlockMeta, StoreError};

/// Column sizes summed over files: (compressed, uncompressed, encodings).
type Columns = BTreeMap<String, (u64, u64, String)>;

fn add_file(path: &Path, columns: &mut Columns) -> Result<(), BlockError> {
    let file = File::open(path).map_err(BlockError::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(BlockError::parquet(path))?;
    for rg in reader.metadata().row_groups() {
        for col in rg.columns() {
            let name = format!(
                "{}/{}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                col.column_path().string()
            );
            let entry = columns.entry(name).or_default();
            entry.0 += col.compressed_size() as u64;
            entry.1 += col.uncompressed_size() as u64;
            entry.2 = format!("{:?}", col.encodings().collect::<Vec<_>>());
        }
    }
    Ok(())
}

/// The report for the data directory `dir`.
pub fn inspect(dir: &Path) -> Result<String, StoreError> {
    let blocks_dir = dir.join("blocks");
    let mut out = String::new();
    let mut columns = Columns::new();
    let (mut samples, mut bytes) = (0u64, 0u64);
    let mut entries: Vec<_> = std::fs::read_dir(&blocks_dir)
        .map_err(|source| StoreError::Io {
            path: blocks_dir.clone(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("blk-"))
        })
        .collect();
    entries.sort();
    for block in entries {
        let meta_path = block.join("meta.json");
        let meta: BlockMeta = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| BlockError::invalid(&meta_path, "unreadable meta.json"))?;
        let mut block_bytes = 0;
        for file in [
            "samples.parquet",
            "series.parquet",
            "chunks.parquet",
            "meta.json",
        ] {
            block_bytes += std::fs::metadata(block.join(file)).map_or(0, |m| m.len());
        }
        for file in ["samples.parquet", "series.parquet", "chunks.parquet"] {
            let path = block.join(file);
            // Format-1 blocks have no chunks.parquet.
            if path.exists() {
                add_file(&path, &mut columns)?;
            }
        }
        let _ = writeln!(
            out,
            "{}: level {} [{}, {}] ms, {} series, {} samples, {} B ({:.3} B/sample)",
            block.file_name().unwrap_or_default().to_string_lossy(),
            meta.level,
            meta.min_t,
            meta.max_t,
            meta.series,
            meta.samples,
            block_bytes,
            block_bytes as f64 / meta.samples.max(1) as f64
        );
        samples += meta.samples;
        bytes += block_bytes;
    }
    let _ = writeln!(
        out,
        "total: {samples} samples, {bytes} B, {:.3} B/sample\n",
        bytes as f64 / samples.max(1) as f64
    );
    let _ = writeln!(
        out,
        "{:<40} {:>12} {:>12} {:>9}  encodings",
        "column", "compressed", "plain", "B/sample"
    );
    for (name, (compressed, uncompressed, encodings)) in &columns {
        let _ = writeln!(
            out,
            "{name:<40} {compressed:>12} {uncompressed:>12} {:>9.3}  {encodings}",
            *compressed as f64 / samples.max(1) as f64
        );
    }
    Ok(out)
}
