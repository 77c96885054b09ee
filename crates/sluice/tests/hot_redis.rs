//! Hot results in Redis (`[hot] backend = "redis"`), shared by two `sluice serve` processes: a result one writes
//! is read from the other, and rows Redis loses come back from the job's changelog. Runs only when
//! `SLUICE_TEST_REDIS_URL` is set (`.ci/run` sets it); each test uses its own key prefix.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn redis_url() -> Option<String> {
    let url = std::env::var("SLUICE_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("SLUICE_TEST_REDIS_URL is not set: skipping");
    }
    url
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn prefix(test: &str) -> String {
    format!("sluice-it-{test}-{}", std::process::id())
}

async fn start(url: &str, prefix: &str) -> TestServer {
    TestServer::start(&[("SLUICE__HOT__BACKEND", "redis"), ("SLUICE__HOT__URL", url), ("SLUICE__HOT__PREFIX", prefix)])
        .await
}

/// `(window_start, page, n)` of each row.
fn rows(v: &Value) -> Vec<(String, String, i64)> {
    v["rows"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| {
            (
                r["window_start"].as_str().unwrap_or("").to_string(),
                r["page"].as_str().unwrap_or("").into(),
                r["n"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

async fn until(s: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = s.get(path).await;
        if st == 200 && done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {st} {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delete_prefix(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}

const JOB: &str = "CREATE JOB clicks_per_minute WITH (out_of_orderness = '0s', hot_retention = '1 hour', \
                   idle_timeout = 'off', buffer_timeout = '1s') AS SELECT window_start, page, count(*) AS n \
                   FROM clicks GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), page";

fn clicks(minute: i64, page: &str, n: i64) -> Vec<Value> {
    (0..n)
        .map(|k| json!({"key": page, "timestamp": ts(BASE_MS + minute * 60_000 + k * 1000), "value": {"page": page}}))
        .collect()
}

/// Instance A runs the job; instance B, with its own data directory and no job, answers `/results` and
/// `/results/latest` from Redis, within the job's buffer timeout of the event's acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_written_by_one_instance_is_read_from_another() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix("share");
    delete_prefix(&url, &prefix).await;
    let a = start(&url, &prefix).await;
    let b = start(&url, &prefix).await;
    let (st, v) = b.get("/v1/jobs/clicks_per_minute/results").await;
    assert_eq!(st, 404, "no instance runs the job yet: {v}");

    let (st, _) = a.post("/v1/topics", json!({"name": "clicks", "partitions": 1})).await;
    assert_eq!(st, 201);
    let (st, v) = a.post("/v1/jobs", json!({ "sql": JOB })).await;
    assert_eq!(st, 201, "{v}");
    a.produce("clicks", [clicks(0, "a", 3), clicks(0, "b", 2)].concat()).await;
    let expected = vec![(ts(BASE_MS), "a".to_string(), 3), (ts(BASE_MS), "b".to_string(), 2)];
    until(&b, "/v1/jobs/clicks_per_minute/results", |v| rows(v) == expected).await;

    // One more event: visible on B within the buffer timeout (1 s) of its acknowledgement.
    a.produce("clicks", clicks(0, "a", 1)).await;
    let acked = Instant::now();
    let v = until(&b, "/v1/jobs/clicks_per_minute/results?key=a", |v| rows(v).first().is_some_and(|r| r.2 == 4)).await;
    let seen = acked.elapsed();
    assert!(seen <= Duration::from_secs(1), "B saw A's result {seen:?} after the acknowledgement: {v}");

    let (st, la) = a.get("/v1/jobs/clicks_per_minute/results/latest").await;
    let (st_b, lb) = b.get("/v1/jobs/clicks_per_minute/results/latest").await;
    assert_eq!((st, st_b), (200, 200));
    assert_eq!(rows(&la), rows(&lb));
    assert_eq!(rows(&lb), vec![(ts(BASE_MS), "a".to_string(), 4), (ts(BASE_MS), "b".to_string(), 2)]);
    // The watermark is the job's, published through Redis.
    let (_, mine) = a.get("/v1/jobs/clicks_per_minute/results").await;
    assert!(mine["watermark"].is_string(), "{mine}");
    until(&b, "/v1/jobs/clicks_per_minute/results", |v| v["watermark"] == mine["watermark"]).await;

    // Dropping the job deletes its rows: B no longer finds it.
    let (st, v) = a.delete("/v1/jobs/clicks_per_minute").await;
    assert!(st < 300, "{st} {v}");
    let (st, v) = b.get("/v1/jobs/clicks_per_minute/results").await;
    assert_eq!(st, 404, "{v}");
    delete_prefix(&url, &prefix).await;
}

/// Redis loses every row (what a restart of a Redis that keeps nothing on disk does): the job notices at its next
/// write and refills from its changelog, final windows included, while keeping what it wrote since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_redis_lost_come_back_from_the_changelog() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix("refill");
    delete_prefix(&url, &prefix).await;
    let s = start(&url, &prefix).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "clicks", "partitions": 1})).await;
    assert_eq!(st, 201);
    let (st, v) = s.post("/v1/jobs", json!({ "sql": JOB })).await;
    assert_eq!(st, 201, "{v}");
    let mut events = Vec::new();
    for m in 0..5 {
        events.extend(clicks(m, "a", 2));
    }
    s.produce("clicks", events).await;
    let five = |v: &Value| rows(v).len() == 5 && rows(v).iter().all(|r| r.2 == 2);
    until(&s, "/v1/jobs/clicks_per_minute/results", five).await;
    delete_prefix(&url, &prefix).await;
    // The next write finds the rows gone; the refill brings back the four closed windows beside the new one.
    s.produce("clicks", clicks(5, "a", 3)).await;
    let v = until(&s, "/v1/jobs/clicks_per_minute/results", |v| rows(v).len() == 6).await;
    let mut expected: Vec<_> = (0..5).map(|m| (ts(BASE_MS + m * 60_000), "a".to_string(), 2)).collect();
    expected.push((ts(BASE_MS + 5 * 60_000), "a".to_string(), 3));
    assert_eq!(rows(&v), expected, "{v}");
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sluice_job_hot_refills_total{job=\"clicks_per_minute\"} 1"), "{metrics}");
    delete_prefix(&url, &prefix).await;
}

/// An unreachable Redis stops `sluice serve` at start with an error that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_clear_start_up_error() {
    if redis_url().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http-addr", &format!("127.0.0.1:{}", common::free_port())])
        .env("SLUICE__HOT__BACKEND", "redis")
        .env("SLUICE__HOT__URL", "redis://127.0.0.1:1")
        .env("SLUICE__HOT__TIMEOUT", "500ms")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[hot] backend = \"redis\"") && err.contains("127.0.0.1:1"), "{err}");
}
