//! Alert templates: the subset of Go's `text/template` plus Prometheus' template functions
//! that rule labels and annotations use, with Prometheus' data (`$labels`, `$value`,
//! `$externalLabels`, `$externalURL`, `.Labels`, `.Value`, …) and `missingkey=zero`.
//!
//! Owns: parsing ([`parse`]), execution (`exec`), Go's value printing and `printf`
//! ([`gofmt`]) and the function table (`funcs`). Must not: evaluate PromQL itself; the
//! `query` function calls back through [`TemplateContext`].
//!
//! Functions: Go's `and or not len index print printf println eq ne lt le gt ge html js
//! urlquery`; Prometheus' `query first label value strvalue sortByLabel args reReplaceAll
//! match title toUpper toLower safeHtml humanize humanize1024 humanizeDuration
//! humanizePercentage humanizeTimestamp parseDuration stripPort graphLink tableLink
//! pathPrefix externalURL`. Anything else (`toTime`, `tmpl`, `define`, `template`, `slice`,
//! `call`) is a parse error, so an unsupported template fails at load time, never silently.

mod exec;
mod funcs;
pub mod gofmt;
pub mod parse;

use std::{collections::BTreeMap, sync::Arc};

pub use self::funcs::{humanize, humanize_duration};

/// Why a template did not parse or expand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is malformed or names an unknown function or variable.
    #[error("template: {line}: {message}")]
    Parse {
        /// 1-based line within the template.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Execution failed (a function error, a wrong argument type).
    #[error("error executing template: {0}")]
    Exec(String),
}

/// One sample of a `query` result as templates see it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    /// Its labels (with `__name__`).
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// The data an alert template is expanded with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertData {
    /// The alert's labels (the expression's output labels; `.Labels`, `$labels`).
    pub labels: BTreeMap<String, String>,
    /// The configured external labels (`$externalLabels`).
    pub external_labels: BTreeMap<String, String>,
    /// The external URL (`$externalURL`).
    pub external_url: String,
    /// The sample value (`.Value`, `$value`).
    pub value: f64,
}

/// What templates need from their surroundings: PromQL for `query`.
pub trait TemplateContext {
    /// Evaluates `query` at the rule's evaluation time.
    fn query(&self, query: &str) -> Result<Vec<QuerySample>, String>;
}

/// A context without a query engine (`query` fails); for validation and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuery;

impl TemplateContext for NoQuery {
    fn query(&self, query: &str) -> Result<Vec<QuerySample>, String> {
        Err(format!("query {query:?}: no query engine available"))
    }
}

/// A template value (the dynamic types Go templates pass around here).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Go's nil / an invalid value.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer (constants, `len`, range indices).
    Int(i64),
    /// A float64.
    Float(f64),
    /// A string.
    Str(Arc<str>),
    /// A `map[string]string` (label sets).
    Map(Arc<BTreeMap<String, String>>),
    /// A query result.
    Samples(Arc<Vec<QuerySample>>),
    /// One query sample.
    Sample(Arc<QuerySample>),
    /// The result of `args`.
    Args(Arc<Vec<Val>>),
    /// The root data.
    Root(Arc<AlertData>),
}

impl Val {
    /// Go's type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Nil => "<nil>",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Float(_) => "float64",
            Self::Str(_) => "string",
            Self::Map(_) => "map[string]string",
            Self::Samples(_) => "template.queryResult",
            Self::Sample(_) => "*template.sample",
            Self::Args(_) => "map[string]interface {}",
            Self::Root(_) => "template.AlertTemplateData",
        }
    }

    /// Go's truth: false, 0, nil and empty strings, maps and slices are false.
    pub fn truthy(&self) -> bool {
        match self {
            Self::Nil => false,
            Self::Bool(b) => *b,
            Self::Int(i) => *i != 0,
            Self::Float(f) => *f != 0.0,
            Self::Str(s) => !s.is_empty(),
            Self::Map(m) => !m.is_empty(),
            Self::Samples(s) => !s.is_empty(),
            Self::Args(a) => !a.is_empty(),
            Self::Sample(_) | Self::Root(_) => true,
        }
    }

    fn str(s: impl Into<Arc<str>>) -> Self {
        Self::Str(s.into())
    }
}

/// The variables Prometheus predeclares for alert templates.
const ALERT_VARS: [&str; 4] = ["$labels", "$externalLabels", "$externalURL", "$value"];

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<parse::Node>,
}

impl Template {
    /// Parses an alert label or annotation template.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let nodes = parse::parse(text, funcs::names(), &ALERT_VARS)?;
        Ok(Self { nodes })
    }

    /// Whether the text has no actions (expansion returns it unchanged).
    pub fn is_literal(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, parse::Node::Text(_)))
    }

    /// Expands the template with `data`.
    pub fn expand(
        &self,
        data: &AlertData,
        ctx: &dyn TemplateContext,
    ) -> Result<String, TemplateError> {
        let root = Arc::new(data.clone());
        let vars = vec![
            ("$".to_owned(), Val::Root(root.clone())),
            (
                "$labels".to_owned(),
                Val::Map(Arc::new(data.labels.clone())),
            ),
            (
                "$externalLabels".to_owned(),
                Val::Map(Arc::new(data.external_labels.clone())),
            ),
            (
                "$externalURL".to_owned(),
                Val::str(data.external_url.as_str()),
            ),
            ("$value".to_owned(), Val::Float(data.value)),
        ];
        exec::execute(&self.nodes, Val::Root(root), vars, ctx, &data.external_url)
    }
}

