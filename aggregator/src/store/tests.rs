//! Store tests across its parts: WAL replay, flush, blocks, compaction, spans, recovery.

use std::{collections::BTreeMap, time::Duration};

use super::*;

const STALE: u64 = 0x7ff0_0000_0000_0002;

fn labels(name: &str, job: &str) -> Labels {
    Labels::from_pairs([("__name__", name), ("job", job)])
}

fn s(t: i64, v: f64) -> Sample {
    Sample { t, v }
}

fn options() -> StoreOptions {
    StoreOptions {
        block_duration: Duration::from_secs(3600),
        compacted_block_duration: Duration::from_secs(4 * 3600),
        out_of_order_window: Duration::from_secs(600),
        retention_time: Duration::ZERO,
        ..Default::default()
    }
}

/// Every series the store holds, whole.
pub(crate) fn all(store: &Store) -> Vec<SeriesSamples> {
    store
        .select(
            &[Matcher::regex("__name__", ".+", false).unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
}

/// Samples as (t, value bits): comparable with NaN stale markers.
pub(crate) fn bits(samples: &[Sample]) -> Vec<(i64, u64)> {
    samples.iter().map(|s| (s.t, s.v.to_bits())).collect()
}

const H: i64 = 3_600_000;

#[test]
fn wal_replay_restores_acknowledged_samples_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(tmp.path(), options()).unwrap();
        store
            .append_batch(
                vec![
                    (
                        labels("a", "x"),
                        vec![s(1000, 1.5), s(2000, f64::from_bits(STALE))],
                    ),
                    (labels("b", "x"), vec![s(1000, -0.0)]),
                ],
                vec![],
            )
            .unwrap();
        // Duplicate with another value: first write wins.
        let out = store
            .append(labels("a", "x"), &[s(1000, 99.0), s(3000, 3.0)])
            .unwrap();
        assert_eq!((out.appended, out.duplicates), (1, 1));
        // Dropped without flush: only the WAL has the data.
    }
    let store = Store::open_with(tmp.path(), options()).unwrap();
    let got = all(&store);
    assert_eq!(got.len(), 2);
    assert_eq!(
        bits(&got[0].samples),
        vec![
            (1000, 1.5f64.to_bits()),
            (2000, STALE),
            (3000, 3f64.to_bits())
        ]
    );
    assert_eq!(bits(&got[1].samples), vec![(1000, (-0.0f64).to_bits())]);
}

#[test]
fn flush_moves_old_samples_to_blocks_and_select_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(tmp.path(), options()).unwrap();
    let series: Vec<Sample> = (0..(3 * 60))
        .map(|i| s(i * 60_000, i as f64 * 0.25))
        .collect();
    store
        .append_batch(
            vec![
                (labels("a", "x"), series.clone()),
                (labels("c", "y"), vec![s(10, f64::from_bits(STALE))]),
            ],
            vec![],
        )
        .unwrap();
    // Newest sample is at 179 min; window 10 min: hours 0 and 1 are flushable.
    assert_eq!(store.flush(false).unwrap(), 2);
    assert_eq!(store.disk_stats().blocks, 2);
    assert_eq!(store.stats().samples, 60, "head keeps only the last hour");
    let got = all(&store);
    assert_eq!(
        got[0].samples, series,
        "blocks + head give every sample once, in order"
    );
    assert_eq!(bits(&got[1].samples), vec![(10, STALE)]);
    // Range selection across the block boundary.
    let part = store
        .select(&[Matcher::equal("__name__", "a")], H - 60_000, H + 60_000)
        .unwrap();
    assert_eq!(part[0].samples.len(), 3);
    // Too old now: before newest - window.
    let err = store.append(labels("a", "x"), &[s(1000, 1.0)]).unwrap_err();
    assert!(err.is_permanent());
    assert!(
        err.to_string().contains("a{job=\"x\"}") && err.to_string().contains("1000"),
        "{err}"
    );
    drop(store);
    // Reopen: blocks load, WAL replay skips what was flushed.
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(all(&store)[0].samples, series);
    assert_eq!(store.series(&[], 0, 5 * H).unwrap().len(), 2);
    assert_eq!(
        store.label_values("job", &[], 0, 5 * H).unwrap(),
        ["x", "y"]
    );
}

