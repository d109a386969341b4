//! The function table: Go's `text/template` built-ins and Prometheus' template functions,
//! with Prometheus 2.42's outputs (`humanize*` use `%.4g`, `humanizeTimestamp` prints Go's
//! `time.Time` in UTC, links are `/graph?g0.expr=…`).
//!
//! Must not: run PromQL itself (`query` goes through [`TemplateContext`]).

use std::{
    cmp::Ordering,
    collections::HashSet,
    sync::{Arc, OnceLock},
};

use super::{QuerySample, TemplateContext, Val, gofmt};

/// What functions may reach.
pub struct Env<'a> {
    /// PromQL for `query`.
    pub ctx: &'a dyn TemplateContext,
    /// The external URL (`externalURL`, `pathPrefix`).
    pub external_url: &'a str,
}

const NAMES: [&str; 41] = [
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "sortByLabel",
    "args",
    "reReplaceAll",
    "match",
    "title",
    "toUpper",
    "toLower",
    "safeHtml",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "parseDuration",
    "stripPort",
    "graphLink",
    "tableLink",
    "pathPrefix",
    "externalURL",
];

/// The names templates may call.
pub fn names() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| NAMES.iter().copied().collect())
}

fn arity(name: &str, args: &[Val], want: usize) -> Result<(), String> {
    if args.len() == want {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ))
    }
}

fn string_arg(args: &[Val], i: usize) -> Result<&str, String> {
    match &args[i] {
        Val::Str(s) => Ok(s),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
    }
}

fn sample_arg(args: &[Val], i: usize) -> Result<Arc<QuerySample>, String> {
    match &args[i] {
        Val::Sample(s) => Ok(s.clone()),
        other => Err(format!(
            "wrong type for value; expected *template.sample; got {}",
            other.type_name()
        )),
    }
}

fn samples_arg(args: &[Val], i: usize) -> Result<Arc<Vec<QuerySample>>, String> {
    match &args[i] {
        Val::Samples(s) => Ok(s.clone()),
        Val::Nil => Ok(Arc::new(Vec::new())),
        other => Err(format!(
            "wrong type for value; expected template.queryResult; got {}",
            other.type_name()
        )),
    }
}

/// Go's `strconv.ParseFloat` spellings plus numbers.
pub fn to_float(v: &Val) -> Result<f64, String> {
    match v {
        Val::Float(f) => Ok(*f),
        Val::Int(i) => Ok(*i as f64),
        Val::Str(s) => parse_go_float(s)
            .ok_or_else(|| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (sign, body) = match lower.as_bytes().first() {
        Some(b'-') => (-1.0, &lower[1..]),
        Some(b'+') => (1.0, &lower[1..]),
        _ => (1.0, lower.as_str()),
    };
    match body {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    s.replace('_', "").parse().ok()
}

fn pct_escape(s: &str, space_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' if space_plus => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `fmt.Sprint`: spaces between operands when neither side is a string.
fn sprint(args: &[Val]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Val::Str(_)) && !matches!(args[i - 1], Val::Str(_)) {
            out.push(' ');
        }
        out.push_str(&gofmt::print_value(a));
    }
    out
}

/// Prometheus' `humanize`: SI prefixes, 4 significant digits.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false).to_string();
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", gofmt::format_g(v, Some(4), false))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", gofmt::format_g(v, Some(4), false))
}

/// Prometheus' `humanizeDuration` of seconds.
pub fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    if v == 0.0 {
        return format!("{}s", gofmt::format_g(v, Some(4), false));
    }
    if v.abs() >= 1.0 {
        let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
        let duration = v as i64;
        let seconds = duration % 60;
        let minutes = (duration / 60) % 60;
        let hours = (duration / 60 / 60) % 24;
        let days = duration / 60 / 60 / 24;
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", gofmt::format_g(v, Some(4), false));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", gofmt::format_g(v, Some(4), false))
}

fn humanize_timestamp(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return gofmt::format_g(v, Some(4), false);
    }
    // model.TimeFromUnixNano truncates to milliseconds.
    let ms = ((v * 1e9) as i64).div_euclid(1_000_000);
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return gofmt::format_g(v, Some(4), false);
    };
    let frac = ms.rem_euclid(1000);
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if frac != 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

fn compare(name: &str, a: &Val, b: &Val) -> Result<Ordering, String> {
    let incompatible = || "incompatible types for comparison".to_owned();
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => x
            .partial_cmp(y)
            .ok_or_else(|| "NaN in comparison".to_owned())
            .or(Ok(Ordering::Less)),
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) if name == "eq" || name == "ne" => Ok(x.cmp(y)),
        (Val::Bool(_), Val::Bool(_)) => Err("invalid type for comparison".to_owned()),
        (
            Val::Int(_) | Val::Float(_) | Val::Str(_) | Val::Bool(_),
            Val::Int(_) | Val::Float(_) | Val::Str(_) | Val::Bool(_),
        ) => Err(incompatible()),
        _ => Err("invalid type for comparison".to_owned()),
    }
}