/// Parses and expands `text` in one go; an error becomes Prometheus' inline marker
/// `<error expanding template: …>` as alert labels and annotations show it.
pub fn expand_or_marker(
    template: &Template,
    data: &AlertData,
    ctx: &dyn TemplateContext,
) -> String {
    match template.expand(data, ctx) {
        Ok(s) => s,
        Err(error) => format!("<error expanding template: {error}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeQuery;
    impl TemplateContext for FakeQuery {
        fn query(&self, query: &str) -> Result<Vec<QuerySample>, String> {
            assert_eq!(query, "up");
            Ok(vec![
                QuerySample {
                    labels: [("instance".to_owned(), "b".to_owned())].into(),
                    value: 0.0,
                },
                QuerySample {
                    labels: [("instance".to_owned(), "a".to_owned())].into(),
                    value: 1.0,
                },
            ])
        }
    }

    fn data() -> AlertData {
        AlertData {
            labels: [
                ("job".to_owned(), "api".to_owned()),
                ("instance".to_owned(), "h:9".to_owned()),
            ]
            .into(),
            external_labels: [("cluster".to_owned(), "eu".to_owned())].into(),
            external_url: "http://sonde.example:9180/prefix".to_owned(),
            value: 0.123456,
        }
    }

    fn expand(text: &str) -> String {
        Template::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .expand(&data(), &FakeQuery)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn prometheus_variables_and_fields() {
        assert_eq!(
            expand("{{ $labels.job }} on {{ .Labels.instance }}"),
            "api on h:9"
        );
        assert_eq!(expand("{{ $value }}"), "0.123456");
        assert_eq!(expand("{{ .Value }}"), "0.123456");
        assert_eq!(
            expand("{{ $externalLabels.cluster }} {{ $externalURL }}"),
            "eu http://sonde.example:9180/prefix"
        );
        assert_eq!(expand("[{{ $labels.missing }}]"), "[]");
        assert_eq!(expand("{{ index $labels \"job\" }}"), "api");
    }

    #[test]
    fn humanizers_and_printf() {
        assert_eq!(expand("{{ $value | humanizePercentage }}"), "12.35%");
        assert_eq!(expand("{{ humanize 1234567 }}"), "1.235M");
        assert_eq!(expand("{{ humanize 0.00123 }}"), "1.23m");
        assert_eq!(expand("{{ humanize1024 1048576 }}"), "1Mi");
        assert_eq!(expand("{{ humanizeDuration 3661 }}"), "1h 1m 1s");
        assert_eq!(expand("{{ humanizeDuration 90061.5 }}"), "1d 1h 1m 1s");
        assert_eq!(expand("{{ humanizeDuration 0.0015 }}"), "1.5ms");
        assert_eq!(expand("{{ humanizeDuration 12.5 }}"), "12.5s");
        assert_eq!(
            expand("{{ humanizeTimestamp 1435065584.128 }}"),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(expand("{{ printf \"%.2f\" $value }}"), "0.12");
        assert_eq!(expand("{{ $value | printf \"%.1f%%\" }}"), "0.1%");
    }

    #[test]
    fn control_flow_and_query() {
        assert_eq!(
            expand("{{ if gt $value 0.1 }}high{{ else }}low{{ end }}"),
            "high"
        );
        assert_eq!(
            expand(
                "{{ range query \"up\" | sortByLabel \"instance\" }}{{ .Labels.instance }}={{ .Value }};{{ end }}"
            ),
            "a=1;b=0;"
        );
        assert_eq!(
            expand("{{ with query \"up\" }}{{ . | first | value }}{{ end }}"),
            "0"
        );
        assert_eq!(
            expand("{{ range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end }}"),
            "instance=h:9 job=api "
        );
        assert_eq!(expand("{{ $x := 1 }}{{ if eq $x 1 }}one{{ end }}"), "one");
        assert_eq!(
            expand("{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}"),
            "h"
        );
        assert_eq!(expand("{{ $labels.instance | stripPort }}"), "h");
        assert_eq!(
            expand("{{ toUpper \"a\" }}{{ title \"hello world\" }}"),
            "AHello World"
        );
        assert_eq!(
            expand("{{ graphLink \"up\" }}{{ pathPrefix }}"),
            "/graph?g0.expr=up&g0.tab=0/prefix"
        );
        assert_eq!(
            expand("{{ len $labels }} {{ not true }} {{ and 1 0 }} {{ or 0 \"x\" }}"),
            "2 false 0 x"
        );
    }

    #[test]
    fn execution_errors() {
        let t = Template::parse("{{ eq $value 1 }}").unwrap();
        let err = t.expand(&data(), &NoQuery).unwrap_err().to_string();
        assert!(err.contains("incompatible types for comparison"), "{err}");
        let t = Template::parse("{{ query \"up\" | first }}").unwrap();
        assert!(t.expand(&data(), &NoQuery).is_err());
        assert_eq!(
            expand_or_marker(&t, &data(), &NoQuery),
            "<error expanding template: error executing template: error calling query: query \"up\": no query engine available>"
        );
    }
}
