# Re-encodes Sonde's samples table with alternative Parquet encodings and prints the size of
# each, so the choices in aggregator/src/store/block/schema.rs rest on measurements.
# Usage: python3 encodings.py DATA_DIR SAMPLES
import glob, io, os, sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq

data_dir, samples = sys.argv[1], int(sys.argv[2])
tables = [pq.read_table(p) for p in sorted(glob.glob(os.path.join(data_dir, "blocks", "blk-*", "samples.parquet")))]
t = pa.concat_tables(tables)
# Values as plain float64 (what a single value column would hold).
scale = pc.power(pa.scalar(10.0), pc.cast(t["v_scale"], pa.float64()))
as_float = pc.if_else(pc.is_null(t["v_float"]), pc.divide(pc.cast(t["v_int"], pa.float64()), scale), t["v_float"])
single = pa.table({"series_id": t["series_id"], "t": t["t"], "v": as_float})

def size(table, **kw):
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return len(buf.getvalue())

delta = {"series_id": "DELTA_BINARY_PACKED", "t": "DELTA_BINARY_PACKED", "v_int": "DELTA_BINARY_PACKED", "v_float": "BYTE_STREAM_SPLIT"}
variants = [
    ("chosen: delta ints, BSS floats, zstd 3", t, dict(compression="zstd", compression_level=3, use_dictionary=["v_scale"], column_encoding=delta)),
    ("same, zstd 1", t, dict(compression="zstd", compression_level=1, use_dictionary=["v_scale"], column_encoding=delta)),
    ("same, zstd 9", t, dict(compression="zstd", compression_level=9, use_dictionary=["v_scale"], column_encoding=delta)),
    ("same, zstd 19", t, dict(compression="zstd", compression_level=19, use_dictionary=["v_scale"], column_encoding=delta)),
    ("split columns, pyarrow defaults (dictionary), zstd 3", t, dict(compression="zstd", compression_level=3)),
    ("split columns, PLAIN, zstd 3", t, dict(compression="zstd", compression_level=3, use_dictionary=False)),
    ("split columns, v_float PLAIN instead of BSS", t, dict(compression="zstd", compression_level=3, use_dictionary=["v_scale"], column_encoding={**delta, "v_float": "PLAIN"})),
    ("one float64 value column, BSS, zstd 3", single, dict(compression="zstd", compression_level=3, use_dictionary=False, column_encoding={"series_id": "DELTA_BINARY_PACKED", "t": "DELTA_BINARY_PACKED", "v": "BYTE_STREAM_SPLIT"})),
    ("one float64 value column, PLAIN, zstd 3", single, dict(compression="zstd", compression_level=3, use_dictionary=False, column_encoding={"series_id": "DELTA_BINARY_PACKED", "t": "DELTA_BINARY_PACKED", "v": "PLAIN"})),
]
print(f"{'samples table variant':<55} {'bytes':>12} {'B/sample':>9}")
for name, table, kw in variants:
    n = size(table, **kw)
    print(f"{name:<55} {n:>12} {n / samples:>9.3f}")