#[test]
fn shutdown_flush_then_more_data_then_compaction_keeps_first_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(tmp.path(), options()).unwrap();
    store
        .append(labels("a", "x"), &[s(1000, 1.0), s(2000, 2.0)])
        .unwrap();
    store.flush(true).unwrap();
    assert_eq!(store.stats().samples, 0);
    drop(store);
    let store = Store::open_with(tmp.path(), options()).unwrap();
    // Same range again (an overlapping block after the next flush); 2000 is a duplicate of
    // a flushed sample: the block's value must win.
    store
        .append(labels("a", "x"), &[s(2000, 20.0), s(3000, 3.0)])
        .unwrap();
    assert_eq!(bits(&all(&store)[0].samples)[1], (2000, 2f64.to_bits()));
    store.flush(true).unwrap();
    assert_eq!(store.disk_stats().blocks, 2);
    assert_eq!(
        store.compact(false).unwrap(),
        1,
        "overlapping blocks are compacted"
    );
    assert_eq!(store.disk_stats().blocks, 1);
    assert_eq!(
        all(&store)[0].samples,
        vec![s(1000, 1.0), s(2000, 2.0), s(3000, 3.0)]
    );
}

/// Regression: after a shutdown flush, samples accepted inside the out-of-order window (older
/// than the flushed newest sample) must survive a crash.
#[test]
fn samples_within_the_window_after_a_full_flush_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(tmp.path(), options()).unwrap();
        store.append(labels("a", "x"), &[s(100_000, 1.0)]).unwrap();
        store.flush(true).unwrap();
    }
    {
        let store = Store::open_with(tmp.path(), options()).unwrap();
        store.append(labels("a", "x"), &[s(50_000, 0.5)]).unwrap();
        // Dropped without a flush: a crash.
    }
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(
        all(&store)[0].samples,
        vec![s(50_000, 0.5), s(100_000, 1.0)]
    );
}

#[test]
fn torn_wal_tail_is_cut_and_store_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(tmp.path(), options()).unwrap();
        store.append(labels("a", "x"), &[s(1000, 1.0)]).unwrap();
        store.append(labels("a", "x"), &[s(2000, 2.0)]).unwrap();
    }
    let wal = tmp.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    segments.sort();
    let data_segment = segments
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap()
        .clone();
    let len = std::fs::metadata(&data_segment).unwrap().len();
    let file = std::fs::File::options()
        .write(true)
        .open(&data_segment)
        .unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    // Remove the later, empty segments so the torn one is the last.
    for p in segments.iter().filter(|p| **p > data_segment) {
        std::fs::remove_file(p).unwrap();
    }
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(all(&store)[0].samples, vec![s(1000, 1.0)]);
    store.append(labels("a", "x"), &[s(3000, 3.0)]).unwrap();
    drop(store);
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(all(&store)[0].samples, vec![s(1000, 1.0), s(3000, 3.0)]);
}

