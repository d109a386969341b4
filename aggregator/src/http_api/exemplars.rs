//! `/api/v1/query_exemplars?query=…&start=…&end=…`: the exemplars of the series the query's
//! selectors match, in Prometheus' JSON shape (`seriesLabels`, then `exemplars` with
//! `labels`, `value` as a string and `timestamp` in seconds), sorted by series labels.
//!
//! Like Prometheus, every vector selector of the expression is extracted (inside functions,
//! aggregations, binary operators and subqueries) and a series matches when any selector
//! matches it; `start`/`end` default to the whole time range.
//!
//! Must not: evaluate the query; only its selectors matter.

use std::fmt::Write as _;

use axum::{extract::State, response::Response};
use promql_parser::parser::Expr;

use super::{ApiState, error::ApiError, json, params::Params};
use crate::store::{Matcher, SeriesExemplars};

/// Every selector's matcher groups (one conjunction per `or` branch), in query order.
pub fn selector_groups(expr: &Expr, out: &mut Vec<Vec<Matcher>>) -> Result<(), ApiError> {
    let bad = |e: crate::promql::QueryError| {
        ApiError::bad_data(format!("invalid parameter \"query\": {e}"))
    };
    match expr {
        Expr::VectorSelector(vs) => {
            out.extend(crate::promql::plan::matcher_groups(vs).map_err(bad)?)
        }
        Expr::MatrixSelector(ms) => {
            out.extend(crate::promql::plan::matcher_groups(&ms.vs).map_err(bad)?)
        }
        Expr::Aggregate(a) => {
            selector_groups(&a.expr, out)?;
            if let Some(param) = &a.param {
                selector_groups(param, out)?;
            }
        }
        Expr::Unary(u) => selector_groups(&u.expr, out)?,
        Expr::Binary(b) => {
            selector_groups(&b.lhs, out)?;
            selector_groups(&b.rhs, out)?;
        }
        Expr::Paren(p) => selector_groups(&p.expr, out)?,
        Expr::Subquery(s) => selector_groups(&s.expr, out)?,
        Expr::Call(c) => {
            for arg in &c.args.args {
                selector_groups(arg, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

/// Encodes the result as Prometheus does.
pub fn encode(result: &[SeriesExemplars]) -> String {
    let mut out = String::with_capacity(64 + result.len() * 128);
    out.push('[');
    for (i, series) in result.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"seriesLabels":"#);
        json::write_labels(&mut out, &series.labels);
        out.push_str(r#","exemplars":["#);
        for (j, e) in series.exemplars.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(r#"{"labels":"#);
            json::write_labels(&mut out, &e.labels);
            let _ = write!(
                out,
                r#","value":"{}","timestamp":"#,
                json::format_value(e.value)
            );
            json::write_timestamp(&mut out, e.t);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// `GET|POST /api/v1/query_exemplars?query=…&start=…&end=…`
pub async fn query_exemplars(
    State(state): State<ApiState>,
    params: Params,
) -> Result<Response, ApiError> {
    let query = params.required("query")?;
    let expr = crate::promql::parse(query)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    let start = params.time("start")?.unwrap_or(i64::MIN);
    let end = params.time("end")?.unwrap_or(i64::MAX);
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start timestamp",
        ));
    }
    let mut groups = Vec::new();
    selector_groups(&expr, &mut groups)?;
    if groups.is_empty() {
        return Ok(json::success("[]".to_owned()));
    }
    let store = state.store.clone();
    let result =
        tokio::task::spawn_blocking(move || encode(&store.select_exemplars(start, end, &groups)))
            .await
            .map_err(|e| ApiError::internal(format!("exemplar query failed: {e}")))?;
    Ok(json::success(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Exemplar, Labels};

    #[test]
    fn extracts_every_selector() {
        let expr = crate::promql::parse(
            "histogram_quantile(0.9, sum by (le) (rate(a_bucket{job=\"x\"}[5m]))) \
             / on() group_left max(b) + scalar(c or d{e=~\"f.*\"})",
        )
        .unwrap();
        let mut groups = Vec::new();
        selector_groups(&expr, &mut groups).unwrap();
        let names: Vec<String> = groups
            .iter()
            .map(|g| match &g[0].op {
                crate::store::MatchOp::Equal(v) => v.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["a_bucket", "b", "c", "d"]);
        assert_eq!(groups[0].len(), 2, "job matcher kept");
    }

    #[test]
    fn encodes_like_prometheus() {
        let result = vec![SeriesExemplars {
            labels: Labels::from_pairs([("__name__", "lat_bucket"), ("le", "0.5")]),
            exemplars: vec![
                Exemplar {
                    labels: Labels::from_pairs([("trace_id", "abc")]),
                    value: 0.25,
                    t: 1_600_096_945_479,
                },
                Exemplar {
                    labels: Labels::from_pairs([("trace_id", "def")]),
                    value: 6.0,
                    t: 1_600_096_946_000,
                },
            ],
        }];
        assert_eq!(
            encode(&result),
            r#"[{"seriesLabels":{"__name__":"lat_bucket","le":"0.5"},"exemplars":[{"labels":{"trace_id":"abc"},"value":"0.25","timestamp":1600096945.479},{"labels":{"trace_id":"def"},"value":"6","timestamp":1600096946}]}]"#
        );
    }
}
