//! The stream jobs API over HTTP, against a real server on a loopback port: the issue's example job created,
//! fed events with explicit timestamps and read back through `/v1/jobs/{job}/results` and `/results/latest`
//! (values checked against counts and averages computed here), every lifecycle operation (pause, resume,
//! replay in place and into a shadow job, drop), restart recovery, jobs declared in the config, stateless
//! jobs, metrics, and a schema-bound (Avro) source.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The issue's example, exactly as written.
const EXAMPLE: &str = "CREATE JOB errors_per_minute AS
SELECT window_start, window_end, service, count(*) AS errors,
       avg(latency_ms) AS avg_ms, approx_percentile(latency_ms, 0.99) AS p99_ms
FROM http_requests
WHERE status >= 500
GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";

/// The SQL's output columns, in SELECT order.
const COLUMNS: [&str; 6] = ["window_start", "window_end", "service", "errors", "avg_ms", "p99_ms"];

/// 2026-01-01T00:00:00Z: a minute boundary.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;

const SR: &str = "application/vnd.schemaregistry.v1+json";

/// The example under another name and source topic (for tests that run beside it in this process: job metrics
/// are process-wide and labelled by job name).
fn example_as(job: &str, topic: &str) -> String {
    EXAMPLE.replace("errors_per_minute", job).replace("http_requests", topic)
}

#[derive(Debug, Clone)]
struct Ev {
    ts: i64,
    service: &'static str,
    status: i64,
    latency_ms: i64,
}

impl Ev {
    fn value(&self) -> Value {
        json!({"service": self.service, "status": self.status, "latency_ms": self.latency_ms})
    }
}

/// xorshift64*: the same events on every machine.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// `per_minute` events in each minute of `minutes` (offsets from T0), in time order; about half are errors.
fn events(minutes: std::ops::Range<i64>, per_minute: i64, seed: u64) -> Vec<Ev> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::new();
    for m in minutes {
        for i in 0..per_minute {
            out.push(Ev {
                ts: T0 + m * MINUTE + i * (MINUTE / per_minute) + rng.below(100) as i64,
                service: ["api", "web", "auth"][rng.below(3) as usize],
                status: [200, 201, 404, 500, 502, 503][rng.below(6) as usize],
                latency_ms: 1 + rng.below(900) as i64,
            });
        }
    }
    out
}

