//! API errors: every failure is answered as `{"error":{"code","message"}}` with a fitting status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_log::{ErrorKind, LogError};

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
        let status = match (&e, e.kind()) {
            (LogError::TopicNotFound(_) | LogError::PartitionNotFound { .. }, _) => StatusCode::NOT_FOUND,
            (LogError::TopicExists(_), _) => StatusCode::CONFLICT,
            (LogError::OffsetOutOfRange { .. }, _) => StatusCode::RANGE_NOT_SATISFIABLE,
            (LogError::BatchTooLarge { .. }, _) => StatusCode::PAYLOAD_TOO_LARGE,
            (_, ErrorKind::User) => StatusCode::BAD_REQUEST,
            (_, ErrorKind::ResourceExhausted) => StatusCode::INSUFFICIENT_STORAGE,
            (_, ErrorKind::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            (_, ErrorKind::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}
