//! HTTP helpers every route module shares: bounded body reads and time parameters.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// Reads a request body of at most `limit` bytes without ever buffering more than that.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = |size: Option<u64>| {
        let size = size.map_or_else(|| "over".to_string(), |s| format!("{s} bytes,"));
        ApiError::payload_too_large(
            "body_too_large",
            format!("request body is {size} over the limit of {limit} bytes (limits.max_body_bytes)"),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(len) = declared
        && len > limit
    {
        return Err(too_large(Some(len)));
    }
    let limited = http_body_util::Limited::new(body, limit as usize);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large(None)),
        Err(e) => Err(ApiError::bad_request("body_unreadable", format!("could not read the request body: {e}"))),
    }
}

/// Parses RFC 3339 text or epoch milliseconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()))
}

pub(crate) fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
