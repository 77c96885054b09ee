//! Routes and handlers of the `/v1` API, health and metrics; the REST Proxy and Schema Registry routes are merged
//! in from their modules.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use sluice_log::TopicSpec;
use sluice_schema::reader::{DecodeFailure, Decoded, value_subject};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::error::ApiError;
use crate::http::{format_time, parse_time, read_body};
use crate::produce::{append_events, ensure_not_internal, resolve_topic};
use crate::schemas::SchemaPick;
use crate::{AppState, ingest, jobs_api, metrics, rest_proxy, schema_api, search_api, store_api};

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route("/v1/topics/{topic}", get(describe_topic).delete(delete_topic))
        .route("/v1/topics/{topic}/events", get(read_events).post(produce))
        .route("/topics", get(rest_proxy::list_topics))
        .route("/topics/{topic}", axum::routing::post(rest_proxy::produce))
        .merge(schema_api::routes())
        .merge(jobs_api::routes())
        .merge(store_api::routes())
        .merge(search_api::routes())
        .merge(crate::status::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(track))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error (logged)").into_response()
        }))
        .with_state(state)
}

/// Counts every request by route and status and times it.
async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    // Only the standard methods get their own series: label values stay bounded.
    let method = match method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS | Method::PATCH => {
            method.as_str().to_string()
        }
        _ => "OTHER".to_string(),
    };
    let label = format!("{method} {route}");
    metrics::REQUEST_SECONDS.with_label_values(&[&label]).observe(started.elapsed().as_secs_f64());
    metrics::REQUESTS.with_label_values(&[&label, resp.status().as_str()]).inc();
    resp
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: recovered, and every partition accepts writes (a fenced partition takes the node out of rotation).
async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult<Json<serde_json::Value>> {
    let not_ready = |code, msg: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, msg);
    if !state.is_ready() {
        return Err(not_ready("not_ready", "recovering the data directory".into()));
    }
    let log = state.log()?;
    let mut fenced = Vec::new();
    for t in log.list_topics().await? {
        if let Ok(d) = log.describe_topic(&t.name).await {
            fenced.extend(
                d.partition_details.iter().filter(|p| !p.writable).map(|p| format!("{}/{}", t.name, p.partition)),
            );
        }
    }
    if !fenced.is_empty() {
        return Err(not_ready(
            "partition_fenced",
            format!("partitions not accepting writes until restart: {}", fenced.join(", ")),
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let text = sluice_telemetry::render_metrics(&[&state.registry]);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}

async fn produce(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (span, incoming) = ingest::request_span(&topic, &headers);
    match produce_inner(&state, &topic, &uri, &headers, body, incoming).instrument(span).await {
        Ok(r) => r,
        Err(e) => {
            // Only topics that exist become label values: a client cannot grow the metric with made-up names.
            let known = match state.log() {
                Ok(log) => log.topic(&topic).await.is_ok(),
                Err(_) => false,
            };
            let label = if known { topic.as_str() } else { "_unknown" };
            metrics::INGEST_REJECTED_REQUESTS.with_label_values(&[label, e.code]).inc();
            // Client mistakes are the producer's to fix; only server-side failures count as errors.
            if e.status.is_server_error() {
                sluice_telemetry::record_error("ingest", e.code, 1, &topic, &e.message);
            }
            e.into_response()
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProduceQuery {
    /// Encode with this version of the topic's value subject instead of the latest.
    schema_version: Option<u32>,
    /// Encode with this registered schema id.
    schema_id: Option<u32>,
}

async fn produce_inner(
    state: &AppState,
    topic: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    incoming_trace: Option<sluice_telemetry::trace::TraceParent>,
) -> ApiResult<Response> {
    ensure_not_internal(topic)?;
    let q: ProduceQuery =
        axum::extract::Query::try_from_uri(uri).map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?.0;
    let limits = &state.limits;
    let _budget = state.reserve_body(headers).await;
    let body = read_body(headers, body, limits.max_body_bytes.0).await?;
    let info = resolve_topic(state, topic).await?;
    metrics::INGEST_BYTES.with_label_values(&[&info.name]).inc_by(body.len() as u64);
    let codecs = state.codecs()?;
    let now = sluice_log::now_ms();
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed = if ctype.split(';').next().is_some_and(|t| t.trim() == ingest::FRAMED_AVRO) {
        let reader = codecs.values.reader_schema(&info.name);
        let mut scratch = Vec::new();
        ingest::parse_framed(&body, limits, now, |i, value| {
            scratch.clear();
            codecs
                .values
                .decode_avro(value, reader.as_deref(), &mut scratch)
                .map(|_| ())
                .map_err(|f| ApiError::bad_request("schema_violation", format!("event {i}: {f}")))
        })?
    } else {
        let pick = match (q.schema_version, q.schema_id) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("invalid_query", "give `schema_version` or `schema_id`, not both"));
            }
            (Some(v), None) => SchemaPick::Version(v),
            (None, Some(id)) => SchemaPick::Id(id),
            (None, None) => SchemaPick::Latest,
        };
        let binding = codecs.binding(&info.name, pick)?;
        ingest::parse_body(&body, limits, now, binding.as_ref())?
    };
    let mut parsed = parsed;
    let event_spans = ingest::propagate_trace(&tracing::Span::current(), incoming_trace, parsed.iter_mut().flatten());
    let items: Vec<_> = parsed
        .into_iter()
        .map(|item| match item {
            Ok(record) => Ok((record, None)),
            Err(e) => {
                metrics::INGEST_REJECTED.with_label_values(&[info.name.as_str(), e.code]).inc();
                Err(e)
            }
        })
        .collect();
    let outcome = append_events(state, &info, items).await?;
    drop(event_spans);
    let rejected = outcome.results.iter().filter(|r| r.is_err()).count();
    let out = ProduceOut {
        accepted: outcome.results.len() - rejected,
        rejected,
        results: outcome
            .results
            .iter()
            .map(|r| match r {
                Ok((partition, offset)) => EventResult::Stored { partition: *partition, offset: *offset },
                Err(e) => EventResult::Failed { error: ErrorBody::of(e) },
            })
            .collect(),
        error: outcome.storage_error.as_ref().map(ErrorBody::of),
    };
    let status = outcome.storage_error.as_ref().map_or(StatusCode::OK, |e| e.status);
    Ok((status, Json(out)).into_response())
}

#[derive(Serialize)]
struct ProduceOut<'a> {
    accepted: usize,
    rejected: usize,
    results: Vec<EventResult<'a>>,
    /// Set when a partition failed to store its events; the status code is that failure's.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EventResult<'a> {
    Stored { partition: u32, offset: u64 },
    Failed { error: ErrorBody<'a> },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl<'a> ErrorBody<'a> {
    fn of(e: &'a ApiError) -> Self {
        ErrorBody { code: e.code, message: &e.message }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    partition: Option<u32>,
    offset: Option<u64>,
    from_time: Option<String>,
    limit: Option<usize>,
    /// Long poll: wait up to this long for new events when none are available.
    wait_ms: Option<u64>,
    /// Decode Avro values into this version of the topic's value subject instead of the latest.
    reader_version: Option<u32>,
}

#[derive(Serialize)]
struct EventOut<'a> {
    partition: u32,
    offset: u64,
    timestamp: String,
    key: Option<Cow<'a, str>>,
    headers: BTreeMap<&'a str, Cow<'a, str>>,
    value: Option<Box<RawValue>>,
    /// The writer schema id of an Avro value.
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_id: Option<u32>,
    /// A value that cannot be shown as JSON, base64-encoded, with `error` saying why.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ReadOut<'a> {
    events: Vec<EventOut<'a>>,
    next_offset: u64,
    high_watermark: u64,
}

/// Most JSON one read returns (beyond the first event).
const READ_JSON_BUDGET: usize = 16 << 20;

async fn read_events(State(state): State<Arc<AppState>>, Path(topic): Path<String>, uri: Uri) -> ApiResult<Response> {
    let q: ReadQuery =
        axum::extract::Query::try_from_uri(&uri).map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?.0;
    let log = state.log()?;
    let info = log.topic(&topic).await?;
    let partition = match q.partition {
        Some(p) => p,
        None if info.partitions == 1 => 0,
        None => {
            return Err(ApiError::bad_request(
                "missing_partition",
                format!("topic `{topic}` has {} partitions: give `partition`", info.partitions),
            ));
        }
    };
    let max = state.limits.max_read_events;
    let limit = q.limit.unwrap_or(100.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {max} (limits.max_read_events), got {limit}"),
        ));
    }
    let from = match (q.offset, &q.from_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_query", "give either `offset` or `from_time`, not both"));
        }
        (Some(o), None) => o,
        (None, Some(t)) => {
            let ts = parse_time(t).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("`from_time` \"{t}\" is not RFC 3339 or epoch ms"))
            })?;
            log.offset_for_time(&topic, partition, ts).await?
        }
        (None, None) => {
            let d = log.describe_topic(&topic).await?;
            d.partition_details.get(partition as usize).map_or(0, |p| p.log_start_offset)
        }
    };
    let mut result = log.read(&topic, partition, from, limit, 16 << 20).await?;
    if result.records.is_empty()
        && let Some(wait) = q.wait_ms.filter(|&w| w > 0)
    {
        log.wait_for(&topic, partition, from, Duration::from_millis(wait.min(30_000))).await?;
        result = log.read(&topic, partition, from, limit, 16 << 20).await?;
    }
    let codecs = state.codecs()?;
    let reader = match q.reader_version {
        None => codecs.values.reader_schema(&topic),
        Some(v) => Some(codecs.registry.version(&value_subject(&topic), v).ok_or_else(|| {
            ApiError::not_found("schema_not_found", format!("subject `{}` has no version {v}", value_subject(&topic)))
        })?),
    };
    let mut events = Vec::with_capacity(result.records.len());
    let mut next_offset = result.next_offset;
    let mut json_bytes = 0usize;
    let mut dead = Vec::new();
    for r in &result.records {
        // Decoded JSON can be much larger than what is stored: stop a page at READ_JSON_BUDGET.
        if json_bytes > READ_JSON_BUDGET {
            next_offset = r.offset;
            break;
        }
        let mut json = Vec::with_capacity(r.value.len() * 2);
        let decoded = codecs
            .values
            .decode(&r.value, reader.as_deref(), &mut json)
            .and_then(|d| String::from_utf8(json).map(|j| (d, j)).map_err(|_| DecodeFailure::NotDecodable))
            .and_then(|(d, j)| RawValue::from_string(j).map(|v| (d, v)).map_err(|_| DecodeFailure::NotDecodable));
        json_bytes += decoded.as_ref().map_or(r.value.len(), |(_, v)| v.get().len());
        let (value, schema_id, value_base64, error) = match decoded {
            Ok((d, v)) => {
                (Some(v), if let Decoded::Avro { schema_id } = d { Some(schema_id) } else { None }, None, None)
            }
            Err(failure) => {
                // A reader never stops at a bad record: it is dead-lettered (once) and shown with its reason.
                let error = json!({"code": failure.code(), "message": failure.to_string()});
                dead.push((r.clone(), failure));
                (None, None, Some(base64::engine::general_purpose::STANDARD.encode(&r.value)), Some(error))
            }
        };
        events.push(EventOut {
            partition,
            offset: r.offset,
            timestamp: format_time(r.timestamp),
            key: r.key.as_ref().map(|k| String::from_utf8_lossy(k)),
            headers: r
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), String::from_utf8_lossy(v))).filter(|_| !k.is_empty()))
                .collect(),
            value,
            schema_id,
            value_base64,
            error,
        });
    }
    if let Err(e) = codecs.dead_letters.send(&topic, partition, dead).await {
        tracing::error!(topic, partition, error = %e, "dead-lettering failed");
    }
    let out = ReadOut { events, next_offset, high_watermark: result.high_watermark };
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    partitions: Option<u32>,
    /// `"7d"`, `"12h"`, or `"forever"`.
    retention: Option<String>,
    retention_bytes: Option<u64>,
}

