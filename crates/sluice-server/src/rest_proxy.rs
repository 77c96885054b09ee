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
use tracing::Instrument;

use crate::error::ApiError;
use crate::http::read_body;
use crate::produce::{append_events, ensure_not_internal, resolve_topic};
use crate::schemas::{Binding, SchemaPick};
use crate::{AppState, ingest, metrics};

const CONTENT_TYPE: &str = "application/vnd.kafka.v2+json";

/// The REST Proxy's error shape: `{"error_code": 40401, "message": "..."}`.
pub(crate) struct ProxyError(ApiError, Option<u32>);

impl From<ApiError> for ProxyError {
    fn from(e: ApiError) -> Self {
        ProxyError(e, None)
    }
}

impl ProxyError {
    /// An error with the REST Proxy's own `error_code`.
    fn coded(status: StatusCode, error_code: u32, message: String) -> Self {
        ProxyError(ApiError::new(status, "rest_proxy", message), Some(error_code))
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let e = self.0;
        let code = self.1.unwrap_or(match (e.status.as_u16(), e.code) {
            (404, "partition_not_found") => 40402,
            (404, "schema_not_found") => 40403,
            (404, _) => 40401,
            (503 | 507, _) => 50003,
            (500, _) => 50002,
            (s, _) => s as u32 * 100 + 1,
        });
        let body = json!({"error_code": code, "message": e.message});
        (e.status, [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], Json(body)).into_response()
    }
}

#[derive(Deserialize)]
struct ProduceRequest<'a> {
    #[serde(borrow)]
    records: Vec<ProxyRecord<'a>>,
    // Avro embedded format only: the schema as text (registered under `{topic}-value` / `-key`) or its id.
    value_schema: Option<String>,
    value_schema_id: Option<u32>,
    key_schema: Option<String>,
    key_schema_id: Option<u32>,
}

const JSON_V2: &str = "application/vnd.kafka.json.v2+json";
const AVRO_V2: &str = "application/vnd.kafka.avro.v2+json";

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
    let avro = match ctype {
        JSON_V2 | "application/json" => false,
        AVRO_V2 => true,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content type `{ctype}` is not supported; use {JSON_V2} or {AVRO_V2}"),
            )
            .into());
        }
    };
    ensure_not_internal(&topic)?;
    let limits = &state.limits;
    let _budget = state.reserve_body(&headers).await;
    let body = read_body(&headers, body, limits.max_body_bytes.0).await?;
    let info = resolve_topic(&state, &topic).await?;
    metrics::INGEST_BYTES.with_label_values(&[&info.name]).inc_by(body.len() as u64);
    let req: ProduceRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))?;
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
    let (value_binding, key_binding) = if avro {
        let has_keys = req.records.iter().any(|r| r.key.is_some_and(|k| k.get() != "null"));
        let value = avro_binding(&state, &info.name, "value", &req.value_schema, req.value_schema_id).await?;
        let key = avro_binding(&state, &info.name, "key", &req.key_schema, req.key_schema_id).await?;
        match (value, key) {
            (None, _) => {
                let msg = "the avro format needs `value_schema` or `value_schema_id`".to_string();
                return Err(ProxyError::coded(StatusCode::UNPROCESSABLE_ENTITY, 42202, msg));
            }
            (Some(_), None) if has_keys => {
                let msg = "records have keys: the avro format needs `key_schema` or `key_schema_id`".to_string();
                return Err(ProxyError::coded(StatusCode::UNPROCESSABLE_ENTITY, 42201, msg));
            }
            (v, k) => (v, k),
        }
    } else {
        // JSON embedded format: a schema-bound topic still validates and stores Avro, as `/v1` ingest does.
        (state.codecs()?.binding(&info.name, SchemaPick::Latest)?, None)
    };
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
        let encode = |b: &Binding, json: &RawValue, what: &str| -> Result<Bytes, ProxyError> {
            let mut out = Vec::with_capacity(json.get().len());
            b.encode(json.get().as_bytes(), &mut out).map_err(|e| {
                let msg = format!("conversion of JSON to Avro failed: record {i} {what}: {e}");
                ProxyError::coded(StatusCode::UNPROCESSABLE_ENTITY, 42203, msg)
            })?;
            Ok(Bytes::from(out))
        };
        let key = match (r.key.filter(|k| k.get() != "null"), &key_binding) {
            (None, _) => None,
            (Some(k), Some(b)) => Some(encode(b, k, "key")?),
            (Some(k), None) => Some(key_bytes(k, &body)),
        };
        let value = match &value_binding {
            Some(b) => encode(b, r.value, "value")?,
            None => ingest::slice_of(&body, r.value.get().as_bytes()),
        };
        let record = Record { timestamp: now, key, headers: Vec::new(), value };
        ingest::check_size(i, &record, limits)?;
        items.push(Ok((record, r.partition)));
    }
    // The request's `traceparent` header applies to all its records (the v2 format has no record headers).
    let (span, incoming) = ingest::request_span(&info.name, &headers);
    let event_spans = ingest::propagate_trace(&span, incoming, items.iter_mut().flatten().map(|(r, _)| r));
    let outcome = append_events(&state, &info, items).instrument(span).await?;
    drop(event_spans);
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
    let body = json!({
        "key_schema_id": key_binding.map(|b| b.schema.id),
        "value_schema_id": value_binding.map(|b| b.schema.id),
        "offsets": offsets,
    });
    let status = outcome.storage_error.map_or(StatusCode::OK, |e| e.status);
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], Json(body)).into_response())
}

/// The schema for the avro embedded format's keys or values: by id, or registered from its text under
/// `{topic}-{what}` (as the REST Proxy does); `None` when the request gives neither.
async fn avro_binding(
    state: &AppState,
    topic: &str,
    what: &str,
    schema: &Option<String>,
    id: Option<u32>,
) -> Result<Option<Binding>, ProxyError> {
    let codecs = state.codecs()?;
    let registered = match (id, schema) {
        (Some(id), _) => codecs.schema_by_id(id)?,
        (None, Some(text)) => {
            let subject = format!("{topic}-{what}");
            let r = codecs.registry.register(&subject, text, None).await.map_err(|e| {
                let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                ProxyError::coded(status, e.error_code(), format!("{what} schema: {e}"))
            })?;
            codecs.schema_by_id(r.id)?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(Binding { encoder: codecs.encoder(&registered)?, schema: registered }))
}

/// A JSON string key is stored as its text (so it hashes like the same key sent by a Kafka client with a
/// string serializer); any other JSON key is stored as its JSON text.
fn key_bytes(key: &RawValue, body: &Bytes) -> Bytes {
    match serde_json::from_str::<std::borrow::Cow<str>>(key.get()) {
        Ok(s) => Bytes::copy_from_slice(s.as_bytes()),
        Err(_) => ingest::slice_of(body, key.get().as_bytes()),
    }
}
