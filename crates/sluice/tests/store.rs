//! The time-series store end to end through the real binary: JSON topics become typed tables, SQL over them
//! (time_bucket, errors, formats, limits), schema evolution of an Avro topic, retention over the API, job results
//! answered from the store for windows the hot path no longer holds, and the Parquet files read by pyarrow.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

async fn start(env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![("SLUICE__STORE__FLUSH_INTERVAL", "200ms")];
    all.extend_from_slice(env);
    TestServer::start(&all).await
}

impl TestServer {
    /// `POST /v1/query` asking for another format by `Accept`; the raw response.
    async fn query_as(&self, accept: &str, sql: &str) -> reqwest::Response {
        let req = self.http.post(format!("{}/v1/query", self.base)).header("accept", accept);
        req.json(&json!({ "sql": sql })).send().await.unwrap()
    }

    /// Runs `sql` until `done` accepts the answer (the sinks apply events within a few hundred ms).
    async fn query_until(&self, sql: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, v) = self.query(sql).await;
            // A new topic's table appears once its sink starts (within a second).
            let pending = status == 400 && v["error"]["message"].as_str().is_some_and(|m| m.contains("not found"));
            if !pending {
                assert_eq!(status, 200, "{sql}: {v}");
                if done(&v) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "{sql}: still {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn http_events(n: usize) -> Vec<Value> {
    let services = ["api", "auth", "web"];
    (0..n)
        .map(|i| {
            // Integral and fractional latencies: the column widens to double, nothing is lost.
            let latency = if i % 2 == 0 { json!(i % 100) } else { json!((i % 100) as f64 + 0.5) };
            json!({
                "timestamp": ts(BASE_MS + (i as i64) * 1000),
                "key": services[i % 3],
                "value": {"service": services[i % 3], "status": if i % 10 == 0 { 500 } else { 200 },
                          "latency_ms": latency, "http": {"method": "GET", "path": format!("/p/{}", i % 7)}}
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_topics_become_typed_tables_and_answer_sql() {
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "http_requests", "partitions": 2})).await;
    assert_eq!(st, 201);
    s.produce("http_requests", http_events(600)).await;
    // A value of the wrong type for its column is kept as text in `_extra`, never dropped.
    s.produce(
        "http_requests",
        vec![json!({"timestamp": ts(BASE_MS), "value": {"service": "api", "status": "oops", "latency_ms": 1}})],
    )
    .await;

    let v = s.query_until("SELECT count(*) AS n FROM http_requests", |v| v["rows"][0]["n"] == 601).await;
    assert_eq!(v["rows"][0]["n"], 601, "{v}");
    assert_eq!(v["columns"][0], json!({"name": "n", "type": "bigint"}));

    let (st, t) = s.get("/v1/tables/http_requests").await;
    assert_eq!(st, 200, "{t}");
    let types: std::collections::BTreeMap<String, String> = t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["type"].as_str().unwrap().to_string()))
        .collect();
    for (col, ty) in [("service", "utf8"), ("status", "int64"), ("latency_ms", "float64"), ("http.method", "utf8")] {
        assert!(types.get(col).is_some_and(|t| t.contains(ty)), "column {col} should be {ty}: {types:?}");
    }
    for meta in ["event_time", "ingest_time", "partition", "offset", "key", "_extra"] {
        assert!(types.contains_key(meta), "column {meta} missing: {types:?}");
    }
    assert_eq!(t["conflicts"].as_u64(), Some(1), "{t}");
    let (_, v) = s.query("SELECT _extra FROM http_requests WHERE _extra IS NOT NULL").await;
    assert_eq!(v["rows"][0]["_extra"].as_str().map(|x| x.contains("oops")), Some(true), "{v}");

    // The issue's own query shape, with time_bucket's string interval.
    let (st, v) = s
        .query(
            "SELECT time_bucket('1 minute', event_time) AS m, service, count(*) AS n, avg(latency_ms) AS avg_ms \
             FROM http_requests WHERE status <> 0 OR status IS NULL GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows[0]["m"], "2026-01-01T00:00:00.000Z", "{}", rows[0]);
    let total: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap()).sum();
    assert_eq!(total, 601);
    // 600 events one second apart: 10 minutes, 20 per service per minute (plus the conflicting one).
    assert_eq!(rows.len(), 30, "{rows:?}");
    let (_, v) = s.query("SELECT count(DISTINCT \"http.path\") AS paths, approx_percentile_cont(latency_ms, 0.5) AS p50 FROM http_requests").await;
    assert_eq!(v["rows"][0]["paths"], 7, "{v}");

    // Errors: the parser's message with its position, 400; writes refused.
    let (st, v) = s.query("SELEC 1").await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_query");
    let (st, v) = s.query("SELECT nope FROM http_requests").await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"), "{v}");
    let (st, v) = s.query("DROP TABLE http_requests").await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.query("INSERT INTO http_requests (service) VALUES ('x')").await;
    assert_eq!(st, 400, "{v}");

    // CSV and Arrow IPC by Accept header.
    let r = s
        .query_as("text/csv", "SELECT service, count(*) AS n FROM http_requests GROUP BY service ORDER BY service")
        .await;
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().next(), Some("service,n"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let r = s.query_as("application/vnd.apache.arrow.stream", "SELECT 1 AS one").await;
    assert_eq!(r.headers()["content-type"], "application/vnd.apache.arrow.stream");
    let ipc = r.bytes().await.unwrap();
    assert!(
        ipc.len() > 8 && ipc.starts_with(&[0xff, 0xff, 0xff, 0xff]),
        "an IPC stream: {:?}",
        &ipc[..8.min(ipc.len())]
    );

    // Retention over the API drops whole chunks older than it (the events are from January 2026).
    let r = s
        .http
        .put(format!("{}/v1/tables/http_requests/retention", s.base))
        .json(&json!({"retention": "1d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v = s.query_until("SELECT count(*) AS n FROM http_requests", |v| v["rows"][0]["n"] == 0).await;
    assert_eq!(v["rows"][0]["n"], 0, "retention dropped the old chunks: {v}");
    let (st, v) = s.get("/v1/tables/nope").await;
    assert_eq!(st, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_limits_cancel_and_the_server_keeps_serving() {
    let s = start(&[("SLUICE__STORE__QUERY_TIMEOUT", "2s"), ("SLUICE__STORE__QUERY_MEMORY_LIMIT", "1MiB")]).await;
    // Three million groups need far more than 1 MiB of hash table.
    let (st, v) =
        s.query("SELECT x, count(*) FROM generate_series(1, 3000000) t(x) GROUP BY x ORDER BY 2 DESC, 1 LIMIT 3").await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "resources_exhausted");
    // A triple self-join of a 1,000-row table: a billion rows, far beyond 2 s.
    let (st, _) = s.post("/v1/topics", json!({"name": "t", "partitions": 1})).await;
    assert_eq!(st, 201);
    s.produce("t", (0..1000).map(|i| json!({"value": {"x": i}})).collect()).await;
    s.query_until("SELECT count(*) AS n FROM t", |v| v["rows"][0]["n"] == 1000).await;
    let started = Instant::now();
    let (st, v) = s.query("SELECT count(*) FROM t a, t b, t c WHERE a.x + b.x + c.x >= 0").await;
    assert_eq!(st, 408, "{v}");
    assert_eq!(v["error"]["code"], "query_timeout");
    assert!(started.elapsed() < Duration::from_secs(8), "cancelled promptly: {:?}", started.elapsed());
    let (st, v) = s.query("SELECT 41 + 1 AS answer").await;
    assert_eq!((st, &v["rows"][0]["answer"]), (200, &json!(42)), "{v}");
    let (st, _) = s.get("/healthz").await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_topic_columns_follow_schema_evolution() {
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "orders", "partitions": 1})).await;
    assert_eq!(st, 201);
    let v1 = json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "amount", "type": "double"},
        {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}}]});
    let (st, v) = s.post("/subjects/orders-value/versions", json!({"schema": v1.to_string()})).await;
    assert_eq!(st, 200, "{v}");
    s.produce(
        "orders",
        (0..5).map(|i| json!({"value": {"id": i, "amount": 1.5, "placed": ts(BASE_MS + i * 1000)}})).collect(),
    )
    .await;
    s.query_until("SELECT count(*) AS n FROM orders", |v| v["rows"][0]["n"] == 5).await;
    let v2 = json!({"type": "record", "name": "Order", "fields": [
        {"name": "id", "type": "long"}, {"name": "amount", "type": "double"},
        {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "coupon", "type": ["null", "string"], "default": null}]});
    let (st, v) = s.post("/subjects/orders-value/versions", json!({"schema": v2.to_string()})).await;
    assert_eq!(st, 200, "{v}");
    s.produce(
        "orders",
        (5..8)
            .map(|i| json!({"value": {"id": i, "amount": 2.0, "placed": ts(BASE_MS + i * 1000), "coupon": {"string": "X"}}}))
            .collect(),
    )
    .await;
    s.query_until("SELECT count(*) AS n FROM orders", |v| v["rows"][0]["n"] == 8).await;
    let (st, v) = s.query("SELECT id, coupon, placed, schema_id FROM orders ORDER BY id").await;
    assert_eq!(st, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "{v}");
    assert!(rows[..5].iter().all(|r| r["coupon"].is_null()), "old rows read the new column as null: {v}");
    assert!(rows[5..].iter().all(|r| r["coupon"] == "X"), "{v}");
    assert_eq!(rows[0]["placed"], "2026-01-01T00:00:00.000Z", "timestamp-millis is a timestamp column: {v}");
    assert_ne!(rows[0]["schema_id"], rows[7]["schema_id"], "each row keeps its writer schema id: {v}");
}