async fn create_topic(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_body(&headers, body, 64 << 10).await?;
    let req: CreateTopic = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid topic request: {e}")))?;
    ensure_not_internal(&req.name)?;
    let retention = match req.retention.as_deref() {
        None => None,
        Some("forever") => Some(Duration::MAX),
        Some(s) => Some(humantime_parse(s)?),
    };
    let spec = TopicSpec {
        name: req.name,
        partitions: req.partitions.unwrap_or(state.default_partitions),
        retention,
        // 0 means no size limit, as in the config file.
        retention_bytes: req.retention_bytes.filter(|&b| b > 0),
    };
    let info = state.log()?.create_topic(spec).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

fn humantime_parse(s: &str) -> ApiResult<Duration> {
    humantime::parse_duration(s).map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            format!("retention \"{s}\" is not a duration like \"7d\" or \"forever\""),
        )
    })
}

async fn list_topics(State(state): State<Arc<AppState>>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({"topics": state.log()?.list_topics().await?})))
}

async fn describe_topic(State(state): State<Arc<AppState>>, Path(topic): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.log()?.describe_topic(&topic).await?).into_response())
}

async fn delete_topic(State(state): State<Arc<AppState>>, Path(topic): Path<String>) -> ApiResult<Response> {
    ensure_not_internal(&topic)?;
    state.log()?.delete_topic(&topic).await?;
    Ok(Json(json!({"deleted": topic})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_time("1000"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(format_time(1500), "1970-01-01T00:00:01.500Z");
    }
}
