//! Series identity: a sorted, duplicate-free set of label pairs.

use std::{fmt, sync::Arc};

/// One label pair. Names and values are reference-counted so that many series (and query
/// results) can share them cheaply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// Label name (`__name__` for the metric name).
    pub name: Arc<str>,
    /// Label value; never empty in a stored series (an empty value means "absent").
    pub value: Arc<str>,
}

/// A series' labels, sorted by name, names unique, no empty values.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a label set from pairs: sorts by name, drops empty values; when a name repeats
    /// the last pair wins. Callers validate names beforehand.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .filter(|(_, v)| !v.as_ref().is_empty())
            .map(|(n, v)| Label {
                name: Arc::from(n.as_ref()),
                value: Arc::from(v.as_ref()),
            })
            .collect();
        // Stable sort keeps input order among equal names; keep the last of each run.
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut deduped: Vec<Label> = Vec::with_capacity(labels.len());
        for label in labels {
            match deduped.last_mut() {
                Some(last) if last.name == label.name => *last = label,
                _ => deduped.push(label),
            }
        }
        Self(deduped)
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i: usize| &*self.0[i].value)
    }

    /// The same labels with every name and value passed through `f` (which must return an
    /// equal string, e.g. a shared copy from a symbol table).
    pub fn map_strs(self, mut f: impl FnMut(Arc<str>) -> Arc<str>) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|l| Label {
                    name: f(l.name),
                    value: f(l.value),
                })
                .collect(),
        )
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(sonde_proto::names::METRIC_NAME)
    }

    /// Iterates over the pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy without the labels whose names `drop` returns true for.
    pub fn without(&self, mut drop: impl FnMut(&str) -> bool) -> Self {
        Self(self.0.iter().filter(|l| !drop(&l.name)).cloned().collect())
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or("");
        write!(f, "{name}{{")?;
        let mut first = true;
        for label in self
            .0
            .iter()
            .filter(|l| &*l.name != sonde_proto::names::METRIC_NAME)
        {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{}={:?}", label.name, &*label.value)?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduplicated_and_empty_values_dropped() {
        let l = Labels::from_pairs([("b", "1"), ("a", "x"), ("b", "2"), ("c", "")]);
        let pairs: Vec<_> = l.iter().map(|l| (&*l.name, &*l.value)).collect();
        assert_eq!(pairs, [("a", "x"), ("b", "2")]);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn displays_like_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(l.to_string(), r#"up{job="a\"b"}"#);
    }
}
