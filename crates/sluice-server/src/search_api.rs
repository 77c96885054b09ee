//! `/v1/search` (full-text search over a topic's events) and `/v1/topics/{topic}/index` (define, inspect, drop a
//! topic's search index), served by the search port.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use sluice_config::IndexDefinition;
use sluice_sink::search::{SearchRequest, SearchService, SortOrder};

use crate::AppState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Hits per page when `limit` is not given.
const DEFAULT_LIMIT: usize = 20;
/// Longest query text accepted.
const MAX_QUERY_BYTES: usize = 16 << 10;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/indexes", get(list))
        .route("/v1/topics/{topic}/index", get(describe).put(put).delete(delete))
}

fn service(state: &AppState) -> ApiResult<&Arc<dyn SearchService>> {
    state.search().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", "search is not running (starting up)")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    topic: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    sort: Option<String>,
    facets: Option<String>,
    highlight: Option<bool>,
}

/// A time bound: RFC 3339, epoch milliseconds, `now`, or `now-<duration>` (`now-1h`, `now-15m`).
fn parse_bound(name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let now = sluice_log::now_ms();
    let parsed = if v == "now" {
        Some(now)
    } else if let Some(ago) = v.strip_prefix("now-") {
        humantime::parse_duration(ago).ok().map(|d| now.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    } else {
        crate::http::parse_time(v)
    };
    parsed.map(Some).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            format!("`{name}` {v:?} is not RFC 3339, epoch milliseconds, `now` or `now-<duration>`"),
        )
    })
}

/// `GET /v1/search?topic=&q=&from=&to=&limit=&cursor=&sort=time|score&facets=a,b&highlight=true`
async fn search(State(state): State<Arc<AppState>>, uri: Uri) -> ApiResult<Response> {
    let q: SearchQuery = axum::extract::Query::try_from_uri(&uri)
        .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?
        .0;
    let topic = q.topic.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::bad_request("invalid_request", "`topic` is required (the topic whose index to search)")
    })?;
    let query = q.q.unwrap_or_default();
    if query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad_request(
            "query_too_large",
            format!("query of {} bytes exceeds the {MAX_QUERY_BYTES}-byte limit", query.len()),
        ));
    }
    let sort = match q.sort.as_deref() {
        None | Some("time") | Some("newest") => SortOrder::Time,
        Some("score") | Some("relevance") => SortOrder::Score,
        Some(other) => {
            return Err(ApiError::bad_request("invalid_request", format!("`sort` {other:?} is not `time` or `score`")));
        }
    };
    let facets = q
        .facets
        .map(|f| f.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let req = SearchRequest {
        topic,
        query,
        from: parse_bound("from", q.from.as_deref())?,
        to: parse_bound("to", q.to.as_deref())?,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
        cursor: q.cursor.filter(|c| !c.is_empty()),
        sort,
        facets,
        highlight: q.highlight.unwrap_or(true),
    };
    let answer = service(&state)?.search(req).await?;
    Ok(Json(answer).into_response())
}

async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let all = service(&state)?.indexes().await?;
    Ok(Json(serde_json::json!({ "indexes": all })).into_response())
}

async fn describe(State(state): State<Arc<AppState>>, Path(topic): Path<String>) -> ApiResult<Response> {
    Ok(Json(service(&state)?.index(&topic).await?).into_response())
}

/// `PUT /v1/topics/{topic}/index` with a definition, or `{}` (or no body) for defaults.
async fn put(State(state): State<Arc<AppState>>, Path(topic): Path<String>, body: Bytes) -> ApiResult<Response> {
    let def: IndexDefinition = if body.iter().all(u8::is_ascii_whitespace) {
        IndexDefinition::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_index_definition", format!("invalid index definition: {e}")))?
    };
    let status = service(&state)?.put_index(&topic, def).await?;
    Ok(Json(status).into_response())
}

async fn delete(State(state): State<Arc<AppState>>, Path(topic): Path<String>) -> ApiResult<Response> {
    service(&state)?.delete_index(&topic).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
