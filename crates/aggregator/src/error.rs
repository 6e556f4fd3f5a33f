//! The one error answer of the aggregator's handlers, as axum's
//! error-handling example has it: handlers return `Result<Response,
//! ApiError>`, a ledger failure converts with `?`, and [`ApiError`] renders
//! itself as Cumulus answers errors, a JSON string. The text is the
//! caller's to read: it names studies, tables and limits, never a
//! database's message or a cell's value.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

use crate::intake::Failure;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    text: String,
    headers: Vec<(header::HeaderName, &'static str)>,
    /// Credentials were checked and refused: the door counts it.
    refused: bool,
}

/// What a handler returns.
pub(crate) type ApiResult = Result<Response, ApiError>;

impl ApiError {
    pub(crate) fn new(status: StatusCode, text: impl Into<String>) -> ApiError {
        ApiError { status, text: text.into(), headers: Vec::new(), refused: false }
    }

    /// 400.
    pub(crate) fn bad_request(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, text)
    }

    /// 404.
    pub(crate) fn not_found(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, text)
    }

    /// 403.
    pub(crate) fn forbidden(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, text)
    }

    /// 500, saying no more.
    pub(crate) fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The same, counted by the credential door as a refused attempt.
    pub(crate) fn refused_credentials(mut self) -> ApiError {
        self.refused = true;
        self
    }

    /// The same, with a header.
    pub(crate) fn with_header(mut self, name: header::HeaderName, value: &'static str) -> ApiError {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(Json::String(self.text))).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        match self.refused {
            true => veil_http::Credentials::Refused.mark(response),
            false => response,
        }
    }
}

impl From<crate::LedgerError> for ApiError {
    fn from(_: crate::LedgerError) -> ApiError {
        ApiError::internal()
    }
}

impl From<veil_http::TaskFailed> for ApiError {
    fn from(_: veil_http::TaskFailed) -> ApiError {
        ApiError::internal()
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> ApiError {
        match failure {
            Failure::Refused(refusal) if refusal.0 == crate::ledger::FORM_GONE => ApiError::forbidden(refusal.0),
            Failure::Refused(refusal) => ApiError::bad_request(refusal.0),
            Failure::Busy => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "another upload of this study by this site took over the lock; ask for a new upload URL",
            ),
            Failure::Internal => ApiError::internal(),
        }
    }
}