/// Right after `CREATE JOB` the results table answers with every column of the job, typed from its plan and
/// from the source's fields, and no rows; the last window, which no later event closes, reaches the store once
/// the idle partitions let the watermark follow the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_jobs_table_has_its_columns_and_idle_input_closes_the_last_window() {
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "reqs", "partitions": 2})).await;
    assert_eq!(st, 201);
    // Recent events (the clock must be past their windows), all in one minute, none after it.
    let now = chrono::Utc::now().timestamp_millis();
    let minute = (now / 60_000 - 2) * 60_000;
    let events: Vec<Value> = (0..6)
        .map(|i| json!({"key": format!("k{i}"), "timestamp": ts(minute + i * 1000),
                        "value": {"service": if i % 2 == 0 { "api" } else { "web" }, "status": 500, "latency_ms": 10 * i}}))
        .collect();
    s.produce("reqs", events).await;
    s.query_until("SELECT count(*) AS n FROM reqs", |v| v["rows"][0]["n"] == 6).await;
    let sql = "CREATE JOB errs WITH (idle_timeout = '1s') AS SELECT window_start, service, count(*) AS errors, \
               avg(latency_ms) AS avg_ms, max(latency_ms) AS worst FROM reqs WHERE status >= 500 \
               GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";
    let (st, v) = s.post("/v1/jobs", json!({ "sql": sql })).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.query("SELECT window_start, service, errors, avg_ms, worst FROM errs").await;
    assert_eq!(st, 200, "{v}");
    let types: Vec<(&str, &str)> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("window_start", "timestamp"),
            ("service", "text"),
            ("errors", "bigint"),
            ("avg_ms", "double"),
            ("worst", "bigint")
        ],
        "{v}"
    );
    // Both windows close though no event follows them: every partition idles past 1 s.
    let v = s
        .query_until("SELECT service, errors, worst FROM errs ORDER BY service", |v| {
            v["rows"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    assert_eq!(
        v["rows"],
        json!([{"service": "api", "errors": 3, "worst": 40}, {"service": "web", "errors": 3, "worst": 50}])
    );
    let (_, job) = s.get("/v1/jobs/errs").await;
    assert!(job["watermark"].as_str().is_some_and(|w| w > ts(minute + 60_000).as_str()), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_results_come_from_the_store_once_the_hot_path_dropped_them() {
    let s = start(&[]).await;
    // One partition, so the watermark does not wait for an idle one.
    let (st, _) = s.post("/v1/topics", json!({"name": "clicks", "partitions": 1})).await;
    assert_eq!(st, 201);
    let sql = "CREATE JOB clicks_per_minute WITH (out_of_orderness = '0s', hot_retention = '3 minutes', \
               idle_timeout = 'off') AS SELECT window_start, page, count(*) AS n FROM clicks \
               GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), page";
    let (st, v) = s.post("/v1/jobs", json!({ "sql": sql })).await;
    assert_eq!(st, 201, "{v}");
    // 30 minutes, 2 pages, 3 clicks per page per minute; then one event a minute later closes all 30 windows, and
    // the hot path (3 minutes) keeps only the last few of them.
    let mut events = Vec::new();
    for m in 0..30i64 {
        for page in ["a", "b"] {
            for k in 0..3 {
                events.push(json!({"key": page, "timestamp": ts(BASE_MS + m * 60_000 + k * 1000),
                                   "value": {"page": page}}));
            }
        }
    }
    for page in ["a", "b"] {
        events.push(json!({"key": page, "timestamp": ts(BASE_MS + 31 * 60_000), "value": {"page": page}}));
    }
    s.produce("clicks", events).await;
    s.query_until("SELECT count(*) AS n FROM clicks_per_minute", |v| v["rows"][0]["n"] == 60).await;
    let (st, hot) = s.get("/v1/jobs/clicks_per_minute/results/latest").await;
    assert_eq!(st, 200, "{hot}");
    let from = ts(BASE_MS);
    let to = ts(BASE_MS + 30 * 60_000);
    let (st, v) = s.get(&format!("/v1/jobs/clicks_per_minute/results?from={from}&to={to}")).await;
    assert_eq!(st, 200, "{v}");
    let rows = v["rows"].as_array().unwrap();
    // Every window of the 30 minutes once: the older ones from the store, the last ones from memory.
    let got: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["window_start"].as_str().unwrap().to_string(),
                r["page"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> =
        (0..30i64).flat_map(|m| ["a", "b"].map(|p| (ts(BASE_MS + m * 60_000), p.to_string(), 3))).collect();
    assert_eq!(got, expected);
    // Same shape as hot rows: exactly the job's columns.
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{}", rows[0]);
    let (_, v) = s.get(&format!("/v1/jobs/clicks_per_minute/results?from={from}&to={to}&key=b")).await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 30, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_read_the_same_in_pyarrow() {
    if std::env::var("SLUICE_TEST_PYARROW").is_err() {
        eprintln!("skipped: set SLUICE_TEST_PYARROW=1 (needs python3 with pyarrow)");
        return;
    }
    let s = start(&[]).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "http_requests", "partitions": 2})).await;
    assert_eq!(st, 201);
    s.produce("http_requests", http_events(1000)).await;
    // Wait until every row is in files (nothing buffered).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, t) = s.get("/v1/tables/http_requests").await;
        if (t["rows"] == 1000 && t["buffered_rows"] == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, v) = s.query("SELECT count(*) AS n, sum(latency_ms) AS total, count(DISTINCT \"offset\") AS offsets, min(event_time) AS first FROM http_requests WHERE partition = 0").await;
    let script = r#"
import sys, glob, pyarrow.parquet as pq, pyarrow.compute as pc, pyarrow as pa
files = sorted(glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True))
t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
t = t.filter(pc.equal(t["partition"], 0))
print(t.num_rows, pc.sum(t["latency_ms"]).as_py(), len(pc.unique(t["offset"])), pc.min(t["event_time"]).as_py().strftime("%Y-%m-%dT%H:%M:%S.000Z"))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(s.data().join("store").join("http_requests"))
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let row = &v["rows"][0];
    assert_eq!(parts[0], row["n"].to_string(), "rows: pyarrow {text} vs sluice {row}");
    assert_eq!(parts[1].parse::<f64>().unwrap(), row["total"].as_f64().unwrap(), "sum: pyarrow {text} vs sluice {row}");
    assert_eq!(parts[2], row["offsets"].to_string());
    assert_eq!(parts[3], row["first"].as_str().unwrap());
}
