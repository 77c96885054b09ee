//! API errors: every failure is answered as `{"error":{"code","message"}}` with a fitting status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_log::{ErrorKind, LogError};
use sluice_sink::{PortError, PortErrorKind};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn payload_too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        ApiError::new(status_of(e.kind()), e.code(), e.to_string())
    }
}

/// The HTTP status of a log error, from its backend-neutral kind alone.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        // Sluice's own credentials to its backend: the operator's problem, not the client's.
        ErrorKind::Unauthorized => StatusCode::BAD_GATEWAY,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Hot-results errors: the backend (Redis) is down or slow.
impl From<sluice_hot::HotError> for ApiError {
    fn from(e: sluice_hot::HotError) -> Self {
        let status = match e.kind() {
            sluice_hot::HotErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            sluice_hot::HotErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            sluice_hot::HotErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// Store and search errors: the status from the port's backend-neutral kind.
impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        let status = match e.kind {
            PortErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            PortErrorKind::NotFound => StatusCode::NOT_FOUND,
            PortErrorKind::Conflict => StatusCode::CONFLICT,
            PortErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            // The request itself is too big for its budget (a query's memory): not the server's failure.
            PortErrorKind::ResourceExhausted => StatusCode::UNPROCESSABLE_ENTITY,
            PortErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PortErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code, e.message)
    }
}
