//! Reading an encoded [`BatchPayload`]'s series without decoding their labels.
//!
//! An agent sends the same series every interval, encoded the same way, so a receiver can
//! recognise a series by the bytes of its label fields and skip decoding, validating and
//! hashing label strings it has already accepted. [`scan_payload`] splits a payload into
//! [`RawSeries`] (label bytes, decoded samples, the whole message for a full decode) and the
//! rest of the payload (histograms, spans, metadata) decoded as usual.
//!
//! Must not: validate anything beyond protobuf framing; a series it cannot read plainly
//! (exemplars, label fields not contiguous) is marked so and must be decoded in full.

use prost::Message;

use crate::v1::{BatchPayload, Sample};

/// Why a payload could not be scanned (decoding it with prost reports the same problem
/// with prost's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {problem}")]
pub struct ScanError {
    /// Byte offset in the message being read.
    pub offset: usize,
    /// What is wrong.
    pub problem: &'static str,
}

/// One `Series` message of a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries<'a> {
    /// The label fields (keys included) exactly as encoded: equal bytes, equal labels.
    pub labels: &'a [u8],
    /// The whole encoded `Series` message.
    pub message: &'a [u8],
    /// The samples, in message order.
    pub samples: Vec<Sample>,
    /// Whether `labels` and `samples` are the whole series: false when it has exemplars or
    /// other fields between its labels, and must be decoded in full from `message`.
    pub plain: bool,
}

/// A payload split by [`scan_payload`].
#[derive(Debug, Default)]
pub struct ScannedPayload<'a> {
    /// The plain series, in payload order.
    pub series: Vec<RawSeries<'a>>,
    /// Everything else, decoded (its `series` is empty).
    pub rest: BatchPayload,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, problem: &'static str) -> ScanError {
        ScanError {
            offset: self.pos,
            problem,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, ScanError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.error("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// Field number and wire type.
    fn key(&mut self) -> Result<(u64, u8), ScanError> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(self.error("invalid field number"));
        }
        Ok((field, (key & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error("field runs past the end of its message"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], ScanError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.error("length overflows"))?;
        self.take(len)
    }

    fn skip(&mut self, wire_type: u8) -> Result<(), ScanError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.length_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => Err(self.error("unsupported wire type (groups)")),
        }
    }
}

/// Splits an encoded `BatchPayload` into its series (read without decoding labels) and the
/// rest (decoded with prost).
pub fn scan_payload(bytes: &[u8]) -> Result<ScannedPayload<'_>, ScanError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut series = Vec::new();
    let mut rest = Vec::new();
    while !r.done() {
        let start = r.pos;
        let (field, wire_type) = r.key()?;
        if field == 1 && wire_type == LEN {
            series.push(scan_series(r.length_delimited()?)?);
        } else {
            r.skip(wire_type)?;
            rest.extend_from_slice(&bytes[start..r.pos]);
        }
    }
    let rest = BatchPayload::decode(rest.as_slice()).map_err(|_| ScanError {
        offset: 0,
        problem: "histograms, spans or metadata do not decode",
    })?;
    Ok(ScannedPayload { series, rest })
}

fn scan_series(message: &[u8]) -> Result<RawSeries<'_>, ScanError> {
    let mut r = Reader {
        bytes: message,
        pos: 0,
    };
    let (mut labels_start, mut labels_end) = (None::<usize>, 0);
    let mut samples = Vec::new();
    let mut plain = true;
    while !r.done() {
        let start = r.pos;
        let (field, wire_type) = r.key()?;
        match (field, wire_type) {
            (1, LEN) => {
                r.length_delimited()?;
                match labels_start {
                    None => labels_start = Some(start),
                    Some(_) if labels_end != start => plain = false,
                    Some(_) => {}
                }
                labels_end = r.pos;
            }
            (2, LEN) => samples.push(scan_sample(r.length_delimited()?)?),
            (3, _) => {
                plain = false;
                r.skip(wire_type)?;
            }
            _ => r.skip(wire_type)?,
        }
    }
    Ok(RawSeries {
        labels: &message[labels_start.unwrap_or(0)..labels_end],
        message,
        samples,
        plain,
    })
}

