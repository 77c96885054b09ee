//! `sluice bench`: load generators and measurements, reproducible from one command.
//!
//! - [`ingest`]: realistic HTTP-request-log events (service, endpoint, status, latency, user id with skewed keys,
//!   message text; about 300 bytes each) sent in batches from many connections, flat out or at a fixed rate.
//!   Ack latency goes into an HDR histogram; at a fixed rate it is measured from each batch's *intended* send
//!   time, which corrects for coordinated omission. The server's RSS is sampled from `/metrics` throughout.
//! - [`pipeline`]: the example job under load: ingest ack -> visible in hot results, measured in the server;
//!   and hot-results reads at a fixed rate.
//! - [`jobs`]: the example job's per-event work on one core, and a checkpoint of a million keys of state.
//! - [`backfill`]: a year of history in time order through the job, the store and search: sink throughput until
//!   caught up, peak RSS, files and partitions, query latency during the backfill.
//! - [`read`]: sequential read of one partition from offset 0, straight from a data directory.

pub mod backfill;
pub mod events;
pub mod jobs;
pub mod pipeline;

pub use backfill::BackfillArgs;
pub use jobs::{CheckpointArgs, OperatorArgs};
pub use pipeline::{PipelineArgs, ResultsArgs};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap_lite::humantime_duration;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_log::{EmbeddedLog, LogOptions, LogStore, StdStorage};

/// Arguments of `sluice bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Base URL of the sluice server.
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Topic to produce to (created when missing).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions when the topic is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// How long to run, like 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    pub duration: Duration,
    /// Target events per second over all connections; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Bind the topic to an Avro schema of the events first (registered as `{topic}-value`), so the server
    /// validates every event and stores it as Avro.
    #[arg(long)]
    pub schema: bool,
    /// Print the summary as JSON too.
    #[arg(long)]
    pub json: bool,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Arguments of `sluice bench read`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// The data directory (the server must be stopped).
    #[arg(long, default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    #[arg(long, default_value_t = 0)]
    pub partition: u32,
    /// Passes over the partition; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
}

pub(crate) mod clap_lite {
    pub fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
        humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 60s: {e}"))
    }
}

struct Shared {
    events: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    max_rss: AtomicU64,
}

pub async fn ingest(args: IngestArgs) -> Result<()> {
    if args.connections == 0 || args.batch_size == 0 {
        bail!("--connections and --batch-size must be at least 1");
    }
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.connections).timeout(Duration::from_secs(30)).build()?;
    let base = args.server.trim_end_matches('/').to_string();
    ensure_topic(&client, &base, &args.topic, args.partitions).await?;
    if args.schema {
        register_schema(&client, &base, &args.topic).await?;
    }

    let bodies: Arc<Vec<bytes::Bytes>> =
        Arc::new((0..64).map(|i| events::ndjson_batch(args.seed.wrapping_add(i), args.batch_size).into()).collect());
    let avg_event = bodies.iter().map(|b| b.len()).sum::<usize>() as f64 / (64 * args.batch_size) as f64;
    let url = format!("{base}/v1/topics/{}/events", args.topic);
    let shared = Arc::new(Shared {
        events: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        max_rss: AtomicU64::new(0),
    });
    println!(
        "sluice bench ingest: {} connections, {} events/request (~{avg_event:.0} bytes each), {}, for {:?}{}",
        args.connections,
        args.batch_size,
        if args.rate == 0 { "flat out".to_string() } else { format!("{} events/s", args.rate) },
        args.duration,
        if args.schema { ", schema-bound (stored as Avro)" } else { "" }
    );

    let start = Instant::now();
    let deadline = start + args.duration;
    // Per connection: one batch every `interval` when rate-limited.
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.batch_size as f64 * args.connections as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (client, url, bodies, shared) = (client.clone(), url.clone(), bodies.clone(), shared.clone());
        let batch = args.batch_size as u64;
        let conns = args.connections;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            // Spread the connections' schedules over one interval.
            let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / conns as f64));
            let mut intended = Instant::now() + offset;
            let mut n = c;
            while Instant::now() < deadline {
                if interval.is_some() {
                    tokio::time::sleep_until(intended.into()).await;
                } else {
                    intended = Instant::now();
                }
                let body = bodies[n % bodies.len()].clone();
                n += 1;
                let resp = client.post(&url).header("content-type", "application/x-ndjson").body(body).send().await;
                let ok = match resp {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        true
                    }
                    _ => false,
                };
                let latency = intended.elapsed();
                if ok {
                    hist.saturating_record(latency.as_micros().max(1) as u64);
                    shared.events.fetch_add(batch, Ordering::Relaxed);
                } else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                shared.requests.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = interval {
                    intended += i;
                }
            }
            hist
        }));
    }

    let pb = ProgressBar::new(args.duration.as_secs());
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}").expect("valid template").progress_chars("=> "),
    );
    let sampler = {
        let (client, shared, pb) = (client.clone(), shared.clone(), pb.clone());
        let metrics_url = format!("{base}/metrics");
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some(rss) = scrape_rss(&client, &metrics_url).await {
                    shared.max_rss.fetch_max(rss, Ordering::Relaxed);
                }
                let events = shared.events.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (events - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, events);
                pb.set_position(start.elapsed().as_secs().min(pb.length().unwrap_or(0)));
                pb.set_message(format!(
                    "{rate:>9.0} events/s  rss {:.0} MiB  errors {}",
                    shared.max_rss.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
                    shared.errors.load(Ordering::Relaxed)
                ));
            }
        })
    };

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for t in tasks {
        hist.add(t.await.context("load task failed")?).expect("same bounds");
    }
    let elapsed = start.elapsed();
    sampler.abort();
    pb.finish_and_clear();
    if let Some(rss) = scrape_rss(&client, &format!("{base}/metrics")).await {
        shared.max_rss.fetch_max(rss, Ordering::Relaxed);
    }

    let events = shared.events.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let throughput = events as f64 / elapsed.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let rss_mib = shared.max_rss.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
    println!("events acknowledged  {events} in {:.1}s ({errors} failed requests)", elapsed.as_secs_f64());
    println!("throughput           {throughput:.0} events/s, {:.1} MB/s", throughput * avg_event / 1e6);
    println!(
        "ack latency (ms)     p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}{}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0,
        if interval.is_some() { "  (from intended send time)" } else { "" }
    );
    println!("server max RSS       {rss_mib:.0} MiB (sampled every second from /metrics)");
    if args.json {
        let summary = serde_json::json!({
            "events": events, "seconds": elapsed.as_secs_f64(), "failed_requests": errors,
            "events_per_sec": throughput, "avg_event_bytes": avg_event,
            "ack_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": hist.max() as f64 / 1000.0},
            "server_max_rss_mib": rss_mib,
        });
        println!("{summary}");
    }
    if errors > 0 && events == 0 {
        bail!("every request failed; is the server running at {base}?");
    }
    Ok(())
}

