//! Label matchers as the store evaluates them (`=`, `!=`, `=~`, `!~`).
//!
//! Regular expressions are fully anchored, as in Prometheus. A matcher against an absent
//! label sees the empty string, so `{foo=""}` selects series without `foo`.

use regex::Regex;

/// How a matcher compares.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal(String),
    /// `!=`
    NotEqual(String),
    /// `=~` (anchored)
    Regex(Regex),
    /// `!~` (anchored)
    NotRegex(Regex),
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name it looks at.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
}

/// A regular expression that failed to compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid regular expression {pattern:?} for label {name:?}: {source}")]
pub struct RegexError {
    /// The label name.
    pub name: String,
    /// The pattern as given.
    pub pattern: String,
    /// The regex error.
    #[source]
    pub source: regex::Error,
}

impl Matcher {
    /// `name = value`.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: MatchOp::Equal(value.into()),
        }
    }

    /// `name =~ pattern` or `name !~ pattern` (anchored).
    pub fn regex(name: impl Into<String>, pattern: &str, negate: bool) -> Result<Self, RegexError> {
        let name = name.into();
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|source| RegexError {
            name: name.clone(),
            pattern: pattern.to_owned(),
            source,
        })?;
        let op = if negate {
            MatchOp::NotRegex(regex)
        } else {
            MatchOp::Regex(regex)
        };
        Ok(Self { name, op })
    }

    /// Whether a label value (empty when absent) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal(v) => v == value,
            MatchOp::NotEqual(v) => v != value,
            MatchOp::Regex(r) => r.is_match(value),
            MatchOp::NotRegex(r) => !r.is_match(value),
        }
    }

    /// Whether the matcher selects series that lack the label entirely.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored() {
        let m = Matcher::regex("job", "api|web", false).unwrap();
        assert!(m.matches("api"));
        assert!(!m.matches("xapi"));
        assert!(!m.matches("api2"));
        let n = Matcher::regex("job", "a.*", true).unwrap();
        assert!(n.matches("b"));
        assert!(n.matches(""));
    }

    #[test]
    fn bad_regex_names_label_and_pattern() {
        let err = Matcher::regex("job", "(", false).unwrap_err().to_string();
        assert!(err.contains("\"(\"") && err.contains("job"), "{err}");
    }
}
