//! `/v1/jobs`: create, list, describe, pause, resume, drop and replay stream jobs, and read their hot results.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_hot::HotReader;
use sluice_jobs::{JobError, JobManager, ReplayFrom};
use sluice_stream::datum::Datum;

use crate::AppState;
use crate::error::ApiError;
use crate::http::read_body;

type ApiResult<T> = Result<T, ApiError>;

/// Most rows one results read returns.
const MAX_RESULT_ROWS: usize = 10_000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{job}", get(describe).delete(drop_job))
        .route("/v1/jobs/{job}/pause", post(pause))
        .route("/v1/jobs/{job}/resume", post(resume))
        .route("/v1/jobs/{job}/replay", post(replay))
        .route("/v1/jobs/{job}/results", get(results))
        .route("/v1/jobs/{job}/results/latest", get(latest))
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        let e = match e {
            JobError::Log(l) => return ApiError::from(l),
            e => e,
        };
        let status = match &e {
            JobError::NotFound { .. } => StatusCode::NOT_FOUND,
            JobError::AlreadyExists { .. } => StatusCode::CONFLICT,
            JobError::Sql(_) | JobError::Invalid(_) => StatusCode::BAD_REQUEST,
            JobError::WrongState { .. } => StatusCode::CONFLICT,
            JobError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

fn jobs(state: &AppState) -> ApiResult<&Arc<JobManager>> {
    state
        .jobs()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the job manager is still starting"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    sql: String,
}

async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_body(&headers, body, 1 << 20).await?;
    let req: CreateJob = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid job request: {e}")))?;
    let status = jobs(&state)?.create(&req.sql).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    Ok(Json(json!({ "jobs": jobs(&state)?.list().await })).into_response())
}

#[derive(Deserialize)]
struct DescribeQuery {
    #[serde(default)]
    reset_latency: bool,
}

async fn describe(
    State(state): State<Arc<AppState>>,
    Path(job): Path<String>,
    Query(q): Query<DescribeQuery>,
) -> ApiResult<Response> {
    let mgr = jobs(&state)?;
    let status = mgr.describe(&job).await?;
    if q.reset_latency {
        mgr.reset_latency(&job)?;
    }
    Ok(Json(status).into_response())
}

async fn drop_job(State(state): State<Arc<AppState>>, Path(job): Path<String>) -> ApiResult<Response> {
    jobs(&state)?.drop_job(&job).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(state): State<Arc<AppState>>, Path(job): Path<String>) -> ApiResult<Response> {
    Ok(Json(jobs(&state)?.pause(&job).await?).into_response())
}

