//! The one error answer of the server's handlers, as axum's error-handling
//! example has it: handlers return `Result<Response, ApiError>`, a store
//! failure converts with `?`, and [`ApiError`] renders itself in the
//! dialect of the API that failed (an OperationOutcome for FHIR, a JSON
//! error for share links). Its text is the client's to read, so it names
//! parameters, types and elements, never a resource's values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::export::operation_outcome;

/// How an error is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// An OperationOutcome with one issue whose code is the error's code.
    Fhir,
    /// `{"error": code, "message": text}`, as share links answer.
    Share,
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    text: String,
    dialect: Dialect,
    headers: Vec<(header::HeaderName, String)>,
}

/// What a handler returns.
pub(crate) type ApiResult = Result<Response, ApiError>;

impl ApiError {
    /// A FHIR error: `status`, an OperationOutcome issue `code`, and what to tell the client.
    pub(crate) fn new(status: StatusCode, code: &'static str, text: impl Into<String>) -> ApiError {
        ApiError { status, code, text: text.into(), dialect: Dialect::Fhir, headers: Vec::new() }
    }

    /// 400 `invalid`.
    pub(crate) fn invalid(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", text)
    }

    /// 400 `not-supported`.
    pub(crate) fn not_supported(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "not-supported", text)
    }

    /// 404 `not-found`.
    pub(crate) fn not_found(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", text)
    }

    /// 403 `forbidden`.
    pub(crate) fn forbidden(text: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", text)
    }

    /// 500, saying no more than that something failed here.
    pub(crate) fn internal(text: &'static str) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", text)
    }

    /// A share link's refusal: `{"error": code, "message": text}`.
    pub(crate) fn share(status: StatusCode, code: &'static str, text: impl Into<String>) -> ApiError {
        ApiError { dialect: Dialect::Share, ..ApiError::new(status, code, text) }
    }

    /// The same, with a header (`Retry-After`, `WWW-Authenticate`).
    pub(crate) fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (content_type, body) = match self.dialect {
            Dialect::Fhir => ("application/fhir+json", operation_outcome("error", self.code, &self.text)),
            Dialect::Share => ("application/json", json!({"error": self.code, "message": self.text})),
        };
        let mut response = (self.status, [(header::CONTENT_TYPE, content_type)], body.to_string()).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

impl From<veil_store::StoreError> for ApiError {
    fn from(_: veil_store::StoreError) -> ApiError {
        // The store's message may quote what it was given: not for the client.
        ApiError::internal("the store failed")
    }
}

impl From<veil_http::TaskFailed> for ApiError {
    fn from(_: veil_http::TaskFailed) -> ApiError {
        ApiError::internal("internal error")
    }
}

impl From<crate::LoadError> for ApiError {
    fn from(e: crate::LoadError) -> ApiError {
        match e {
            crate::LoadError::Invalid(text) => ApiError::invalid(text),
            crate::LoadError::Store(e) => e.into(),
        }
    }
}
