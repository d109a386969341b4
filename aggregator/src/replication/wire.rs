//! What replicas send each other over HTTP: JSON digests and requests, and samples in a
//! small zstd-compressed binary layout that keeps every value's bits (stale markers, −0).
//!
//! Must not: touch the store or the network; it only converts.

use serde::{Deserialize, Serialize};

use super::digest::{SeriesDigest, WindowDigest};
use crate::store::{Labels, MatchOp, Matcher, Sample, SeriesSamples};

/// Largest sample payload accepted from a peer, uncompressed.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 30;

/// Content type of sample responses.
pub const SAMPLES: &str = "application/vnd.sonde.samples";

/// Answer of `GET /api/v1/replication/digest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestResponse {
    /// The answering replica.
    pub replica_id: String,
    /// One digest per window of the requested range, in order.
    pub windows: Vec<WindowDigest>,
}

/// Answer of `GET /api/v1/replication/series_digest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesDigestResponse {
    /// The answering replica.
    pub replica_id: String,
    /// One digest per series with samples in the range, sorted by series hash.
    pub series: Vec<SeriesDigest>,
}

/// Body of `POST /api/v1/replication/samples`: the series (by [`super::digest::series_hash`])
/// whose samples in `[start, end)` the caller wants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplesRequest {
    /// Range start (ms, inclusive).
    pub start: i64,
    /// Range end (ms, exclusive).
    pub end: i64,
    /// Series hashes.
    pub series: Vec<u64>,
}

/// One matcher on the wire (regular expressions travel anchored, as the store holds them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireMatcher {
    /// Label name.
    pub name: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// Value or pattern.
    pub value: String,
}

/// Body of `POST /api/v1/replication/select` (merged reads): raw samples of the series
/// matching `matchers` in `[mint, maxt]` (inclusive, as [`crate::store::Store::select`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectRequest {
    /// A conjunction of matchers.
    pub matchers: Vec<WireMatcher>,
    /// Range start (ms, inclusive).
    pub mint: i64,
    /// Range end (ms, inclusive).
    pub maxt: i64,
}

/// Why something a peer sent cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not zstd, or larger than allowed.
    #[error("sample payload from a peer does not decompress: {0}")]
    Compression(String),
    /// Ends in the middle of a field.
    #[error("sample payload from a peer is truncated")]
    Truncated,
    /// A label is not UTF-8.
    #[error("sample payload from a peer has a label that is not UTF-8")]
    Utf8,
    /// Bytes after the last series.
    #[error("sample payload from a peer has {0} bytes after its last series")]
    Trailing(usize),
    /// A matcher cannot be rebuilt.
    #[error("matcher {name}{op}{value:?}: {problem}")]
    Matcher {
        /// Label name.
        name: String,
        /// Operator.
        op: String,
        /// Value.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

/// Matchers for the wire.
pub fn matchers_to_wire(matchers: &[Matcher]) -> Vec<WireMatcher> {
    matchers
        .iter()
        .map(|m| {
            let (op, value) = match &m.op {
                MatchOp::Equal(v) => ("=", v.clone()),
                MatchOp::NotEqual(v) => ("!=", v.clone()),
                MatchOp::Regex(r) => ("=~", r.as_str().to_owned()),
                MatchOp::NotRegex(r) => ("!~", r.as_str().to_owned()),
            };
            WireMatcher {
                name: m.name.clone(),
                op: op.to_owned(),
                value,
            }
        })
        .collect()
}

/// Matchers from the wire.
pub fn matchers_from_wire(wire: &[WireMatcher]) -> Result<Vec<Matcher>, WireError> {
    wire.iter()
        .map(|w| {
            let fail = |problem: String| WireError::Matcher {
                name: w.name.clone(),
                op: w.op.clone(),
                value: w.value.clone(),
                problem,
            };
            match w.op.as_str() {
                "=" => Ok(Matcher::equal(&w.name, &w.value)),
                "!=" => Ok(Matcher {
                    name: w.name.clone(),
                    op: MatchOp::NotEqual(w.value.clone()),
                }),
                "=~" | "!~" => {
                    Matcher::regex(&w.name, &w.value, w.op == "!~").map_err(|e| fail(e.to_string()))
                }
                other => Err(fail(format!("unknown operator {other:?}"))),
            }
        })
        .collect()
}

/// Encodes series for a peer: zstd over `u32 series count`, then per series
/// `u16 label count, (u32 len, name, u32 len, value)*, u32 sample count, (i64 t, u64 bits)*`,
/// little endian. Values travel as their bits (protobuf would turn −0 into +0).
pub fn encode_samples(series: &[SeriesSamples]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for s in series {
        raw.extend_from_slice(&(s.labels.len() as u16).to_le_bytes());
        for l in s.labels.iter() {
            for part in [l.name.as_bytes(), l.value.as_bytes()] {
                raw.extend_from_slice(&(part.len() as u32).to_le_bytes());
                raw.extend_from_slice(part);
            }
        }
        raw.extend_from_slice(&(s.samples.len() as u32).to_le_bytes());
        for x in &s.samples {
            raw.extend_from_slice(&x.t.to_le_bytes());
            raw.extend_from_slice(&x.v.to_bits().to_le_bytes());
        }
    }
    zstd::bulk::compress(&raw, 1).expect("compressing an in-memory buffer")
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<&'a str, WireError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Utf8)
    }
}

