//! `/v1/query` (read-only SQL over the time-series store) and `/v1/tables` (list, describe, retention).

use sluice_telemetry::trace::{TRACEPARENT_HEADER, TraceParent};
use std::sync::Arc;
use tracing::Instrument;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use sluice_sink::output::QueryOutput;
use sluice_sink::store::TimeSeriesStore;

use crate::AppState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Longest SQL text accepted.
const MAX_SQL_BYTES: usize = 64 << 10;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/tables", get(list))
        .route("/v1/tables/{table}", get(describe))
        .route("/v1/tables/{table}/retention", put(set_retention))
}

/// How a query answer is rendered, picked from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryFormat {
    /// `{"columns":[{"name","type"}],"rows":[{...}]}`
    Json,
    /// RFC 4180 with a header row.
    Csv,
    /// Arrow IPC stream format.
    ArrowIpc,
}

impl QueryFormat {
    fn content_type(self) -> &'static str {
        match self {
            QueryFormat::Json => "application/json",
            QueryFormat::Csv => "text/csv; charset=utf-8",
            QueryFormat::ArrowIpc => "application/vnd.apache.arrow.stream",
        }
    }

    /// JSON unless CSV or Arrow is asked for.
    fn from_accept(accept: &str) -> QueryFormat {
        let accept = accept.to_ascii_lowercase();
        if accept.contains("application/vnd.apache.arrow") {
            QueryFormat::ArrowIpc
        } else if accept.contains("text/csv") {
            QueryFormat::Csv
        } else {
            QueryFormat::Json
        }
    }

    fn render(self, answer: &QueryOutput) -> ApiResult<Vec<u8>> {
        let failed = |e: String| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("cannot render the answer: {e}"))
        };
        match self {
            QueryFormat::Json => serde_json::to_vec(&answer.to_json()).map_err(|e| failed(e.to_string())),
            QueryFormat::Csv => answer.to_csv().map_err(|e| failed(e.to_string())),
            QueryFormat::ArrowIpc => answer.to_arrow_ipc().map_err(|e| failed(e.to_string())),
        }
    }
}

pub(crate) fn store(state: &AppState) -> ApiResult<&Arc<dyn TimeSeriesStore>> {
    state.store().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the time-series store is not running (starting up, or disabled with store.enabled = false)",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

/// `POST /v1/query {"sql": "..."}`; also a bare SQL body with `Content-Type: application/sql` or `text/plain`.
async fn query(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    if body.len() > MAX_SQL_BYTES {
        return Err(ApiError::payload_too_large(
            "query_too_large",
            format!("query body of {} bytes exceeds the {MAX_SQL_BYTES}-byte limit", body.len()),
        ));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let sql = if content_type.starts_with("application/sql") || content_type.starts_with("text/plain") {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("invalid_request", "query text is not UTF-8"))?
    } else {
        serde_json::from_slice::<QueryBody>(&body)
            .map_err(|e| ApiError::bad_request("invalid_request", format!("expected {{\"sql\": \"...\"}}: {e}")))?
            .sql
    };
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_request", "`sql` is empty"));
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = QueryFormat::from_accept(accept);
    let span = tracing::info_span!("query", sql_bytes = sql.len());
    if let Some(tp) = headers.get(TRACEPARENT_HEADER).and_then(|v| TraceParent::parse(v.as_bytes())) {
        sluice_telemetry::trace::set_parent(&span, &tp);
    }
    let started = std::time::Instant::now();
    let answer = store(&state)?.query(&sql).instrument(span).await?;
    let body = format.render(&answer)?;
    let mut resp = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
    let h = resp.headers_mut();
    h.insert("sluice-rows", answer.num_rows().into());
    h.insert("sluice-elapsed-ms", (started.elapsed().as_millis() as u64).into());
    if answer.truncated {
        h.insert("sluice-truncated", "true".parse().expect("valid header"));
    }
    Ok(resp)
}

async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let tables = store(&state)?.tables().await?;
    Ok(Json(serde_json::json!({ "tables": tables })).into_response())
}

async fn describe(State(state): State<Arc<AppState>>, Path(table): Path<String>) -> ApiResult<Response> {
    Ok(Json(store(&state)?.table(&table).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    /// A duration (`"30d"`, `"12h"`) or `"forever"`.
    retention: String,
}

async fn set_retention(
    State(state): State<Arc<AppState>>,
    Path(table): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let b: RetentionBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_request", format!("expected {{\"retention\": \"30d\" | \"forever\"}}: {e}"))
    })?;
    let retention = match b.retention.trim() {
        "forever" => None,
        s => Some(humantime::parse_duration(s).map_err(|e| {
            ApiError::bad_request(
                "invalid_request",
                format!("`retention`: `{s}` is not a duration or \"forever\" ({e})"),
            )
        })?),
    };
    Ok(Json(store(&state)?.set_retention(&table, retention).await?).into_response())
}
