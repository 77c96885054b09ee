//! `sluice bench backfill`: a year of history sent to a running server in time order, with the README's example
//! job, the store and a default search index on the topic. Reports ingest events/s, each sink's events/s until its
//! lag is 0, the total time until everything caught up, the server's peak RSS (sampled every 200 ms from
//! `/metrics`, or VmHWM of `--server-pid`), store files and chunks per table, search index partitions, and P50/P99
//! of a term search and of a `time_bucket` query issued every 250 ms during the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::clap_lite::humantime_duration;
use crate::pipeline::EXAMPLE_JOB;

/// Name of the example job (as in the README).
const JOB: &str = "errors_per_minute";
/// How often the server's metrics are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How often each probe query runs.
const PROBE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// Base URL of the sluice server (loopback only).
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Events to send.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Event-time span the events cover, ending now, like 365d or 30d.
    #[arg(long, default_value = "365d", value_parser = humantime_duration)]
    pub span: Duration,
    /// Topic (created when missing); the example job reads it.
    #[arg(long, default_value = "http_requests")]
    pub topic: String,
    /// Partitions when the topic is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Cap on events per second sent; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Longest the whole run may take (sending and catching up); it stops and reports then.
    #[arg(long, default_value = "30m", value_parser = humantime_duration)]
    pub duration: Duration,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Pid of the server process: its VmHWM from /proc is reported too.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the summary as JSON too.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const SERVICES: [&str; 8] = ["checkout", "search", "auth", "catalog", "inventory", "shipping", "billing", "gateway"];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const WORDS: [&str; 16] = [
    "request",
    "completed",
    "upstream",
    "timeout",
    "cache",
    "replica",
    "retry",
    "connection",
    "reset",
    "payment",
    "provider",
    "deadlock",
    "rolled",
    "back",
    "streamed",
    "client",
];

/// One event of the backfill as an NDJSON envelope: 20 fields (strings with text, keywords, ints, floats, bools),
/// 5% of the values null, keyed by user, at `ts_ms`.
pub fn backfill_event(rng: &mut StdRng, seq: u64, ts_ms: i64) -> String {
    let mut v = serde_json::Map::new();
    let service = SERVICES[rng.random_range(0..SERVICES.len())];
    let roll: f64 = rng.random();
    let status = if roll < 0.9 {
        200
    } else if roll < 0.95 {
        404
    } else {
        [500, 502, 503][rng.random_range(0..3)]
    };
    let user = (100_000f64.powf(rng.random::<f64>())) as u64;
    let words: Vec<&str> = (0..rng.random_range(4..12)).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect();
    let fields: [(&str, Value); 20] = [
        ("service", json!(service)),
        ("region", json!(REGIONS[rng.random_range(0..REGIONS.len())])),
        ("method", json!(METHODS[rng.random_range(0..METHODS.len())])),
        ("status", json!(status)),
        ("endpoint", json!(format!("/{service}/{}", rng.random_range(0..6)))),
        ("host", json!(format!("{service}-{}.prod.internal", rng.random_range(0..20)))),
        ("user_id", json!(format!("user-{user}"))),
        ("message", json!(words.join(" "))),
        ("detail", json!(format!("attempt {} of {} on {}", rng.random_range(1..4), 3, service))),
        ("latency_ms", json!((rng.random::<f64>().powi(4) * 2000.0 + rng.random_range(1.0..20.0)).round() as u64)),
        ("bytes_out", json!(rng.random_range(200..50_000))),
        ("retries", json!(rng.random_range(0..4))),
        ("db_calls", json!(rng.random_range(0..30))),
        ("cpu_ms", json!(rng.random_range(0.1..250.0f64))),
        ("score", json!(rng.random::<f64>())),
        ("ratio", json!(rng.random_range(0.0..1.0f64))),
        ("cached", json!(rng.random_bool(0.3))),
        ("authenticated", json!(rng.random_bool(0.8))),
        ("canary", json!(rng.random_bool(0.05))),
        ("seq", json!(seq)),
    ];
    for (name, value) in fields {
        // `seq` and `status` stay set: the job filters on status, the checks count by seq.
        let null = !matches!(name, "seq" | "status" | "service") && rng.random_bool(0.05);
        v.insert(name.into(), if null { Value::Null } else { value });
    }
    json!({"key": format!("user-{user}"), "timestamp": ts_ms, "value": v}).to_string()
}