/// Decodes what [`encode_samples`] made, refusing more than [`MAX_PAYLOAD_BYTES`].
pub fn decode_samples(bytes: &[u8]) -> Result<Vec<SeriesSamples>, WireError> {
    let raw = zstd::bulk::decompress(bytes, MAX_PAYLOAD_BYTES as usize)
        .map_err(|e| WireError::Compression(e.to_string()))?;
    let mut r = Reader { rest: &raw };
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let labels = r.u16()? as usize;
        let mut pairs = Vec::with_capacity(labels);
        for _ in 0..labels {
            pairs.push((r.str()?, r.str()?));
        }
        let count = r.u32()? as usize;
        if r.rest.len() < count.saturating_mul(16) {
            return Err(WireError::Truncated);
        }
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let t = r.u64()? as i64;
            let v = f64::from_bits(r.u64()?);
            samples.push(Sample { t, v });
        }
        out.push(SeriesSamples {
            labels: Labels::from_pairs(pairs),
            samples,
        });
    }
    if !r.rest.is_empty() {
        return Err(WireError::Trailing(r.rest.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_bit_exactly() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let series = vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m"), ("a", "b")]),
            samples: vec![
                Sample { t: 1, v: -0.0 },
                Sample { t: 2, v: stale },
                Sample { t: 3, v: 1.5 },
            ],
        }];
        let back = decode_samples(&encode_samples(&series)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].labels, series[0].labels);
        let bits = |s: &SeriesSamples| {
            s.samples
                .iter()
                .map(|x| (x.t, x.v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&back[0]), bits(&series[0]));
    }

    #[test]
    fn matchers_round_trip() {
        let matchers = vec![
            Matcher::equal("__name__", "up"),
            Matcher {
                name: "a".into(),
                op: MatchOp::NotEqual("x".into()),
            },
            Matcher::regex("job", "api|web", false).unwrap(),
            Matcher::regex("env", "dev.*", true).unwrap(),
        ];
        let back = matchers_from_wire(&matchers_to_wire(&matchers)).unwrap();
        for value in ["up", "api", "web", "xapi", "dev1", "prod", "", "x"] {
            for (a, b) in matchers.iter().zip(&back) {
                assert_eq!(a.matches(value), b.matches(value), "{a:?} on {value:?}");
            }
        }
        let bad = matchers_from_wire(&[WireMatcher {
            name: "a".into(),
            op: "<>".into(),
            value: "x".into(),
        }])
        .unwrap_err();
        assert!(bad.to_string().contains("unknown operator"), "{bad}");
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let series = vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m")]),
            samples: vec![Sample { t: 1, v: 1.0 }],
        }];
        let raw = zstd::bulk::decompress(&encode_samples(&series), 1 << 20).unwrap();
        for cut in 0..raw.len() {
            let damaged = zstd::bulk::compress(&raw[..cut], 1).unwrap();
            assert!(decode_samples(&damaged).is_err(), "cut at {cut}");
        }
        assert!(decode_samples(b"not zstd").is_err());
    }
}