/// Posts events (keyed by service, so each service's events stay in order in one partition); returns where
/// each landed as `(partition, offset)`.
async fn produce(s: &TestServer, topic: &str, evs: &[Ev]) -> Vec<(u32, u64)> {
    let mut at = Vec::new();
    for chunk in evs.chunks(500) {
        let body: Vec<Value> =
            chunk.iter().map(|e| json!({"key": e.service, "value": e.value(), "timestamp": e.ts})).collect();
        let (st, b) = s.post(&format!("/v1/topics/{topic}/events"), Value::from(body).to_string()).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        assert_eq!(b["accepted"].as_u64(), Some(chunk.len() as u64), "{b}");
        for r in b["results"].as_array().unwrap() {
            at.push((r["partition"].as_u64().unwrap() as u32, r["offset"].as_u64().unwrap()));
        }
    }
    at
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The example's results computed here: (window start, service) -> latencies of the errors in it.
type Model = BTreeMap<(i64, String), Vec<i64>>;

fn model(evs: &[Ev]) -> Model {
    let mut m: Model = BTreeMap::new();
    for e in evs.iter().filter(|e| e.status >= 500) {
        let start = e.ts.div_euclid(MINUTE) * MINUTE;
        m.entry((start, e.service.to_string())).or_default().push(e.latency_ms);
    }
    m
}

/// Checks one result row against the model's group: exactly the SQL's columns, exact count and average, and
/// the p99 within DDSketch's relative error of the exact (nearest-rank) quantile.
fn check_row(row: &Value, start: i64, service: &str, lat: &[i64]) -> Result<(), String> {
    let obj = row.as_object().ok_or_else(|| format!("row {row} is not an object"))?;
    let cols: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    if cols != COLUMNS.into_iter().collect() {
        return Err(format!("row {row} has columns {cols:?}, the SQL selects {COLUMNS:?}"));
    }
    let want = json!({"window_start": rfc3339(start), "window_end": rfc3339(start + MINUTE), "service": service,
                      "errors": lat.len()});
    for k in ["window_start", "window_end", "service", "errors"] {
        if row[k] != want[k] {
            return Err(format!("row {row}: {k} is {}, expected {}", row[k], want[k]));
        }
    }
    let avg = lat.iter().sum::<i64>() as f64 / lat.len() as f64;
    let got = row["avg_ms"].as_f64().ok_or_else(|| format!("row {row}: avg_ms is not a number"))?;
    if (got - avg).abs() > 1e-9 * avg {
        return Err(format!("row {row}: avg_ms {got}, expected {avg}"));
    }
    let mut sorted = lat.to_vec();
    sorted.sort_unstable();
    // Nearest rank (percentile_disc): element ceil(0.99 * n) - 1.
    let x = sorted[((0.99 * sorted.len() as f64).ceil() as usize).max(1) - 1] as f64;
    let p99 = row["p99_ms"].as_f64().ok_or_else(|| format!("row {row}: p99_ms is not a number"))?;
    if p99 < x * 0.98 || p99 > x * 1.02 {
        return Err(format!("row {row}: p99_ms {p99} is not within 2% of the exact quantile {x}"));
    }
    Ok(())
}

/// `rows` must be exactly the model's groups, in (window start, key) order.
fn check_rows(rows: &Value, want: &Model) -> Result<(), String> {
    check_seq(rows, want.iter().collect())
}

/// `rows` must be exactly these groups, in this order.
fn check_seq(rows: &Value, want: Vec<(&(i64, String), &Vec<i64>)>) -> Result<(), String> {
    let rows = rows.as_array().ok_or_else(|| format!("rows {rows} is not an array"))?;
    if rows.len() != want.len() {
        return Err(format!("{} rows, expected {}: {}", rows.len(), want.len(), Value::from(rows.clone())));
    }
    for (row, ((start, service), lat)) in rows.iter().zip(want) {
        check_row(row, *start, service, lat)?;
    }
    Ok(())
}

/// Polls `f` until it answers `Ok` or `secs` pass (then fails with its last error).
async fn eventually<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {secs} s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// `GET` a results path; the body must be `{"rows": [...], ...}`.
async fn rows(s: &TestServer, path: &str) -> Value {
    let (st, b) = s.get(path).await;
    assert_eq!(st, StatusCode::OK, "{path}: {b}");
    assert!(b["rows"].is_array(), "{path}: {b}");
    b["rows"].clone()
}

/// Waits until the job's hot results are exactly the model.
async fn wait_results(s: &TestServer, job: &str, want: &Model) {
    let path = format!("/v1/jobs/{job}/results");
    eventually(&format!("{job} results"), 30, async || check_rows(&rows(s, &path).await, want)).await;
}

async fn describe(s: &TestServer, job: &str) -> Value {
    let (st, b) = s.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b
}

/// Waits until the job has read `n` records and has no lag.
async fn wait_caught_up(s: &TestServer, job: &str, n: u64) -> Value {
    eventually(&format!("{job} catching up"), 30, async || {
        let d = describe(s, job).await;
        if d["records_in"] == n && d["lag"] == 0 { Ok(d) } else { Err(format!("{d}")) }
    })
    .await
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

async fn create_job(s: &TestServer, sql: &str) -> (StatusCode, Value) {
    s.post("/v1/jobs", json!({ "sql": sql }).to_string()).await
}

async fn delete(s: &TestServer, path: &str) -> (StatusCode, Value) {
    let a = s.send(Method::DELETE, path, None, None).await;
    (a.status, a.json)
}

/// Every record of a topic: per partition, in offset order (nothing while it does not exist: jobs create their
/// output topics when they start).
async fn read_topic(s: &TestServer, topic: &str) -> Vec<Vec<Value>> {
    let (st, d) = s.get(&format!("/v1/topics/{topic}")).await;
    if st == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    assert_eq!(st, StatusCode::OK, "{d}");
    let mut out = Vec::new();
    for p in 0..d["partition_details"].as_array().unwrap().len() {
        let mut events = Vec::new();
        let mut offset = 0;
        loop {
            let (st, r) = s.get(&format!("/v1/topics/{topic}/events?partition={p}&offset={offset}&limit=1000")).await;
            assert_eq!(st, StatusCode::OK, "{r}");
            let page = r["events"].as_array().unwrap();
            if page.is_empty() {
                break;
            }
            events.extend(page.iter().cloned());
            offset = r["next_offset"].as_u64().unwrap();
        }
        out.push(events);
    }
    out
}

/// A changelog topic folded into a table: the last value per key wins, `null` deletes.
async fn changelog_table(s: &TestServer, topic: &str) -> BTreeMap<String, Value> {
    let mut table = BTreeMap::new();
    for part in read_topic(s, topic).await {
        for e in part {
            let key = e["key"].as_str().unwrap().to_string();
            if e["value"].is_null() {
                table.remove(&key);
            } else {
                table.insert(key, e["value"].clone());
            }
        }
    }
    table
}

/// A folded changelog's rows in results order (window start, then service).
fn table_rows(table: &BTreeMap<String, Value>) -> Value {
    let mut rows: Vec<Value> = table.values().cloned().collect();
    rows.sort_by_key(|r| (r["window_start"].as_str().unwrap().to_string(), r["service"].as_str().unwrap().to_string()));
    Value::from(rows)
}

/// Waits until the changelog topic folds into exactly the model; returns the table.
async fn wait_changelog(s: &TestServer, topic: &str, want: &Model) -> BTreeMap<String, Value> {
    eventually(&format!("changelog {topic}"), 30, async || {
        let t = changelog_table(s, topic).await;
        check_rows(&table_rows(&t), want).map(|_| t)
    })
    .await
}

fn sorted_by_key(model: &Model) -> Vec<(i64, String)> {
    model.keys().cloned().collect()
}

// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_job_lifecycle_over_http() {
    let s = TestServer::start(|c| {
        c.stream.parallelism = 2;
        c.stream.checkpoint_interval = sluice_config::HumanDuration(Duration::from_millis(200));
    })
    .await;
    s.create_topic("http_requests", 2).await;
    let first = events(0..2, 60, 1);
    produce(&s, "http_requests", &first).await;
    let want = model(&first);
    assert!(want.len() >= 5 && want.values().any(|l| l.len() > 3), "the input must give several rows");

    // Create: 201 with the job's description.
    let (st, b) = create_job(&s, EXAMPLE).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "errors_per_minute");
    assert_eq!(b["sql"], EXAMPLE);
    assert_eq!(b["state"], "running");
    assert_eq!(b["kind"], "windowed");
    assert_eq!(b["source"], "http_requests");
    assert_eq!(b["output_topic"], "errors_per_minute.results");
    assert_eq!(b["late_topic"], "errors_per_minute.late");
    assert_eq!(b["columns"], json!(COLUMNS));
    // A duplicate is a conflict; unknown jobs are 404 everywhere.
    let (st, b) = create_job(&s, EXAMPLE).await;
    assert_error(st, &b, StatusCode::CONFLICT, "job_exists");
    for path in ["/v1/jobs/nope", "/v1/jobs/nope/results", "/v1/jobs/nope/results/latest"] {
        let (st, b) = s.get(path).await;
        assert_error(st, &b, StatusCode::NOT_FOUND, "job_not_found");
    }
    for path in ["/v1/jobs/nope/pause", "/v1/jobs/nope/resume", "/v1/jobs/nope/replay"] {
        let (st, b) = s.post(path, "").await;
        assert_error(st, &b, StatusCode::NOT_FOUND, "job_not_found");
    }
    let (st, b) = delete(&s, "/v1/jobs/nope").await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "job_not_found");

    // Results: every group, exactly the SQL's columns, right counts and averages.
    wait_results(&s, "errors_per_minute", &want).await;
    let d = wait_caught_up(&s, "errors_per_minute", first.len() as u64).await;
    // One key over one window.
    let (start, service) = sorted_by_key(&want)[0].clone();
    let q = format!(
        "/v1/jobs/errors_per_minute/results?key={service}&from={}&to={}",
        rfc3339(start),
        rfc3339(start + MINUTE)
    );
    let (st, body) = s.get(&q).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let one: Model =
        want.iter().filter(|(k, _)| *k == &(start, service.clone())).map(|(k, v)| (k.clone(), v.clone())).collect();
    check_rows(&body["rows"], &one).unwrap_or_else(|e| panic!("{q}: {e}"));
    // Epoch milliseconds work as well; a range over both minutes gives the key's two windows.
    let q = format!("/v1/jobs/errors_per_minute/results?key={service}&from={T0}&to={}", T0 + 2 * MINUTE);
    let of_key: Model = want.iter().filter(|((_, k), _)| *k == service).map(|(k, v)| (k.clone(), v.clone())).collect();
    check_rows(&rows(&s, &q).await, &of_key).unwrap_or_else(|e| panic!("{q}: {e}"));
    // A range over the second minute only, every key.
    let q = format!("/v1/jobs/errors_per_minute/results?from={}&to={}", rfc3339(T0 + MINUTE), rfc3339(T0 + 2 * MINUTE));
    let second: Model =
        want.iter().filter(|((s, _), _)| *s == T0 + MINUTE).map(|(k, v)| (k.clone(), v.clone())).collect();
    check_rows(&rows(&s, &q).await, &second).unwrap_or_else(|e| panic!("{q}: {e}"));
    // Latest: the newest window of one key, or of each key (ordered by key).
    let mut newest: BTreeMap<&str, (&(i64, String), &Vec<i64>)> = BTreeMap::new();
    for (k, lat) in &want {
        newest.insert(k.1.as_str(), (k, lat)); // Model order: later windows replace earlier ones.
    }
    let latest = rows(&s, &format!("/v1/jobs/errors_per_minute/results/latest?key={service}")).await;
    check_seq(&latest, vec![newest[service.as_str()]]).unwrap_or_else(|e| panic!("latest of {service}: {e}"));
    let latest = rows(&s, "/v1/jobs/errors_per_minute/results/latest").await;
    check_seq(&latest, newest.values().copied().collect()).unwrap_or_else(|e| panic!("latest: {e}"));
    let (st, b) = s.get("/v1/jobs/errors_per_minute/results?from=yesterday").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_request");

    // Describe.
    assert_eq!(d["name"], "errors_per_minute");
    assert_eq!(d["state"], "running");
    assert_eq!(d["kind"], "windowed");
    assert_eq!(d["columns"], json!(COLUMNS));
    assert_eq!(d["records_in"], first.len());
    assert_eq!(d["lag"], 0);
    assert_eq!(d["hot_rows"], want.len(), "{d}");
    assert!(d["created_at_ms"].as_i64().unwrap() > 0, "{d}");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{d}");
    let read: u64 = parts.iter().map(|p| p["offset"].as_u64().unwrap()).sum();
    assert_eq!(read, first.len() as u64, "{d}");
    assert!(parts.iter().all(|p| p["offset"] == p["high_watermark"]), "{d}");
    // Every error event's latency to the hot results is measured (just after its row is upserted).
    let errors: usize = want.values().map(Vec::len).sum();
    let d = eventually("latency of every error", 10, async || {
        let d = describe(&s, "errors_per_minute").await;
        if d["latency_ms"]["count"] == errors { Ok(d) } else { Err(format!("{d}")) }
    })
    .await;
    assert!(d["latency_ms"]["p99"].as_f64().unwrap() >= 0.0, "{d}");
    eventually("a checkpoint", 10, async || {
        let d = describe(&s, "errors_per_minute").await;
        if d["last_checkpoint"]["epoch"].as_u64().is_some_and(|e| e > 0) { Ok(()) } else { Err(format!("{d}")) }
    })
    .await;
    // List.
    let (st, l) = s.get("/v1/jobs").await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = l["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["errors_per_minute"], "{l}");
    assert_eq!(l["jobs"][0]["state"], "running");

    // Metrics.
    let metrics = s.send(Method::GET, "/metrics", None, None).await.text;
    let line = |prefix: &str| metrics.lines().find(|l| l.starts_with(prefix)).map(str::to_string);
    let records_in = line("sluice_job_records_in_total{job=\"errors_per_minute\"}")
        .unwrap_or_else(|| panic!("no records_in metric for the job:\n{metrics}"));
    assert!(records_in.ends_with(&format!(" {}", first.len())), "{records_in}");
    assert!(metrics.contains("sluice_job_result_latency_seconds"), "{metrics}");
    let count = line("sluice_job_result_latency_seconds_count{job=\"errors_per_minute\"}")
        .unwrap_or_else(|| panic!("no latency histogram for the job:\n{metrics}"));
    assert!(!count.ends_with(" 0"), "{count}");

    // Pause: the state says so, and nothing moves while paused.
    let (st, b) = s.post("/v1/jobs/errors_per_minute/pause", "").await;
    assert_eq!((st, &b["state"]), (StatusCode::OK, &json!("paused")), "{b}");
    assert_eq!(describe(&s, "errors_per_minute").await["state"], "paused");
    let before = rows(&s, "/v1/jobs/errors_per_minute/results").await;
    let second_batch = events(2..3, 60, 2);
    produce(&s, "http_requests", &second_batch).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = describe(&s, "errors_per_minute").await;
    assert_eq!((&d["state"], &d["records_in"]), (&json!("paused"), &json!(first.len())), "{d}");
    assert_eq!(rows(&s, "/v1/jobs/errors_per_minute/results").await, before, "results changed while paused");
    let (_, l) = s.get("/v1/jobs").await;
    assert_eq!(l["jobs"][0]["state"], "paused", "{l}");
    // Pausing twice is fine.
    let (st, b) = s.post("/v1/jobs/errors_per_minute/pause", "").await;
    assert_eq!((st, &b["state"]), (StatusCode::OK, &json!("paused")), "{b}");

    // Resume: it catches up with what arrived meanwhile.
    let (st, b) = s.post("/v1/jobs/errors_per_minute/resume", "").await;
    assert_eq!((st, &b["state"]), (StatusCode::OK, &json!("running")), "{b}");
    let all: Vec<Ev> = first.iter().chain(&second_batch).cloned().collect();
    let want = model(&all);
    wait_results(&s, "errors_per_minute", &want).await;
    wait_caught_up(&s, "errors_per_minute", all.len() as u64).await;
    let results_before_replay = rows(&s, "/v1/jobs/errors_per_minute/results").await;
    let changelog = wait_changelog(&s, "errors_per_minute.results", &want).await;

    // Replay in place from the earliest offset: the same results again.
    let (st, b) = s.post("/v1/jobs/errors_per_minute/replay", r#"{"from":"earliest"}"#).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["state"], "running");
    wait_results(&s, "errors_per_minute", &want).await;
    wait_caught_up(&s, "errors_per_minute", all.len() as u64).await;
    assert_eq!(rows(&s, "/v1/jobs/errors_per_minute/results").await, results_before_replay);
    assert_eq!(wait_changelog(&s, "errors_per_minute.results", &want).await, changelog);
    let (st, b) = s.post("/v1/jobs/errors_per_minute/replay", r#"{"from":"last tuesday"}"#).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_request");

    // Replay into a shadow job: same rows, under the shadow's own topic.
    let (st, b) = s.post("/v1/jobs/errors_per_minute/replay", r#"{"from":"earliest","into":"epm_v2"}"#).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["name"], "epm_v2");
    assert_eq!(b["shadow_of"], "errors_per_minute");
    assert_eq!(b["output_topic"], "epm_v2.results");
    assert_eq!(b["columns"], json!(COLUMNS));
    wait_results(&s, "epm_v2", &want).await;
    wait_caught_up(&s, "epm_v2", all.len() as u64).await;
    assert_eq!(rows(&s, "/v1/jobs/epm_v2/results").await, results_before_replay);
    let shadow = wait_changelog(&s, "epm_v2.results", &want).await;
    assert_eq!(shadow, changelog, "the shadow's changelog differs from the job's");
    let (st, b) = s.post("/v1/jobs/errors_per_minute/replay", r#"{"from":"earliest","into":"epm_v2"}"#).await;
    assert_error(st, &b, StatusCode::CONFLICT, "job_exists");
    let (_, l) = s.get("/v1/jobs").await;
    let names: Vec<&str> = l["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["epm_v2", "errors_per_minute"], "{l}");

    // Drop: 204, then 404; the topics stay.
    for job in ["epm_v2", "errors_per_minute"] {
        let (st, b) = delete(&s, &format!("/v1/jobs/{job}")).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
        let (st, b) = s.get(&format!("/v1/jobs/{job}")).await;
        assert_error(st, &b, StatusCode::NOT_FOUND, "job_not_found");
        let (st, b) = s.get(&format!("/v1/jobs/{job}/results")).await;
        assert_error(st, &b, StatusCode::NOT_FOUND, "job_not_found");
        let (st, b) = delete(&s, &format!("/v1/jobs/{job}")).await;
        assert_error(st, &b, StatusCode::NOT_FOUND, "job_not_found");
    }
    let (_, l) = s.get("/v1/jobs").await;
    assert_eq!(l["jobs"], json!([]), "{l}");
    let metrics = s.send(Method::GET, "/metrics", None, None).await.text;
    assert!(!metrics.contains("job=\"errors_per_minute\""), "a dropped job's metrics remain");
    assert_eq!(changelog_table(&s, "errors_per_minute.results").await, changelog, "results topic kept");
    // The name is free again.
    let (st, b) = create_job(&s, EXAMPLE).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    wait_results(&s, "errors_per_minute", &want).await;
    s.stop().await;
}

/// A bad definition is a 400 `invalid_sql` whose message ends with the problem's line and column.
#[tokio::test]
async fn invalid_definitions_name_the_position() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 1).await;
    let line_col = |sql: &str, needle: &str, line: usize| -> (usize, usize) {
        let text = sql.lines().nth(line - 1).unwrap();
        (line, text.find(needle).unwrap_or_else(|| panic!("{needle} not on line {line}: {text}")) + 1)
    };
    let cases = [
        // A misspelt function on line 3.
        (
            EXAMPLE.replace("approx_percentile(", "approx_percentil("),
            "unknown function approx_percentil",
            "approx_percentil(",
            3,
        ),
        // A selected column that is not grouped, on line 2.
        (EXAMPLE.replace("MINUTE), service", "MINUTE)"), "service", "service", 2),
        // A syntax error (from the SQL parser): an empty SELECT item, at the second comma on line 2.
        (EXAMPLE.replace("AS errors,", "AS errors,,"), "expected: an expression", ",,", 2),
        // Without the comparison's right side, `GROUP` is read as a column name: `BY` is then unexpected.
        (EXAMPLE.replace(">= 500", ">="), "unexpected 'BY'", "BY", 6),
    ];
    for (sql, needle, at, line) in cases {
        let (st, b) = create_job(&s, &sql).await;
        assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_sql");
        let msg = b["error"]["message"].as_str().unwrap();
        let (l, mut c) = line_col(&sql, at, line);
        if at == ",," {
            c += 1;
        }
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert!(msg.ends_with(&format!(" at line {l}, column {c}")), "{msg:?}: expected line {l}, column {c}");
    }
    // Not SQL at all, a missing source topic, and a malformed request.
    let (st, b) = create_job(&s, "SELECT 1").await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_sql");
    assert!(b["error"]["message"].as_str().unwrap().ends_with("at line 1, column 1"), "{b}");
    let (st, b) = create_job(&s, &example_as("epm", "no_such_topic")).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "topic_not_found");
    let (st, b) = s.post("/v1/jobs", r#"{"sql":"CREATE JOB","sqll":1}"#).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_request");
    let (_, l) = s.get("/v1/jobs").await;
    assert_eq!(l["jobs"], json!([]), "nothing was created: {l}");
    s.stop().await;
}

/// `describe` reports events that arrived while the job was paused as lag.
#[tokio::test]
async fn lag_counts_events_that_arrive_while_paused() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 1).await;
    let first = events(0..1, 40, 3);
    produce(&s, "http_requests", &first).await;
    let (st, b) = create_job(&s, &example_as("epm_paused", "http_requests")).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    wait_caught_up(&s, "epm_paused", first.len() as u64).await;
    let (st, _) = s.post("/v1/jobs/epm_paused/pause", "").await;
    assert_eq!(st, StatusCode::OK);
    let more = events(1..2, 40, 4);
    produce(&s, "http_requests", &more).await;
    let d = describe(&s, "epm_paused").await;
    assert_eq!(d["state"], "paused");
    assert_eq!(d["lag"], more.len(), "the events produced while paused are not processed yet: {d}");
    s.stop().await;
}

/// Jobs survive a restart: they resume from their checkpoint (nothing is read twice) with the same results,
/// closed windows included, and go on with new events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_survive_a_restart() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 1).await;
    let first = events(0..3, 50, 5);
    produce(&s, "http_requests", &first).await;
    let (st, b) = create_job(&s, &example_as("epm_restart", "http_requests")).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let want = model(&first);
    wait_results(&s, "epm_restart", &want).await;
    wait_caught_up(&s, "epm_restart", first.len() as u64).await;
    // One partition: minute 2's events moved the watermark past the end of minutes 0 and 1, so those closed.
    let d = describe(&s, "epm_restart").await;
    assert!(d["watermark"].as_str().unwrap() > rfc3339(T0 + 2 * MINUTE).as_str(), "{d}");
    let before = rows(&s, "/v1/jobs/epm_restart/results").await;
    let changelog = wait_changelog(&s, "epm_restart.results", &want).await;

    let s = s.restart().await;
    let d = describe(&s, "epm_restart").await;
    assert_eq!(d["state"], "running", "{d}");
    assert_eq!(d["sql"], example_as("epm_restart", "http_requests"));
    // The durable results are intact and nothing was reprocessed.
    assert_eq!(changelog_table(&s, "epm_restart.results").await, changelog);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = describe(&s, "epm_restart").await;
    assert_eq!((&d["records_in"], &d["lag"]), (&json!(0), &json!(0)), "resumed from the checkpoint: {d}");
    // New events after the restart add to the restored state.
    let more = events(3..4, 50, 6);
    produce(&s, "http_requests", &more).await;
    let all: Vec<Ev> = first.iter().chain(&more).cloned().collect();
    let want_all = model(&all);
    wait_caught_up(&s, "epm_restart", more.len() as u64).await;
    wait_changelog(&s, "epm_restart.results", &want_all).await;
    // The hot results answer as before the restart, for the windows that had closed as well.
    let after = rows(&s, &format!("/v1/jobs/epm_restart/results?to={}", T0 + 3 * MINUTE)).await;
    assert_eq!(after, before, "the results read path lost rows across the restart");
    wait_results(&s, "epm_restart", &want_all).await;
    s.stop().await;
}

