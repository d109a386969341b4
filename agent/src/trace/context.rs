//! W3C Trace Context `traceparent` (version 00): parsing what a request carries and
//! formatting what the agent would propagate.
//!
//! `traceparent: {version:2}-{trace-id:32}-{parent-id:16}-{flags:2}`, lowercase hex. Invalid
//! (ignored, so the request starts a new trace): wrong lengths or separators, uppercase or
//! non-hex digits, version `ff`, an all-zero trace id or parent id, and for version 00 any
//! data after the flags. A higher version may append `-…` fields after the flags; only the
//! first four are read (the spec's forward-compatibility rule).
//!
//! Must not: decide sampling (that is [`super::sampler`]).

use std::fmt;

/// The sampled bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// A span's identity as propagated between services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte span id of the caller's span (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Whether the caller sampled this trace.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// Why a `traceparent` value was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceparentError {
    /// Wrong length or separators.
    #[error("traceparent {0:?}: not version-traceid-parentid-flags")]
    Shape(String),
    /// A field is not lowercase hex.
    #[error("traceparent {value:?}: {field} is not lowercase hex")]
    NotHex {
        /// The header value.
        value: String,
        /// Which field.
        field: &'static str,
    },
    /// Version `ff` is forbidden.
    #[error("traceparent {0:?}: version ff is invalid")]
    Version(String),
    /// An all-zero id.
    #[error("traceparent {value:?}: {field} is all zeros")]
    Zero {
        /// The header value.
        value: String,
        /// Which field.
        field: &'static str,
    },
}

fn hex_field<const N: usize>(
    value: &str,
    text: &str,
    field: &'static str,
) -> Result<[u8; N], TraceparentError> {
    let not_hex = || TraceparentError::NotHex {
        value: value.to_owned(),
        field,
    };
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(not_hex());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| not_hex())?;
    }
    Ok(out)
}

/// Parses a `traceparent` header value (surrounding spaces and tabs are ignored).
pub fn parse_traceparent(value: &str) -> Result<TraceContext, TraceparentError> {
    let v = value.trim_matches([' ', '\t']);
    let shape = || TraceparentError::Shape(value.to_owned());
    // version(2) - trace(32) - parent(16) - flags(2) = 55 characters.
    if v.len() < 55 || !v.is_char_boundary(55) {
        return Err(shape());
    }
    let bytes = v.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(shape());
    }
    let [version] = hex_field::<1>(value, &v[0..2], "version")?;
    if version == 0xff {
        return Err(TraceparentError::Version(value.to_owned()));
    }
    if v.len() > 55 && (version == 0 || bytes[55] != b'-') {
        return Err(shape());
    }
    let trace_id = hex_field::<16>(value, &v[3..35], "trace-id")?;
    let span_id = hex_field::<8>(value, &v[36..52], "parent-id")?;
    let [flags] = hex_field::<1>(value, &v[53..55], "trace-flags")?;
    if trace_id == [0; 16] {
        return Err(TraceparentError::Zero {
            value: value.to_owned(),
            field: "trace-id",
        });
    }
    if span_id == [0; 8] {
        return Err(TraceparentError::Zero {
            value: value.to_owned(),
            field: "parent-id",
        });
    }
    Ok(TraceContext {
        trace_id,
        span_id,
        // Version 00 defines only the sampled flag; a higher version's other bits are not
        // ours to propagate.
        flags: flags & FLAG_SAMPLED,
    })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    // Per kept span (exemplars): no formatting machinery.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

impl fmt::Display for TraceContext {
    /// The version-00 `traceparent` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let ctx = parse_traceparent(VALID).unwrap();
        assert_eq!(hex(&ctx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&ctx.span_id), "00f067aa0ba902b7");
        assert!(ctx.sampled());
        assert_eq!(ctx.to_string(), VALID);
        let unsampled = parse_traceparent(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
        // Optional whitespace around a header value.
        assert_eq!(parse_traceparent(&format!(" {VALID}\t")).unwrap(), ctx);
    }

    #[test]
    fn rejects_what_the_spec_says_to_ignore() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            // Not hex.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // Forbidden version.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version 00 with trailing data.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // A multi-byte character where a separator belongs.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ];
        for value in bad {
            assert!(parse_traceparent(value).is_err(), "{value:?} accepted");
        }
        let err = parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
            .unwrap_err();
        assert!(err.to_string().contains("trace-id is all zeros"), "{err}");
    }

    #[test]
    fn future_versions_are_read_forward_compatibly() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds";
        let ctx = parse_traceparent(v).unwrap();
        assert_eq!(hex(&ctx.span_id), "00f067aa0ba902b7");
        // Unknown flag bits are dropped, sampled kept.
        assert_eq!(ctx.flags, FLAG_SAMPLED);
        // Exactly 55 characters is fine for a future version; more needs a '-'.
        assert!(parse_traceparent(&v[..55]).is_ok());
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_err()
        );
    }
}
