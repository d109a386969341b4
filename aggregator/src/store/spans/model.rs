//! The span as the store keeps it, and its WAL encoding.

use crate::store::wal::record::Reader;

/// An attribute value (OpenTelemetry `AnyValue` without arrays and maps).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// String.
    Str(String),
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Double(f64),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl AttrValue {
    /// The value as text: strings as they are, booleans `true`/`false`, numbers in their
    /// shortest form, bytes as lowercase hex.
    pub fn to_text(&self) -> String {
        match self {
            AttrValue::Str(s) => s.clone(),
            AttrValue::Bool(b) => b.to_string(),
            AttrValue::Int(i) => i.to_string(),
            AttrValue::Double(d) => d.to_string(),
            AttrValue::Bytes(b) => b.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Whether the value's text form is `text`.
    pub fn text_matches(&self, text: &str) -> bool {
        match self {
            AttrValue::Str(s) => s == text,
            other => other.to_text() == text,
        }
    }
}

/// One span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte span id.
    pub span_id: [u8; 8],
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// `service.name` from the resource ("" when absent).
    pub service: String,
    /// Operation name.
    pub name: String,
    /// OpenTelemetry span kind number (0 unspecified … 5 consumer).
    pub kind: u8,
    /// Start, ns since the Unix epoch.
    pub start_unix_nano: i64,
    /// End, ns since the Unix epoch.
    pub end_unix_nano: i64,
    /// OpenTelemetry status code (0 unset, 1 ok, 2 error).
    pub status_code: u8,
    /// Status message.
    pub status_message: String,
    /// Span attributes.
    pub attributes: Vec<(String, AttrValue)>,
    /// Resource attributes.
    pub resource: Vec<(String, AttrValue)>,
}

impl Span {
    /// Duration in ns (0 when the end precedes the start).
    pub fn duration_nanos(&self) -> i64 {
        (self.end_unix_nano - self.start_unix_nano).max(0)
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_attrs(out: &mut Vec<u8>, attrs: &[(String, AttrValue)]) {
    out.extend_from_slice(&(attrs.len() as u32).to_le_bytes());
    for (k, v) in attrs {
        put_str(out, k.as_bytes());
        match v {
            AttrValue::Str(s) => {
                out.push(0);
                put_str(out, s.as_bytes());
            }
            AttrValue::Bool(b) => {
                out.push(1);
                out.push(u8::from(*b));
            }
            AttrValue::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            AttrValue::Double(d) => {
                out.push(3);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            AttrValue::Bytes(b) => {
                out.push(4);
                put_str(out, b);
            }
        }
    }
}

/// Appends `span`'s WAL encoding to `out`.
pub(crate) fn encode_span(span: &Span, out: &mut Vec<u8>) {
    out.extend_from_slice(&span.trace_id);
    out.extend_from_slice(&span.span_id);
    match span.parent_span_id {
        Some(p) => {
            out.push(1);
            out.extend_from_slice(&p);
        }
        None => out.push(0),
    }
    put_str(out, span.service.as_bytes());
    put_str(out, span.name.as_bytes());
    out.push(span.kind);
    out.extend_from_slice(&span.start_unix_nano.to_le_bytes());
    out.extend_from_slice(&span.end_unix_nano.to_le_bytes());
    out.push(span.status_code);
    put_str(out, span.status_message.as_bytes());
    put_attrs(out, &span.attributes);
    put_attrs(out, &span.resource);
}

fn get_str(r: &mut Reader<'_>) -> Option<String> {
    let n = r.u32()? as usize;
    r.str(n).map(str::to_owned)
}

fn get_attrs(r: &mut Reader<'_>) -> Option<Vec<(String, AttrValue)>> {
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let k = get_str(r)?;
        let v = match r.u8()? {
            0 => AttrValue::Str(get_str(r)?),
            1 => AttrValue::Bool(r.u8()? != 0),
            2 => AttrValue::Int(r.u64()? as i64),
            3 => AttrValue::Double(f64::from_bits(r.u64()?)),
            4 => {
                let n = r.u32()? as usize;
                AttrValue::Bytes(r.take(n)?.to_vec())
            }
            _ => return None,
        };
        out.push((k, v));
    }
    Some(out)
}

/// Decodes one span written by [`encode_span`].
pub(crate) fn decode_span(r: &mut Reader<'_>) -> Option<Span> {
    let trace_id = r.take(16)?.try_into().ok()?;
    let span_id = r.take(8)?.try_into().ok()?;
    let parent_span_id = match r.u8()? {
        0 => None,
        _ => Some(r.take(8)?.try_into().ok()?),
    };
    Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        service: get_str(r)?,
        name: get_str(r)?,
        kind: r.u8()?,
        start_unix_nano: r.u64()? as i64,
        end_unix_nano: r.u64()? as i64,
        status_code: r.u8()?,
        status_message: get_str(r)?,
        attributes: get_attrs(r)?,
        resource: get_attrs(r)?,
    })
}
