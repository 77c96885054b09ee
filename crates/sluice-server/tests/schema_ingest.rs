//! Schema-bound topics over HTTP: JSON validated and stored as Avro, framed Avro posted directly, the REST
//! Proxy's avro format, reads decoded into any version, dead letters, and internal topics.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_avro::{Encoder, Schema, wire};

const SR: &str = "application/vnd.schemaregistry.v1+json";

fn v1() -> Value {
    json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": null}
    ]})
}

fn v2() -> Value {
    json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "currency", "type": "string", "default": "EUR"}
    ]})
}

async fn register(s: &TestServer, subject: &str, schema: &Value) -> u64 {
    let body = json!({"schema": schema.to_string()}).to_string();
    let a = s.send(Method::POST, &format!("/subjects/{subject}/versions"), Some(&body), Some(SR)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json["id"].as_u64().unwrap()
}

async fn events(s: &TestServer, topic: &str, query: &str) -> Vec<Value> {
    let (st, r) = s.get(&format!("/v1/topics/{topic}/events?partition=0{query}")).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    r["events"].as_array().unwrap().clone()
}

async fn create(s: &TestServer, topic: &str) {
    let (st, b) = s.post("/v1/topics", json!({"name": topic, "partitions": 1}).to_string()).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn json_events_are_validated_and_stored_as_avro_and_read_in_any_version() {
    let s = TestServer::start(|_| {}).await;
    create(&s, "orders").await;
    // Before a schema exists the topic takes plain JSON.
    let (st, _) = s.post("/v1/topics/orders/events", r#"{"value":{"legacy":true}}"#).await;
    assert_eq!(st, StatusCode::OK);
    let id1 = register(&s, "orders-value", &v1()).await;
    let (st, b) = s
        .post(
            "/v1/topics/orders/events",
            "{\"value\":{\"id\":1,\"amount\":9.5}}\n{\"value\":{\"id\":\"two\",\"amount\":1}}\n{\"value\":{\"id\":3,\"amount\":2,\"note\":\"gift\"}}",
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!((b["accepted"].as_u64(), b["rejected"].as_u64()), (Some(2), Some(1)));
    let err = &b["results"][1]["error"];
    assert_eq!(err["code"], "schema_violation");
    assert!(err["message"].as_str().unwrap().contains("field `id`"), "{err}");

    let id2 = register(&s, "orders-value", &v2()).await;
    assert_ne!(id1, id2);
    let (st, b) = s.post("/v1/topics/orders/events", r#"{"value":{"id":4,"amount":1.25,"currency":"USD"}}"#).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // An older version can still be named explicitly.
    let (st, b) = s.post("/v1/topics/orders/events?schema_version=1", r#"{"value":{"id":5,"amount":3}}"#).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = s.post("/v1/topics/orders/events?schema_version=9", r#"{"value":{"id":5,"amount":3}}"#).await;
    assert_eq!((st, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("schema_not_found")));

    // Read with the latest schema (v2): v1 events get the default currency.
    let ev = events(&s, "orders", "").await;
    assert_eq!(ev[0]["value"], json!({"legacy": true}), "JSON stored before the binding passes through");
    assert!(ev[0].get("schema_id").is_none());
    assert_eq!(ev[1]["value"], json!({"id": 1, "amount": 9.5, "note": null, "currency": "EUR"}));
    assert_eq!(ev[1]["schema_id"], id1);
    assert_eq!(ev[2]["value"], json!({"id": 3, "amount": 2.0, "note": "gift", "currency": "EUR"}));
    assert_eq!(ev[3]["value"], json!({"id": 4, "amount": 1.25, "note": null, "currency": "USD"}));
    assert_eq!(ev[3]["schema_id"], id2);
    assert_eq!(ev[4]["schema_id"], id1);
    // Read with v1: the v2 event loses the field v1 does not know.
    let ev = events(&s, "orders", "&reader_version=1").await;
    assert_eq!(ev[3]["value"], json!({"id": 4, "amount": 1.25, "note": null}));
    s.stop().await;
}

fn framed_body(records: &[(Option<&[u8]>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        match key {
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            Some(k) => {
                out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                out.extend_from_slice(k);
            }
        }
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn avro(schema: &Value, id: u64, json: &str) -> Vec<u8> {
    let encoder = Encoder::new(&Schema::parse_str(&schema.to_string()).unwrap()).unwrap();
    let mut body = Vec::new();
    encoder.encode_json(json.as_bytes(), &mut body).unwrap();
    let mut out = Vec::new();
    wire::frame(id as u32, &body, &mut out);
    out
}

#[tokio::test]
async fn producers_can_post_confluent_framed_avro() {
    let s = TestServer::start(|_| {}).await;
    create(&s, "framed").await;
    let id = register(&s, "framed-value", &v1()).await;
    let body = framed_body(&[
        (Some(b"k1"), avro(&v1(), id, r#"{"id":7,"amount":1.5}"#)),
        (None, vec![1, 2, 3]),
        (None, avro(&v1(), 999, r#"{"id":8,"amount":1}"#)),
        (None, avro(&v1(), id, r#"{"id":9,"amount":2}"#)[..7].to_vec()),
    ]);
    let r = s
        .http
        .post(s.url("/v1/topics/framed/events"))
        .header("content-type", "application/vnd.sluice.avro")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["results"][0], json!({"partition": 0, "offset": 0}));
    for (i, needle) in [(1, "bad magic byte"), (2, "schema id 999"), (3, "does not match schema id")] {
        let e = &b["results"][i]["error"];
        assert_eq!(e["code"], "schema_violation", "{e}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    let ev = events(&s, "framed", "").await;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0]["key"].as_str(), &ev[0]["value"]), (Some("k1"), &json!({"id": 7, "amount": 1.5, "note": null})));

    let r = s
        .http
        .post(s.url("/v1/topics/framed/events"))
        .header("content-type", "application/vnd.sluice.avro")
        .body(vec![0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_framing");
    s.stop().await;
}

#[tokio::test]
async fn rest_proxy_avro_format() {
    let s = TestServer::start(|_| {}).await;
    create(&s, "rp").await;
    let ct = "application/vnd.kafka.avro.v2+json";
    let body = json!({"value_schema": v1().to_string(), "records": [
        {"value": {"id": 1, "amount": 2.5, "note": {"string": "tagged union"}}},
        {"value": {"id": 2, "amount": 3}}
    ]});
    let a = s.send(Method::POST, "/topics/rp", Some(&body.to_string()), Some(ct)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let id = a.json["value_schema_id"].as_u64().unwrap();
    assert!(a.json["key_schema_id"].is_null());
    let (_, v) = s.get("/subjects/rp-value/versions/latest").await;
    assert_eq!(v["id"], id, "the inline schema was registered under {{topic}}-value");
    let body = json!({"value_schema_id": id, "records": [{"value": {"id": 3, "amount": 1}}]});
    let a = s.send(Method::POST, "/topics/rp", Some(&body.to_string()), Some(ct)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["offsets"][0]["offset"], 2);
    let ev = events(&s, "rp", "").await;
    assert_eq!(ev[0]["value"], json!({"id": 1, "amount": 2.5, "note": "tagged union"}));
    assert_eq!(ev[2]["value"]["id"], 3);

    let body = json!({"records": [{"value": {"id": 3, "amount": 1}}]});
    let a = s.send(Method::POST, "/topics/rp", Some(&body.to_string()), Some(ct)).await;
    assert_eq!((a.status, a.json["error_code"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(42202)));
    let body = json!({"value_schema_id": id, "records": [{"key": "k", "value": {"id": 3, "amount": 1}}]});
    let a = s.send(Method::POST, "/topics/rp", Some(&body.to_string()), Some(ct)).await;
    assert_eq!((a.status, a.json["error_code"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(42201)));
    let body = json!({"value_schema_id": id, "records": [{"value": {"id": "x", "amount": 1}}]});
    let a = s.send(Method::POST, "/topics/rp", Some(&body.to_string()), Some(ct)).await;
    assert_eq!((a.status, a.json["error_code"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(42203)));
    assert!(a.json["message"].as_str().unwrap().contains("field `id`"), "{}", a.text);
    let body = json!({"value_schema_id": 4242, "records": [{"value": {}}]});
    let a = s.send(Method::POST, "/topics/rp", Some(&body.to_string()), Some(ct)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    s.stop().await;
}

#[tokio::test]
async fn undecodable_records_go_to_the_dead_letter_topic_once() {
    let s = TestServer::start(|_| {}).await;
    create(&s, "dl").await;
    register(&s, "dl-value", &v1()).await;
    let (st, _) = s.post("/v1/topics/dl/events", r#"{"value":{"id":1,"amount":2}}"#).await;
    assert_eq!(st, StatusCode::OK);
    // With compatibility off, a breaking version (a new field without default) becomes the reader schema:
    // the first record can no longer be read into it.
    let a = s.send(Method::PUT, "/config/dl-value", Some(r#"{"compatibility":"NONE"}"#), Some(SR)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let breaking = json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "region", "type": "string"}
    ]});
    register(&s, "dl-value", &breaking).await;
    let (st, _) = s.post("/v1/topics/dl/events", r#"{"value":{"id":2,"region":"eu"}}"#).await;
    assert_eq!(st, StatusCode::OK);
    for _ in 0..2 {
        let ev = events(&s, "dl", "").await;
        assert_eq!(ev.len(), 2, "the reader does not stop at the bad record");
        assert_eq!(ev[0]["error"]["code"], "unresolvable_schema", "{}", ev[0]);
        assert!(ev[0]["error"]["message"].as_str().unwrap().contains("region"), "{}", ev[0]);
        assert!(ev[0]["value"].is_null());
        assert_eq!(ev[1]["value"], json!({"id": 2, "region": "eu"}));
    }
    let dead = events(&s, "dl.dlq", "").await;
    assert_eq!(dead.len(), 1, "dead-lettered once, though read twice");
    let d = &dead[0];
    assert_eq!(d["key"], "dl/0/0");
    assert_eq!(d["headers"]["sluice.dlq.topic"], "dl");
    assert_eq!(d["headers"]["sluice.dlq.partition"], "0");
    assert_eq!(d["headers"]["sluice.dlq.offset"], "0");
    assert_eq!(d["headers"]["sluice.dlq.code"], "unresolvable_schema");
    // The raw framed bytes are kept: read back on their own they still decode with their writer schema.
    assert_eq!(d["value"], json!({"id": 1, "amount": 2.0, "note": null}));
    // The old version still reads the first record, but not the second (`amount` has no default in v1): for
    // that reader it is the second that goes to the dead-letter topic.
    let ev = events(&s, "dl", "&reader_version=1").await;
    assert_eq!(ev[0]["value"], json!({"id": 1, "amount": 2.0, "note": null}));
    assert_eq!(ev[1]["error"]["code"], "unresolvable_schema");
    let dead = events(&s, "dl.dlq", "").await;
    assert_eq!(dead.iter().map(|d| d["key"].as_str().unwrap()).collect::<Vec<_>>(), ["dl/0/0", "dl/0/1"]);
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sluice_dead_letters_total{reason=\"unresolvable_schema\"} 2"), "{metrics}");
    s.stop().await;
}

#[tokio::test]
async fn internal_topics_are_protected() {
    let s = TestServer::start(|_| {}).await;
    register(&s, "x-value", &v1()).await;
    let a = s.send(Method::DELETE, "/v1/topics/_schemas", None, None).await;
    assert_eq!((a.status, a.json["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("internal_topic")));
    let (st, b) = s.post("/v1/topics/_schemas/events", r#"{"value":{}}"#).await;
    assert_eq!((st, b["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("internal_topic")));
    let (st, b) = s.post("/v1/topics", r#"{"name":"_mine","partitions":1}"#).await;
    assert_eq!((st, b["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("internal_topic")));
    let body = r#"{"records":[{"value":{}}]}"#;
    let a = s.send(Method::POST, "/topics/_schemas", Some(body), Some("application/vnd.kafka.json.v2+json")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    s.stop().await;
}

#[tokio::test]
async fn every_ingest_path_honours_the_binding() {
    let s = TestServer::start(|_| {}).await;
    create(&s, "b").await;
    let id1 = register(&s, "b-value", &v1()).await;
    // REST Proxy's JSON format on a bound topic is validated and stored as Avro too.
    let ct = "application/vnd.kafka.json.v2+json";
    let body = json!({"records": [{"value": {"id": 1, "amount": 1}}]}).to_string();
    let a = s.send(Method::POST, "/topics/b", Some(&body), Some(ct)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let body = json!({"records": [{"value": {"wrong": 1}}]}).to_string();
    let a = s.send(Method::POST, "/topics/b", Some(&body), Some(ct)).await;
    assert_eq!(
        (a.status, a.json["error_code"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(42203)),
        "{}",
        a.text
    );
    assert_eq!(events(&s, "b", "").await[0]["schema_id"], id1);
    // A schema id that readers could not read into the topic's schema is refused up front.
    let other = json!({"type": "record", "name": "Other", "fields": [{"name": "z", "type": "string"}]});
    let other_id = register(&s, "other-value", &other).await;
    let (st, b) = s.post(&format!("/v1/topics/b/events?schema_id={other_id}"), r#"{"value":{"z":"x"}}"#).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("schema_not_readable")),
        "{b}"
    );
    s.stop().await;
}
