//! The Confluent Schema Registry REST API, at the root paths of the HTTP port, so Schema Registry clients work
//! unchanged with base URL `http://host:port`: subjects and versions, schemas by id, compatibility levels and
//! compatibility tests. Bodies, content type (`application/vnd.schemaregistry.v1+json`) and errors
//! (`{"error_code": 40401, "message": "..."}`) are Confluent's; the registry itself is [`sluice_schema::Registry`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_schema::{CompatibilityLevel, Registry, SchemaError, SubjectVersion, VersionRef};

use crate::AppState;
use crate::error::ApiError;
use crate::http::read_body;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Request content types Confluent's registry accepts (no content type is fine too).
const ACCEPTED_CONTENT_TYPES: [&str; 4] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

type Params = Query<HashMap<String, String>>;
type SrResult = Result<Response, SrError>;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/schemas/types", get(schema_types))
        .route("/config", get(get_global_config).put(put_global_config).delete(delete_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/compatibility/subjects/{subject}/versions", post(test_compatibility_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(test_compatibility))
        .route("/mode", get(mode))
}

/// An error in Confluent's shape.
#[derive(Debug)]
pub(crate) struct SrError {
    status: StatusCode,
    error_code: u32,
    message: String,
}

impl SrError {
    fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Self {
        SrError { status, error_code, message: message.into() }
    }
}

impl From<SchemaError> for SrError {
    fn from(e: SchemaError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        SrError::new(status, e.error_code(), e.to_string())
    }
}

impl From<ApiError> for SrError {
    fn from(e: ApiError) -> Self {
        SrError::new(e.status, e.status.as_u16() as u32, e.message)
    }
}

impl IntoResponse for SrError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.error_code, "message": self.message});
        respond(self.status, body.to_string())
    }
}

fn respond(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], body).into_response()
}

fn ok(value: Value) -> SrResult {
    Ok(respond(StatusCode::OK, value.to_string()))
}

fn registry(state: &AppState) -> Result<&Arc<Registry>, SrError> {
    Ok(state.schemas()?)
}

/// `?name=true` (Confluent's boolean query parameters).
fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn version_json(v: &SubjectVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id(), "schema": v.schema.schema_text})
}

fn parse_id(id: &str) -> Result<u32, SrError> {
    id.parse::<u32>().map_err(|_| SrError::new(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found")))
}

/// Reads a JSON body after checking its content type.
async fn json_body<T: DeserializeOwned>(state: &AppState, headers: &HeaderMap, body: Body) -> Result<T, SrError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !ct.is_empty() && !ACCEPTED_CONTENT_TYPES.contains(&ct.as_str()) {
            return Err(SrError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                415,
                format!("content type `{ct}` is not supported; use {CONTENT_TYPE}"),
            ));
        }
    }
    let body = read_body(headers, body, state.limits.max_body_bytes.0).await?;
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            SrError::new(StatusCode::BAD_REQUEST, 400, format!("Invalid JSON body: {e}"))
        } else {
            SrError::new(StatusCode::UNPROCESSABLE_ENTITY, 422, format!("Unprocessable request body: {e}"))
        }
    })
}

/// `{"schema": "...", "schemaType": "AVRO", "references": []}`; other fields Confluent clients send are ignored.
#[derive(Deserialize)]
struct SchemaRequest {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    fn parts(&self) -> Result<(&str, Option<&str>), SrError> {
        if self.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(SchemaError::InvalidSchema { reason: "schema references are not supported".into() }.into());
        }
        let schema = self.schema.as_deref().ok_or(SchemaError::InvalidSchema { reason: "Empty schema".into() })?;
        Ok((schema, self.schema_type.as_deref()))
    }
}

#[derive(Deserialize)]
struct ConfigRequest {
    #[serde(default, alias = "compatibilityLevel")]
    compatibility: Option<String>,
}

impl ConfigRequest {
    fn level(&self) -> Result<CompatibilityLevel, SrError> {
        let text = self.compatibility.as_deref().unwrap_or("");
        Ok(text.parse::<CompatibilityLevel>()?)
    }
}

async fn list_subjects(State(state): State<Arc<AppState>>, Query(q): Params) -> SrResult {
    ok(json!(registry(&state)?.subjects(flag(&q, "deleted"))))
}

