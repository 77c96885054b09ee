//! Confluent REST Proxy v2 produce (`POST /topics/{topic}`, JSON embedded format) and topic listing, in that
//! API's request and response shapes, so existing REST Proxy clients work unchanged.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use sluice_log::Record;

use crate::error::ApiError;
use crate::routes::{append_events, read_body, resolve_topic};
use crate::{AppState, ingest, metrics};

const CONTENT_TYPE: &str = "application/vnd.kafka.v2+json";

/// The REST Proxy's error shape: `{"error_code": 40401, "message": "..."}`.
pub(crate) struct ProxyError(ApiError);

impl From<ApiError> for ProxyError {
    fn from(e: ApiError) -> Self {
        ProxyError(e)
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let e = self.0;
        let code = match (e.status.as_u16(), e.code) {
            (404, "partition_not_found") => 40402,
            (404, _) => 40401,
            (503 | 507, _) => 50003,
            (500, _) => 50002,
            (s, _) => s as u32 * 100 + 1,
        };
        let body = json!({"error_code": code, "message": e.message});
        (e.status, [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], Json(body)).into_response()
    }
}

#[derive(Deserialize)]
struct ProduceRequest<'a> {
    #[serde(borrow)]
    records: Vec<ProxyRecord<'a>>,
}

#[derive(Deserialize)]
struct ProxyRecord<'a> {
    #[serde(default, borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    partition: Option<u32>,
}

pub(crate) async fn list_topics(State(state): State<Arc<AppState>>) -> Result<Response, ProxyError> {
    let topics = state.log()?.list_topics().await.map_err(ApiError::from)?;
    let names: Vec<String> = topics.into_iter().map(|t| t.name).collect();
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], Json(names)).into_response())
}

pub(crate) async fn produce(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ProxyError> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ctype = ctype.split(';').next().unwrap_or("").trim();
    if !matches!(ctype, "application/vnd.kafka.json.v2+json" | "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type `{ctype}` is not supported; use application/vnd.kafka.json.v2+json"),
        )
        .into());
    }
    let limits = &state.limits;
    let body = read_body(&headers, body, limits.max_body_bytes.0).await?;
    let info = resolve_topic(&state, &topic).await?;
    metrics::INGEST_BYTES.with_label_values(&[&info.name]).inc_by(body.len() as u64);
    let req: ProduceRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("invalid request: {e}"))
    })?;
    if req.records.len() > limits.max_events_per_request {
        return Err(ApiError::payload_too_large(
            "too_many_events",
            format!(
                "request has {} records, over the limit of {} (limits.max_events_per_request)",
                req.records.len(),
                limits.max_events_per_request
            ),
        )
        .into());
    }
    let now = sluice_log::now_ms();
    let mut items = Vec::with_capacity(req.records.len());
    for (i, r) in req.records.iter().enumerate() {
        let depth = ingest::json_depth(r.value.get().as_bytes());
        if depth > limits.max_json_depth {
            return Err(ApiError::bad_request(
                "json_too_deep",
                format!(
                    "record {i} nests {depth} levels deep, over the limit of {} (limits.max_json_depth)",
                    limits.max_json_depth
                ),
            )
            .into());
        }
        let record = Record {
            timestamp: now,
            key: r.key.filter(|k| k.get() != "null").map(|k| key_bytes(k, &body)),
            headers: Vec::new(),
            value: ingest::slice_of(&body, r.value.get().as_bytes()),
        };
        ingest::check_size(i, &record, limits)?;
        items.push(Ok((record, r.partition)));
    }
    let outcome = append_events(&state, &info, items).await?;
    let offsets: Vec<serde_json::Value> = outcome
        .results
        .iter()
        .map(|r| match r {
            Ok((p, o)) => json!({"partition": p, "offset": o, "error_code": null, "error": null}),
            // 1: not retriable, 2: retriable, as the REST Proxy reports per-record errors.
            Err(e) => {
                let retriable = e.status.is_server_error();
                json!({"partition": null, "offset": null, "error_code": if retriable { 2 } else { 1 }, "error": e.message})
            }
        })
        .collect();
    let body = json!({"key_schema_id": null, "value_schema_id": null, "offsets": offsets});
    let status = outcome.storage_error.map_or(StatusCode::OK, |e| e.status);
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], Json(body)).into_response())
}

/// A JSON string key is stored as its text (so it hashes like the same key sent by a Kafka client with a
/// string serializer); any other JSON key is stored as its JSON text.
fn key_bytes(key: &RawValue, body: &Bytes) -> Bytes {
    match serde_json::from_str::<std::borrow::Cow<str>>(key.get()) {
        Ok(s) => Bytes::copy_from_slice(s.as_bytes()),
        Err(_) => ingest::slice_of(body, key.get().as_bytes()),
    }
}