/// A job still open at shutdown (no window closed yet) comes back with its open windows and keeps counting
/// into them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_windows_continue_after_a_restart() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 2).await;
    let first: Vec<Ev> = events(0..1, 60, 7).into_iter().filter(|e| e.ts < T0 + 30_000).collect();
    produce(&s, "http_requests", &first).await;
    let (st, b) = create_job(&s, &example_as("epm_open", "http_requests")).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    wait_results(&s, "epm_open", &model(&first)).await;
    wait_caught_up(&s, "epm_open", first.len() as u64).await;
    let before = rows(&s, "/v1/jobs/epm_open/results").await;

    let s = s.restart().await;
    // Restored state goes back to the hot results at once.
    eventually("restored results", 10, async || {
        let now = rows(&s, "/v1/jobs/epm_open/results").await;
        if now == before { Ok(()) } else { Err(format!("{now} != {before}")) }
    })
    .await;
    let more: Vec<Ev> = events(0..1, 60, 8).into_iter().filter(|e| e.ts >= T0 + 30_000).collect();
    produce(&s, "http_requests", &more).await;
    let all: Vec<Ev> = first.iter().chain(&more).cloned().collect();
    wait_results(&s, "epm_open", &model(&all)).await;
    wait_caught_up(&s, "epm_open", more.len() as u64).await;
    wait_changelog(&s, "epm_open.results", &model(&all)).await;
    s.stop().await;
}

