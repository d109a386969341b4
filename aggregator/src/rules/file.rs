//! Rule files: Prometheus' YAML format (`groups:` of `name`, `interval`, `limit`, `rules:`
//! with `record`/`alert`, `expr`, `for`, `keep_firing_for`, `labels`, `annotations`), parsed
//! and validated into [`GroupSpec`]s, and `--rules` paths or globs expanded into files.
//!
//! Every error names the file, line, group and rule (`f.yml:12: group "api", rule 3
//! ("HighErrorRate"): …`), as promtool does. Must not: evaluate anything; unknown keys are
//! errors (Prometheus parses strictly too).

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{duration, template::Template};

/// Why rule files could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleFileError {
    /// The file could not be read.
    #[error("{path}: cannot read rule file: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// A `--rules` pattern is malformed.
    #[error("{pattern}: invalid rule file pattern: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// The YAML does not parse or has the wrong shape.
    #[error("{path}:{line}: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A group or rule is invalid.
    #[error("{path}:{line}: group {group:?}{rule}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending group or rule.
        line: usize,
        /// The group's name.
        group: String,
        /// `, rule N ("name")` or empty for group-level errors.
        rule: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    expr: Option<ExprText>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// `expr` may be written as a YAML number (`expr: 1`), as Prometheus accepts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExprText {
    Text(String),
    Int(i64),
    Float(f64),
}

impl ExprText {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
        }
    }
}

/// A validated rule group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// The group's name (unique within its file).
    pub name: String,
    /// The file it came from, as given.
    pub file: String,
    /// Its own `interval`, if set (otherwise the configured default applies).
    pub interval: Option<Duration>,
    /// Most series (recording) or alerts (alerting) one rule may produce; 0: no limit.
    pub limit: usize,
    /// Its rules in file order.
    pub rules: Vec<RuleSpec>,
}

impl GroupSpec {
    /// Prometheus' group key, `file;name`.
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// The recorded metric name or the alert name.
    pub name: String,
    /// The PromQL expression, as written.
    pub expr: String,
    /// Labels added to (or, with an empty value, removed from) every output.
    pub labels: Vec<(String, String)>,
    /// What kind of rule.
    pub kind: RuleKind,
    /// 1-based line of the rule in its file.
    pub line: usize,
}

/// Recording or alerting, with the alerting rule's extras.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// `record:`.
    Recording,
    /// `alert:`.
    Alerting {
        /// `for`: how long the expression must return an element before it fires.
        hold: Duration,
        /// `keep_firing_for`: how long it keeps firing once the expression stops returning it.
        keep_firing_for: Duration,
        /// Annotations as written (templates).
        annotations: Vec<(String, String)>,
        /// Parsed label templates, in `labels` order.
        label_templates: Vec<Template>,
        /// Parsed annotation templates, in `annotations` order.
        annotation_templates: Vec<Template>,
    },
}

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Parses and validates the rule file at `path`.
pub fn load_file(path: &Path) -> Result<Vec<GroupSpec>, RuleFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuleFileError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses and validates rule-file text; `file` names it in errors and in the group key.
pub fn parse(file: &str, text: &str) -> Result<Vec<GroupSpec>, RuleFileError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| RuleFileError::Yaml {
        path: file.to_owned(),
        line: e.location().map_or(0, |l| l.line() as usize),
        message: e.without_snippet().to_string().replace('\n', " "),
    })?;
    let mut seen = HashSet::new();
    let mut groups = Vec::with_capacity(raw.groups.len());
    for group in raw.groups {
        let line = group.referenced.line() as usize;
        let g = group.value;
        let invalid = |message: String| RuleFileError::Invalid {
            path: file.to_owned(),
            line,
            group: g.name.clone(),
            rule: String::new(),
            message,
        };
        if g.name.is_empty() {
            return Err(invalid("group name must not be empty".to_owned()));
        }
        if !seen.insert(g.name.clone()) {
            return Err(invalid(
                "group name is repeated in the same file".to_owned(),
            ));
        }
        let interval = match &g.interval {
            None => None,
            Some(text) => {
                let d = duration::parse(text).map_err(|e| invalid(format!("interval: {e}")))?;
                if d.is_zero() {
                    return Err(invalid("interval must be positive".to_owned()));
                }
                Some(d)
            }
        };
        let limit = match g.limit {
            None => 0,
            Some(l) if l >= 0 => l as usize,
            Some(l) => return Err(invalid(format!("limit must not be negative, got {l}"))),
        };
        let mut rules = Vec::with_capacity(g.rules.len());
        for (i, rule) in g.rules.into_iter().enumerate() {
            let line = rule.referenced.line() as usize;
            let r = rule.value;
            let label = r
                .alert
                .clone()
                .or_else(|| r.record.clone())
                .unwrap_or_default();
            let invalid = |message: String| RuleFileError::Invalid {
                path: file.to_owned(),
                line,
                group: g.name.clone(),
                rule: format!(", rule {} ({label:?})", i + 1),
                message,
            };
            rules.push(validate_rule(r, line).map_err(invalid)?);
        }
        groups.push(GroupSpec {
            name: g.name,
            file: file.to_owned(),
            interval,
            limit,
            rules,
        });
    }
    Ok(groups)
}

