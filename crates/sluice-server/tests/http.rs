//! HTTP API tests against a real server on a loopback port: ingest, reads, topics, every limit and error.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_config::ByteSize;
use sluice_log::{SimStorage, partitioner};

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, code: &str, needle: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

#[tokio::test]
async fn health_and_readiness() {
    let s = TestServer::start(|_| {}).await;
    assert_eq!(s.get("/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(s.get("/readyz").await, (StatusCode::OK, json!({"status": "ready"})));
    s.stop().await;
}

#[tokio::test]
async fn topics_over_http() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("orders", 3).await;
    let (st, b) = s.post("/v1/topics", r#"{"name":"orders","partitions":1}"#).await;
    assert_error(st, &b, StatusCode::CONFLICT, "topic_exists", "orders");
    let (st, b) = s.post("/v1/topics", r#"{"name":"no/slash"}"#).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_topic_name", "no/slash");
    let (st, b) = s.post("/v1/topics", r#"{"name":"sized","partitions":1,"retention_bytes":0}"#).await;
    assert_eq!((st, &b["retention_bytes"]), (StatusCode::CREATED, &Value::Null), "0 means no size limit");
    let (st, b) = s.post("/v1/topics", r#"{"name":"x","partitionz":1}"#).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_request", "partitionz");
    let (st, b) = s.get("/v1/topics").await;
    assert_eq!(st, StatusCode::OK);
    assert!(b["topics"].as_array().unwrap().iter().any(|t| t["name"] == "orders"), "{b}");
    let (st, b) = s.get("/v1/topics/orders").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["partition_details"].as_array().unwrap().len(), 3);
    let r = s.http.delete(s.url("/v1/topics/orders")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, b) = s.get("/v1/topics/orders").await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "topic_not_found", "orders");
    s.stop().await;
}

#[tokio::test]
async fn produce_and_read_back() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("t", 4).await;
    let body = json!([
        {"key": "user-1", "value": {"n": 0}, "timestamp": "2026-01-01T00:00:00Z", "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
        {"key": "user-1", "value": {"n": 1}, "timestamp": 1767225660000i64},
        {"value": {"n": 2}},
        {"value": "not an object"},
    ]);
    let (st, b) = s.post("/v1/topics/t/events", body.to_string()).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!((b["accepted"].as_u64(), b["rejected"].as_u64()), (Some(3), Some(1)));
    let p = partitioner::partition_for_key(b"user-1", 4) as u64;
    assert_eq!(b["results"][0], json!({"partition": p, "offset": 0}));
    assert_eq!(b["results"][1], json!({"partition": p, "offset": 1}), "same key, same partition, in order");
    assert_eq!(b["results"][3]["error"]["code"], "invalid_event");

    let (st, r) = s.get(&format!("/v1/topics/t/events?partition={p}&offset=0&limit=10")).await;
    assert_eq!(st, StatusCode::OK);
    // The keyless event may share the partition; the keyed ones come first, in order.
    let events = r["events"].as_array().unwrap();
    assert!(events.len() >= 2, "{r}");
    assert_eq!(events[0]["value"], json!({"n": 0}));
    assert_eq!(events[0]["key"], "user-1");
    assert_eq!(events[0]["timestamp"], "2026-01-01T00:00:00.000Z");
    assert_eq!(events[0]["headers"]["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_eq!(events[1]["timestamp"], "2026-01-01T00:01:00.000Z");
    assert_eq!(r["next_offset"], events.len());
    let base = events.len() as u64;
    // By time: the first event at or after 00:00:30 is offset 1.
    let (_, r) = s.get(&format!("/v1/topics/t/events?partition={p}&from_time=2026-01-01T00:00:30Z")).await;
    assert_eq!(r["events"][0]["offset"], 1);
    // NDJSON, with a traceparent on the request applied to events without one.
    let r = s
        .http
        .post(s.url("/v1/topics/t/events"))
        .header("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
        .body("{\"key\":\"user-1\",\"value\":{\"n\":3}}\n\n{\"key\":\"user-1\",\"value\":{\"n\":4}}\n")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["results"][1], json!({"partition": p, "offset": base + 1}));
    let (_, r) = s.get(&format!("/v1/topics/t/events?partition={p}&offset={base}")).await;
    assert_eq!(r["events"][0]["headers"]["traceparent"], "00-11111111111111111111111111111111-2222222222222222-01");
    s.stop().await;
}

#[tokio::test]
async fn read_errors() {
    let s = TestServer::start(|c| c.limits.max_read_events = 50).await;
    s.create_topic("t", 2).await;
    s.post("/v1/topics/t/events", r#"{"key":"a","value":{}}"#).await;
    let (st, b) = s.get("/v1/topics/t/events").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "missing_partition", "2 partitions");
    let (st, b) = s.get("/v1/topics/t/events?partition=0&offset=99").await;
    assert_error(st, &b, StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range", "99");
    let (st, b) = s.get("/v1/topics/t/events?partition=5").await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "partition_not_found", "2 partitions");
    let (st, b) = s.get("/v1/topics/t/events?partition=0&limit=51").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_limit", "limits.max_read_events");
    let (st, b) = s.get("/v1/topics/t/events?partition=0&offset=0&from_time=1").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query", "not both");
    let (st, b) = s.get("/v1/topics/t/events?partition=x").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_query", "partition");
    let (st, b) = s.get("/v1/topics/nope/events?partition=0").await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "topic_not_found", "nope");
    let (st, b) = s.get("/v2/nothing").await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "not_found", "/v2/nothing");
    let r = s.http.put(s.url("/v1/topics")).send().await.unwrap();
    let st = r.status();
    assert_error(st, &r.json().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "PUT");
    s.stop().await;
}

#[tokio::test]
async fn long_poll_returns_new_events() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("t", 1).await;
    let waiter = {
        let (http, url) = (s.http.clone(), s.url("/v1/topics/t/events?partition=0&offset=0&wait_ms=10000"));
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.post("/v1/topics/t/events", r#"{"value":{"late":true}}"#).await;
    let r = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert_eq!(r["events"][0]["value"], json!({"late": true}));
    s.stop().await;
}

#[tokio::test]
async fn request_limits() {
    let s = TestServer::start(|c| {
        c.limits.max_body_bytes = ByteSize(64 << 10);
        c.limits.max_event_bytes = ByteSize(1 << 10);
        c.limits.max_events_per_request = 10;
        c.limits.max_json_depth = 8;
    })
    .await;
    s.create_topic("t", 1).await;

    let big = format!("{{\"value\":{{\"s\":\"{}\"}}}}", "x".repeat(70 << 10));
    let (st, b) = s.post("/v1/topics/t/events", big).await;
    assert_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "limits.max_body_bytes");

    // Without a Content-Length the limit still holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
    let r = s
        .http
        .post(s.url("/v1/topics/t/events"))
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_error(
        st,
        &r.json().await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "limits.max_body_bytes",
    );

    let (st, b) = s.post("/v1/topics/t/events", format!("{{\"value\":{{\"s\":\"{}\"}}}}", "x".repeat(2000))).await;
    assert_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", "limits.max_event_bytes");

    let many = (0..11).map(|_| r#"{"value":{}}"#).collect::<Vec<_>>().join("\n");
    let (st, b) = s.post("/v1/topics/t/events", many).await;
    assert_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_many_events", "limits.max_events_per_request");

    let deep = format!("{{\"value\":{}1{}}}", "[".repeat(10), "]".repeat(10));
    let (st, b) = s.post("/v1/topics/t/events", deep).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "json_too_deep", "limits.max_json_depth");

    let (st, b) = s.post("/v1/topics/t/events", "{\"value\":{}}\n{\"value\":{\"a\":}}").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_json", "line 2 column 15");

    let (st, b) = s.post("/v1/topics/t/events", "  \n").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "empty_body", "no events");

    let (st, b) = s.post("/v1/topics/missing/events", r#"{"value":{}}"#).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "topic_not_found", "missing");

    // Nothing from the refused requests was stored.
    let (_, d) = s.get("/v1/topics/t").await;
    assert_eq!(d["partition_details"][0]["high_watermark"], 0);
    s.stop().await;
}

#[tokio::test]
async fn huge_declared_body_is_refused_without_reading_it() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("t", 1).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let reply = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "POST /v1/topics/t/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000000\r\n\r\n[{{").unwrap();
        let mut buf = vec![0; 4096];
        let n = c.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("body_too_large"), "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn auto_create_when_configured() {
    let s = TestServer::start(|c| {
        c.log.auto_create_topics = true;
        c.log.default_partitions = 2;
    })
    .await;
    let (st, b) = s.post("/v1/topics/fresh/events", r#"{"value":{"a":1}}"#).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, d) = s.get("/v1/topics/fresh").await;
    assert_eq!(d["partitions"], 2);
    s.stop().await;
}

#[tokio::test]
async fn config_declared_topics_exist_at_start() {
    let s = TestServer::start(|c| {
        c.topics.push(sluice_config::TopicConfig {
            name: "declared".into(),
            partitions: Some(3),
            retention: None,
            retention_bytes: None,
        })
    })
    .await;
    let (st, d) = s.get("/v1/topics/declared").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d["partitions"], 3);
    s.stop().await;
}

#[tokio::test]
async fn rest_proxy_v2_produce() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("rp", 3).await;
    let body =
        json!({"records": [{"key": "k1", "value": {"a": 1}}, {"value": [1, 2]}, {"value": "s", "partition": 2}]});
    let r = s
        .http
        .post(s.url("/topics/rp"))
        .header("content-type", "application/vnd.kafka.json.v2+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/vnd.kafka.v2+json");
    let b: Value = r.json().await.unwrap();
    let p = partitioner::partition_for_key(b"k1", 3);
    assert_eq!(b["offsets"][0], json!({"partition": p, "offset": 0, "error_code": null, "error": null}));
    assert_eq!(b["offsets"][2]["partition"], 2);
    assert!(b["key_schema_id"].is_null() && b["value_schema_id"].is_null());
    let (_, r) = s.get(&format!("/v1/topics/rp/events?partition={p}")).await;
    assert_eq!(r["events"][0]["key"], "k1");
    assert_eq!(r["events"][0]["value"], json!({"a": 1}));

    let r = s
        .http
        .post(s.url("/topics/nope"))
        .header("content-type", "application/vnd.kafka.json.v2+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], 40401);
    let r = s.http.post(s.url("/topics/rp")).header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (st, names) = s.get("/topics").await;
    assert_eq!((st, names), (StatusCode::OK, json!(["rp"])));
    s.stop().await;
}

#[tokio::test]
async fn disk_full_is_507_and_recovers() {
    let storage = SimStorage::new();
    let s = TestServer::start_on(|_| {}, Some(Arc::new(storage.clone()))).await;
    s.create_topic("t", 1).await;
    let (st, _) = s.post("/v1/topics/t/events", r#"{"value":{"n":0}}"#).await;
    assert_eq!(st, StatusCode::OK);
    let used: u64 = storage.files().iter().map(|f| storage.contents(f).unwrap().len() as u64).sum();
    storage.set_space_limit(Some(used + 10));
    let (st, b) = s.post("/v1/topics/t/events", r#"{"value":{"n":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#).await;
    assert_error(st, &b, StatusCode::INSUFFICIENT_STORAGE, "disk_full", "disk full");
    assert_eq!(b["results"][0]["error"]["code"], "disk_full");
    storage.set_space_limit(None);
    let (st, b) = s.post("/v1/topics/t/events", r#"{"value":{"n":2}}"#).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["results"][0]["offset"], 1, "writes resume right after the last stored event");
    let (_, r) = s.get("/v1/topics/t/events?partition=0").await;
    let ns: Vec<&Value> = r["events"].as_array().unwrap().iter().map(|e| &e["value"]["n"]).collect();
    assert_eq!(ns, vec![&json!(0), &json!(2)]);
    s.stop().await;
}

#[tokio::test]
async fn fsync_failure_fences_the_partition() {
    let storage = SimStorage::new();
    let s = TestServer::start_on(|_| {}, Some(Arc::new(storage.clone()))).await;
    s.create_topic("t", 1).await;
    s.post("/v1/topics/t/events", r#"{"value":{"n":0}}"#).await;
    storage.set_fail_sync(true);
    let (st, b) = s.post("/v1/topics/t/events", r#"{"value":{"n":1}}"#).await;
    assert_error(st, &b, StatusCode::SERVICE_UNAVAILABLE, "fsync_failed", "nothing in this batch was acknowledged");
    storage.set_fail_sync(false);
    // Never retried-and-acked: the partition stays fenced until restart.
    let (st, b) = s.post("/v1/topics/t/events", r#"{"value":{"n":2}}"#).await;
    assert_error(st, &b, StatusCode::SERVICE_UNAVAILABLE, "partition_fenced", "restart");
    let (_, d) = s.get("/v1/topics/t").await;
    assert_eq!(d["partition_details"][0]["writable"], false);
    let (st, b) = s.get("/readyz").await;
    assert_error(st, &b, StatusCode::SERVICE_UNAVAILABLE, "partition_fenced", "t/0");
    assert_eq!(s.get("/healthz").await.0, StatusCode::OK, "alive, just not ready");
    let (_, r) = s.get("/v1/topics/t/events?partition=0").await;
    assert_eq!(r["events"].as_array().unwrap().len(), 1, "only the acknowledged event is served");
    s.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_exposes_every_stage_so_far() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("m", 1).await;
    s.post("/v1/topics/m/events", r#"{"value":{}}"#).await;
    // Rejections count per topic; a topic that does not exist is `_unknown`, never a client-chosen label.
    s.post("/v1/topics/m/events", r#"[{"value":1}]"#).await;
    s.post("/v1/topics/made-up-name/events", r#"{"value":{}}"#).await;
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("made-up-name"), "unknown topics are not labels");
    for name in [
        "sluice_ingest_rejected_events_total{reason=\"invalid_event\",topic=\"m\"} 1",
        "sluice_ingest_rejected_requests_total{reason=\"topic_not_found\",topic=\"_unknown\"} 1",
        "sluice_ingest_events_total{topic=\"m\"}",
        "sluice_log_fsync_duration_seconds_bucket",
        "sluice_log_partition_high_watermark{partition=\"0\",topic=\"m\"} 1",
        "sluice_http_requests_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    s.stop().await;
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(chunks)
}
