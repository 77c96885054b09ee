//! The Confluent Schema Registry API over HTTP against a real server: every endpoint, every error code, content
//! types, durability across a restart and a failed store.

mod common;

use std::sync::Arc;

use common::{Answer, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_log::SimStorage;

const SR: &str = "application/vnd.schemaregistry.v1+json";

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"shop","fields":[{fields}]}}"#)
}

fn v1() -> String {
    record(r#"{"name":"id","type":"long"}"#)
}

fn v2() -> String {
    record(r#"{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}"#)
}

/// `{"schema": "<text>"}`.
fn body(schema: &str) -> String {
    json!({ "schema": schema }).to_string()
}

async fn call(s: &TestServer, method: Method, path: &str, payload: Option<&str>) -> Answer {
    s.send(method, path, payload, payload.map(|_| SR)).await
}

async fn get(s: &TestServer, path: &str) -> Answer {
    call(s, Method::GET, path, None).await
}

async fn post(s: &TestServer, path: &str, payload: &str) -> Answer {
    call(s, Method::POST, path, Some(payload)).await
}

async fn put(s: &TestServer, path: &str, payload: &str) -> Answer {
    call(s, Method::PUT, path, Some(payload)).await
}

async fn delete(s: &TestServer, path: &str) -> Answer {
    call(s, Method::DELETE, path, None).await
}

/// A 200 in the registry's content type; returns the JSON body.
fn ok(a: Answer) -> Value {
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.content_type, SR);
    a.json
}

/// A Confluent error: HTTP status, `error_code`, and a message containing `needle`.
fn err(a: Answer, status: u16, code: u64, needle: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.text);
    assert_eq!(a.content_type, SR, "{}", a.text);
    assert_eq!(a.json["error_code"].as_u64(), Some(code), "{}", a.text);
    let msg = a.json["message"].as_str().unwrap();
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

async fn register(s: &TestServer, subject: &str, schema: &str) -> u64 {
    ok(post(s, &format!("/subjects/{subject}/versions"), &body(schema)).await)["id"].as_u64().unwrap()
}

#[tokio::test]
async fn register_look_up_and_read_back() {
    let s = TestServer::start(|_| {}).await;
    assert_eq!(ok(get(&s, "/subjects").await), json!([]));
    assert_eq!(register(&s, "orders-value", &v1()).await, 1);
    // Identical (in canonical form) schema: the same id, no new version.
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&v1()).unwrap()).unwrap();
    let a =
        post(&s, "/subjects/orders-value/versions", &json!({"schema": pretty, "schemaType": "AVRO"}).to_string()).await;
    assert_eq!(ok(a), json!({"id": 1}));
    assert_eq!(ok(get(&s, "/subjects/orders-value/versions").await), json!([1]));
    // The same schema under another subject shares the id.
    assert_eq!(register(&s, "other-value", &v1()).await, 1);
    assert_eq!(register(&s, "orders-value", &v2()).await, 2);

    assert_eq!(ok(get(&s, "/subjects").await), json!(["orders-value", "other-value"]));
    assert_eq!(ok(get(&s, "/subjects/orders-value/versions").await), json!([1, 2]));
    let want_v2 = json!({"subject": "orders-value", "version": 2, "id": 2, "schema": v2()});
    assert_eq!(ok(get(&s, "/subjects/orders-value/versions/2").await), want_v2);
    assert_eq!(ok(get(&s, "/subjects/orders-value/versions/latest").await), want_v2);
    assert_eq!(ok(get(&s, "/subjects/orders-value/versions/-1").await), want_v2);
    let raw = get(&s, "/subjects/orders-value/versions/1/schema").await;
    assert_eq!(raw.text, v1(), "the raw schema");
    assert_eq!(ok(raw), serde_json::from_str::<Value>(&v1()).unwrap());
    assert_eq!(ok(get(&s, "/subjects/orders-value/versions/1/referencedby").await), json!([]));

    assert_eq!(ok(get(&s, "/schemas/ids/1").await), json!({"schema": v1()}));
    assert_eq!(get(&s, "/schemas/ids/2/schema").await.text, v2());
    assert_eq!(ok(get(&s, "/schemas/ids/1/subjects").await), json!(["orders-value", "other-value"]));
    assert_eq!(
        ok(get(&s, "/schemas/ids/1/versions").await),
        json!([{"subject": "orders-value", "version": 1}, {"subject": "other-value", "version": 1}])
    );
    assert_eq!(ok(get(&s, "/schemas/types").await), json!(["AVRO"]));
    assert_eq!(ok(get(&s, "/mode").await), json!({"mode": "READWRITE"}));

    // Look a schema up under a subject.
    let found = ok(post(&s, "/subjects/orders-value", &body(&pretty)).await);
    assert_eq!(found, json!({"subject": "orders-value", "version": 1, "id": 1, "schema": v1()}));

    // Metrics count registrations and show live schemas and subjects.
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("sluice_schema_registrations_total{result=\"new\"}"), "{text}");
    assert!(text.contains("sluice_schema_live{kind=\"subjects\"}"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn content_types() {
    let s = TestServer::start(|_| {}).await;
    for (i, ct) in
        [Some(SR), Some("application/vnd.schemaregistry+json"), Some("application/json; charset=utf-8"), None]
            .into_iter()
            .enumerate()
    {
        let subject = format!("/subjects/s{i}/versions");
        let a = s.send(Method::POST, &subject, Some(&body(&v1())), ct).await;
        assert_eq!(ok(a), json!({"id": 1}), "{ct:?}");
    }
    let a = s.send(Method::POST, "/subjects/x/versions", Some(&body(&v1())), Some("text/plain")).await;
    err(a, 415, 415, "text/plain");
    let a = s.send(Method::POST, "/subjects/x/versions", Some("{not json"), Some(SR)).await;
    err(a, 400, 400, "JSON");
    let a = s.send(Method::POST, "/subjects/x/versions", Some(r#"{"schema": 5}"#), Some(SR)).await;
    err(a, 422, 422, "expected a string");
    s.stop().await;
}

#[tokio::test]
async fn every_error_code() {
    let s = TestServer::start(|_| {}).await;
    register(&s, "s", &v1()).await;
    register(&s, "s", &v2()).await;

    // 40401 subject not found.
    err(get(&s, "/subjects/nope/versions").await, 404, 40401, "nope");
    err(get(&s, "/subjects/nope/versions/1").await, 404, 40401, "nope");
    err(post(&s, "/subjects/nope", &body(&v1())).await, 404, 40401, "nope");
    err(delete(&s, "/subjects/nope").await, 404, 40401, "nope");
    // 40402 version not found.
    err(get(&s, "/subjects/s/versions/3").await, 404, 40402, "3");
    err(delete(&s, "/subjects/s/versions/3").await, 404, 40402, "3");
    err(post(&s, "/compatibility/subjects/s/versions/3", &body(&v1())).await, 404, 40402, "3");
    // 40403 schema not found.
    err(get(&s, "/schemas/ids/99").await, 404, 40403, "99");
    err(get(&s, "/schemas/ids/99/schema").await, 404, 40403, "99");
    err(get(&s, "/schemas/ids/99/versions").await, 404, 40403, "99");
    err(get(&s, "/schemas/ids/x").await, 404, 40403, "x");
    err(post(&s, "/subjects/s", &body(&record(r#"{"name":"x","type":"int"}"#))).await, 404, 40403, "not found");
    // 40406 version soft-deleted; 40407 version not soft-deleted.
    err(delete(&s, "/subjects/s/versions/1?permanent=true").await, 404, 40407, "not deleted first");
    assert_eq!(ok(delete(&s, "/subjects/s/versions/1").await), json!(1));
    err(delete(&s, "/subjects/s/versions/1").await, 404, 40406, "soft deleted");
    // 40405 subject not soft-deleted; 40404 subject soft-deleted.
    err(delete(&s, "/subjects/s?permanent=true").await, 404, 40405, "not deleted first");
    assert_eq!(ok(delete(&s, "/subjects/s").await), json!([2]));
    err(delete(&s, "/subjects/s").await, 404, 40404, "soft deleted");
    // 40408 no subject-level compatibility.
    err(get(&s, "/config/s").await, 404, 40408, "does not have subject-level compatibility");
    err(delete(&s, "/config/s").await, 404, 40408, "does not have subject-level compatibility");
    // 409 incompatible, naming the field and why.
    register(&s, "t", &v1()).await;
    let breaking = record(r#"{"name":"id","type":"long"},{"name":"region","type":"string"}"#);
    let a = post(&s, "/subjects/t/versions", &body(&breaking)).await;
    err(a, 409, 409, "reader field `region` has no default and is missing in the writer schema");
    let a = post(&s, "/subjects/t/versions", &body(&record(r#"{"name":"id","type":"int"}"#))).await;
    err(a, 409, 409, "field `id`: reader type `int` cannot read writer type `long`");
    assert_eq!(ok(get(&s, "/subjects/t/versions").await), json!([1]), "a refused schema creates no version");
    // 42201 invalid schema (the parser's reason), unsupported schema type, missing schema, references.
    let a = post(
        &s,
        "/subjects/t/versions",
        &body(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Nope"}]}"#),
    )
    .await;
    err(a, 422, 42201, "Nope");
    let a = post(
        &s,
        "/subjects/t/versions",
        &json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}).to_string(),
    )
    .await;
    err(a, 422, 42201, "only AVRO is supported");
    err(post(&s, "/subjects/t/versions", "{}").await, 422, 42201, "Empty schema");
    let with_refs = json!({"schema": v1(), "references": [{"name": "x", "subject": "y", "version": 1}]}).to_string();
    err(post(&s, "/subjects/t/versions", &with_refs).await, 422, 42201, "references");
    err(post(&s, "/subjects/t", &body("{")).await, 422, 42201, "Invalid schema");
    err(post(&s, "/compatibility/subjects/t/versions/latest", &body("[")).await, 422, 42201, "Invalid schema");
    // 42202 invalid version.
    for bad in ["0", "-2", "abc", "2147483648", "1.5"] {
        err(get(&s, &format!("/subjects/t/versions/{bad}")).await, 422, 42202, bad);
        err(delete(&s, &format!("/subjects/t/versions/{bad}")).await, 422, 42202, bad);
        err(post(&s, &format!("/compatibility/subjects/t/versions/{bad}"), &body(&v1())).await, 422, 42202, bad);
    }
    // i32::MAX is a valid version number, just not there.
    err(get(&s, "/subjects/t/versions/2147483647").await, 404, 40402, "2147483647");
    // 42203 invalid compatibility level.
    err(put(&s, "/config", r#"{"compatibility":"SIDEWAYS"}"#).await, 422, 42203, "SIDEWAYS");
    err(put(&s, "/config/t", r#"{"compatibility":"SIDEWAYS"}"#).await, 422, 42203, "Invalid compatibility level");
    err(put(&s, "/config/t", "{}").await, 422, 42203, "Invalid compatibility level");
    s.stop().await;
}

#[tokio::test]
async fn a_failed_store_is_a_50001_and_changes_nothing() {
    let storage = SimStorage::new();
    let s = TestServer::start_on(|_| {}, Some(Arc::new(storage.clone()))).await;
    register(&s, "s", &v1()).await;
    storage.set_fail_sync(true);
    let a = post(&s, "/subjects/s/versions", &body(&v2())).await;
    err(a, 500, 50001, "schema store");
    err(put(&s, "/config", r#"{"compatibility":"NONE"}"#).await, 500, 50001, "schema store");
    err(delete(&s, "/subjects/s").await, 500, 50001, "schema store");
    assert_eq!(ok(get(&s, "/subjects/s/versions").await), json!([1]));
    err(get(&s, "/schemas/ids/2").await, 404, 40403, "2");
    assert_eq!(ok(get(&s, "/config").await), json!({"compatibilityLevel": "BACKWARD"}));
    s.stop().await;
}

#[tokio::test]
async fn config_endpoints() {
    let s = TestServer::start(|_| {}).await;
    assert_eq!(ok(get(&s, "/config").await), json!({"compatibilityLevel": "BACKWARD"}));
    assert_eq!(ok(put(&s, "/config", r#"{"compatibility":"FULL"}"#).await), json!({"compatibility": "FULL"}));
    assert_eq!(ok(get(&s, "/config").await), json!({"compatibilityLevel": "FULL"}));
    assert_eq!(ok(get(&s, "/config/s?defaultToGlobal=true").await), json!({"compatibilityLevel": "FULL"}));
    // Lower case is accepted; the answer is upper case.
    assert_eq!(ok(put(&s, "/config/s", r#"{"compatibility":"none"}"#).await), json!({"compatibility": "NONE"}));
    assert_eq!(ok(get(&s, "/config/s").await), json!({"compatibilityLevel": "NONE"}));
    assert_eq!(ok(get(&s, "/config/s?defaultToGlobal=true").await), json!({"compatibilityLevel": "NONE"}));
    assert_eq!(ok(delete(&s, "/config/s").await), json!({"compatibilityLevel": "NONE"}));
    err(get(&s, "/config/s").await, 404, 40408, "s");
    assert_eq!(ok(delete(&s, "/config").await), json!({"compatibilityLevel": "FULL"}));
    assert_eq!(ok(get(&s, "/config").await), json!({"compatibilityLevel": "BACKWARD"}));
    s.stop().await;
}

#[tokio::test]
async fn compatibility_tests() {
    let s = TestServer::start(|_| {}).await;
    let breaking = record(r#"{"name":"id","type":"long"},{"name":"region","type":"string"}"#);
    // No subject yet: anything is compatible with `latest`.
    assert_eq!(
        ok(post(&s, "/compatibility/subjects/s/versions/latest", &body(&breaking)).await),
        json!({"is_compatible": true})
    );
    err(post(&s, "/compatibility/subjects/s/versions/1", &body(&breaking)).await, 404, 40401, "s");
    register(&s, "s", &v1()).await;
    register(&s, "s", &v2()).await;
    assert_eq!(
        ok(post(&s, "/compatibility/subjects/s/versions/latest", &body(&v2())).await),
        json!({"is_compatible": true})
    );
    assert_eq!(
        ok(post(&s, "/compatibility/subjects/s/versions/1", &body(&breaking)).await),
        json!({"is_compatible": false})
    );
    let verbose = ok(post(&s, "/compatibility/subjects/s/versions/latest?verbose=true", &body(&breaking)).await);
    assert_eq!(verbose["is_compatible"], false);
    let messages = verbose["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{verbose}");
    assert_eq!(
        messages[0],
        "reader field `region` has no default and is missing in the writer schema (reader: the new schema, writer: version 2)"
    );
    let all = ok(post(&s, "/compatibility/subjects/s/versions?verbose=true", &body(&v2())).await);
    assert_eq!(all, json!({"is_compatible": true, "messages": []}));
    s.stop().await;
}

#[tokio::test]
async fn deleted_versions_and_subjects_over_http() {
    let s = TestServer::start(|_| {}).await;
    register(&s, "s", &v1()).await;
    register(&s, "s", &v2()).await;
    assert_eq!(ok(delete(&s, "/subjects/s/versions/latest").await), json!(2));
    assert_eq!(ok(get(&s, "/subjects/s/versions").await), json!([1]));
    assert_eq!(ok(get(&s, "/subjects/s/versions?deleted=true").await), json!([1, 2]));
    err(get(&s, "/subjects/s/versions/2").await, 404, 40402, "2");
    assert_eq!(ok(get(&s, "/subjects/s/versions/2?deleted=true").await)["id"], 2);
    // A soft-deleted version's schema is still served by id; its subjects only with ?deleted=true.
    assert_eq!(ok(get(&s, "/schemas/ids/2").await), json!({"schema": v2()}));
    assert_eq!(ok(get(&s, "/schemas/ids/2/subjects").await), json!([]));
    assert_eq!(ok(get(&s, "/schemas/ids/2/subjects?deleted=true").await), json!(["s"]));
    assert_eq!(ok(delete(&s, "/subjects/s/versions/2?permanent=true").await), json!(2));
    err(get(&s, "/schemas/ids/2").await, 404, 40403, "2");
    assert_eq!(ok(delete(&s, "/subjects/s").await), json!([1]));
    assert_eq!(ok(get(&s, "/subjects").await), json!([]));
    assert_eq!(ok(get(&s, "/subjects?deleted=true").await), json!(["s"]));
    assert_eq!(ok(delete(&s, "/subjects/s?permanent=true").await), json!([1]));
    assert_eq!(ok(get(&s, "/subjects?deleted=true").await), json!([]));
    // Version numbers are never reused; the schema gets its id back.
    assert_eq!(register(&s, "s", &v1()).await, 1);
    assert_eq!(ok(get(&s, "/subjects/s/versions").await), json!([3]));
    s.stop().await;
}

#[tokio::test]
async fn subjects_with_reserved_characters() {
    let s = TestServer::start(|_| {}).await;
    assert_eq!(register(&s, "team%2Forders%20value", &v1()).await, 1);
    assert_eq!(ok(get(&s, "/subjects").await), json!(["team/orders value"]));
    assert_eq!(ok(get(&s, "/subjects/team%2Forders%20value/versions/1").await)["subject"], "team/orders value");
    s.stop().await;
}

/// What a client sees of the registry state built in `the_registry_survives_a_restart`.
async fn snapshot(s: &TestServer) -> Value {
    json!([
        ok(get(s, "/subjects?deleted=true").await),
        ok(get(s, "/subjects/a/versions?deleted=true").await),
        ok(get(s, "/subjects/a/versions/1?deleted=true").await),
        ok(get(s, "/subjects/b/versions/latest").await),
        ok(get(s, "/config").await),
        ok(get(s, "/config/b").await),
        ok(get(s, "/schemas/ids/2/versions?deleted=true").await),
    ])
}

#[tokio::test]
async fn the_registry_survives_a_restart() {
    let s = TestServer::start(|_| {}).await;
    register(&s, "a", &v1()).await;
    register(&s, "a", &v2()).await;
    register(&s, "b", &v2()).await;
    ok(delete(&s, "/subjects/a/versions/1").await);
    ok(put(&s, "/config/b", r#"{"compatibility":"FORWARD_TRANSITIVE"}"#).await);
    ok(put(&s, "/config", r#"{"compatibility":"NONE"}"#).await);
    let before = snapshot(&s).await;
    let s = s.restart().await;
    assert_eq!(snapshot(&s).await, before);
    // The topic is there, with the registry's records.
    let (_, t) = s.get("/v1/topics/_schemas").await;
    assert_eq!(t["partitions"], 1);
    assert_eq!(register(&s, "c", &record(r#"{"name":"z","type":"string"}"#)).await, 3);
    s.stop().await;
}