fn validate_rule(r: RawRule, line: usize) -> Result<RuleSpec, String> {
    let (name, alerting) = match (&r.record, &r.alert) {
        (Some(_), Some(_)) => return Err("only one of 'record' and 'alert' must be set".to_owned()),
        (None, None) => return Err("one of 'record' or 'alert' must be set".to_owned()),
        (Some(n), None) => (n.clone(), false),
        (None, Some(n)) => (n.clone(), true),
    };
    if name.is_empty() {
        return Err("one of 'record' or 'alert' must be set".to_owned());
    }
    let expr = match &r.expr {
        None => return Err("field 'expr' must be set in rule".to_owned()),
        Some(e) => e.text(),
    };
    if expr.trim().is_empty() {
        return Err("field 'expr' must be set in rule".to_owned());
    }
    crate::promql::parse(&expr).map_err(|e| format!("could not parse expression: {e}"))?;
    let labels: Vec<(String, String)> = r.labels.unwrap_or_default().into_iter().collect();
    for (n, _) in &labels {
        if !valid_label_name(n) {
            return Err(format!("invalid label name: {n}"));
        }
    }
    if !alerting {
        if r.annotations.is_some_and(|a| !a.is_empty()) {
            return Err("invalid field 'annotations' in recording rule".to_owned());
        }
        if r.for_.is_some() {
            return Err("invalid field 'for' in recording rule".to_owned());
        }
        if r.keep_firing_for.is_some() {
            return Err("invalid field 'keep_firing_for' in recording rule".to_owned());
        }
        if !valid_metric_name(&name) {
            return Err(format!("invalid recording rule name: {name}"));
        }
        if labels.iter().any(|(n, _)| n == "__name__") {
            return Err("invalid label name: __name__".to_owned());
        }
        return Ok(RuleSpec {
            name,
            expr,
            labels,
            kind: RuleKind::Recording,
            line,
        });
    }
    let parse_d = |what: &str, v: &Option<String>| match v {
        None => Ok(Duration::ZERO),
        Some(t) => duration::parse(t).map_err(|e| format!("{what}: {e}")),
    };
    let hold = parse_d("for", &r.for_)?;
    let keep_firing_for = parse_d("keep_firing_for", &r.keep_firing_for)?;
    let annotations: Vec<(String, String)> =
        r.annotations.unwrap_or_default().into_iter().collect();
    for (n, _) in &annotations {
        if !valid_label_name(n) {
            return Err(format!("invalid annotation name: {n}"));
        }
    }
    let parse_t =
        |what: &str, n: &str, t: &str| Template::parse(t).map_err(|e| format!("{what} {n:?}: {e}"));
    let label_templates = labels
        .iter()
        .map(|(n, t)| parse_t("label", n, t))
        .collect::<Result<Vec<_>, _>>()?;
    let annotation_templates = annotations
        .iter()
        .map(|(n, t)| parse_t("annotation", n, t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RuleSpec {
        name,
        expr,
        labels,
        kind: RuleKind::Alerting {
            hold,
            keep_firing_for,
            annotations,
            label_templates,
            annotation_templates,
        },
        line,
    })
}

/// Expands `--rules` entries: a file, a directory (its `*.yml`/`*.yaml` files) or a glob
/// (`*`, `?`, `[…]` in any path component). Sorted, duplicates removed. A glob matching
/// nothing is not an error (as in Prometheus); a missing plain file is.
pub fn expand_patterns(patterns: &[String]) -> Result<Vec<PathBuf>, RuleFileError> {
    let mut out = Vec::new();
    for pattern in patterns {
        if !pattern.contains(['*', '?', '[']) {
            let path = PathBuf::from(pattern);
            if path.is_dir() {
                let mut found = read_dir_sorted(&path, pattern)?
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                    .collect();
                out.append(&mut found);
            } else if path.is_file() {
                out.push(path);
            } else {
                return Err(RuleFileError::Read {
                    path: pattern.clone(),
                    message: "no such file or directory".to_owned(),
                });
            }
            continue;
        }
        out.extend(glob(pattern)?);
    }
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

fn read_dir_sorted(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, RuleFileError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RuleFileError::Read {
        path: pattern.to_owned(),
        message: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

fn component_regex(component: &str, pattern: &str) -> Result<regex::Regex, RuleFileError> {
    let mut re = String::from("^");
    let mut chars = component.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'!') || chars.peek() == Some(&'^') {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if c == '\\' || c == '[' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                if !closed {
                    return Err(RuleFileError::Pattern {
                        pattern: pattern.to_owned(),
                        message: "unclosed '['".to_owned(),
                    });
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| RuleFileError::Pattern {
        pattern: pattern.to_owned(),
        message: e.to_string(),
    })
}

fn glob(pattern: &str) -> Result<Vec<PathBuf>, RuleFileError> {
    let absolute = pattern.starts_with('/');
    let mut current = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::from(".")
    }];
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let mut next = Vec::new();
        for base in &current {
            if component.contains(['*', '?', '[']) {
                let re = component_regex(component, pattern)?;
                let Ok(entries) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && re.is_match(n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else {
                next.push(base.join(component));
            }
        }
        current = next
            .into_iter()
            .filter(|p| if last { p.is_file() } else { p.is_dir() })
            .collect();
    }
    Ok(current
        .into_iter()
        .map(|p| p.strip_prefix("./").map(Path::to_path_buf).unwrap_or(p))
        .collect())
}

/// Loads every file `patterns` name; the first error wins.
pub fn load_all(patterns: &[String]) -> Result<Vec<GroupSpec>, RuleFileError> {
    let mut groups = Vec::new();
    for path in expand_patterns(patterns)? {
        groups.extend(load_file(&path)?);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "groups:
  - name: api
    interval: 30s
    rules:
      - record: job:errors:rate5m
        expr: sum by (job) (rate(errors_total[5m]))
        labels:
          team: web
      - alert: HighErrors
        expr: job:errors:rate5m > 1
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: '{{ $labels.job }} has {{ $value | humanize }} errors/s'
  - name: other
    rules:
      - record: x
        expr: 1
";

    #[test]
    fn parses_groups_and_rules() {
        let groups = parse("f.yml", GOOD).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].interval, Some(Duration::from_secs(30)));
        assert_eq!(groups[0].key(), "f.yml;api");
        assert_eq!(groups[0].rules[1].line, 9);
        match &groups[0].rules[1].kind {
            RuleKind::Alerting {
                hold,
                keep_firing_for,
                ..
            } => {
                assert_eq!(*hold, Duration::from_secs(300));
                assert_eq!(*keep_firing_for, Duration::from_secs(60));
            }
            RuleKind::Recording => panic!("alerting expected"),
        }
        assert_eq!(groups[1].rules[0].expr, "1");
    }

    fn err(text: &str) -> String {
        parse("bad.yml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_group_and_rule() {
        let e = err(
            "groups:\n  - name: g\n    rules:\n      - record: ok\n        expr: up\n      - alert: A\n        expr: 'sum(('\n",
        );
        assert!(
            e.starts_with("bad.yml:6: group \"g\", rule 2 (\"A\"): could not parse expression"),
            "{e}"
        );
        let e = err(
            "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        for: 1m\n",
        );
        assert!(
            e.contains("bad.yml:4: group \"g\", rule 1 (\"r\"): invalid field 'for'"),
            "{e}"
        );
        let e = err(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          s: '{{ nosuch }}'\n",
        );
        assert!(e.contains("function \"nosuch\" not defined"), "{e}");
        let e = err("groups:\n  - name: g\n    rules:\n      - alert: A\n        exr: up\n");
        assert!(e.starts_with("bad.yml:5:") && e.contains("exr"), "{e}");
        let e = err("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n");
        assert!(
            e.contains("bad.yml:4: group \"g\": group name is repeated"),
            "{e}"
        );
        let e =
            err("groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n");
        assert!(e.contains("invalid recording rule name"), "{e}");
        let e = err(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5x\n",
        );
        assert!(e.contains("for: not a valid duration"), "{e}");
    }

    #[test]
    fn globs_and_directories_expand() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "").unwrap();
        std::fs::write(dir.path().join("c.txt"), "").unwrap();
        let base = dir.path().display().to_string();
        let files = expand_patterns(&[format!("{base}/*.y*ml")]).unwrap();
        assert_eq!(files.len(), 2);
        let files = expand_patterns(std::slice::from_ref(&base)).unwrap();
        assert_eq!(files.len(), 2);
        assert!(expand_patterns(&[format!("{base}/missing.yml")]).is_err());
        assert!(
            expand_patterns(&[format!("{base}/*.none")])
                .unwrap()
                .is_empty()
        );
        assert_eq!(load_all(&[format!("{base}/a.yml")]).unwrap().len(), 2);
    }
}
