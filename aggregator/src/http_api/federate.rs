//! `/federate`: the latest sample (within the lookback) of every series matching `match[]`,
//! in the Prometheus text exposition format (0.0.4), as Prometheus' federation endpoint
//! answers it. Series whose latest sample is a stale marker are left out.

use std::collections::BTreeMap;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use super::{ApiState, error::ApiError, params::Params, query::now_ms};
use crate::{
    promql::{STALE_NAN_BITS, math::format_float_g},
    store::{Labels, Sample},
};

/// `GET /federate?match[]=…`
pub async fn federate(State(state): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let mut selectors = Vec::new();
    for selector in params.all("match[]") {
        selectors.extend(
            crate::promql::parse_series_selector(selector)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?,
        );
    }
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let store = state.store.clone();
    let lookback =
        i64::try_from(state.engine.config().lookback_delta.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let body = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        // Latest sample per series, keyed (metric name, labels) so families stay together.
        let mut latest: BTreeMap<(String, Labels), Sample> = BTreeMap::new();
        for group in &selectors {
            for series in store.select(group, now - lookback, now)? {
                let Some(last) = series.samples.last().copied() else {
                    continue;
                };
                let name = series.labels.metric_name().unwrap_or("").to_owned();
                latest.insert((name, series.labels), last);
            }
        }
        Ok(render(&latest))
    })
    .await
    .map_err(|e| ApiError::internal(format!("federation failed: {e}")))??;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('\n', r"\n")
        .replace('"', "\\\"")
}

fn render(latest: &BTreeMap<(String, Labels), Sample>) -> String {
    let mut out = String::new();
    let mut family: Option<&str> = None;
    for ((name, labels), sample) in latest {
        if sample.v.to_bits() == STALE_NAN_BITS {
            continue;
        }
        if family != Some(name.as_str()) {
            out.push_str(&format!("# TYPE {name} untyped\n"));
            family = Some(name);
        }
        out.push_str(name);
        let mut first = true;
        for label in labels
            .iter()
            .filter(|l| &*l.name != sonde_proto::names::METRIC_NAME)
        {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(&format!("{}=\"{}\"", label.name, escape(&label.value)));
        }
        if !first {
            out.push('}');
        }
        out.push_str(&format!(" {} {}\n", format_float_g(sample.v), sample.t));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_and_skips_stale_series() {
        let mut latest = BTreeMap::new();
        let up = |job: &str| Labels::from_pairs([("__name__", "up"), ("job", job)]);
        latest.insert(("up".to_owned(), up("a\"b")), Sample { t: 1000, v: 1.0 });
        latest.insert(
            ("up".to_owned(), up("c")),
            Sample {
                t: 2000,
                v: f64::from_bits(STALE_NAN_BITS),
            },
        );
        latest.insert(
            ("z".to_owned(), Labels::from_pairs([("__name__", "z")])),
            Sample {
                t: 3000,
                v: 1234567.0,
            },
        );
        assert_eq!(
            render(&latest),
            "# TYPE up untyped\nup{job=\"a\\\"b\"} 1 1000\n# TYPE z untyped\nz 1.234567e+06 3000\n"
        );
    }
}