/// Whether `url` names this machine.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h), |(h, _)| h);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `name{labels} value` lines of a metric, as (labels, value).
fn metric<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let (labels, v) = r.split_once('}')?;
                (labels, v)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
}

/// A sink the run waits for: kind and source topic.
type SinkId = (String, String);

#[derive(Default)]
struct SinkTrack {
    first: Option<(Instant, u64)>,
    last_records: u64,
    lag: Option<i64>,
    caught_up: Option<(Instant, u64)>,
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    l.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// A GET's JSON answer, or null.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    match client.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Whether a probe answered with success (its body read in full).
async fn answered(r: reqwest::Result<reqwest::Response>) -> bool {
    match r {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

async fn check(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
        bail!("{what}: {status} {body}");
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub async fn backfill(args: BackfillArgs) -> Result<()> {
    if !is_loopback(&args.server) {
        bail!("--server must be a loopback address (the bench loads the server hard)");
    }
    if args.events == 0 || args.batch == 0 || args.connections == 0 {
        bail!("--events, --batch and --connections must be at least 1");
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let base = args.server.trim_end_matches('/').to_string();
    let topic = args.topic.clone();
    crate::ensure_topic(&client, &base, &topic, args.partitions).await?;
    let job_sql = EXAMPLE_JOB.replace("FROM http_requests", &format!("FROM {topic}"));
    check(client.post(format!("{base}/v1/jobs")).json(&json!({ "sql": job_sql })).send().await?, "create job").await?;
    let results_topic = format!("{JOB}.results");
    let sinks: Vec<SinkId> = vec![
        ("store".into(), topic.clone()),
        ("search".into(), topic.clone()),
        ("store".into(), results_topic.clone()),
    ];
    let span_ms = args.span.as_millis().min(i64::MAX as u128) as i64;
    let start_ms = sluice_log::now_ms() - span_ms;
    println!(
        "sluice bench backfill: {} events over {:?} into {topic} ({} partitions), batches of {}, {}; job {JOB}, store, \
         search index",
        args.events,
        args.span,
        args.partitions,
        args.batch,
        if args.rate == 0 { "flat out".to_string() } else { format!("at most {} events/s", args.rate) }
    );

    let started = Instant::now();
    let deadline = started + args.duration;
    let max_rss = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // Generation is CPU work: a blocking thread fills a small queue of bodies, in time order.
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, String)>(2 * args.connections);
    let (events, batch, seed) = (args.events, args.batch as u64, args.seed);
    let generator = tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut i = 0u64;
        while i < events {
            let n = batch.min(events - i);
            let mut body = String::with_capacity(n as usize * 560);
            for seq in i..i + n {
                let ts = start_ms + (seq as i128 * span_ms as i128 / events as i128) as i64;
                body.push_str(&backfill_event(&mut rng, seq, ts));
                body.push('\n');
            }
            i += n;
            if tx.blocking_send((n, body)).is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let url = format!("{base}/v1/topics/{topic}/events");
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        let (client, url, rx, sent, failed) = (client.clone(), url.clone(), rx.clone(), sent.clone(), failed.clone());
        let rate = args.rate;
        senders.push(tokio::spawn(async move {
            loop {
                if Instant::now() > deadline {
                    return;
                }
                let Some((n, body)) = rx.lock().await.recv().await else { return };
                if rate > 0 {
                    // Pace on the total: never ahead of `rate` events/s since the start.
                    let due = started + Duration::from_secs_f64(sent.load(Ordering::Relaxed) as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let ok = match client.post(&url).header("content-type", "application/x-ndjson").body(body).send().await
                {
                    Ok(r) if r.status().is_success() => {
                        r.json::<Value>().await.ok().and_then(|v| v["accepted"].as_u64())
                    }
                    _ => None,
                };
                match ok {
                    Some(a) => {
                        sent.fetch_add(a, Ordering::Relaxed);
                        failed.fetch_add(n - a, Ordering::Relaxed);
                    }
                    None => {
                        failed.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // The index is defined once the first events exist, so its defaults come from them.
    let index_started = {
        let (client, base, topic, sent) = (client.clone(), base.clone(), topic.clone(), sent.clone());
        tokio::spawn(async move {
            while sent.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let resp = client.put(format!("{base}/v1/topics/{topic}/index")).json(&json!({})).send().await?;
            check(resp, "create the search index").await
        })
    };

    // Every 200 ms: RSS and each sink's records and lag.
    let tracks = Arc::new(Mutex::new(BTreeMap::<SinkId, SinkTrack>::new()));
    let ingest_done = Arc::new(Mutex::new(None::<Instant>));
    let job_lag = Arc::new(AtomicU64::new(u64::MAX));
    let sampler = {
        let (client, base, max_rss, tracks, stop, job_lag) =
            (client.clone(), base.clone(), max_rss.clone(), tracks.clone(), stop.clone(), job_lag.clone());
        let (ingest_done, sinks, pid, topic, sent) =
            (ingest_done.clone(), sinks.clone(), args.server_pid, topic.clone(), sent.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + SAMPLE_EVERY;
                if let Some(pid) = pid
                    && let Some(hwm) = vm_hwm(pid)
                {
                    max_rss.fetch_max(hwm, Ordering::Relaxed);
                }
                if let Ok(r) = client.get(format!("{base}/v1/jobs/{JOB}")).send().await
                    && let Ok(v) = r.json::<Value>().await
                    && let Some(l) = v["lag"].as_u64()
                {
                    job_lag.store(l, Ordering::Relaxed);
                }
                if let Ok(r) = client.get(format!("{base}/metrics")).send().await
                    && let Ok(text) = r.text().await
                {
                    let now = Instant::now();
                    if let Some((_, rss)) = metric(&text, "process_resident_memory_bytes").first() {
                        max_rss.fetch_max(*rss as u64, Ordering::Relaxed);
                    }
                    let done = *ingest_done.lock().await;
                    let mut t = tracks.lock().await;
                    for (labels, v) in metric(&text, "sluice_sink_records_total") {
                        let id = (
                            label(labels, "sink").unwrap_or("").to_string(),
                            label(labels, "topic").unwrap_or("").to_string(),
                        );
                        if sinks.contains(&id) {
                            let e = t.entry(id).or_default();
                            e.first.get_or_insert((now, v as u64));
                            e.last_records = v as u64;
                        }
                    }
                    for (labels, v) in metric(&text, "sluice_sink_lag_records") {
                        let id = (
                            label(labels, "sink").unwrap_or("").to_string(),
                            label(labels, "topic").unwrap_or("").to_string(),
                        );
                        if sinks.contains(&id) {
                            t.entry(id).or_default().lag = Some(v as i64);
                        }
                    }
                    drop(t);
                    // A lag gauge of 0 may be older than the last events: the raw sinks count as caught up once the
                    // table holds and the index has every acknowledged event (their own accounts).
                    if done.is_some() {
                        let acked = sent.load(Ordering::Relaxed);
                        let table = get_json(&client, &format!("{base}/v1/tables/{topic}")).await;
                        let index = get_json(&client, &format!("{base}/v1/topics/{topic}/index")).await;
                        let in_table =
                            table["rows"].as_u64().unwrap_or(0) + table["buffered_rows"].as_u64().unwrap_or(0);
                        let job_caught_up = job_lag.load(Ordering::Relaxed) == 0;
                        let mut t = tracks.lock().await;
                        for (id, e) in t.iter_mut() {
                            let ready = match (id.0.as_str(), id.1 == topic) {
                                ("store", true) => in_table >= acked,
                                ("search", true) => {
                                    index["lag"] == 0 && index["documents"].as_u64().is_some_and(|d| d >= acked)
                                }
                                _ => job_caught_up,
                            };
                            if e.caught_up.is_none() && e.lag == Some(0) && ready {
                                let applied = match (id.0.as_str(), id.1 == topic) {
                                    ("store", true) => in_table,
                                    ("search", true) => index["documents"].as_u64().unwrap_or(0),
                                    _ => e.last_records - e.first.map_or(0, |f| f.1),
                                };
                                e.caught_up = Some((now, applied));
                            }
                        }
                    }
                }
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };

    // Every 250 ms: a term search and a time_bucket query, each timed.
    let probes = {
        let (client, base, topic, stop) = (client.clone(), base.clone(), topic.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut search, mut sql, mut search_err, mut sql_err) = (hist(), hist(), 0u64, 0u64);
            let query = format!(
                "SELECT time_bucket('1 day', event_time) AS day, count(*) AS n FROM {topic} GROUP BY 1 ORDER BY 1"
            );
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + PROBE_EVERY;
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/v1/search"))
                    .query(&[("topic", topic.as_str()), ("q", "service:checkout"), ("limit", "20")])
                    .send()
                    .await;
                if answered(r).await {
                    search.saturating_record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    search_err += 1;
                }
                let t = Instant::now();
                let r = client.post(format!("{base}/v1/query")).json(&json!({ "sql": query })).send().await;
                if answered(r).await {
                    sql.saturating_record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    sql_err += 1;
                }
                tokio::time::sleep_until(next.into()).await;
            }
            (search, sql, search_err, sql_err)
        })
    };

    for s in senders {
        s.await.context("sender failed")?;
    }
    generator.abort();
    let ingest_secs = started.elapsed().as_secs_f64();
    *ingest_done.lock().await = Some(Instant::now());
    let acked = sent.load(Ordering::Relaxed);
    println!("-- sent {acked} events in {ingest_secs:.1}s; waiting for the sinks to catch up");
    if let Err(e) = index_started.await.context("index task failed")? {
        eprintln!("warning: {e:#}");
    }
    // Bounded: until every sink caught up or the deadline.
    loop {
        let all = {
            let t = tracks.lock().await;
            sinks.iter().all(|id| t.get(id).is_some_and(|e| e.caught_up.is_some()))
        };
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let (search_h, sql_h, search_err, sql_err) = probes.await.context("probe task failed")?;

    // Store files and chunks per table, and the index's partitions.
    let mut tables = serde_json::Map::new();
    for table in [topic.as_str(), JOB] {
        let v =
            client.get(format!("{base}/v1/tables/{table}")).send().await?.json::<Value>().await.unwrap_or(Value::Null);
        let chunks = v["chunks"].as_array().map_or(0, Vec::len);
        let files: u64 = v["chunks"].as_array().map_or(0, |c| c.iter().filter_map(|c| c["files"].as_u64()).sum());
        tables.insert(table.into(), json!({"chunks": chunks, "files": files, "rows": v["rows"]}));
    }
    let index = client.get(format!("{base}/v1/topics/{topic}/index")).send().await?.json::<Value>().await?;
    let index_partitions = index["partitions"].as_array().map_or(0, Vec::len);
    if let Some(pid) = args.server_pid
        && let Some(hwm) = vm_hwm(pid)
    {
        max_rss.fetch_max(hwm, Ordering::Relaxed);
    }

    let t = tracks.lock().await;
    let mut sink_rates = Vec::new();
    for id in &sinks {
        let e = t.get(id);
        let (rate, secs, applied) = match e.and_then(|e| e.caught_up) {
            Some((at, applied)) => {
                let secs = (at - started).as_secs_f64();
                (applied as f64 / secs, Some(secs), applied)
            }
            None => (0.0, None, 0),
        };
        sink_rates.push(json!({"sink": id.0, "topic": id.1, "applied": applied,
            "records_total": e.map_or(0, |e| e.last_records),
            "lag": e.and_then(|e| e.lag), "events_per_sec": rate, "caught_up_secs": secs}));
    }
    let all_caught_up = sink_rates.iter().all(|s| !s["caught_up_secs"].is_null());
    let q = |h: &Histogram<u64>, p: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(p) as f64 / 1000.0 };
    let rss_mib = max_rss.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;

    println!(
        "ingest               {acked} events in {ingest_secs:.1}s = {:.0} events/s ({} failed)",
        acked as f64 / ingest_secs,
        failed.load(Ordering::Relaxed)
    );
    for s in &sink_rates {
        let label = format!("{} {}", s["sink"].as_str().unwrap_or(""), s["topic"].as_str().unwrap_or(""));
        match s["caught_up_secs"].as_f64() {
            Some(secs) => println!(
                "sink {label:<32} {:.0} events/s, lag 0 after {secs:.1}s ({} applied)",
                s["events_per_sec"].as_f64().unwrap_or(0.0),
                s["applied"]
            ),
            None => println!("sink {label:<32} not caught up: {} records, lag {}", s["records_total"], s["lag"]),
        }
    }
    println!(
        "caught up            {}",
        if all_caught_up { format!("after {total_secs:.1}s") } else { format!("no, stopped after {total_secs:.1}s") }
    );
    println!(
        "server peak RSS      {rss_mib:.0} MiB ({})",
        if args.server_pid.is_some() { "VmHWM and /metrics every 200 ms" } else { "/metrics every 200 ms" }
    );
    for (name, v) in &tables {
        println!("store table {name:<20} {} chunks, {} files, {} rows", v["chunks"], v["files"], v["rows"]);
    }
    println!("search index         {index_partitions} partitions, {} documents", index["documents"]);
    println!(
        "term search (ms)     p50 {:.1}  p99 {:.1}  ({} queries, {search_err} failed)",
        q(&search_h, 0.5),
        q(&search_h, 0.99),
        search_h.len()
    );
    println!(
        "time_bucket SQL (ms) p50 {:.1}  p99 {:.1}  ({} queries, {sql_err} failed)",
        q(&sql_h, 0.5),
        q(&sql_h, 0.99),
        sql_h.len()
    );
    if args.json {
        let ms =
            |h: &Histogram<u64>, n: u64| json!({"p50": q(h, 0.5), "p99": q(h, 0.99), "count": h.len(), "failed": n});
        println!(
            "{}",
            json!({"events": acked, "failed_events": failed.load(Ordering::Relaxed), "ingest_secs": ingest_secs,
                "ingest_events_per_sec": acked as f64 / ingest_secs, "sinks": sink_rates,
                "caught_up": all_caught_up, "total_secs": total_secs, "server_peak_rss_mib": rss_mib,
                "tables": tables, "index_partitions": index_partitions, "index_documents": index["documents"],
                "search_ms": ms(&search_h, search_err), "sql_ms": ms(&sql_h, sql_err)})
        );
    }
    if acked == 0 {
        bail!("no event was accepted; is the server running at {base}?");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        for ok in ["http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:80"] {
            assert!(is_loopback(ok), "{ok}");
        }
        for bad in ["http://10.0.0.1:8080", "http://example.com"] {
            assert!(!is_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn metrics_parse() {
        let text = "sluice_sink_lag_records{sink=\"store\",topic=\"t\"} 5\nprocess_resident_memory_bytes 1e6\n";
        let m = metric(text, "sluice_sink_lag_records");
        assert_eq!(m.len(), 1);
        assert_eq!((label(m[0].0, "sink"), label(m[0].0, "topic"), m[0].1), (Some("store"), Some("t"), 5.0));
        assert_eq!(metric(text, "process_resident_memory_bytes"), vec![("", 1e6)]);
    }

    #[test]
    fn events_have_twenty_fields() {
        let mut rng = StdRng::seed_from_u64(1);
        let v: Value = serde_json::from_str(&backfill_event(&mut rng, 7, 1000)).unwrap();
        assert_eq!(v["value"].as_object().unwrap().len(), 20);
        assert_eq!(v["value"]["seq"], 7);
        assert_eq!(v["timestamp"], 1000);
    }
}
