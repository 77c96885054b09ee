//! `GET /v1/status` as a user sees it in the first seconds after start, long before the periodic disk walk.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_config::HumanDuration;

/// Bytes the topic's partitions hold, as the log reports them.
async fn log_bytes(s: &TestServer, topic: &str) -> u64 {
    let (_, t) = s.get(&format!("/v1/topics/{topic}")).await;
    t["partition_details"].as_array().expect("partition details").iter().filter_map(|p| p["size_bytes"].as_u64()).sum()
}

/// Polls `GET /v1/status` until its `log` area holds at least `bytes` (a few seconds at most).
async fn wait_log_area(s: &TestServer, bytes: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (st, v) = s.get("/v1/status").await;
        let log = v["disk"]["areas"]["log"].as_u64().unwrap_or(0);
        if st == StatusCode::OK && log >= bytes {
            return v;
        }
        assert!(Instant::now() < deadline, "the status does not show the log's {bytes} bytes: {st} {}", v["disk"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(s: &TestServer, topic: &str, from: usize) {
    let events: Vec<Value> = (from..from + 200).map(|n| json!({"value": {"n": n, "pad": "x".repeat(100)}})).collect();
    let (st, b) = s.post(&format!("/v1/topics/{topic}/events"), Value::Array(events).to_string()).await;
    assert_eq!((st, b["accepted"].as_u64()), (StatusCode::OK, Some(200)), "{b}");
}

#[tokio::test]
async fn disk_usage_is_current_from_the_first_request() {
    // The periodic walk would come only in an hour.
    let s = TestServer::start(|c| c.alerts.disk_scan_interval = HumanDuration(Duration::from_secs(3600))).await;
    s.create_topic("requests", 2).await;
    produce(&s, "requests", 0).await;
    let first = log_bytes(&s, "requests").await;
    assert!(first > 20_000, "{first}");
    let v = wait_log_area(&s, first).await;
    let total = v["disk"]["data_dir_bytes"].as_u64().expect("data_dir_bytes");
    assert!(total >= first, "the total covers the areas: {}", v["disk"]);
    // And it follows what is written next.
    produce(&s, "requests", 200).await;
    let second = log_bytes(&s, "requests").await;
    assert!(second > first, "{first} -> {second}");
    wait_log_area(&s, second).await;
    s.stop().await;
}
