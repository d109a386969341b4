//! API errors: the single place that maps failures to HTTP status codes and Prometheus'
//! `errorType` values (400 `bad_data`, 422 `execution`, 503 `timeout`, 500 `internal`).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{promql::QueryError, store::StoreError};

/// Prometheus' error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Malformed request or query (400).
    BadData,
    /// The query failed during evaluation (422).
    Execution,
    /// The query ran out of time (503).
    Timeout,
    /// Something broke on our side (500).
    Internal,
    /// The endpoint or resource does not exist (404).
    NotFound,
    /// The server is not ready (503).
    Unavailable,
    /// The query was cancelled (503).
    Canceled,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadData => "bad_data",
            Self::Execution => "execution",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::NotFound => "not_found",
            Self::Unavailable => "unavailable",
            Self::Canceled => "canceled",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::BadData => StatusCode::BAD_REQUEST,
            Self::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout | Self::Unavailable | Self::Canceled => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// An error answer in Prometheus' envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The kind.
    pub kind: ErrorType,
    /// The message shown to the user.
    pub message: String,
}

impl ApiError {
    /// A 400 `bad_data` error.
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::BadData,
            message: message.into(),
        }
    }

    /// A 500 `internal` error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Internal,
            message: message.into(),
        }
    }

    /// A 404 error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::NotFound,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::internal(format!("storage error: {error}"))
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let kind = match &error {
            QueryError::Parse(_) => ErrorType::BadData,
            QueryError::Execution(_)
            | QueryError::Unsupported(_)
            | QueryError::TooManySamples { .. }
            | QueryError::TooManySeries { .. } => ErrorType::Execution,
            QueryError::Timeout { .. } => ErrorType::Timeout,
            // Nobody is waiting for the answer; Prometheus reports a cancelled query this way.
            QueryError::Cancelled => ErrorType::Canceled,
            QueryError::Store(_) => ErrorType::Internal,
        };
        let message = match &error {
            QueryError::Parse(m) => format!("invalid parameter \"query\": {m}"),
            other => other.to_string(),
        };
        Self { kind, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Field order as Prometheus writes it.
        let body = format!(
            r#"{{"status":"error","errorType":"{}","error":{}}}"#,
            self.kind.as_str(),
            serde_json::Value::String(self.message)
        );
        (
            self.kind.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_errors_map_to_prometheus_codes() {
        let cases = [
            (QueryError::Parse("x".into()), StatusCode::BAD_REQUEST),
            (
                QueryError::Execution("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                QueryError::Unsupported("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                QueryError::TooManySamples { limit: 1 },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                QueryError::Timeout { phase: "x" },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).into_response().status(), status);
        }
    }
}
