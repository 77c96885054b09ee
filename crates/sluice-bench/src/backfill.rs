//! `sluice bench backfill`: a year of history sent to a running server in time order, with the README's example
//! job and the store; a default search index is created once the history is in (as a user indexing an archive
//! would), and builds from it while live events arrive at `--live-rate`. Reports ingest events/s, each sink's
//! events/s through the history, the total time until everything caught up, the server's peak RSS (sampled every
//! 200 ms from `/metrics`, or VmHWM of `--server-pid`), store files and chunks per table, search index
//! partitions, P50/P99 of a term search and of a `time_bucket` query issued every 250 ms in each phase, and the
//! acknowledgement latency of the live events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
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
    /// When the search index is created: `after` the history is in (it then indexes the history while live
    /// events flow), or at the `start` with the first events (both sinks work the history together).
    #[arg(long, value_enum, default_value = "after")]
    pub index: IndexAt,
    /// Live events per second sent while the sinks catch up (with `--index after`); their ack latency is
    /// reported. 0: none.
    #[arg(long, default_value_t = 10_000)]
    pub live_rate: u64,
    /// Events per live request.
    #[arg(long, default_value_t = 100)]
    pub live_batch: usize,
    /// Print the summary as JSON too.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexAt {
    Start,
    After,
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
/// `None` when the thing asked about does not exist yet (no index, no table): not a failure to time.
async fn answered(r: reqwest::Result<reqwest::Response>) -> Option<bool> {
    match r {
        Ok(r) if r.status().is_success() => Some(r.bytes().await.is_ok()),
        Ok(r) if r.status().as_u16() == 404 => None,
        Ok(r) if r.status().as_u16() == 400 => {
            let text = r.text().await.unwrap_or_default();
            if text.contains("not found") { None } else { Some(false) }
        }
        _ => Some(false),
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
    if args.events == 0 || args.batch == 0 || args.connections == 0 || args.live_batch == 0 {
        bail!("--events, --batch, --live-batch and --connections must be at least 1");
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let base = args.server.trim_end_matches('/').to_string();
    let topic = args.topic.clone();
    crate::ensure_topic(&client, &base, &topic, args.partitions).await?;
    let job_sql = EXAMPLE_JOB.replace("FROM http_requests", &format!("FROM {topic}"));
    check(client.post(format!("{base}/v1/jobs")).json(&json!({ "sql": job_sql })).send().await?, "create job").await?;
    let results_topic = sluice_log::topics::results(JOB);
    let sinks: Vec<SinkId> = vec![
        ("store".into(), topic.clone()),
        ("search".into(), topic.clone()),
        ("store".into(), results_topic.clone()),
    ];
    let span_ms = args.span.as_millis().min(i64::MAX as u128) as i64;
    let start_ms = sluice_log::now_ms() - span_ms;
    let index_after = args.index == IndexAt::After;
    println!(
        "sluice bench backfill: {} events over {:?} into {topic} ({} partitions), batches of {}, {}; job {JOB}, store, \
         search index created {}",
        args.events,
        args.span,
        args.partitions,
        args.batch,
        if args.rate == 0 { "flat out".to_string() } else { format!("at most {} events/s", args.rate) },
        if index_after {
            format!("after the history is in ({} live events/s meanwhile)", args.live_rate)
        } else {
            "with the first events".to_string()
        }
    );

    let started = Instant::now();
    let deadline = started + args.duration;
    let max_rss = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // 0 while the history is sent, 1 from then on (the index builds, live events flow).
    let phase = Arc::new(AtomicU8::new(0));

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
                match post_events(&client, &url, body).await {
                    Some(a) => {
                        sent.fetch_add(a, Ordering::Relaxed);
                        failed.fetch_add(n.saturating_sub(a), Ordering::Relaxed);
                    }
                    None => {
                        failed.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let create_index = {
        let (client, base, topic) = (client.clone(), base.clone(), topic.clone());
        move || async move {
            let resp = client.put(format!("{base}/v1/topics/{topic}/index")).json(&json!({})).send().await?;
            check(resp, "create the search index").await
        }
    };
    // With the first events the index's defaults come from them.
    let index_early = (!index_after).then(|| {
        let (sent, create_index) = (sent.clone(), create_index.clone());
        tokio::spawn(async move {
            while sent.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            create_index().await
        })
    });

    // Every 200 ms: RSS and each sink's records and lag.
    let tracks = Arc::new(Mutex::new(BTreeMap::<SinkId, SinkTrack>::new()));
    let history = Arc::new(AtomicU64::new(u64::MAX));
    // One second of live events may be in flight when a sink counts as caught up.
    let slack = if index_after { args.live_rate.max(args.live_batch as u64) as i64 } else { 0 };
    let sampler = {
        let (client, base, max_rss, tracks, stop) =
            (client.clone(), base.clone(), max_rss.clone(), tracks.clone(), stop.clone());
        let (history, sinks, pid, topic) = (history.clone(), sinks.clone(), args.server_pid, topic.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + SAMPLE_EVERY;
                if let Some(pid) = pid
                    && let Some(hwm) = vm_hwm(pid)
                {
                    max_rss.fetch_max(hwm, Ordering::Relaxed);
                }
                let job = get_json(&client, &format!("{base}/v1/jobs/{JOB}")).await;
                if let Ok(r) = client.get(format!("{base}/metrics")).send().await
                    && let Ok(text) = r.text().await
                {
                    let now = Instant::now();
                    if let Some((_, rss)) = metric(&text, "process_resident_memory_bytes").first() {
                        max_rss.fetch_max(*rss as u64, Ordering::Relaxed);
                    }
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
                    // A sink has caught up with the history once its own account holds every history event
                    // (the lag gauge may be older than the last events): the table's rows, the index's
                    // documents, the job's input.
                    let history = history.load(Ordering::Relaxed);
                    if history != u64::MAX {
                        let table = get_json(&client, &format!("{base}/v1/tables/{topic}")).await;
                        let index = get_json(&client, &format!("{base}/v1/topics/{topic}/index")).await;
                        let in_table =
                            table["rows"].as_u64().unwrap_or(0) + table["buffered_rows"].as_u64().unwrap_or(0);
                        let documents = index["documents"].as_u64().unwrap_or(0);
                        let job_in = job["records_in"].as_u64().unwrap_or(0);
                        let mut t = tracks.lock().await;
                        for (id, e) in t.iter_mut() {
                            let (ready, applied) = match (id.0.as_str(), id.1 == topic) {
                                ("store", true) => (in_table >= history, in_table),
                                ("search", true) => (documents >= history, documents),
                                _ => (job_in >= history, e.last_records - e.first.map_or(0, |f| f.1)),
                            };
                            if e.caught_up.is_none() && e.lag.is_some_and(|l| l <= slack) && ready {
                                e.caught_up = Some((now, applied.min(history)));
                            }
                        }
                    }
                }
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };

    // Every 250 ms: a term search and a time_bucket query, each timed, per phase.
    let probes = {
        let (client, base, topic, stop, phase) =
            (client.clone(), base.clone(), topic.clone(), stop.clone(), phase.clone());
        tokio::spawn(async move {
            let mut search = [hist(), hist()];
            let mut sql = [hist(), hist()];
            let (mut search_err, mut sql_err) = ([0u64; 2], [0u64; 2]);
            let query = format!(
                "SELECT time_bucket('1 day', event_time) AS day, count(*) AS n FROM {topic} GROUP BY 1 ORDER BY 1"
            );
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + PROBE_EVERY;
                let p = phase.load(Ordering::Relaxed) as usize;
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/v1/search"))
                    .query(&[("topic", topic.as_str()), ("q", "service:checkout"), ("limit", "20")])
                    .send()
                    .await;
                match answered(r).await {
                    Some(true) => search[p].saturating_record(t.elapsed().as_micros().max(1) as u64),
                    Some(false) => search_err[p] += 1,
                    // No index yet: nothing to time.
                    None => {}
                }
                let t = Instant::now();
                let r = client.post(format!("{base}/v1/query")).json(&json!({ "sql": query })).send().await;
                match answered(r).await {
                    Some(true) => sql[p].saturating_record(t.elapsed().as_micros().max(1) as u64),
                    Some(false) => sql_err[p] += 1,
                    None => {}
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
    let acked = sent.load(Ordering::Relaxed);
    history.store(acked, Ordering::Relaxed);
    phase.store(1, Ordering::Relaxed);
    let index_created = Instant::now();
    println!("-- sent {acked} events in {ingest_secs:.1}s; waiting for the sinks to catch up");
    let index_result = match index_early {
        Some(task) => task.await.context("index task failed")?,
        None => create_index().await,
    };
    if let Err(e) = index_result {
        eprintln!("warning: {e:#}");
    }

    // Live events at a steady rate while the sinks catch up: the acknowledgement latency of each request, timed
    // from when it was due (a late send counts as latency, so a stalled server cannot hide).
    let live = (index_after && args.live_rate > 0).then(|| {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        let (rate, n) = (args.live_rate, args.live_batch);
        tokio::spawn(async move {
            let every = Duration::from_secs_f64(n as f64 / rate as f64);
            let lat = Arc::new(std::sync::Mutex::new(hist()));
            let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let mut rng = StdRng::seed_from_u64(7);
            let mut seq = 1u64 << 40;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                let due = tick.tick().await;
                let now_ms = sluice_log::now_ms();
                let mut body = String::with_capacity(n * 560);
                for _ in 0..n {
                    body.push_str(&backfill_event(&mut rng, seq, now_ms));
                    body.push('\n');
                    seq += 1;
                }
                let (client, url, lat, ok, bad) = (client.clone(), url.clone(), lat.clone(), ok.clone(), bad.clone());
                inflight.spawn(async move {
                    match post_events(&client, &url, body).await {
                        Some(a) if a == n as u64 => {
                            ok.fetch_add(a, Ordering::Relaxed);
                            let us = due.elapsed().as_micros().max(1) as u64;
                            lat.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(us);
                        }
                        _ => {
                            bad.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
            let h = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (h, ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed))
        })
    });

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
    let live = match live {
        Some(t) => Some(t.await.context("live producer failed")?),
        None => None,
    };

    // Store files and chunks per table, and the index's partitions.
    let mut tables = serde_json::Map::new();
    for table in [topic.as_str(), JOB] {
        let v = get_json(&client, &format!("{base}/v1/tables/{table}")).await;
        let chunks = v["chunks"].as_array().map_or(0, Vec::len);
        let files: u64 = v["chunks"].as_array().map_or(0, |c| c.iter().filter_map(|c| c["files"].as_u64()).sum());
        tables.insert(table.into(), json!({"chunks": chunks, "files": files, "rows": v["rows"]}));
    }
    let index = get_json(&client, &format!("{base}/v1/topics/{topic}/index")).await;
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
        // The index works from its creation on; the others from the start.
        let from = if id.0 == "search" && index_after { index_created } else { started };
        let (rate, secs, applied) = match e.and_then(|e| e.caught_up) {
            Some((at, applied)) => {
                let secs = (at - from).as_secs_f64();
                (applied as f64 / secs.max(1e-3), Some(secs), applied)
            }
            None => (0.0, None, 0),
        };
        sink_rates.push(json!({"sink": id.0, "topic": id.1, "applied": applied,
            "records_total": e.map_or(0, |e| e.last_records),
            "lag": e.and_then(|e| e.lag), "events_per_sec": rate, "secs": secs}));
    }
    let all_caught_up = sink_rates.iter().all(|s| !s["secs"].is_null());
    let q = |h: &Histogram<u64>, p: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(p) as f64 / 1000.0 };
    let rss_mib = max_rss.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;

    println!(
        "ingest               {acked} events in {ingest_secs:.1}s = {:.0} events/s ({} failed)",
        acked as f64 / ingest_secs,
        failed.load(Ordering::Relaxed)
    );
    for s in &sink_rates {
        let label = format!("{} {}", s["sink"].as_str().unwrap_or(""), s["topic"].as_str().unwrap_or(""));
        let from = if s["sink"] == "search" && index_after { "index creation" } else { "start" };
        match s["secs"].as_f64() {
            Some(secs) => println!(
                "sink {label:<32} {:.0} events/s: the history ({} events) {secs:.1}s after the {from}",
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
    let phases = ["while the history is sent", "while the sinks catch up"];
    for (p, name) in phases.iter().enumerate() {
        println!(
            "term search (ms)     p50 {:.1}  p99 {:.1}  ({} queries, {} failed) {name}",
            q(&search_h[p], 0.5),
            q(&search_h[p], 0.99),
            search_h[p].len(),
            search_err[p]
        );
        println!(
            "time_bucket SQL (ms) p50 {:.1}  p99 {:.1}  ({} queries, {} failed) {name}",
            q(&sql_h[p], 0.5),
            q(&sql_h[p], 0.99),
            sql_h[p].len(),
            sql_err[p]
        );
    }
    if let Some((h, ok, bad)) = &live {
        println!(
            "live ingest ack (ms) p50 {:.1}  p99 {:.1}  max {:.1}  ({ok} events at {} events/s, {bad} failed) while \
             the sinks catch up",
            q(h, 0.5),
            q(h, 0.99),
            q(h, 1.0),
            args.live_rate
        );
    }
    if args.json {
        let ms =
            |h: &Histogram<u64>, n: u64| json!({"p50": q(h, 0.5), "p99": q(h, 0.99), "count": h.len(), "failed": n});
        let live = live.as_ref().map(|(h, ok, bad)| {
            json!({"rate": args.live_rate, "events": ok, "failed_events": bad, "ack_ms": ms(h, 0), "max_ms": q(h, 1.0)})
        });
        println!(
            "{}",
            json!({"events": acked, "failed_events": failed.load(Ordering::Relaxed), "ingest_secs": ingest_secs,
                "ingest_events_per_sec": acked as f64 / ingest_secs, "sinks": sink_rates,
                "caught_up": all_caught_up, "total_secs": total_secs, "server_peak_rss_mib": rss_mib,
                "tables": tables, "index_partitions": index_partitions, "index_documents": index["documents"],
                "index": if index_after { "after" } else { "start" },
                "search_ms": {"history": ms(&search_h[0], search_err[0]), "catch_up": ms(&search_h[1], search_err[1])},
                "sql_ms": {"history": ms(&sql_h[0], sql_err[0]), "catch_up": ms(&sql_h[1], sql_err[1])},
                "live": live})
        );
    }
    if acked == 0 {
        bail!("no event was accepted; is the server running at {base}?");
    }
    Ok(())
}

/// Posts an NDJSON body; the number of events accepted, or `None` when the request failed.
async fn post_events(client: &reqwest::Client, url: &str, body: String) -> Option<u64> {
    match client.post(url).header("content-type", "application/x-ndjson").body(body).send().await {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().and_then(|v| v["accepted"].as_u64()),
        _ => None,
    }
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
