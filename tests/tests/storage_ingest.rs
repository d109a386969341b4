//! What ingest stores, through the real binary: spans are stored (and come back from the
//! store after a restart), samples too old for the out-of-order window are rejected with an
//! error naming the series and timestamp, and out-of-order samples within it are accepted.

use sonde_aggregator::store::{Store, spans::SpanQuery};
use sonde_proto::v1::{AckStatus, AnyValue, BatchPayload, KeyValue, Span, any_value::Value};
use sonde_tests::{Aggregator, series_batch};

#[test]
fn spans_are_stored_and_too_old_samples_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agg = Aggregator::start_in(Some(&data), None, &[]);
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![1; 8],
        parent_span_id: Default::default(),
        name: "GET /users".into(),
        kind: 2,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_250_000_000,
        status: 0,
        status_message: String::new(),
        attributes: vec![],
        resource: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("users".into())),
            }),
        }],
    };
    let payload = BatchPayload {
        spans: vec![span],
        ..Default::default()
    };
    let spans_batch = sonde_proto::codec::encode_batch("span-agent", 1, 1, &payload, 3);
    let acks = agg.push(vec![
        spans_batch,
        series_batch("a", 1, "up", &[("job", "x")], &[(10 * 3_600_000, 1.0)]),
        // 30 min behind the newest sample: inside the 1h window, accepted.
        series_batch(
            "a",
            2,
            "up",
            &[("job", "x")],
            &[(10 * 3_600_000 - 1_800_000, 0.5)],
        ),
        // 2h behind: too old.
        series_batch("a", 3, "up", &[("job", "x")], &[(8 * 3_600_000, 2.0)]),
    ]);
    assert_eq!(acks[0].status, AckStatus::Ok as i32, "{:?}", acks[0]);
    assert_eq!(acks[0].spans_stored, 1);
    assert_eq!(
        (acks[1].status, acks[2].status),
        (AckStatus::Ok as i32, AckStatus::Ok as i32)
    );
    assert_eq!(acks[3].status, AckStatus::Rejected as i32, "{:?}", acks[3]);
    assert!(
        acks[3].error.contains("up{job=\"x\"}") && acks[3].error.contains("28800000"),
        "{}",
        acks[3].error
    );
    assert_eq!(
        agg.process()
            .stop(std::time::Duration::from_secs(30))
            .code(),
        Some(0)
    );
    drop(agg);
    let store = Store::open(&data).unwrap();
    let found = store
        .find_spans(&SpanQuery {
            service: Some("users".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].name.as_str(), found[0].duration_nanos()),
        ("GET /users", 250_000_000)
    );
    let up = store
        .select(
            &[sonde_aggregator::store::Matcher::equal("__name__", "up")],
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(up[0].samples.len(), 2);
}
