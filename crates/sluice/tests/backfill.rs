//! A year of history backfilled through the real binary with the store and a default search index: the server's
//! memory stays bounded, the store and the index keep a bounded number of files and partitions, and every event is
//! found exactly once by SQL and by search.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{KillOnDrop, free_port, spawn_server_with_env, wait_ready};
use serde_json::{Value, json};

/// Events sent, spread evenly over [`SPAN_MS`] in time order.
const EVENTS: u64 = 200_000;
const SPAN_MS: i64 = 365 * 24 * 3_600_000;
const BASE_MS: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
const BATCH: u64 = 2_000;
/// Peak RSS (VmHWM) the server may reach.
const RSS_BUDGET_BYTES: u64 = 1 << 30;
const MAX_INDEX_PARTITIONS: usize = 100;
const MAX_RAW_FILES: u64 = 400;
/// Longest wait for the sinks to catch up.
const CATCH_UP: Duration = Duration::from_secs(120);

fn vm_hwm(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn body(from: u64, to: u64) -> String {
    let services = ["checkout", "search", "auth", "billing"];
    let mut out = String::new();
    for i in from..to {
        let ts = BASE_MS + (i as i128 * SPAN_MS as i128 / EVENTS as i128) as i64;
        let v = json!({"key": format!("user-{}", i % 977), "timestamp": ts, "value": {
            "seq": i, "service": services[(i % 4) as usize], "status": if i % 20 == 0 { 503 } else { 200 },
            "message": format!("request {i} completed after {} retries", i % 3),
            "latency_ms": i % 1000, "ratio": (i % 100) as f64 / 100.0, "cached": i % 3 == 0,
            "region": if i % 19 == 0 { Value::Null } else { json!("eu-west-1") }}});
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

async fn query(http: &reqwest::Client, base: &str, sql: &str) -> Value {
    let r = http.post(format!("{base}/v1/query")).json(&json!({ "sql": sql })).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{sql}: {status} {v}");
    v
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_backfill_stays_bounded_and_every_event_is_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let proc = KillOnDrop(spawn_server_with_env(dir.path(), port, &[("SLUICE__STORE__FLUSH_INTERVAL", "1s")]));
    let pid = proc.0.id();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    wait_ready(&http, &base).await;
    let r = http.post(format!("{base}/v1/topics")).json(&json!({"name": "history", "partitions": 4})).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 201);

    let started = Instant::now();
    let mut sent = 0;
    while sent < EVENTS {
        let n = BATCH.min(EVENTS - sent);
        let r = http
            .post(format!("{base}/v1/topics/history/events"))
            .header("content-type", "application/x-ndjson")
            .body(body(sent, sent + n))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "produce: {}", r.status());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["accepted"].as_u64(), Some(n), "{v}");
        if sent == 0 {
            // A default index, mapped from the first events.
            let r = http.put(format!("{base}/v1/topics/history/index")).json(&json!({})).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
        }
        sent += n;
    }
    eprintln!("sent {EVENTS} events in {:.1}s", started.elapsed().as_secs_f64());

    // Bounded wait until the store's table and the index hold every event.
    let deadline = Instant::now() + CATCH_UP;
    let (table, index) = loop {
        let table = get(&http, format!("{base}/v1/tables/history")).await;
        let index = get(&http, format!("{base}/v1/topics/history/index")).await;
        let rows = table["rows"].as_u64().unwrap_or(0) + table["buffered_rows"].as_u64().unwrap_or(0);
        let docs = index["documents"].as_u64().unwrap_or(0);
        if rows >= EVENTS && docs >= EVENTS && index["lag"] == 0 {
            break (table, index);
        }
        assert!(
            Instant::now() < deadline,
            "sinks did not catch up in {CATCH_UP:?}: store rows {rows}, index documents {docs}, index lag {}",
            index["lag"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("caught up after {:.1}s", started.elapsed().as_secs_f64());

    let peak = vm_hwm(pid);
    let partitions = index["partitions"].as_array().map_or(0, Vec::len);
    let chunks = table["chunks"].as_array().cloned().unwrap_or_default();
    let files: u64 = chunks.iter().filter_map(|c| c["files"].as_u64()).sum();
    eprintln!(
        "peak RSS {} MiB, {partitions} index partitions, {} store chunks, {files} store files",
        peak >> 20,
        chunks.len()
    );
    assert!(
        peak <= RSS_BUDGET_BYTES,
        "server peak RSS {} MiB is over the {} MiB budget",
        peak >> 20,
        RSS_BUDGET_BYTES >> 20
    );
    assert!(
        partitions <= MAX_INDEX_PARTITIONS,
        "{partitions} search index partitions (at most {MAX_INDEX_PARTITIONS})"
    );
    assert!(files <= MAX_RAW_FILES, "{files} store files in {} chunks (at most {MAX_RAW_FILES})", chunks.len());

    // SQL: every event once. Per log partition: rows, distinct offsets, and offsets dense from 0 (a distinct over
    // (partition, offset) pairs would cost more memory than the query limit).
    let sql = "SELECT \"partition\" AS p, count(*) AS n, count(DISTINCT \"offset\") AS d, min(\"offset\") AS lo, \
               max(\"offset\") AS hi FROM history GROUP BY 1 ORDER BY 1";
    let v = query(&http, &base, sql).await;
    let rows = v["rows"].as_array().unwrap();
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("n"), sum("d")), (EVENTS, EVENTS), "rows and distinct (partition, offset): {v}");
    for r in rows {
        assert_eq!((r["lo"].as_u64(), r["hi"].as_u64()), (Some(0), r["n"].as_u64().map(|n| n - 1)), "{r}");
    }
    let v = query(&http, &base, "SELECT count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM history").await;
    assert_eq!(v["rows"][0], json!({"d": EVENTS, "lo": 0, "hi": EVENTS - 1}), "distinct events: {v}");

    // Search: the exact total, and every event once when paging through everything with the cursor.
    let mut ids = HashSet::new();
    let (mut hits, mut cursor, mut total) = (0u64, None::<String>, None);
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let mut q = vec![
            ("topic", "history".to_string()),
            ("q", "*".into()),
            ("limit", "1000".into()),
            ("highlight", "false".into()),
        ];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let r = http.get(format!("{base}/v1/search")).query(&q).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "search: {status} {v}");
        total.get_or_insert(v["total"].as_u64());
        for h in v["hits"].as_array().unwrap() {
            hits += 1;
            ids.insert((h["partition"].as_u64().unwrap(), h["offset"].as_u64().unwrap()));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(Instant::now() < deadline, "paging through the search did not end in {CATCH_UP:?}");
    }
    assert_eq!(total.flatten(), Some(EVENTS), "search total");
    assert_eq!((hits, ids.len() as u64), (EVENTS, EVENTS), "search hits and distinct (partition, offset)");
    drop(proc);
}