async fn register(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> SrResult {
    let reg = registry(&state)?;
    let req: SchemaRequest = json_body(&state, &headers, body).await?;
    let (schema, schema_type) = req.parts()?;
    let r = reg.register(&subject, schema, schema_type).await?;
    ok(json!({"id": r.id}))
}

async fn lookup(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    body: Body,
) -> SrResult {
    let reg = registry(&state)?;
    let req: SchemaRequest = json_body(&state, &headers, body).await?;
    let (schema, schema_type) = req.parts()?;
    let v = reg.lookup(&subject, schema, schema_type, flag(&q, "deleted"))?;
    ok(version_json(&v))
}

async fn delete_subject(State(state): State<Arc<AppState>>, Path(subject): Path<String>, Query(q): Params) -> SrResult {
    let versions = registry(&state)?.delete_subject(&subject, flag(&q, "permanent")).await?;
    ok(json!(versions))
}

async fn list_versions(State(state): State<Arc<AppState>>, Path(subject): Path<String>, Query(q): Params) -> SrResult {
    ok(json!(registry(&state)?.versions(&subject, flag(&q, "deleted"))?))
}

async fn get_version(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> SrResult {
    let v = registry(&state)?.get_version(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))?;
    ok(version_json(&v))
}

async fn get_version_schema(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> SrResult {
    let v = registry(&state)?.get_version(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))?;
    Ok(respond(StatusCode::OK, v.schema.schema_text.clone()))
}

/// Schema references are not supported, so nothing refers to any version.
async fn referenced_by(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
) -> SrResult {
    registry(&state)?.get_version(&subject, VersionRef::parse(&version)?, false)?;
    ok(json!([]))
}

async fn delete_version(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> SrResult {
    let v = registry(&state)?.delete_version(&subject, VersionRef::parse(&version)?, flag(&q, "permanent")).await?;
    ok(json!(v))
}

async fn schema_by_id(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> SrResult {
    let s = registry(&state)?.schema(parse_id(&id)?)?;
    ok(json!({"schema": s.schema_text}))
}

async fn raw_schema_by_id(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> SrResult {
    let s = registry(&state)?.schema(parse_id(&id)?)?;
    Ok(respond(StatusCode::OK, s.schema_text.clone()))
}

async fn subjects_by_id(State(state): State<Arc<AppState>>, Path(id): Path<String>, Query(q): Params) -> SrResult {
    ok(json!(registry(&state)?.subjects_of(parse_id(&id)?, flag(&q, "deleted"))?))
}

async fn versions_by_id(State(state): State<Arc<AppState>>, Path(id): Path<String>, Query(q): Params) -> SrResult {
    let pairs = registry(&state)?.versions_of(parse_id(&id)?, flag(&q, "deleted"))?;
    ok(pairs.into_iter().map(|(subject, version)| json!({"subject": subject, "version": version})).collect())
}

async fn schema_types() -> SrResult {
    ok(json!(["AVRO"]))
}

async fn get_global_config(State(state): State<Arc<AppState>>) -> SrResult {
    ok(json!({"compatibilityLevel": registry(&state)?.global_level()}))
}

async fn put_global_config(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> SrResult {
    let reg = registry(&state)?;
    let level = json_body::<ConfigRequest>(&state, &headers, body).await?.level()?;
    reg.set_global_level(level).await?;
    ok(json!({"compatibility": level}))
}

async fn delete_global_config(State(state): State<Arc<AppState>>) -> SrResult {
    ok(json!({"compatibilityLevel": registry(&state)?.delete_global_level().await?}))
}

async fn get_subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> SrResult {
    let reg = registry(&state)?;
    let level = match reg.subject_level(&subject) {
        Some(l) => l,
        None if flag(&q, "defaultToGlobal") => reg.global_level(),
        None => return Err(SchemaError::SubjectLevelNotConfigured { subject }.into()),
    };
    ok(json!({"compatibilityLevel": level}))
}

async fn put_subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> SrResult {
    let reg = registry(&state)?;
    let level = json_body::<ConfigRequest>(&state, &headers, body).await?.level()?;
    reg.set_subject_level(&subject, level).await?;
    ok(json!({"compatibility": level}))
}

async fn delete_subject_config(State(state): State<Arc<AppState>>, Path(subject): Path<String>) -> SrResult {
    ok(json!({"compatibilityLevel": registry(&state)?.delete_subject_level(&subject).await?}))
}

async fn test_compatibility(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Body,
) -> SrResult {
    let version = VersionRef::parse(&version)?;
    compatibility(&state, &subject, Some(version), &q, &headers, body).await
}

async fn test_compatibility_all(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    body: Body,
) -> SrResult {
    compatibility(&state, &subject, None, &q, &headers, body).await
}

async fn compatibility(
    state: &AppState,
    subject: &str,
    version: Option<VersionRef>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> SrResult {
    let reg = registry(state)?;
    let req: SchemaRequest = json_body(state, headers, body).await?;
    let (schema, schema_type) = req.parts()?;
    let report = reg.test_compatibility(subject, version, schema, schema_type)?;
    if flag(q, "verbose") {
        ok(json!({"is_compatible": report.is_compatible, "messages": report.messages}))
    } else {
        ok(json!({"is_compatible": report.is_compatible}))
    }
}

/// The registry always accepts writes (no import or read-only modes).
async fn mode() -> SrResult {
    ok(json!({"mode": "READWRITE"}))
}