/// A job declared in the config file exists as soon as the server is ready, and runs.
#[tokio::test]
async fn jobs_declared_in_the_config_are_created_at_start() {
    let sql = example_as("epm_config", "http_requests");
    let s = TestServer::start(|c| {
        c.topics = vec![sluice_config::TopicConfig {
            name: "http_requests".into(),
            partitions: Some(2),
            retention: None,
            retention_bytes: None,
        }];
        c.jobs = vec![sluice_config::JobConfig { sql: sql.clone() }];
    })
    .await;
    let d = describe(&s, "epm_config").await;
    assert_eq!((&d["state"], &d["sql"]), (&json!("running"), &json!(sql)), "{d}");
    let created = d["created_at_ms"].clone();
    let evs = events(0..2, 40, 9);
    produce(&s, "http_requests", &evs).await;
    wait_results(&s, "epm_config", &model(&evs)).await;
    wait_caught_up(&s, "epm_config", evs.len() as u64).await;
    // Declared again at the next start (it already exists): kept, not duplicated or reset.
    let s = s
        .restart_with(|c| {
            c.jobs = vec![sluice_config::JobConfig { sql: sql.clone() }];
        })
        .await;
    let (_, l) = s.get("/v1/jobs").await;
    assert_eq!(l["jobs"].as_array().unwrap().len(), 1, "{l}");
    let d = describe(&s, "epm_config").await;
    assert_eq!((&d["state"], &d["created_at_ms"]), (&json!("running"), &created), "{d}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(describe(&s, "epm_config").await["records_in"], 0, "resumed from its checkpoint, not from scratch");
    wait_changelog(&s, "epm_config.results", &model(&evs)).await;
    s.stop().await;
}

/// A stateless job writes each matching event once to its `INSERT INTO` topic, partition to partition, in
/// source order; it has no windowed results to read.
#[tokio::test]
async fn stateless_job_writes_rows_to_its_topic() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 2).await;
    let evs = events(0..2, 50, 10);
    let at = produce(&s, "http_requests", &evs).await;
    let sql = "CREATE JOB errs AS INSERT INTO errors SELECT service, status FROM http_requests WHERE status >= 500";
    let (st, b) = create_job(&s, sql).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["kind"], "stateless");
    assert_eq!(b["output_topic"], "errors");
    assert_eq!(b["columns"], json!(["service", "status"]));
    assert!(b.get("late_topic").is_none(), "{b}");

    // Expected: per source partition, in offset order.
    let mut want: Vec<Vec<(String, Value)>> = vec![Vec::new(), Vec::new()];
    let mut landed: Vec<(&(u32, u64), &Ev)> = at.iter().zip(&evs).collect();
    landed.sort_by_key(|(a, _)| **a);
    for ((p, off), e) in landed {
        if e.status >= 500 {
            want[*p as usize].push((format!("{p}/{off}"), json!({"service": e.service, "status": e.status})));
        }
    }
    let total: usize = want.iter().map(Vec::len).sum();
    assert!(total > 10);
    wait_caught_up(&s, "errs", evs.len() as u64).await;
    let got = eventually("rows in topic errors", 30, async || {
        let got = read_topic(&s, "errors").await;
        let n: usize = got.iter().map(Vec::len).sum();
        if n >= total { Ok(got) } else { Err(format!("{n} of {total} rows")) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_topic(&s, "errors").await, got, "rows kept coming");
    for (p, recs) in got.iter().enumerate() {
        let have: Vec<(String, Value)> = recs
            .iter()
            .map(|r| {
                // `{run}/{partition}/{offset}`: the run names the job's definition and generation.
                let h = r["headers"]["sluice.source_offset"].as_str().unwrap();
                let (run, source) = h.split_once('/').unwrap();
                assert!(run.starts_with("errs."), "header {h} names the job");
                (source.to_string(), r["value"].clone())
            })
            .collect();
        assert_eq!(have, want[p], "partition {p} of topic errors");
    }
    for path in ["/v1/jobs/errs/results", "/v1/jobs/errs/results/latest"] {
        let (st, b) = s.get(path).await;
        assert_error(st, &b, StatusCode::BAD_REQUEST, "invalid_job");
        assert!(b["error"]["message"].as_str().unwrap().contains("errors"), "{b}");
    }
    s.stop().await;
}

/// A schema-bound topic (JSON encoded as Avro by the server) gives the same results as plain JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn avro_source_gives_the_same_results_as_json() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 2).await;
    s.create_topic("http_requests_avro", 2).await;
    let schema = json!({"type": "record", "name": "HttpRequest", "fields": [
        {"name": "service", "type": "string"},
        {"name": "status", "type": "int"},
        {"name": "latency_ms", "type": "long"}
    ]});
    let body = json!({"schema": schema.to_string()}).to_string();
    let a = s.send(Method::POST, "/subjects/http_requests_avro-value/versions", Some(&body), Some(SR)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let id = a.json["id"].as_u64().unwrap();

    let evs = events(0..2, 60, 11);
    produce(&s, "http_requests", &evs).await;
    let at = produce(&s, "http_requests_avro", &evs).await;
    // Stored as Avro.
    let (p, off) = at[0];
    let (_, r) = s.get(&format!("/v1/topics/http_requests_avro/events?partition={p}&offset={off}&limit=1")).await;
    assert_eq!(r["events"][0]["schema_id"], id, "{r}");
    assert_eq!(r["events"][0]["value"], evs[0].value());

    for (job, topic) in [("epm_json", "http_requests"), ("epm_avro", "http_requests_avro")] {
        let (st, b) = create_job(&s, &example_as(job, topic)).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    let want = model(&evs);
    wait_results(&s, "epm_json", &want).await;
    wait_results(&s, "epm_avro", &want).await;
    wait_caught_up(&s, "epm_avro", evs.len() as u64).await;
    assert_eq!(rows(&s, "/v1/jobs/epm_avro/results").await, rows(&s, "/v1/jobs/epm_json/results").await);
    let json_table = wait_changelog(&s, "epm_json.results", &want).await;
    let avro_table = wait_changelog(&s, "epm_avro.results", &want).await;
    assert_eq!(avro_table, json_table);
    let metrics = s.send(Method::GET, "/metrics", None, None).await.text;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("sluice_job_decode_errors_total{job=\"epm_avro\"}") && !l.ends_with(" 0")),
        "Avro records failed to decode"
    );
    s.stop().await;
}

