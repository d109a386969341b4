//! `sonde-aggregator import` against `promtool tsdb create-blocks-from openmetrics` on the
//! same file, and the resulting Parquet blocks read by another engine (pyarrow).

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
};

use sonde_aggregator::store::{Matcher, Store};
use sonde_tests::binary;

/// An OpenMetrics file over 3 hours (crossing block boundaries) with counters, decimal and
/// full-precision gauges, NaN, negative zero, a histogram, escapes, metadata and an
/// exemplar.
fn fixture() -> String {
    let mut s = String::new();
    s.push_str("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n");
    s.push_str("# TYPE node_cpu_seconds_total counter\n");
    s.push_str(
        "# TYPE node_load1 gauge\n# TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\n",
    );
    let start = 1_767_225_600; // 2026-01-01T00:00:00Z, 2h-aligned.
    for (j, mode) in ["idle", "user"].iter().enumerate() {
        for i in 0..720 {
            let v = 1000.0 + i as f64 * (13.37 + j as f64) + (i % 7) as f64 * 0.01;
            s.push_str(&format!(
                "node_cpu_seconds_total{{cpu=\"0\",mode=\"{mode}\"}} {:.2} {}\n",
                v,
                start + i * 15
            ));
        }
    }
    for i in 0..720 {
        let v = match i {
            100 => "NaN".to_owned(),
            101 => "-0".to_owned(),
            102 => "+Inf".to_owned(),
            _ => format!("{}", (i as f64 * 0.7).sin() * 3.0),
        };
        s.push_str(&format!(
            "node_load1{{path=\"C:\\\\x \\\"q\\\"\"}} {v} {}.{:03}\n",
            start + i * 15,
            i % 1000
        ));
    }
    for i in 0..720u64 {
        let t = start + i as i64 * 15;
        let mut cum = 0;
        for (k, le) in ["0.1", "1", "+Inf"].iter().enumerate() {
            cum += i * (k as u64 + 1);
            let exemplar = if k == 2 {
                " # {trace_id=\"abc\"} 0.5"
            } else {
                ""
            };
            s.push_str(&format!(
                "lat_seconds_bucket{{le=\"{le}\"}} {cum} {t}{exemplar}\n"
            ));
        }
        s.push_str(&format!("lat_seconds_count {cum} {t}\n"));
        s.push_str(&format!(
            "lat_seconds_sum {} {t}\n",
            i as f64 * 0.123_456_789
        ));
    }
    s.push_str("# EOF\n");
    s
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every sample in the store, keyed by (series text, t), value bits (NaNs collapsed).
fn sonde_samples(dir: &Path) -> BTreeMap<(String, i64), u64> {
    let store = Store::open(dir).expect("store opens");
    let mut out = BTreeMap::new();
    for s in store
        .select(
            &[Matcher::regex("__name__", ".+", false).unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
    {
        for sample in s.samples {
            out.insert((s.labels.to_string(), sample.t), sample.v.to_bits());
        }
    }
    out
}

/// `promtool tsdb dump` output parsed the same way.
fn promtool_samples(dir: &Path) -> BTreeMap<(String, i64), u64> {
    // `promtool tsdb dump` insists on a WAL directory, which create-blocks-from does not make.
    std::fs::create_dir_all(dir.join("wal")).unwrap();
    let dump = ok(Command::new("promtool").args(["tsdb", "dump"]).arg(dir));
    let mut out = BTreeMap::new();
    for line in dump.lines() {
        // {__name__="a", b="c"} 1.5 1700000000000
        let close = line.rfind('}').expect("labels");
        let mut rest = line[close + 1..].split_whitespace();
        let v: f64 = match rest.next().unwrap() {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            x => x.parse().unwrap(),
        };
        let t: i64 = rest.next().unwrap().parse().unwrap();
        // Rebuild the labels in Sonde's notation: name{a="b", …}.
        let labels = &line[1..close];
        let mut name = String::new();
        let mut others = Vec::new();
        for pair in split_pairs(labels) {
            let (k, v) = pair.split_once('=').unwrap();
            if k == "__name__" {
                name = v.trim_matches('"').to_owned();
            } else {
                others.push(format!("{k}={v}"));
            }
        }
        out.insert((format!("{name}{{{}}}", others.join(", ")), t), v.to_bits());
    }
    out
}

/// Splits `a="x", b="y,z"` at the commas outside quotes.
fn split_pairs(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

fn canonical_nan(bits: u64) -> u64 {
    if f64::from_bits(bits).is_nan() {
        0x7ff8_0000_0000_0001
    } else {
        bits
    }
}

#[test]
fn import_matches_promtool_on_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.om");
    std::fs::write(&file, fixture()).unwrap();
    let sonde = tmp.path().join("sonde");
    let summary = ok(Command::new(binary("sonde-aggregator"))
        .arg("import")
        .arg("--data-dir")
        .arg(&sonde)
        .arg(&file));
    assert!(
        summary.contains("imported 5760 samples of 8 series"),
        "{summary}"
    );
    let prom = tmp.path().join("prom");
    ok(Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&prom));
    let ours = sonde_samples(&sonde);
    let theirs = promtool_samples(&prom);
    assert_eq!(ours.len(), 5760);
    let ours: BTreeMap<_, _> = ours
        .into_iter()
        .map(|(k, v)| (k, canonical_nan(v)))
        .collect();
    let theirs: BTreeMap<_, _> = theirs
        .into_iter()
        .map(|(k, v)| (k, canonical_nan(v)))
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for ((key, ours), (tkey, theirs)) in ours.iter().zip(&theirs) {
        assert_eq!(key, tkey, "same series and timestamps as promtool");
        assert_eq!(ours, theirs, "{key:?}: same value bits as promtool");
    }
    // Metadata is imported and persisted.
    let store = Store::open(&sonde).unwrap();
    let meta = store.metadata();
    assert_eq!(
        meta["node_cpu_seconds_total"].help,
        "Seconds the CPUs spent in each mode."
    );
    assert_eq!(meta["lat_seconds"].unit, "seconds");
}

#[test]
fn import_errors_name_file_and_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.om");
    std::fs::write(&file, "up 1 1\nup{job=\"a\" 2 2\n# EOF\n").unwrap();
    let data = tmp.path().join("data");
    let out = run(Command::new(binary("sonde-aggregator"))
        .arg("import")
        .arg("--data-dir")
        .arg(&data)
        .arg(&file));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    assert!(!data.join("blocks").exists(), "nothing written");
    // promtool refuses it too.
    assert!(
        !run(Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(tmp.path().join("prom")))
        .status
        .success()
    );
}

const READER: &str = r#"
import json, struct, sys, glob, os
import pyarrow.parquet as pq
out = {"samples": [], "schemas": {}}
for block in sorted(glob.glob(os.path.join(sys.argv[1], "blocks", "blk-*"))):
    series = pq.read_table(os.path.join(block, "series.parquet"))
    samples = pq.read_table(os.path.join(block, "samples.parquet"))
    out["schemas"]["series"] = [f"{f.name}:{f.type}" for f in series.schema if f.name != "labels"]
    out["schemas"]["samples"] = [f"{f.name}:{f.type}" for f in samples.schema]
    meta = pq.ParquetFile(os.path.join(block, "samples.parquet")).metadata
    out["schemas"]["encodings"] = {meta.row_group(0).column(i).path_in_schema: list(meta.row_group(0).column(i).encodings) for i in range(meta.num_columns)}
    names = {}
    for row in series.to_pylist():
        labels = {k: v for k, v in row["labels"].items() if v is not None}
        name = labels.pop("__name__")
        inner = ", ".join(f'{k}={json.dumps(v)}' for k, v in sorted(labels.items()))
        names[row["series_id"]] = f"{name}{{{inner}}}"
    sid = samples.column("series_id").to_pylist()
    ts = samples.column("t").cast("int64").to_pylist()
    vi = samples.column("v_int").to_pylist()
    sc = samples.column("v_scale").to_pylist()
    vf = samples.column("v_float").to_pylist()
    for s, t, i, k, f in zip(sid, ts, vi, sc, vf):
        v = f if f is not None else i / 10**k
        out["samples"].append([names[s], t, struct.unpack("<Q", struct.pack("<d", v))[0]])
print(json.dumps(out))
"#;

/// pyarrow, installed with pip when missing.
fn ensure_pyarrow() {
    let has = |m: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("pyarrow") {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "pyarrow"])
            .status()
            .expect("python3 -m pip");
        if !status.success() {
            ok(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--break-system-packages",
                "pyarrow",
            ]));
        }
    }
    assert!(has("pyarrow"), "pyarrow could not be installed");
}

