//! A streaming parser for the OpenMetrics text format as `promtool tsdb
//! create-blocks-from openmetrics` takes it: `# HELP`/`# TYPE`/`# UNIT` lines, samples
//! `name{label="value",…} value timestamp [# exemplar]` with timestamps in (fractional)
//! seconds, and a final `# EOF`.
//!
//! Speed: the text of a sample's series (`name{…}`) is looked up as raw bytes first, so
//! labels are parsed and validated once per series, not once per line.
//!
//! Must not: touch the store; it hands out series, samples and metadata.

use std::collections::HashMap;

use crate::store::{Labels, Metadata, MetricType};

/// A parse error, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// Line number (1-based).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Prometheus' NaN (Go's `math.NaN()`): the bits `promtool` stores for a `NaN` value.
pub const PROMETHEUS_NAN: u64 = 0x7ff8_0000_0000_0001;

/// What one line was.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A sample of series `id` (ids count up from 0 in order of first appearance).
    Sample {
        /// Series id.
        id: u32,
        /// Milliseconds.
        t: i64,
        /// Value.
        v: f64,
    },
    /// Metadata or the end marker; nothing to store per line.
    Other,
}

/// Parser state across lines of one input.
#[derive(Debug, Default)]
pub struct Parser {
    raw: HashMap<Box<[u8]>, u32>,
    ids: HashMap<Labels, u32>,
    /// Labels by series id.
    pub series: Vec<Labels>,
    /// Metadata by family.
    pub metadata: HashMap<String, Metadata>,
    line: u64,
    eof: bool,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_name(s: &[u8]) -> bool {
    !s.is_empty()
        && (s[0].is_ascii_alphabetic() || s[0] == b'_')
        && s.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses a float as Go's `strconv.ParseFloat` would for OpenMetrics values.
fn parse_float(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?;
    if s.is_empty() || s.contains('_') {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    Some(if v.is_nan() {
        f64::from_bits(PROMETHEUS_NAN)
    } else {
        v
    })
}

impl Parser {
    /// A fresh parser.
    pub fn new() -> Self {
        Self::default()
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    /// Parses one line (without its `\n`).
    pub fn line(&mut self, line: &[u8]) -> Result<Line, ParseError> {
        self.line += 1;
        if self.eof {
            return self.err("content after \"# EOF\"");
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return self.err("empty line (OpenMetrics allows none)");
        }
        if line[0] == b'#' {
            return self.comment(line);
        }
        self.sample(line)
    }

    /// Starts a new input (line numbers restart; series ids continue).
    pub fn start_input(&mut self) {
        self.line = 0;
        self.eof = false;
    }

    /// Checks the input ended properly.
    pub fn finish(&self) -> Result<(), ParseError> {
        if !self.eof {
            return Err(ParseError {
                line: self.line,
                message: "input does not end with \"# EOF\"".to_owned(),
            });
        }
        Ok(())
    }

    fn comment(&mut self, line: &[u8]) -> Result<Line, ParseError> {
        if line == b"# EOF" {
            self.eof = true;
            return Ok(Line::Other);
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(_) => return self.err("invalid UTF-8"),
        };
        let mut parts = text.splitn(4, ' ');
        let (Some("#"), Some(keyword), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return self.err(format!(
                "invalid comment {text:?}: expected # HELP, # TYPE, # UNIT or # EOF"
            ));
        };
        let rest = parts.next().unwrap_or("");
        if name.is_empty() || !is_name_start(name.as_bytes()[0]) || !name.bytes().all(is_name_char)
        {
            return self.err(format!("invalid metric name {name:?} in # {keyword}"));
        }
        let entry = || Metadata {
            metric_type: MetricType::Unknown,
            help: String::new(),
            unit: String::new(),
        };
        match keyword {
            "HELP" => {
                let help = unescape(rest.as_bytes(), false)
                    .ok_or_else(|| self.perr(format!("invalid escape in help text {rest:?}")))?;
                self.metadata
                    .entry(name.to_owned())
                    .or_insert_with(entry)
                    .help = help;
            }
            "TYPE" => {
                let Some(t) = MetricType::parse(rest) else {
                    return self.err(format!("invalid metric type {rest:?}"));
                };
                self.metadata
                    .entry(name.to_owned())
                    .or_insert_with(entry)
                    .metric_type = t;
            }
            "UNIT" => {
                self.metadata
                    .entry(name.to_owned())
                    .or_insert_with(entry)
                    .unit = rest.to_owned();
            }
            _ => {
                return self.err(format!(
                    "invalid comment {text:?}: expected # HELP, # TYPE, # UNIT or # EOF"
                ));
            }
        }
        Ok(Line::Other)
    }

    fn perr(&self, message: String) -> ParseError {
        ParseError {
            line: self.line,
            message,
        }
    }

    fn sample(&mut self, line: &[u8]) -> Result<Line, ParseError> {
        // The series text runs to the first space outside the label braces.
        let series_end = match line.iter().position(|&b| b == b'{' || b == b' ') {
            Some(i) if line[i] == b'{' => match find_closing_brace(&line[i..]) {
                Some(j) => i + j + 1,
                None => return self.err("unterminated label set"),
            },
            Some(i) => i,
            None => return self.err("expected a value after the series"),
        };
        let key = &line[..series_end];
        let id = match self.raw.get(key) {
            Some(&id) => id,
            None => {
                let labels = self.parse_series(key)?;
                let id = match self.ids.get(&labels) {
                    Some(&id) => id,
                    None => {
                        let id = self.series.len() as u32;
                        self.ids.insert(labels.clone(), id);
                        self.series.push(labels);
                        id
                    }
                };
                self.raw.insert(key.into(), id);
                id
            }
        };
        let rest = &line[series_end..];
        let Some(rest) = rest.strip_prefix(b" ") else {
            return self.err("expected a space after the series");
        };
        // Cut off an exemplar.
        let rest = match find_subslice(rest, b" # ") {
            Some(i) => &rest[..i],
            None => rest,
        };
        let mut fields = rest.split(|&b| b == b' ');
        let value = fields.next().unwrap_or_default();
        let Some(v) = parse_float(value) else {
            return self.err(format!(
                "invalid value {:?}",
                String::from_utf8_lossy(value)
            ));
        };
        let Some(ts) = fields.next() else {
            return self.err(format!(
                "sample of {} has no timestamp (import needs one on every sample)",
                self.series[id as usize]
            ));
        };
        let t = match parse_float(ts) {
            // Like promtool: seconds × 1000, truncated (Go's int64 conversion).
            Some(secs) if secs.is_finite() => (secs * 1000.0) as i64,
            _ => {
                return self.err(format!(
                    "invalid timestamp {:?}",
                    String::from_utf8_lossy(ts)
                ));
            }
        };
        if let Some(extra) = fields.next() {
            return self.err(format!(
                "unexpected {:?} after the timestamp",
                String::from_utf8_lossy(extra)
            ));
        }
        Ok(Line::Sample { id, t, v })
    }

    fn parse_series(&self, key: &[u8]) -> Result<Labels, ParseError> {
        let name_end = key.iter().position(|&b| b == b'{').unwrap_or(key.len());
        let name = &key[..name_end];
        if name.is_empty() || !is_name_start(name[0]) || !name.iter().all(|&b| is_name_char(b)) {
            return self.err(format!(
                "invalid metric name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let name = std::str::from_utf8(name).expect("ASCII");
        let mut pairs: Vec<(String, String)> = vec![("__name__".to_owned(), name.to_owned())];
        if name_end < key.len() {
            let mut rest = &key[name_end + 1..key.len() - 1];
            while !rest.is_empty() {
                let Some(eq) = rest.iter().position(|&b| b == b'=') else {
                    return self.err(format!(
                        "expected label=\"value\" in {:?}",
                        String::from_utf8_lossy(rest)
                    ));
                };
                let lname = &rest[..eq];
                if !is_label_name(lname) {
                    return self.err(format!(
                        "invalid label name {:?}",
                        String::from_utf8_lossy(lname)
                    ));
                }
                let after = &rest[eq + 1..];
                let Some(after) = after.strip_prefix(b"\"") else {
                    return self.err("label value must be quoted");
                };
                let Some(close) = find_closing_quote(after) else {
                    return self.err("unterminated label value");
                };
                let Some(value) = unescape(&after[..close], true) else {
                    return self.err(format!(
                        "invalid escape in label value {:?}",
                        String::from_utf8_lossy(&after[..close])
                    ));
                };
                let lname = std::str::from_utf8(lname).expect("ASCII");
                if pairs.iter().any(|(n, _)| n == lname) {
                    return self.err(format!("duplicate label name {lname:?}"));
                }
                pairs.push((lname.to_owned(), value));
                rest = &after[close + 1..];
                if let Some(r) = rest.strip_prefix(b",") {
                    rest = r;
                } else if !rest.is_empty() {
                    return self.err("expected \",\" or \"}\" after a label value");
                }
            }
        }
        Ok(Labels::from_pairs(pairs))
    }
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Index of the `}` closing a label set that starts at `s[0] == b'{'`, skipping quoted
/// values.
fn find_closing_brace(s: &[u8]) -> Option<usize> {
    let mut in_quotes = false;
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'}' if !in_quotes => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn find_closing_quote(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b'"' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Resolves `\\`, `\n` and (when `quotes`) `\"`; `None` on any other escape or bad UTF-8.
fn unescape(s: &[u8], quotes: bool) -> Option<String> {
    if !s.contains(&b'\\') {
        return String::from_utf8(s.to_vec()).ok();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            match s.get(i + 1)? {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'"' if quotes => out.push(b'"'),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Result<(Parser, Vec<Line>), ParseError> {
        let mut p = Parser::new();
        let mut lines = Vec::new();
        for line in text.split_terminator('\n') {
            lines.push(p.line(line.as_bytes())?);
        }
        p.finish()?;
        Ok((p, lines))
    }

    #[test]
    fn samples_metadata_and_eof() {
        let text = "# HELP http_requests_total The total \\\\ number.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{code=\"200\",service=\"a\\\"b\"} 1027 1395066363\n\
                    http_requests_total{service=\"a\\\"b\",code=\"200\"} 1028 1395066363.5\n\
                    up 1 1395066364.000 # {trace_id=\"x\"} 1 1395066364\n\
                    temp NaN 1.5\n\
                    # EOF\n";
        let (p, lines) = parse_all(text).unwrap();
        assert_eq!(p.series.len(), 3, "label order does not make a new series");
        assert_eq!(
            p.series[0].to_string(),
            r#"http_requests_total{code="200", service="a\"b"}"#
        );
        assert_eq!(
            lines[2],
            Line::Sample {
                id: 0,
                t: 1_395_066_363_000,
                v: 1027.0
            }
        );
        assert_eq!(
            lines[3],
            Line::Sample {
                id: 0,
                t: 1_395_066_363_500,
                v: 1028.0
            }
        );
        assert_eq!(
            lines[4],
            Line::Sample {
                id: 1,
                t: 1_395_066_364_000,
                v: 1.0
            }
        );
        match lines[5] {
            Line::Sample { v, t, .. } => {
                assert_eq!(v.to_bits(), PROMETHEUS_NAN);
                assert_eq!(t, 1500);
            }
            Line::Other => panic!("sample expected"),
        }
        let m = &p.metadata["http_requests_total"];
        assert_eq!(
            (m.metric_type, m.help.as_str()),
            (MetricType::Counter, "The total \\ number.")
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, needle) in [
            ("up 1\n# EOF\n", 1, "no timestamp"),
            ("up 1 1\n1bad 2 3\n# EOF\n", 2, "invalid metric name"),
            ("up{a=\"b\",a=\"c\"} 1 1\n# EOF\n", 1, "duplicate label"),
            ("up{a=b} 1 1\n# EOF\n", 1, "quoted"),
            ("up abc 1\n# EOF\n", 1, "invalid value"),
            ("up 1 1\n", 1, "# EOF"),
            ("up 1 1\n# EOF\nup 2 2\n", 3, "after"),
            ("up 1 1\n\n# EOF\n", 2, "empty line"),
            ("# TYPE up nonsense\n# EOF\n", 1, "metric type"),
        ] {
            let err = parse_all(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
        }
    }
}