fn go_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        let separator = if prev.is_ascii() {
            !(prev.is_ascii_alphanumeric() || prev == '_')
        } else {
            prev.is_whitespace()
        };
        if separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

fn strip_port(host_port: &str) -> String {
    if let Some(rest) = host_port.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:")
            && !port.contains(':')
        {
            return host.to_owned();
        }
        return host_port.to_owned();
    }
    match host_port.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host.to_owned(),
        _ => host_port.to_owned(),
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| format!("regexp: Compile({pattern:?}): {e}"))
}

/// Calls function `name`.
pub fn call(name: &str, args: Vec<Val>, env: &Env<'_>) -> Result<Val, String> {
    let s = |v: String| Ok(Val::Str(v.into()));
    match name {
        "not" => {
            arity(name, &args, 1)?;
            Ok(Val::Bool(!args[0].truthy()))
        }
        "len" => {
            arity(name, &args, 1)?;
            Ok(Val::Int(match &args[0] {
                Val::Str(x) => x.len() as i64,
                Val::Map(m) => m.len() as i64,
                Val::Samples(x) => x.len() as i64,
                Val::Args(a) => a.len() as i64,
                other => return Err(format!("len of type {}", other.type_name())),
            }))
        }
        "index" => {
            if args.is_empty() {
                return Err("wrong number of args for index: want at least 1 got 0".to_owned());
            }
            let mut v = args[0].clone();
            for key in &args[1..] {
                v = match (&v, key) {
                    (Val::Map(m), Val::Str(k)) => {
                        Val::Str(m.get(&**k).map_or("", String::as_str).into())
                    }
                    (Val::Samples(x), Val::Int(i)) => x
                        .get(usize::try_from(*i).map_err(|_| format!("index out of range: {i}"))?)
                        .map(|s| Val::Sample(Arc::new(s.clone())))
                        .ok_or_else(|| format!("index out of range: {i}"))?,
                    (Val::Nil, _) => return Err("index of untyped nil".to_owned()),
                    (c, k) => {
                        return Err(format!(
                            "can't index item of type {} with {}",
                            c.type_name(),
                            k.type_name()
                        ));
                    }
                };
            }
            Ok(v)
        }
        "print" => s(sprint(&args)),
        "println" => s(format!(
            "{}\n",
            args.iter()
                .map(gofmt::print_value)
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "printf" => {
            if args.is_empty() {
                return Err("wrong number of args for printf: want at least 1 got 0".to_owned());
            }
            let format = string_arg(&args, 0)?.to_owned();
            s(gofmt::sprintf(&format, &args[1..]))
        }
        "eq" => {
            if args.len() < 2 {
                return Err("missing argument for comparison".to_owned());
            }
            for other in &args[1..] {
                if compare(name, &args[0], other)? == Ordering::Equal {
                    return Ok(Val::Bool(true));
                }
            }
            Ok(Val::Bool(false))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, &args, 2)?;
            let ord = compare(name, &args[0], &args[1])?;
            let nan = matches!((&args[0], &args[1]), (Val::Float(a), Val::Float(b)) if a.is_nan() || b.is_nan());
            Ok(Val::Bool(match name {
                "ne" => nan || ord != Ordering::Equal,
                _ if nan => false,
                "lt" => ord == Ordering::Less,
                "le" => ord != Ordering::Greater,
                "gt" => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }))
        }
        "html" => s(sprint(&args)
            .replace('&', "&amp;")
            .replace('\'', "&#39;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\0', "\u{FFFD}")),
        "js" => {
            let mut out = String::new();
            for c in sprint(&args).chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("\\'"),
                    '"' => out.push_str("\\\""),
                    '<' => out.push_str("\\u003C"),
                    '>' => out.push_str("\\u003E"),
                    '&' => out.push_str("\\u0026"),
                    '=' => out.push_str("\\u003D"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            s(out)
        }
        "urlquery" => s(pct_escape(&sprint(&args), true)),
        "query" => {
            arity(name, &args, 1)?;
            let q = string_arg(&args, 0)?;
            Ok(Val::Samples(Arc::new(env.ctx.query(q)?)))
        }
        "first" => {
            arity(name, &args, 1)?;
            let v = samples_arg(&args, 0)?;
            v.first()
                .map(|s| Val::Sample(Arc::new(s.clone())))
                .ok_or_else(|| "first() called on vector with no elements".to_owned())
        }
        "label" => {
            arity(name, &args, 2)?;
            let label = string_arg(&args, 0)?;
            let sample = sample_arg(&args, 1)?;
            s(sample.labels.get(label).cloned().unwrap_or_default())
        }
        "value" => {
            arity(name, &args, 1)?;
            Ok(Val::Float(sample_arg(&args, 0)?.value))
        }
        "strvalue" => {
            arity(name, &args, 1)?;
            s(sample_arg(&args, 0)?
                .labels
                .get("__value__")
                .cloned()
                .unwrap_or_default())
        }
        "sortByLabel" => {
            arity(name, &args, 2)?;
            let label = string_arg(&args, 0)?.to_owned();
            let mut v = (*samples_arg(&args, 1)?).clone();
            v.sort_by(|a, b| a.labels.get(&label).cmp(&b.labels.get(&label)));
            Ok(Val::Samples(Arc::new(v)))
        }
        "args" => Ok(Val::Args(Arc::new(args))),
        "reReplaceAll" => {
            arity(name, &args, 3)?;
            let re = regex(string_arg(&args, 0)?)?;
            s(re.replace_all(string_arg(&args, 2)?, string_arg(&args, 1)?)
                .into_owned())
        }
        "match" => {
            arity(name, &args, 2)?;
            Ok(Val::Bool(
                regex(string_arg(&args, 0)?)?.is_match(string_arg(&args, 1)?),
            ))
        }
        "title" => {
            arity(name, &args, 1)?;
            s(go_title(string_arg(&args, 0)?))
        }
        "toUpper" => {
            arity(name, &args, 1)?;
            s(string_arg(&args, 0)?.to_uppercase())
        }
        "toLower" => {
            arity(name, &args, 1)?;
            s(string_arg(&args, 0)?.to_lowercase())
        }
        "safeHtml" => {
            arity(name, &args, 1)?;
            s(string_arg(&args, 0)?.to_owned())
        }
        "humanize" => {
            arity(name, &args, 1)?;
            s(humanize(to_float(&args[0])?))
        }
        "humanize1024" => {
            arity(name, &args, 1)?;
            s(humanize1024(to_float(&args[0])?))
        }
        "humanizeDuration" => {
            arity(name, &args, 1)?;
            s(humanize_duration(to_float(&args[0])?))
        }
        "humanizePercentage" => {
            arity(name, &args, 1)?;
            s(format!(
                "{}%",
                gofmt::format_g(to_float(&args[0])? * 100.0, Some(4), false)
            ))
        }
        "humanizeTimestamp" => {
            arity(name, &args, 1)?;
            s(humanize_timestamp(to_float(&args[0])?))
        }
        "parseDuration" => {
            arity(name, &args, 1)?;
            let d = crate::rules::duration::parse(string_arg(&args, 0)?)?;
            Ok(Val::Float(d.as_secs_f64()))
        }
        "stripPort" => {
            arity(name, &args, 1)?;
            s(strip_port(string_arg(&args, 0)?))
        }
        "graphLink" | "tableLink" => {
            arity(name, &args, 1)?;
            let tab = if name == "graphLink" { 0 } else { 1 };
            s(format!(
                "/graph?g0.expr={}&g0.tab={tab}",
                pct_escape(string_arg(&args, 0)?, true)
            ))
        }
        "pathPrefix" => {
            arity(name, &args, 0)?;
            let path = env
                .external_url
                .split_once("://")
                .map_or("", |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
            s(path.to_owned())
        }
        "externalURL" => {
            arity(name, &args, 0)?;
            s(env.external_url.to_owned())
        }
        other => Err(format!("function {other:?} not defined")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanize_like_prometheus() {
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(1.0), "1");
        assert_eq!(humanize(1234.0), "1.234k");
        assert_eq!(humanize(-1234.0), "-1.234k");
        assert_eq!(humanize(0.1), "100m");
        assert_eq!(humanize(1e-7), "100n");
        assert_eq!(humanize(f64::INFINITY), "+Inf");
        assert_eq!(humanize1024(1.0), "1");
        assert_eq!(humanize1024(2048.0), "2ki");
        assert_eq!(humanize_duration(0.0), "0s");
        assert_eq!(humanize_duration(-3661.0), "-1h 1m 1s");
        assert_eq!(humanize_duration(61.0), "1m 1s");
        assert_eq!(humanize_timestamp(0.0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(strip_port("[::1]:9"), "::1");
        assert_eq!(strip_port("host"), "host");
        assert_eq!(go_title("disk is_full-now"), "Disk Is_full-Now");
    }
}
