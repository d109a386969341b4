//! Request parameters as Prometheus reads them: the URL query string merged with a
//! form-encoded POST body (`match[]` may repeat), plus Prometheus' time and duration syntax.

use std::time::Duration;

use axum::{
    extract::{FromRequest, Request},
    http::{Method, header},
};

use super::error::ApiError;

/// Largest accepted form body (Grafana posts long queries; 8 MiB is plenty).
const MAX_BODY_BYTES: usize = 8 << 20;

/// All parameters of a request, in order of appearance (query string first).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Builds parameters from raw `application/x-www-form-urlencoded` text.
    pub fn parse(encoded: &[u8]) -> Self {
        Self(form_urlencoded::parse(encoded).into_owned().collect())
    }

    /// The first value of `name`, if given and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (e.g. `match[]`).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A required parameter.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{name}\": missing")))
    }

    /// An optional time parameter, in milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                parse_time(v)
                    .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}")))
            })
            .transpose()
    }

    /// An optional duration parameter.
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        self.get(name)
            .map(|v| {
                parse_duration(v)
                    .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}")))
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut params = Params::parse(request.uri().query().unwrap_or("").as_bytes());
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if request.method() == Method::POST && is_form {
            let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
                .await
                .map_err(|e| ApiError::bad_data(format!("cannot read request body: {e}")))?;
            params.0.extend(Params::parse(&body).0);
        }
        Ok(params)
    }
}

/// Parses Prometheus' time syntax: Unix seconds (fractional allowed) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(seconds) = s.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > 9.2e15 {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Parses Prometheus' duration syntax: seconds (fractional allowed) or `1h30m`-style.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(seconds) = s.parse::<f64>() {
        if !seconds.is_finite() || !(0.0..=9.2e15).contains(&seconds) {
            return Err(format!("cannot parse {s:?} to a valid duration"));
        }
        return Ok(Duration::from_secs_f64(seconds));
    }
    promql_parser::util::duration::parse_duration(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(parse_time("-1"), Ok(-1000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn repeated_and_empty_values() {
        let p = Params::parse(b"match%5B%5D=up&match%5B%5D=down&query=&time=5");
        assert_eq!(p.all("match[]"), ["up", "down"]);
        assert_eq!(p.get("query"), None);
        assert!(p.required("query").is_err());
        assert_eq!(p.time("time").unwrap(), Some(5000));
    }
}