fn scan_sample(message: &[u8]) -> Result<Sample, ScanError> {
    let mut r = Reader {
        bytes: message,
        pos: 0,
    };
    let mut sample = Sample::default();
    while !r.done() {
        match r.key()? {
            (1, VARINT) => sample.timestamp_ms = r.varint()? as i64,
            (2, FIXED64) => {
                let raw = r.take(8)?;
                sample.value = f64::from_le_bytes(raw.try_into().expect("8 bytes"));
            }
            (1 | 2, _) => return Err(r.error("sample field with the wrong wire type")),
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        Exemplar, HistogramPoint, HistogramSeries, Label, MetricMetadata, Series, Span,
    };

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(value: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: vec![label("__name__", "up"), label("job", value)],
            samples: samples
                .iter()
                .map(|&(timestamp_ms, value)| Sample {
                    timestamp_ms,
                    value,
                })
                .collect(),
            exemplars: vec![],
        }
    }

    fn payload() -> BatchPayload {
        let mut with_exemplar = series("c", &[(5, 1.0)]);
        with_exemplar.exemplars.push(Exemplar {
            labels: vec![label("trace_id", "ab")],
            value: 1.0,
            timestamp_ms: 5,
        });
        BatchPayload {
            series: vec![
                series(
                    "a",
                    &[(1, 0.5), (-2, f64::from_bits(0x7ff0_0000_0000_0002))],
                ),
                series("b", &[]),
                with_exemplar,
            ],
            histograms: vec![HistogramSeries {
                labels: vec![label("__name__", "h")],
                upper_bounds: vec![0.1],
                points: vec![HistogramPoint {
                    timestamp_ms: 3,
                    bucket_counts: vec![1],
                    count: 2,
                    sum: 0.3,
                }],
                exemplars: vec![],
            }],
            spans: vec![Span {
                name: "GET /".into(),
                ..Default::default()
            }],
            metadata: vec![MetricMetadata {
                metric_family_name: "up".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn splits_series_from_the_rest_with_exact_samples() {
        let p = payload();
        let bytes = p.encode_to_vec();
        let scanned = scan_payload(&bytes).unwrap();
        assert_eq!(scanned.series.len(), 3);
        for (raw, original) in scanned.series.iter().zip(&p.series) {
            // (Compared encoded: the stale marker is a NaN.)
            let decoded = Series::decode(raw.message).unwrap();
            assert_eq!(decoded.encode_to_vec(), original.encode_to_vec());
            // The label bytes are the labels' encoding.
            let labels_only = Series {
                labels: original.labels.clone(),
                ..Default::default()
            };
            assert_eq!(raw.labels, labels_only.encode_to_vec().as_slice());
        }
        let a = &scanned.series[0];
        assert!(a.plain);
        let bits = |s: &[Sample]| -> Vec<(i64, u64)> {
            s.iter()
                .map(|s| (s.timestamp_ms, s.value.to_bits()))
                .collect()
        };
        assert_eq!(bits(&a.samples), bits(&p.series[0].samples));
        assert_eq!(
            a.samples[1].value.to_bits(),
            0x7ff0_0000_0000_0002,
            "stale marker bits kept"
        );
        assert!(scanned.series[1].plain && scanned.series[1].samples.is_empty());
        assert!(!scanned.series[2].plain, "exemplars need a full decode");
        assert_eq!(
            scanned.rest,
            BatchPayload {
                series: vec![],
                ..p
            }
        );
    }

    #[test]
    fn label_fields_split_by_another_field_are_not_plain() {
        let mut bytes = Vec::new();
        let field = |tag: u8, msg: Vec<u8>, out: &mut Vec<u8>| {
            out.push(tag << 3 | 2);
            out.push(msg.len() as u8);
            out.extend(msg);
        };
        field(1, label("__name__", "up").encode_to_vec(), &mut bytes);
        field(
            2,
            Sample {
                timestamp_ms: 1,
                value: 1.0,
            }
            .encode_to_vec(),
            &mut bytes,
        );
        field(1, label("job", "a").encode_to_vec(), &mut bytes);
        let raw = scan_series(&bytes).unwrap();
        assert!(!raw.plain);
        assert_eq!(raw.samples.len(), 1);
    }

    #[test]
    fn malformed_payloads_are_errors_never_panics() {
        let bytes = payload().encode_to_vec();
        for cut in 0..bytes.len() {
            // Every truncation is either an error or (at field boundaries) a shorter payload.
            let _ = scan_payload(&bytes[..cut]);
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            // Framing is checked, contents are not (label strings are decoded, and so
            // validated, only when a series is new to the receiver).
            let _ = scan_payload(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(
            scan_payload(&[0x0a, 0x05, 0x01]).unwrap_err().problem,
            "field runs past the end of its message"
        );
    }
}
