//! Encoding of batch payloads: protobuf, then optionally zstd.
//!
//! The receiver bounds memory before decompressing: a payload whose declared or actual
//! uncompressed size exceeds the limit is rejected, never inflated.

use bytes::Bytes;
use prost::Message;

use crate::v1::{Batch, BatchPayload, Compression};

/// Why a batch payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The declared uncompressed size is over the receiver's limit.
    #[error("batch {sequence}: uncompressed size {size} B exceeds the limit of {limit} B")]
    TooLarge {
        /// Sequence number of the batch.
        sequence: u64,
        /// The size the batch declared or decompressed to.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// The compression value is not one this version knows.
    #[error("batch {sequence}: unknown compression {value}")]
    UnknownCompression {
        /// Sequence number of the batch.
        sequence: u64,
        /// The raw enum value.
        value: i32,
    },
    /// zstd failed (corrupt frame, or the frame inflates past the declared size).
    #[error("batch {sequence}: zstd decompression failed: {source}")]
    Decompress {
        /// Sequence number of the batch.
        sequence: u64,
        /// The zstd error.
        #[source]
        source: std::io::Error,
    },
    /// The payload is not a valid `BatchPayload` (including invalid UTF-8 in strings).
    #[error("batch {sequence}: malformed payload: {source}")]
    Protobuf {
        /// Sequence number of the batch.
        sequence: u64,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
}

/// Encodes a payload into a batch envelope, compressing with zstd at `level` (0 = no
/// compression).
pub fn encode_batch(
    agent_id: &str,
    stream_epoch: u64,
    sequence: u64,
    payload: &BatchPayload,
    zstd_level: i32,
) -> Batch {
    let raw = payload.encode_to_vec();
    let uncompressed_size = raw.len() as u64;
    let (compression, bytes) = if zstd_level > 0 {
        match zstd::bulk::compress(&raw, zstd_level) {
            Ok(compressed) => (Compression::Zstd, compressed),
            // Compression of an in-memory buffer only fails on allocation failure; sending it
            // uncompressed is always correct.
            Err(_) => (Compression::Unspecified, raw),
        }
    } else {
        (Compression::Unspecified, raw)
    };
    Batch {
        agent_id: agent_id.to_owned(),
        stream_epoch,
        sequence,
        compression: compression as i32,
        payload: Bytes::from(bytes),
        uncompressed_size,
    }
}

/// Decodes the payload of a batch, refusing anything that would exceed `max_uncompressed`
/// bytes once decompressed.
pub fn decode_payload(batch: &Batch, max_uncompressed: u64) -> Result<BatchPayload, DecodeError> {
    let raw = decompress(batch, max_uncompressed)?;
    BatchPayload::decode(&*raw).map_err(|source| DecodeError::Protobuf {
        sequence: batch.sequence,
        source,
    })
}

/// The encoded `BatchPayload` of `batch`, decompressed within `max_uncompressed` bytes (for
/// receivers that read it with [`crate::scan`] instead of decoding it whole).
pub fn decompress(
    batch: &Batch,
    max_uncompressed: u64,
) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    let sequence = batch.sequence;
    let too_large = |size: u64| DecodeError::TooLarge {
        sequence,
        size,
        limit: max_uncompressed,
    };
    let raw: std::borrow::Cow<'_, [u8]> = match Compression::try_from(batch.compression) {
        Ok(Compression::Unspecified) => {
            if batch.payload.len() as u64 > max_uncompressed {
                return Err(too_large(batch.payload.len() as u64));
            }
            std::borrow::Cow::Borrowed(&batch.payload)
        }
        Ok(Compression::Zstd) => {
            if batch.uncompressed_size > max_uncompressed {
                return Err(too_large(batch.uncompressed_size));
            }
            // The declared size caps the output buffer: a frame that inflates beyond it fails.
            let capacity = batch.uncompressed_size as usize;
            let out = zstd::bulk::decompress(&batch.payload, capacity)
                .map_err(|source| DecodeError::Decompress { sequence, source })?;
            std::borrow::Cow::Owned(out)
        }
        Err(_) => {
            return Err(DecodeError::UnknownCompression {
                sequence,
                value: batch.compression,
            });
        }
    };
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Label, Sample, Series};

    fn payload() -> BatchPayload {
        BatchPayload {
            series: vec![Series {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    timestamp_ms: 1,
                    value: f64::from_bits(0x7ff0_0000_0000_0002), // Prometheus stale marker.
                }],
                exemplars: vec![],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_with_and_without_zstd_preserving_nan_bits() {
        for level in [0, 3] {
            let batch = encode_batch("a", 7, 1, &payload(), level);
            let decoded = decode_payload(&batch, 1 << 20).expect("decodes");
            let value = decoded.series[0].samples[0].value;
            assert_eq!(value.to_bits(), 0x7ff0_0000_0000_0002);
        }
    }

    #[test]
    fn rejects_oversized_declared_size_without_decompressing() {
        let mut batch = encode_batch("a", 7, 1, &payload(), 3);
        batch.uncompressed_size = 1 << 40;
        let err = decode_payload(&batch, 1 << 20).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn rejects_frame_inflating_past_declared_size() {
        let mut batch = encode_batch("a", 7, 1, &payload(), 3);
        batch.uncompressed_size = 4;
        let err = decode_payload(&batch, 1 << 20).unwrap_err();
        assert!(matches!(err, DecodeError::Decompress { .. }), "{err}");
    }

    #[test]
    fn rejects_garbage_and_invalid_utf8() {
        let mut batch = encode_batch("a", 7, 1, &payload(), 0);
        batch.payload = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_payload(&batch, 1 << 20),
            Err(DecodeError::Protobuf { .. })
        ));
        // Field 1 (series), containing field 1 (label) with name = [0xff].
        let label = [0x0a, 0x01, 0xff];
        let series = [&[0x0a, label.len() as u8][..], &label].concat();
        let payload = [&[0x0a, series.len() as u8][..], &series].concat();
        batch.payload = Bytes::from(payload);
        assert!(matches!(
            decode_payload(&batch, 1 << 20),
            Err(DecodeError::Protobuf { .. })
        ));
        batch.compression = 42;
        assert!(matches!(
            decode_payload(&batch, 1 << 20),
            Err(DecodeError::UnknownCompression { value: 42, .. })
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes with any compression flag and declared size never panic and never
        /// allocate past the limit; they decode or fail with an error.
        #[test]
        fn decoding_arbitrary_payloads_never_panics(
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            compression in -1i32..3,
            declared in 0u64..(1 << 22),
        ) {
            let batch = Batch {
                agent_id: "fuzz".into(),
                stream_epoch: 1,
                sequence: 1,
                compression,
                payload: Bytes::from(payload),
                uncompressed_size: declared,
            };
            let _ = decode_payload(&batch, 1 << 20);
        }

        /// Valid payloads survive a round trip bit-exactly, whatever their values.
        #[test]
        fn round_trip_preserves_every_value(
            values in proptest::collection::vec(proptest::num::f64::ANY, 1..50),
            level in 0i32..4,
        ) {
            let series = Series {
                labels: vec![Label { name: "__name__".into(), value: "m".into() }],
                samples: values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Sample { timestamp_ms: i as i64, value: *v })
                    .collect(),
                exemplars: vec![],
            };
            let payload = BatchPayload { series: vec![series], ..Default::default() };
            let decoded = decode_payload(&encode_batch("a", 1, 1, &payload, level), 1 << 20).unwrap();
            let got: Vec<u64> = decoded.series[0].samples.iter().map(|s| s.value.to_bits()).collect();
            // proto3 omits a double equal to its default 0.0, so -0.0 arrives as +0.0 (as in
            // Prometheus remote write); every other bit pattern, NaN payloads included, is kept.
            let want: Vec<u64> = values
                .iter()
                .map(|v| if *v == 0.0 { 0 } else { v.to_bits() })
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
