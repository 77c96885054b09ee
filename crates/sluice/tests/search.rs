//! Full-text search end to end through the real binary: an index defined over the API on a topic with history
//! (defaults picked from its events, progress until live), the query language with time ranges, pagination,
//! facets and highlights over HTTP and the CLI, errors, an Avro topic's defaults from its schema, a config-declared
//! index that survives a restart, and events searchable within the refresh interval.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, free_port};
use serde_json::{Value, json};

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

async fn start(env: &[(&str, &str)]) -> TestServer {
    TestServer::start(env).await
}

impl TestServer {
    async fn search(&self, params: &[(&str, &str)]) -> (u16, Value) {
        self.send(self.http.get(format!("{}/v1/search", self.base)).query(params)).await
    }

    /// Polls the index until `done` accepts its status.
    async fn index_until(&self, topic: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (st, v) = self.get(&format!("/v1/topics/{topic}/index")).await;
            if st == 200 && done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "index of {topic}: still {st} {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// 600 log events, one a minute from BASE_MS: every 7th mentions a timeout, levels cycle, three services.
fn log_events() -> Vec<Value> {
    let services = ["checkout", "payments", "search"];
    let levels = ["INFO", "WARN", "ERROR"];
    (0..600)
        .map(|i| {
            let message = if i % 7 == 0 {
                format!("order {i} failed: upstream timeout from inventory")
            } else {
                format!("order {i} placed in {} ms", i % 90)
            };
            json!({"timestamp": ts(BASE_MS + i * 60_000), "key": format!("k{}", i % 10), "value": {
                "service": services[(i % 3) as usize], "level": levels[(i % 5 % 3) as usize],
                "message": message, "latency_ms": i % 90, "http": {"status": if i % 7 == 0 { 504 } else { 200 }}}})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_indexed_with_defaults_and_the_query_language_works_over_http() {
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "app_logs", "partitions": 3})).await;
    assert_eq!(st, 201);
    s.produce("app_logs", log_events()).await;

    // `{}`: defaults from the events already there; their history is indexed, with progress, until live.
    let (st, v) = s.put("/v1/topics/app_logs/index", json!({})).await;
    assert_eq!(st, 200, "{v}");
    let fields = &v["definition"]["fields"];
    assert_eq!(fields["message"]["type"], "text", "{v}");
    assert_eq!(fields["service"], json!({"type": "text", "keyword": true}), "{v}");
    assert_eq!(fields["latency_ms"]["type"], "number", "{v}");
    assert_eq!(fields["http.status"]["type"], "number", "nested fields flatten: {v}");
    let live = s.index_until("app_logs", |v| v["state"] == "live" && v["documents"] == 600).await;
    assert_eq!(live["progress"], 1.0, "{live}");
    assert_eq!(live["lag"], 0, "{live}");

    let total = |v: &Value| v["total"].as_u64().unwrap();
    let count = async |q: &str| {
        let (st, v) = s.search(&[("topic", "app_logs"), ("q", q), ("limit", "1")]).await;
        assert_eq!(st, 200, "{q}: {v}");
        total(&v)
    };
    assert_eq!(count("*").await, 600);
    assert_eq!(count("timeout").await, 86, "every 7th of 600");
    assert_eq!(count("service:checkout AND timeout").await, 29);
    assert_eq!(count("\"upstream timeout\" -service:search").await, 58);
    assert_eq!(count("http.status:504").await, 86);
    assert_eq!(count("latency_ms:[10 TO 19]").await, 70);
    assert_eq!(count("tim*").await, 86, "wildcards");
    assert_eq!(count("level:ERROR OR level:WARN").await, 360);

    // Time range: one hour, newest first, paged with the cursor: 60 events, each once, in order.
    let (from, to) = (ts(BASE_MS + 120 * 60_000), ts(BASE_MS + 180 * 60_000));
    let mut cursor = String::new();
    let mut seen = Vec::new();
    loop {
        let mut p = vec![("topic", "app_logs"), ("q", "*"), ("from", from.as_str()), ("to", to.as_str())];
        p.push(("limit", "25"));
        if !cursor.is_empty() {
            p.push(("cursor", cursor.as_str()));
        }
        let (st, v) = s.search(&p).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(total(&v), 60);
        for h in v["hits"].as_array().unwrap() {
            seen.push(h["timestamp"].as_i64().unwrap());
            assert_eq!(h["id"], format!("app_logs/{}/{}", h["partition"], h["offset"]));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let expected: Vec<i64> = (120..180).rev().map(|i| BASE_MS + i * 60_000).collect();
    assert_eq!(seen, expected, "newest first, every event of the hour once");

    // Facets over every match; highlights of the matched words; the full event.
    let (st, v) =
        s.search(&[("topic", "app_logs"), ("q", "timeout"), ("facets", "service,level"), ("limit", "2")]).await;
    assert_eq!(st, 200, "{v}");
    let services: u64 = v["facets"]["service"].as_array().unwrap().iter().map(|f| f["count"].as_u64().unwrap()).sum();
    assert_eq!(services, 86, "{v}");
    assert_eq!(v["facets"]["service"][0]["value"], "checkout", "{v}");
    let hit = &v["hits"][0];
    assert_eq!(hit["timestamp"], BASE_MS + 595 * 60_000, "the newest timeout first: {v}");
    assert_eq!(hit["event"]["message"], "order 595 failed: upstream timeout from inventory");
    assert_eq!(hit["highlights"]["message"][0], "order 595 failed: upstream <em>timeout</em> from inventory");

    // By score: a document with the term twice ranks first.
    s.produce("app_logs", vec![json!({"timestamp": ts(BASE_MS), "value": {"message": "timeout timeout timeout"}})])
        .await;
    s.index_until("app_logs", |v| v["documents"] == 601).await;
    let (_, v) = s.search(&[("topic", "app_logs"), ("q", "timeout"), ("sort", "score"), ("limit", "1")]).await;
    assert_eq!(v["hits"][0]["event"]["message"], "timeout timeout timeout", "{v}");
    assert!(v["next_cursor"].as_str().is_some());

    // Errors: position of a syntax error, unknown fields, unknown topics, bad definitions, bad parameters.
    let (st, v) = s.search(&[("topic", "app_logs"), ("q", "service:checkout AND (timeout")]).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_query");
    assert!(v["error"]["message"].as_str().unwrap().contains("position"), "{v}");
    let (st, v) = s.search(&[("topic", "app_logs"), ("q", "nosuch:x")]).await;
    assert_eq!(st, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown field `nosuch`"), "{v}");
    let (st, v) = s.search(&[("topic", "nope"), ("q", "x")]).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("index_not_found")), "{v}");
    let (st, v) = s.search(&[("topic", "app_logs"), ("limit", "0")]).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.search(&[("topic", "app_logs"), ("from", "yesterday")]).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.search(&[("topic", "app_logs"), ("facets", "message")]).await;
    assert_eq!(st, 200, "message keeps exact values by default (short strings): {v}");
    let (st, v) = s.put("/v1/topics/app_logs/index", json!({"fields": {"x": {"type": "blob"}}})).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.put("/v1/topics/nope/index", json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("topic_not_found")), "{v}");

    // The CLI prints the same search.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["search", "--topic", "app_logs", "service:checkout AND timeout", "-n", "2", "--facets", "level"])
        .args(["--server", &s.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2 of 29 matching events"), "{text}");
    assert!(text.contains("upstream *timeout*"), "{text}");
    assert!(text.contains("next page: --cursor"), "{text}");

    // Redefining rebuilds from the log; deleting removes the index and its files.
    let def = json!({"fields": {"message": {"type": "text", "analyzer": "en_stem"}}, "stored": ["message"]});
    let (st, v) = s.put("/v1/topics/app_logs/index", def).await;
    assert_eq!(st, 200, "{v}");
    s.index_until("app_logs", |v| v["documents"] == 601).await;
    let (_, v) = s.search(&[("topic", "app_logs"), ("q", "fail"), ("limit", "1")]).await;
    assert_eq!(total(&v), 86, "en_stem: fail matches failed: {v}");
    assert_eq!(v["hits"][0]["event"].as_object().unwrap().len(), 1, "only stored fields are kept: {v}");
    let r = s.http.delete(format!("{}/v1/topics/app_logs/index", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (st, _) = s.get("/v1/topics/app_logs/index").await;
    assert_eq!(st, 404);
    assert!(!s.data().join("search").join("app_logs").exists(), "index files removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_searchable_within_the_refresh_interval() {
    // Default refresh (1 s). The bound checked here is generous (shared CI machines); `sluice bench search`
    // measures the real latency.
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "live", "partitions": 2})).await;
    assert_eq!(st, 201);
    let def = json!({"fields": {"message": {"type": "text"}}});
    let (st, v) = s.put("/v1/topics/live/index", def).await;
    assert_eq!(st, 200, "{v}");
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let token = format!("needle{i}x{}", rand::random::<u32>());
        let sent = Instant::now();
        s.produce("live", vec![json!({"value": {"message": format!("found the {token} here")}})]).await;
        loop {
            let (st, v) = s.search(&[("topic", "live"), ("q", token.as_str())]).await;
            assert_eq!(st, 200, "{v}");
            if v["total"] == 1 {
                break;
            }
            assert!(sent.elapsed() < Duration::from_secs(10), "{token} not searchable after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst = worst.max(sent.elapsed());
    }
    eprintln!("worst time from acknowledgement to searchable: {worst:?}");
    assert!(worst < Duration::from_secs(5), "searchable after {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_on_an_empty_json_topic_is_mapped_from_its_first_events() {
    // Regression (issue 18): `{}` on an empty JSON topic answered 400. Like Elasticsearch, the index is created
    // first and mapped from the data that arrives, with the same rules as inference from existing events.
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "fresh", "partitions": 2})).await;
    assert_eq!(st, 201);
    let (st, v) = s.put("/v1/topics/fresh/index", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "waiting_for_events", "{v}");
    assert_eq!(v["definition"]["fields"], json!({}), "{v}");
    let (st, v) = s.search(&[("topic", "fresh"), ("q", "*")]).await;
    assert_eq!((st, v["total"].as_u64()), (200, Some(0)), "{v}");
    // Asking again keeps the waiting index.
    let (st, v) = s.put("/v1/topics/fresh/index", json!({})).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("waiting_for_events")), "{v}");

    s.produce("fresh", log_events().into_iter().take(50).collect()).await;
    let v = s.index_until("fresh", |v| v["state"] == "live" && v["documents"] == 50).await;
    let fields = &v["definition"]["fields"];
    assert_eq!(fields["message"]["type"], "text", "{v}");
    assert_eq!(fields["service"]["type"], "text", "{v}");
    assert_eq!(fields["service"]["keyword"], true, "{v}");
    assert_eq!(fields["latency_ms"]["type"], "number", "{v}");
    assert_eq!(fields["http.status"]["type"], "number", "{v}");
    let (st, v) = s.search(&[("topic", "fresh"), ("q", "timeout AND http.status:504")]).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["total"].as_u64(), Some(8), "every 7th of 50 events: {v}");
    let (_, v) = s.search(&[("topic", "fresh"), ("q", "*"), ("facets", "service")]).await;
    let checkout = v["facets"]["service"].as_array().unwrap().iter().find(|f| f["value"] == "checkout").cloned();
    assert_eq!(checkout.map(|f| f["count"].clone()), Some(json!(17)), "{v}");
    // The mapping is kept: later events are indexed with it.
    s.produce("fresh", log_events().into_iter().skip(50).take(10).collect()).await;
    s.index_until("fresh", |v| v["documents"] == 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_topics_get_defaults_from_their_schema_and_indexes_survive_restarts() {
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "orders", "partitions": 1})).await;
    assert_eq!(st, 201);
    let schema = json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "note", "type": "string"},
        {"name": "state", "type": {"type": "enum", "name": "S", "symbols": ["NEW", "PAID"]}},
        {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}}]});
    let (st, v) = s.post("/subjects/orders-value/versions", json!({"schema": schema.to_string()})).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.put("/v1/topics/orders/index", json!({})).await;
    assert_eq!(st, 200, "{v}");
    let f = &v["definition"]["fields"];
    assert_eq!(f["note"]["type"], "text", "{v}");
    assert_eq!(f["state"]["type"], "keyword", "{v}");
    assert_eq!(f["id"]["type"], "number", "{v}");
    assert_eq!(f["placed"]["type"], "time", "{v}");
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let state = if i % 4 == 0 { "PAID" } else { "NEW" };
            json!({"value": {"id": i, "note": format!("gift wrap {i}"), "state": state, "placed": ts(BASE_MS + i * 1000)}})
        })
        .collect();
    s.produce("orders", events).await;
    s.index_until("orders", |v| v["documents"] == 20).await;
    let (_, v) = s.search(&[("topic", "orders"), ("q", "state:PAID AND wrap"), ("limit", "50")]).await;
    assert_eq!(v["total"], 5, "{v}");
    assert_eq!(v["hits"][0]["event"]["note"], "gift wrap 16", "the event decoded from Avro: {v}");
    let (_, v) = s.search(&[("topic", "orders"), ("q", "placed:[2026-01-01T00:00:10Z TO *]"), ("limit", "1")]).await;
    assert_eq!(v["total"], 10, "time field range: {v}");

    // Restart gracefully: the index and its definition are still there, and new events are indexed.
    let (dir, port) = s.stop();
    let s = TestServer::start_in(dir, port, &[]).await;
    let (st, v) = s.get("/v1/topics/orders/index").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["documents"], 20, "{v}");
    s.produce("orders", vec![json!({"value": {"id": 99, "note": "late one", "state": "NEW", "placed": ts(BASE_MS)}})])
        .await;
    s.index_until("orders", |v| v["documents"] == 21).await;
    let (_, v) = s.search(&[("topic", "orders"), ("q", "late")]).await;
    assert_eq!(v["total"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_declared_in_the_config_are_created_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[http]
addr = "127.0.0.1:{port}"
[[topics]]
name = "audit"
partitions = 1
[search]
refresh_interval = "100ms"
[[search.indexes]]
topic = "audit"
partition = "1h"
retention = "forever"
[search.indexes.fields]
action = {{ type = "keyword" }}
detail = {{ type = "text", analyzer = "en_stem" }}
[[search.indexes]]
topic = "later"
[search.indexes.fields]
note = {{ type = "text" }}
"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let proc = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let s = TestServer::attach(dir, port, proc).await;
    let (st, v) = s.get("/v1/topics/audit/index").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["partition_ms"], 3_600_000, "{v}");
    s.produce(
        "audit",
        (0..3)
            .map(|i| json!({"timestamp": ts(BASE_MS + i * 3_600_000), "value": {"action": "login", "detail": "users logged in"}}))
            .collect(),
    )
    .await;
    let v = s.index_until("audit", |v| v["documents"] == 3).await;
    assert_eq!(v["partitions"].as_array().unwrap().len(), 3, "one partition per hour: {v}");
    let (_, v) = s.search(&[("topic", "audit"), ("q", "action:login AND log")]).await;
    assert_eq!(v["total"], 3, "{v}");
    let (_, v) = s.get("/v1/indexes").await;
    assert_eq!(v["indexes"][0]["topic"], "audit", "{v}");
    assert_eq!(v["indexes"].as_array().unwrap().len(), 1, "no index before its topic exists: {v}");
    // A config index whose topic did not exist at start-up is created when the topic appears.
    let (st, _) = s.post("/v1/topics", json!({"name": "later", "partitions": 1})).await;
    assert_eq!(st, 201);
    s.produce("later", vec![json!({"value": {"note": "finally here"}})]).await;
    s.index_until("later", |v| v["documents"] == 1).await;
    let (_, v) = s.search(&[("topic", "later"), ("q", "finally")]).await;
    assert_eq!(v["total"], 1, "{v}");
}