#[test]
fn blocks_are_plain_parquet_that_pyarrow_reads() {
    ensure_pyarrow();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.om");
    std::fs::write(&file, fixture()).unwrap();
    let data = tmp.path().join("sonde");
    ok(Command::new(binary("sonde-aggregator"))
        .arg("import")
        .arg("--data-dir")
        .arg(&data)
        .arg(&file));
    let json = ok(Command::new("python3").args(["-c", READER]).arg(&data));
    let read: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        read["schemas"]["samples"],
        serde_json::json!([
            "series_id:uint32",
            "t:timestamp[ms, tz=UTC]",
            "v_int:int64",
            "v_scale:int8",
            "v_float:double"
        ])
    );
    assert_eq!(
        read["schemas"]["series"],
        serde_json::json!([
            "series_id:uint32",
            "min_t:timestamp[ms, tz=UTC]",
            "max_t:timestamp[ms, tz=UTC]"
        ])
    );
    let enc = &read["schemas"]["encodings"];
    assert!(
        enc["t"].to_string().contains("DELTA_BINARY_PACKED"),
        "{enc}"
    );
    assert!(
        enc["v_int"].to_string().contains("DELTA_BINARY_PACKED"),
        "{enc}"
    );
    assert!(
        enc["v_float"].to_string().contains("BYTE_STREAM_SPLIT"),
        "{enc}"
    );
    let theirs: BTreeMap<(String, i64), u64> = read["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()),
                r[2].as_u64().unwrap(),
            )
        })
        .collect();
    let ours = sonde_samples(&data);
    assert_eq!(theirs.len(), 5760);
    assert_eq!(ours, theirs, "pyarrow decodes every value to the same bits");
}