pub(crate) async fn ensure_topic(client: &reqwest::Client, base: &str, topic: &str, partitions: u32) -> Result<()> {
    let resp = client
        .get(format!("{base}/v1/topics/{topic}"))
        .send()
        .await
        .with_context(|| format!("cannot reach the sluice server at {base}"))?;
    if resp.status().is_success() {
        return Ok(());
    }
    let resp = client
        .post(format!("{base}/v1/topics"))
        .json(&serde_json::json!({"name": topic, "partitions": partitions}))
        .send()
        .await?;
    if !resp.status().is_success() && resp.status() != reqwest::StatusCode::CONFLICT {
        bail!("cannot create topic {topic}: {}", resp.text().await.unwrap_or_default());
    }
    Ok(())
}

async fn register_schema(client: &reqwest::Client, base: &str, topic: &str) -> Result<()> {
    let body = serde_json::json!({"schema": events::AVRO_SCHEMA});
    let resp = client
        .post(format!("{base}/subjects/{topic}-value/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("cannot register the event schema for {topic}: {}", resp.text().await.unwrap_or_default());
    }
    Ok(())
}

pub(crate) async fn scrape_rss(client: &reqwest::Client, url: &str) -> Option<u64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

pub async fn read(args: ReadArgs) -> Result<()> {
    let _lock = sluice_log::lock_data_dir(&args.data_dir).context("stop the server first")?;
    let root = args.data_dir.join("log");
    let (log, _) = tokio::task::spawn_blocking(move || {
        EmbeddedLog::open(root, Arc::new(StdStorage), LogOptions { retention: None, ..LogOptions::default() })
    })
    .await??;
    let desc = log.describe_topic(&args.topic).await?;
    let p = desc
        .partition_details
        .get(args.partition as usize)
        .with_context(|| format!("topic {} has no partition {}", args.topic, args.partition))?;
    let (start, end) = (p.log_start_offset, p.high_watermark);
    println!(
        "sluice bench read: {}/{} offsets {start}..{end} ({} MiB)",
        args.topic,
        args.partition,
        p.size_bytes >> 20
    );
    if end == start {
        bail!("partition is empty: run `sluice bench ingest` first");
    }
    let mut rates = Vec::new();
    for pass in 1..=args.passes.max(1) {
        let t = Instant::now();
        let (mut next, mut n, mut bytes) = (start, 0u64, 0u64);
        while next < end {
            let r = log.read(&args.topic, args.partition, next, 10_000, 16 << 20).await?;
            n += r.records.len() as u64;
            bytes += r.records.iter().map(|r| r.value.len() as u64).sum::<u64>();
            next = r.next_offset;
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = n as f64 / secs;
        println!(
            "pass {pass}: {n} events in {secs:.2}s = {rate:.0} events/s, {:.0} MB/s of values",
            bytes as f64 / secs / 1e6
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} events/s", rates[rates.len() / 2]);
    Ok(())
}