#[test]
fn truncated_block_is_moved_aside_and_store_opens() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(tmp.path(), options()).unwrap();
        store.append(labels("a", "x"), &[s(1000, 1.0)]).unwrap();
        store.flush(true).unwrap();
    }
    let block = std::fs::read_dir(tmp.path().join("blocks"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let samples = block.join("samples.parquet");
    let len = std::fs::metadata(&samples).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&samples)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // An unfinished block from an interrupted write is removed too.
    std::fs::create_dir_all(tmp.path().join("blocks/.tmp-blk-00000099")).unwrap();
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert!(all(&store).is_empty());
    assert!(!tmp.path().join("blocks/.tmp-blk-00000099").exists());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("corrupt"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn spans_survive_restart_and_flush_and_are_found() {
    let tmp = tempfile::tempdir().unwrap();
    let span = |trace: u8, service: &str, start: i64, dur: i64| Span {
        trace_id: [trace; 16],
        span_id: [trace, 1, 2, 3, 4, 5, 6, 7],
        parent_span_id: None,
        service: service.to_owned(),
        name: "GET /".to_owned(),
        kind: 2,
        start_unix_nano: start,
        end_unix_nano: start + dur,
        status_code: 0,
        status_message: String::new(),
        attributes: vec![
            ("http.status_code".to_owned(), AttrValue::Int(200)),
            ("raw".to_owned(), AttrValue::Bytes(vec![0, 255])),
        ],
        resource: vec![(
            "service.name".to_owned(),
            AttrValue::Str(service.to_owned()),
        )],
    };
    {
        let store = Store::open_with(tmp.path(), options()).unwrap();
        store
            .append_spans(vec![
                span(1, "api", 1_000, 500),
                span(2, "db", 2_000, 5_000),
            ])
            .unwrap();
    }
    let store = Store::open_with(tmp.path(), options()).unwrap();
    let by_trace = SpanQuery {
        trace_id: Some([2; 16]),
        ..Default::default()
    };
    assert_eq!(
        store.find_spans(&by_trace).unwrap(),
        vec![span(2, "db", 2_000, 5_000)]
    );
    store.flush(false).unwrap();
    assert_eq!(store.spans.head_len(), 0, "spans went to a file");
    drop(store);
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(
        store.find_spans(&by_trace).unwrap(),
        vec![span(2, "db", 2_000, 5_000)]
    );
    let slow = SpanQuery {
        min_duration_ns: Some(1_000),
        ..Default::default()
    };
    assert_eq!(store.find_spans(&slow).unwrap().len(), 1);
    let api = SpanQuery {
        service: Some("api".into()),
        start_min_ns: Some(500),
        start_max_ns: Some(1_500),
        ..Default::default()
    };
    assert_eq!(
        store.find_spans(&api).unwrap(),
        vec![span(1, "api", 1_000, 500)]
    );
    assert!(
        store
            .find_spans(&SpanQuery {
                trace_id: Some([9; 16]),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
}

#[test]
fn retention_deletes_old_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        retention_time: Duration::from_secs(2 * 3600),
        ..options()
    };
    let store = Store::open_offline(tmp.path(), opts).unwrap();
    store
        .write_blocks(vec![(labels("a", "x"), vec![s(0, 1.0), s(5 * H, 2.0)])])
        .unwrap();
    assert_eq!(store.disk_stats().blocks, 2);
    store
        .append(labels("a", "x"), &[s(5 * H + 1, 3.0)])
        .unwrap();
    assert_eq!(store.apply_retention().unwrap(), 1);
    assert_eq!(
        all(&store)[0].samples,
        vec![s(5 * H, 2.0), s(5 * H + 1, 3.0)]
    );
}

#[test]
fn exemplars_are_logged_and_replayed_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        max_exemplars: 3,
        ..options()
    };
    let series = labels("lat_bucket", "api");
    let ex = |trace: &str, t: i64| Exemplar {
        labels: Labels::from_pairs([("trace_id", trace)]),
        value: 0.1,
        t,
    };
    let all_groups = vec![vec![Matcher::equal("__name__", "lat_bucket")]];
    {
        let store = Store::open_with(tmp.path(), opts.clone()).unwrap();
        let outcome = store
            .append_batch_with_exemplars(
                vec![(series.clone(), vec![s(1_000, 1.0)])],
                Vec::new(),
                vec![
                    (series.clone(), ex("a", 1_000)),
                    (series.clone(), ex("a", 1_000)),
                    (series.clone(), ex("b", 900)),
                ],
            )
            .unwrap();
        assert_eq!(
            (
                outcome.exemplars,
                outcome.exemplars_duplicate,
                outcome.exemplars_out_of_order
            ),
            (1, 1, 1)
        );
        // Exemplars alone (no samples) are a record of their own.
        store
            .append_batch_with_exemplars(
                Vec::new(),
                Vec::new(),
                vec![
                    (series.clone(), ex("c", 2_000)),
                    (series.clone(), ex("d", 3_000)),
                    (series.clone(), ex("e", 4_000)),
                ],
            )
            .unwrap();
        // A flush deletes WAL segments: the ring is checkpointed first.
        store.flush(true).unwrap();
    }
    {
        // Nothing new, but the next flush seals the checkpoint's segment and deletes it:
        // the ring must be logged again.
        let store = Store::open_with(tmp.path(), opts.clone()).unwrap();
        assert_eq!(store.exemplar_stats(), (3, 1));
        store.append(series.clone(), &[s(5_000, 2.0)]).unwrap();
        store.flush(true).unwrap();
        store.append(series.clone(), &[s(6_000, 2.0)]).unwrap();
        store.flush(true).unwrap();
    }
    let store = Store::open_with(tmp.path(), opts).unwrap();
    let got = store.select_exemplars(i64::MIN, i64::MAX, &all_groups);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, series);
    let traces: Vec<&str> = got[0]
        .exemplars
        .iter()
        .map(|e| e.labels.get("trace_id").unwrap())
        .collect();
    assert_eq!(traces, ["c", "d", "e"], "the ring keeps the newest 3");
    assert_eq!(store.exemplar_stats(), (3, 1));
    assert_eq!(
        store.select_exemplars(2_500, 3_500, &all_groups)[0].exemplars,
        vec![ex("d", 3_000)]
    );
    // Disabled: nothing kept.
    let tmp = tempfile::tempdir().unwrap();
    let off = Store::open_with(
        tmp.path(),
        StoreOptions {
            max_exemplars: 0,
            ..options()
        },
    )
    .unwrap();
    off.append_batch_with_exemplars(Vec::new(), Vec::new(), vec![(series, ex("a", 1))])
        .unwrap();
    assert_eq!(off.exemplar_stats(), (0, 0));
}