async fn resume(State(state): State<Arc<AppState>>, Path(job): Path<String>) -> ApiResult<Response> {
    Ok(Json(jobs(&state)?.resume(&job).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// `"earliest"`, an offset (number), or an RFC 3339 time.
    #[serde(default)]
    from: Option<serde_json::Value>,
    #[serde(default)]
    into: Option<String>,
}

/// Parses a replay start: `earliest`, an offset, or an RFC 3339 timestamp.
pub fn parse_replay_from(v: &serde_json::Value) -> Result<ReplayFrom, String> {
    match v {
        serde_json::Value::Number(n) => {
            n.as_u64().map(ReplayFrom::Offset).ok_or_else(|| format!("offset {n} must be a non-negative integer"))
        }
        serde_json::Value::String(s) if s == "earliest" => Ok(ReplayFrom::Earliest),
        serde_json::Value::String(s) => {
            if let Ok(o) = s.parse::<u64>() {
                return Ok(ReplayFrom::Offset(o));
            }
            sluice_stream::datum::parse_time(s)
                .map(ReplayFrom::Time)
                .ok_or_else(|| format!("`from` {s:?} is not `earliest`, an offset or an RFC 3339 time"))
        }
        other => Err(format!("`from` must be `earliest`, an offset or an RFC 3339 time, got {other}")),
    }
}

async fn replay(
    State(state): State<Arc<AppState>>,
    Path(job): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&headers, body, 64 << 10).await?;
    let req: Replay = if body.is_empty() {
        Replay { from: None, into: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid replay request: {e}")))?
    };
    let from = match &req.from {
        None => ReplayFrom::Earliest,
        Some(v) => parse_replay_from(v).map_err(|m| ApiError::bad_request("invalid_request", m))?,
    };
    let status = jobs(&state)?.replay(&job, from, req.into.as_deref()).await?;
    Ok(Json(status).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsQuery {
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

fn parse_time(name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(v) = v else { return Ok(None) };
    crate::http::parse_time(v).map(Some).ok_or_else(|| {
        ApiError::bad_request("invalid_request", format!("`{name}` {v:?} is not epoch milliseconds or RFC 3339"))
    })
}

fn watermark_json(wm: Option<i64>) -> serde_json::Value {
    wm.map_or(serde_json::Value::Null, |w| Datum::Time(w).to_json())
}

/// `{"rows":[...],"watermark":...}`, written straight from the shared rows (no copy of them).
fn rows_response(rows: &[Arc<serde_json::Map<String, serde_json::Value>>], wm: Option<i64>) -> Response {
    let mut body = Vec::with_capacity(64 + rows.len() * 128);
    body.extend_from_slice(b"{\"rows\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &**r).expect("a JSON map serializes");
    }
    body.extend_from_slice(b"],\"watermark\":");
    serde_json::to_writer(&mut body, &watermark_json(wm)).expect("a JSON value serializes");
    body.push(b'}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A job's hot results and watermark: of a job this instance runs, or (with a shared backend such as Redis) of one
/// another instance runs.
async fn hot_results(state: &AppState, job: &str) -> ApiResult<(Arc<dyn HotReader>, Option<i64>)> {
    let jobs = jobs(state)?;
    match jobs.results(job) {
        Ok((hot, wm)) => Ok((hot, wm)),
        Err(e @ JobError::NotFound { .. }) => match jobs.hot_store().find(job).await? {
            Some(reader) => Ok((reader, None)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

async fn results(
    State(state): State<Arc<AppState>>,
    Path(job): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> ApiResult<Response> {
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    let limit = q.limit.unwrap_or(MAX_RESULT_ROWS);
    if limit == 0 || limit > MAX_RESULT_ROWS {
        return Err(ApiError::bad_request("invalid_request", format!("`limit` must be 1..={MAX_RESULT_ROWS}")));
    }
    let (hot, wm) = hot_results(&state, &job).await?;
    // The hot path answers for windows ending after its eviction cutoff, the store for those ending at or before
    // it: one cutoff read with the hot rows splits the range without a gap or an overlap (as long as the store's
    // sink keeps up; its buffered rows are visible to queries).
    let answer = hot.recent(q.key.as_deref(), from, to, limit).await?;
    let (cutoff, recent, wm) = (answer.cutoff, answer.rows, wm.or(answer.watermark));
    let mut rows = Vec::with_capacity(recent.len());
    let mut result = "hit";
    if let Some(store) = state.store()
        && cutoff.is_none_or(|c| from.is_none_or(|f| f < c))
    {
        result = "miss";
        if let Some(stored) = store.job_results(&job, q.key.as_deref(), from, to, cutoff, limit).await? {
            rows.extend(stored.into_iter().map(|r| Arc::new(r.row)));
        }
    }
    crate::metrics::CACHE_REQUESTS.with_label_values(&["job_results", result]).inc();
    rows.extend(recent.into_iter().take(limit - rows.len()));
    Ok(rows_response(&rows, wm))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatestQuery {
    key: Option<String>,
}

async fn latest(
    State(state): State<Arc<AppState>>,
    Path(job): Path<String>,
    Query(q): Query<LatestQuery>,
) -> ApiResult<Response> {
    let (hot, wm) = hot_results(&state, &job).await?;
    let answer = hot.latest(q.key.as_deref()).await?;
    crate::metrics::CACHE_REQUESTS.with_label_values(&["job_results", "hit"]).inc();
    Ok(rows_response(&answer.rows, wm.or(answer.watermark)))
}