/// Once the watermark passes a window, the changelog's last record for it says `final`, also when the
/// window's last change was already written as `partial` before it closed.
#[tokio::test]
async fn closed_windows_end_with_a_final_changelog_record() {
    let s = TestServer::start(|_| {}).await;
    s.create_topic("http_requests", 1).await;
    // One error per second for three minutes, in two deliveries: the first ends 3 s into minute 1, so minute 0
    // is complete but still open (5 s out-of-orderness); the second closes minutes 0 and 1.
    let evs: Vec<Ev> =
        (0..180).map(|i| Ev { ts: T0 + i * 1_000, service: "api", status: 500, latency_ms: 10 + i }).collect();
    produce(&s, "http_requests", &evs[..63]).await;
    let (st, b) = create_job(&s, &example_as("epm_final", "http_requests")).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    wait_changelog(&s, "epm_final.results", &model(&evs[..63])).await;
    produce(&s, "http_requests", &evs[63..]).await;
    wait_changelog(&s, "epm_final.results", &model(&evs)).await;
    let d = wait_caught_up(&s, "epm_final", evs.len() as u64).await;
    assert!(d["watermark"].as_str().unwrap() > rfc3339(T0 + 2 * MINUTE).as_str(), "{d}");
    let mut last_kind: BTreeMap<String, String> = BTreeMap::new();
    for e in read_topic(&s, "epm_final.results").await.concat() {
        let kind = e["headers"]["sluice.result"].as_str().unwrap().to_string();
        last_kind.insert(e["value"]["window_start"].as_str().unwrap().to_string(), kind);
    }
    let want: BTreeMap<String, String> = [(0, "final"), (1, "final"), (2, "partial")]
        .into_iter()
        .map(|(m, k)| (rfc3339(T0 + m * MINUTE), k.to_string()))
        .collect();
    assert_eq!(last_kind, want, "the last changelog record of each window (by window start)");
    s.stop().await;
}