#[test]
fn trace_search_catalog_and_tags_across_head_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let span = |trace: u8, id: u8, service: &str, name: &str, start: i64, status: i64| Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: None,
        service: service.to_owned(),
        name: name.to_owned(),
        kind: 2,
        start_unix_nano: start,
        end_unix_nano: start + 100,
        status_code: 0,
        status_message: String::new(),
        attributes: vec![(
            "http.response.status_code".to_owned(),
            AttrValue::Int(status),
        )],
        resource: vec![("host.name".to_owned(), AttrValue::Str("h1".to_owned()))],
    };
    let store = Store::open_with(tmp.path(), options()).unwrap();
    store
        .append_spans(vec![
            span(1, 1, "api", "GET /a", 1_000, 200),
            span(1, 2, "api", "GET /a", 5_000, 500),
            span(2, 3, "api", "GET /b", 2_000, 200),
        ])
        .unwrap();
    store.flush(true).unwrap();
    store
        .append_spans(vec![
            span(3, 4, "api", "GET /a", 3_000, 200),
            span(4, 5, "db", "SELECT", 4_000, 200),
        ])
        .unwrap();
    let api = SpanQuery {
        service: Some("api".into()),
        ..Default::default()
    };
    // Newest first by each trace's newest matching span; the limit bounds traces.
    assert_eq!(
        store.find_trace_ids(&api, 0).unwrap(),
        vec![[1; 16], [3; 16], [2; 16]]
    );
    assert_eq!(
        store.find_trace_ids(&api, 2).unwrap(),
        vec![[1; 16], [3; 16]]
    );
    let errors = SpanQuery {
        tags: vec![("http.response.status_code".into(), "500".into())],
        ..api.clone()
    };
    assert_eq!(store.find_trace_ids(&errors, 0).unwrap(), vec![[1; 16]]);
    let resource_tag = SpanQuery {
        tags: vec![("host.name".into(), "h1".into())],
        name: Some("SELECT".into()),
        ..Default::default()
    };
    assert_eq!(
        store.find_trace_ids(&resource_tag, 0).unwrap(),
        vec![[4; 16]]
    );
    let two = store
        .find_spans(&SpanQuery {
            trace_ids: vec![[1; 16], [4; 16]],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(two.len(), 3);
    let catalog = store.span_catalog();
    assert_eq!(catalog.keys().collect::<Vec<_>>(), ["api", "db"]);
    assert_eq!(catalog["api"].len(), 2);
    drop(store);
    // The catalog is rebuilt from files and the replayed head.
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(store.span_catalog(), catalog);
}

/// Selections merge blocks and the head by labels: series only in the head (created in
/// reverse label order), only in blocks, in two overlapping blocks and the head (the first
/// write of a timestamp wins), samples appended out of order, a stale marker, and windows
/// from an instant query's five minutes (straddling block and head boundaries) to everything.
#[test]
fn select_merges_blocks_and_head_for_any_window_first_write_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(tmp.path(), options()).unwrap();
    let m = 60_000;
    // Every write, first one per timestamp kept: what every selection must return.
    let mut model: BTreeMap<Labels, BTreeMap<i64, u64>> = BTreeMap::new();
    // Appends the series ten minutes at a time, all series each time (older samples than
    // the out-of-order window allows are refused).
    let mut write = |store: &Store, batch: Vec<(Labels, Vec<Sample>)>| {
        for (labels, samples) in &batch {
            let times = model.entry(labels.clone()).or_default();
            for s in samples {
                times.entry(s.t).or_insert(s.v.to_bits());
            }
        }
        let first = batch.iter().flat_map(|(_, s)| s.first()).map(|s| s.t).min();
        let last = batch.iter().flat_map(|(_, s)| s.last()).map(|s| s.t).max();
        let (Some(first), Some(last)) = (first, last) else {
            return;
        };
        for from in (first..=last).step_by(10 * m as usize) {
            for (labels, samples) in &batch {
                let part: Vec<Sample> = samples
                    .iter()
                    .filter(|s| (from..from + 10 * m).contains(&s.t))
                    .copied()
                    .collect();
                if !part.is_empty() {
                    store.append(labels.clone(), &part).unwrap();
                }
            }
        }
    };
    let every = |from: i64, to: i64, v: f64| -> Vec<Sample> {
        (from..=to).map(|i| s(i * m, v + i as f64)).collect()
    };
    // Hours 0 to 2, jobs created last to first, appended ten minutes at a time (older
    // samples than the out-of-order window allows are refused); j0 gets minutes 125 and 127
    // late.
    let mut jobs = Vec::new();
    for job in ["j4", "j3", "j2", "j1", "j0"] {
        let mut samples = match job {
            "j3" => every(100, 130, 0.5),
            "j1" => [every(0, 40, 0.0), every(90, 130, 0.0)].concat(),
            _ => every(0, 130, 0.25),
        };
        if job == "j0" {
            samples.retain(|s| s.t != 125 * m && s.t != 127 * m);
        }
        if job == "j2" {
            samples[65] = s(65 * m, f64::from_bits(STALE));
        }
        jobs.push((job, samples));
    }
    write(
        &store,
        jobs.into_iter().map(|(j, s)| (labels("m", j), s)).collect(),
    );
    write(
        &store,
        vec![(labels("m", "j0"), vec![s(125 * m, 7.0), s(127 * m, 8.0)])],
    );
    store.flush(true).unwrap();
    // The same minutes 126 to 130 again with other values (the blocks' must win), on to 180,
    // plus a series only written now.
    let mut batch: Vec<(Labels, Vec<Sample>)> = ["j4", "j2", "j0"]
        .into_iter()
        .map(|job| (labels("m", job), every(126, 180, 1000.0)))
        .collect();
    batch.push((labels("m", "h"), every(150, 180, 0.0)));
    write(&store, batch);
    // A second block overlapping the first, then the head overlapping it.
    store.flush(true).unwrap();
    write(
        &store,
        ["j4", "j0", "h", "new"]
            .into_iter()
            .map(|job| (labels("m", job), every(175, 200, 2000.0)))
            .collect(),
    );
    assert!(store.disk_stats().blocks >= 4, "{:?}", store.disk_stats());

    let mut windows = vec![(i64::MIN, i64::MAX), (0, 200 * m), (59 * m, 61 * m)];
    for end in (0..=205).step_by(3) {
        windows.push(((end - 5) * m, end * m));
        windows.push(((end - 60) * m, end * m));
    }
    let name = Matcher::equal("__name__", "m");
    for (mint, maxt) in windows {
        let got: Vec<(Labels, Vec<(i64, u64)>)> = store
            .select(std::slice::from_ref(&name), mint, maxt)
            .unwrap()
            .into_iter()
            .map(|s| (s.labels, bits(&s.samples)))
            .collect();
        let want: Vec<(Labels, Vec<(i64, u64)>)> = model
            .iter()
            .map(|(l, times)| {
                let samples = times
                    .range(mint..=maxt)
                    .map(|(&t, &v)| (t, v))
                    .collect::<Vec<_>>();
                (l.clone(), samples)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        assert_eq!(got, want, "[{mint}, {maxt}]");
    }
}
