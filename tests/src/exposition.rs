//! Parses the Prometheus text exposition format (0.0.4) into series and types, for tests
//! that compare `/metrics` of the agent with real exporters.

use std::collections::{BTreeMap, HashMap};

/// A series key: metric name and its labels (sorted; empty values dropped, as Prometheus
/// treats an empty label as absent).
pub type SeriesKey = (String, BTreeMap<String, String>);

/// One parsed exposition.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    /// Value per series.
    pub samples: HashMap<SeriesKey, f64>,
    /// `# TYPE` per name in the header.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Parses `text`, panicking on a malformed line (with the line).
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                out.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (key, value) = parse_sample(line);
            assert!(
                out.samples.insert(key.clone(), value).is_none(),
                "duplicate series {key:?}"
            );
        }
        out
    }

    /// Metric names present.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples.keys().map(|(n, _)| n.clone()).collect()
    }

    /// The value of `name` with exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Series of `name` whose labels include `subset`.
    pub fn find(
        &self,
        name: &str,
        subset: &[(&str, &str)],
    ) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && subset
                        .iter()
                        .all(|(k, v)| labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|((_, labels), v)| (labels, *v))
            .collect()
    }
}

fn parse_sample(line: &str) -> (SeriesKey, f64) {
    let (name_end, mut labels) = match line.find('{') {
        Some(open) => (open, BTreeMap::new()),
        None => (
            line.find(' ').unwrap_or_else(|| panic!("no value: {line}")),
            BTreeMap::new(),
        ),
    };
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest
                .find('=')
                .unwrap_or_else(|| panic!("bad labels: {line}"));
            let label = rest[..eq].to_owned();
            let mut chars = rest[eq + 1..].chars();
            assert_eq!(chars.next(), Some('"'), "unquoted label value: {line}");
            let mut value = String::new();
            let mut consumed = eq + 2;
            loop {
                let c = chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated: {line}"));
                consumed += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let e = chars.next().expect("escape");
                        consumed += e.len_utf8();
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                    c => value.push(c),
                }
            }
            rest = &rest[consumed..];
            if !value.is_empty() {
                labels.insert(label, value);
            }
        }
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value: {line}"));
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
    };
    ((name, labels), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_exponents() {
        let e = Exposition::parse(
            "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"z\",e=\"\"} 1.5e+10\nb 3\nc{} NaN\n",
        );
        assert_eq!(e.get("a_total", &[("x", "1"), ("y", "q\"z")]), Some(1.5e10));
        assert_eq!(e.get("b", &[]), Some(3.0));
        assert_eq!(e.types["a"], "counter");
    }
}
