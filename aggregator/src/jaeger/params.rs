//! Parameters of the Jaeger API as Jaeger's query service parses them: times in µs since
//! the epoch, durations in Go's `time.ParseDuration` syntax, tags as `tag=key:value`
//! (repeatable) or `tags={"key":"value"}`, trace ids of up to 32 hex digits. Error messages
//! are Jaeger's.

use std::collections::BTreeMap;

use crate::store::spans::SpanQuery;

/// Jaeger's default number of traces per search.
pub const DEFAULT_LIMIT: usize = 100;
/// Jaeger's default look-back when `start` is absent (its trace query look-back, 2 days).
pub const DEFAULT_LOOKBACK_US: i64 = 2 * 24 * 3600 * 1_000_000;

/// Why a request's parameters were refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Search without `service` nor `traceID`.
    #[error("parameter 'service' is required")]
    ServiceRequired,
    /// `maxDuration < minDuration`.
    #[error("'maxDuration' should be greater than 'minDuration'")]
    DurationOrder,
    /// A parameter that does not parse.
    #[error("unable to parse param '{name}': {problem}")]
    Parse {
        /// The parameter.
        name: &'static str,
        /// Go's wording of the problem.
        problem: String,
    },
    /// `limit` is not an integer.
    #[error("strconv.ParseInt: parsing {0:?}: invalid syntax")]
    Limit(String),
    /// A `tag` without `:`.
    #[error("malformed 'tag' parameter, expecting key:value, received: {0}")]
    Tag(String),
    /// `tags` is not a JSON object of strings.
    #[error("malformed 'tags' parameter, cannot unmarshal JSON: {0}")]
    Tags(String),
    /// A trace id that is not hex or too long.
    #[error("{0}")]
    TraceId(String),
}

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `application/x-www-form-urlencoded` text.
    pub fn parse(raw: &str) -> Self {
        Self(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`, when non-empty (Go's `FormValue`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Now, in µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A search, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Span conditions.
    pub query: SpanQuery,
    /// Traces wanted (0: all).
    pub limit: usize,
    /// Explicit trace ids (`traceID=`): fetched instead of searching.
    pub trace_ids: Vec<[u8; 16]>,
}

/// Parses `/api/traces` parameters; `now_us` fills absent times.
pub fn parse_search(q: &Query, now_us: i64) -> Result<Search, ParamError> {
    let time = |name: &'static str, default: i64| -> Result<i64, ParamError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<i64>().map_err(|_| ParamError::Parse {
                name,
                problem: format!("strconv.ParseInt: parsing {v:?}: invalid syntax"),
            }),
        }
    };
    let start_us = time("start", now_us - DEFAULT_LOOKBACK_US)?;
    let end_us = time("end", now_us)?;
    let tags = parse_tags(q)?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<i32>()
            .ok()
            .map(|l| l.max(0) as usize)
            .ok_or_else(|| ParamError::Limit(v.to_owned()))?,
    };
    let duration = |name: &'static str| -> Result<Option<i64>, ParamError> {
        q.get(name)
            .map(|v| parse_go_duration(v).map_err(|problem| ParamError::Parse { name, problem }))
            .transpose()
    };
    let min = duration("minDuration")?.filter(|d| *d != 0);
    let max = duration("maxDuration")?.filter(|d| *d != 0);
    let mut trace_ids = Vec::new();
    for id in q.all("traceID") {
        trace_ids.push(
            parse_trace_id(id)
                .map_err(|e| ParamError::TraceId(format!("cannot parse traceID param: {e}")))?,
        );
    }
    let service = q.get("service");
    if trace_ids.is_empty() && service.is_none() {
        return Err(ParamError::ServiceRequired);
    }
    if let (Some(min), Some(max)) = (min, max)
        && max < min
    {
        return Err(ParamError::DurationOrder);
    }
    let mut query = SpanQuery {
        service: service.map(|s| super::model::stored_service(s).to_owned()),
        name: q.get("operation").map(str::to_owned),
        start_min_ns: Some(start_us.saturating_mul(1000)),
        start_max_ns: Some(end_us.saturating_mul(1000)),
        min_duration_ns: min,
        max_duration_ns: max,
        ..Default::default()
    };
    for (key, value) in tags {
        apply_tag(&mut query, key, value);
    }
    Ok(Search {
        query,
        limit,
        trace_ids,
    })
}

/// Tags Jaeger derives from OpenTelemetry fields become conditions on those fields; the
/// rest must match a span or resource attribute.
fn apply_tag(query: &mut SpanQuery, key: String, value: String) {
    let status = |q: &mut SpanQuery, code: u8| q.status_code = Some(code);
    match (key.as_str(), value.as_str()) {
        ("span.kind", v) => match super::model::kind_number(v) {
            Some(k) => query.kind = Some(k),
            // An unknown kind matches nothing, like a tag no span has.
            None => query.tags.push((key, value)),
        },
        ("error", "true") | ("otel.status_code", "ERROR") => status(query, 2),
        ("otel.status_code", "OK") => status(query, 1),
        _ => query.tags.push((key, value)),
    }
}

fn parse_tags(q: &Query) -> Result<BTreeMap<String, String>, ParamError> {
    let mut out = BTreeMap::new();
    for tag in q.all("tag") {
        match tag.split_once(':') {
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None => return Err(ParamError::Tag(tag.to_owned())),
        }
    }
    for tags in q.all("tags") {
        let map: BTreeMap<String, String> =
            serde_json::from_str(tags).map_err(|e| ParamError::Tags(e.to_string()))?;
        out.extend(map);
    }
    Ok(out)
}

/// Parses a trace id as Jaeger does: 1 to 32 hex digits, left-padded with zeros.
pub fn parse_trace_id(s: &str) -> Result<[u8; 16], ParamError> {
    if s.len() > 32 {
        return Err(ParamError::TraceId(format!(
            "TraceID cannot be longer than 32 hex characters: {s}"
        )));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParamError::TraceId(format!(
            "strconv.ParseUint: parsing {s:?}: invalid syntax"
        )));
    }
    let padded = format!("{s:0>32}");
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// Go's `time.ParseDuration`, in ns: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with units ns, us
/// (µs, μs), ms, s, m, h; `0` alone is allowed.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let ns = total.round() as i64;
    Ok(if negative { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(raw: &str) -> Result<Search, ParamError> {
        parse_search(&Query::parse(raw), 10_000_000_000)
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("100ms"), Ok(100_000_000));
        assert_eq!(parse_go_duration("5us"), Ok(5_000));
        assert_eq!(parse_go_duration("5µs"), Ok(5_000));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(3_723_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2ns"), Ok(-2));
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".to_owned())
        );
        assert_eq!(
            parse_go_duration("3x"),
            Err("time: unknown unit \"x\" in duration \"3x\"".to_owned())
        );
        assert!(parse_go_duration("ms").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn trace_ids_are_left_padded_hex() {
        let mut want = [0u8; 16];
        want[15] = 0xab;
        want[14] = 0x01;
        assert_eq!(parse_trace_id("1ab"), Ok(want));
        assert_eq!(parse_trace_id(&"f".repeat(32)), Ok([0xff; 16]));
        assert!(parse_trace_id(&"f".repeat(33)).is_err());
        assert!(parse_trace_id("xyz").is_err());
    }

    #[test]
    fn search_defaults_and_conditions() {
        let s = search("service=api").unwrap();
        assert_eq!(s.limit, DEFAULT_LIMIT);
        assert_eq!(s.query.service.as_deref(), Some("api"));
        assert_eq!(s.query.start_max_ns, Some(10_000_000_000_000));
        assert_eq!(
            s.query.start_min_ns,
            Some((10_000_000_000 - DEFAULT_LOOKBACK_US) * 1000)
        );
        let s = search(
            "service=api&operation=GET%20%2Fx&start=1000&end=2000&minDuration=1ms&\
             maxDuration=1s&limit=5&tags=%7B%22http.route%22%3A%22%2Fx%22%2C%22error%22%3A%22true%22%7D&\
             tag=span.kind:server&tag=k:a:b",
        )
        .unwrap();
        assert_eq!(s.limit, 5);
        assert_eq!(s.query.name.as_deref(), Some("GET /x"));
        assert_eq!(s.query.start_min_ns, Some(1_000_000));
        assert_eq!(s.query.start_max_ns, Some(2_000_000));
        assert_eq!(s.query.min_duration_ns, Some(1_000_000));
        assert_eq!(s.query.max_duration_ns, Some(1_000_000_000));
        assert_eq!(s.query.kind, Some(2));
        assert_eq!(s.query.status_code, Some(2));
        assert_eq!(
            s.query.tags,
            vec![
                ("http.route".to_owned(), "/x".to_owned()),
                ("k".to_owned(), "a:b".to_owned())
            ]
        );
    }

    #[test]
    fn search_errors_are_jaegers() {
        assert_eq!(
            search("").unwrap_err().to_string(),
            "parameter 'service' is required"
        );
        assert_eq!(
            search("service=a&minDuration=2s&maxDuration=1s")
                .unwrap_err()
                .to_string(),
            "'maxDuration' should be greater than 'minDuration'"
        );
        assert_eq!(
            search("service=a&start=x").unwrap_err().to_string(),
            "unable to parse param 'start': strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            search("service=a&minDuration=abc").unwrap_err().to_string(),
            "unable to parse param 'minDuration': time: invalid duration \"abc\""
        );
        assert_eq!(
            search("service=a&tag=nocolon").unwrap_err().to_string(),
            "malformed 'tag' parameter, expecting key:value, received: nocolon"
        );
        assert!(
            search("service=a&tags=%7Bx")
                .unwrap_err()
                .to_string()
                .starts_with("malformed 'tags' parameter, cannot unmarshal JSON: ")
        );
        assert_eq!(
            search("service=a&limit=ten").unwrap_err().to_string(),
            "strconv.ParseInt: parsing \"ten\": invalid syntax"
        );
        // Trace ids alone need no service.
        assert_eq!(search("traceID=1&traceID=2").unwrap().trace_ids.len(), 2);
    }
}
