//! The WAL's record encoding: one record per append (so a batch is atomic in the log),
//! framed as `[u32 len][u32 crc32][payload]`, little endian, the CRC covering the payload.
//!
//! A payload is a sequence of entries, each starting with a kind byte:
//! - `1` series: `u32 ref`, `u16 n`, then `n` × (`u16 len` name, `u32 len` value);
//! - `2` samples: `u32 ref`, `u32 n`, then `n` × (`i64 t`, `u64 value bits`);
//! - `3` spans: `u32 n`, then `n` spans ([`super::super::spans::encode_span`]);
//! - `4` exemplars: `u32 n`, then `n` × (series labels, exemplar labels, `u64 value bits`,
//!   `i64 t`), labels as `u16 n` × (`u16 len` name, `u32 len` value). Self-contained (no
//!   refs), since exemplars are few and may belong to series without samples in the record.
//!
//! Refs are scoped to one segment: a series entry precedes the first samples of that series
//! in every segment, so any suffix of the log made of whole segments replays on its own.

use crate::store::{Labels, Sample, exemplars::Exemplar, spans::Span};

pub(crate) const KIND_SERIES: u8 = 1;
pub(crate) const KIND_SAMPLES: u8 = 2;
pub(crate) const KIND_SPANS: u8 = 3;
pub(crate) const KIND_EXEMPLARS: u8 = 4;

/// Bytes of record framing (length + CRC).
pub const HEADER: usize = 8;

/// One decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A series definition.
    Series {
        /// Segment-scoped reference.
        r: u32,
        /// The labels.
        labels: Labels,
    },
    /// Samples of a defined series.
    Samples {
        /// Segment-scoped reference.
        r: u32,
        /// The samples.
        samples: Vec<Sample>,
    },
    /// Spans.
    Spans(Vec<Span>),
    /// Exemplars with the labels of their series.
    Exemplars(Vec<(Labels, Exemplar)>),
}

/// Builds one record's payload.
#[derive(Debug, Default)]
pub struct RecordBuf {
    buf: Vec<u8>,
}

impl RecordBuf {
    /// A record with room for the header.
    pub fn new() -> Self {
        Self {
            buf: vec![0; HEADER],
        }
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER
    }

    /// Adds a series definition.
    pub fn series(&mut self, r: u32, labels: &Labels) {
        self.buf.push(KIND_SERIES);
        self.buf.extend_from_slice(&r.to_le_bytes());
        self.labels(labels);
    }

    fn labels(&mut self, labels: &Labels) {
        self.buf
            .extend_from_slice(&(labels.len() as u16).to_le_bytes());
        for l in labels.iter() {
            self.buf
                .extend_from_slice(&(l.name.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(l.name.as_bytes());
            self.buf
                .extend_from_slice(&(l.value.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(l.value.as_bytes());
        }
    }

    /// Adds exemplars with their series' labels.
    pub fn exemplars(&mut self, exemplars: &[(Labels, Exemplar)]) {
        self.buf.push(KIND_EXEMPLARS);
        self.buf
            .extend_from_slice(&(exemplars.len() as u32).to_le_bytes());
        for (series, e) in exemplars {
            self.labels(series);
            self.labels(&e.labels);
            self.buf.extend_from_slice(&e.value.to_bits().to_le_bytes());
            self.buf.extend_from_slice(&e.t.to_le_bytes());
        }
    }

    /// Adds samples of series `r`.
    pub fn samples(&mut self, r: u32, samples: &[Sample]) {
        self.buf.push(KIND_SAMPLES);
        self.buf.extend_from_slice(&r.to_le_bytes());
        self.buf
            .extend_from_slice(&(samples.len() as u32).to_le_bytes());
        self.buf.reserve(samples.len() * 16);
        for s in samples {
            self.buf.extend_from_slice(&s.t.to_le_bytes());
            self.buf.extend_from_slice(&s.v.to_bits().to_le_bytes());
        }
    }

    /// Adds spans.
    pub fn spans(&mut self, spans: &[Span]) {
        self.buf.push(KIND_SPANS);
        self.buf
            .extend_from_slice(&(spans.len() as u32).to_le_bytes());
        for span in spans {
            crate::store::spans::encode_span(span, &mut self.buf);
        }
    }

    /// The framed record.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - HEADER) as u32;
        let crc = crc32fast::hash(&self.buf[HEADER..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// A cursor over a payload.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub(crate) fn str(&mut self, n: usize) -> Option<&'a str> {
        self.take(n).and_then(|b| std::str::from_utf8(b).ok())
    }
}

fn decode_labels(r: &mut Reader<'_>) -> Option<Labels> {
    let n = r.u16()? as usize;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = r.u16()? as usize;
        let name = r.str(nl)?;
        let vl = r.u32()? as usize;
        let value = r.str(vl)?;
        pairs.push((name, value));
    }
    Some(Labels::from_pairs(pairs))
}

/// Decodes a payload whose CRC was checked; `None` if it is malformed.
pub fn decode(payload: &[u8]) -> Option<Vec<Entry>> {
    let mut r = Reader { data: payload };
    let mut out = Vec::new();
    while !r.data.is_empty() {
        match r.u8()? {
            KIND_SERIES => {
                let id = r.u32()?;
                out.push(Entry::Series {
                    r: id,
                    labels: decode_labels(&mut r)?,
                });
            }
            KIND_EXEMPLARS => {
                let n = r.u32()? as usize;
                let mut exemplars = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let series = decode_labels(&mut r)?;
                    let labels = decode_labels(&mut r)?;
                    let value = f64::from_bits(r.u64()?);
                    let t = r.u64()? as i64;
                    exemplars.push((series, Exemplar { labels, value, t }));
                }
                out.push(Entry::Exemplars(exemplars));
            }
            KIND_SAMPLES => {
                let id = r.u32()?;
                let n = r.u32()? as usize;
                if r.data.len() < n * 16 {
                    return None;
                }
                let mut samples = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = r.u64()? as i64;
                    let v = f64::from_bits(r.u64()?);
                    samples.push(Sample { t, v });
                }
                out.push(Entry::Samples { r: id, samples });
            }
            KIND_SPANS => {
                let n = r.u32()? as usize;
                let mut spans = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    spans.push(crate::store::spans::decode_span(&mut r)?);
                }
                out.push(Entry::Spans(spans));
            }
            _ => return None,
        }
    }
    Some(out)
}
