//! `sluice bench pipeline` and `sluice bench results`: the whole pipeline under load, measured inside Sluice.
//!
//! `pipeline` runs the README's example job (`errors_per_minute`) on `http_requests`, drives the ingest
//! generator at a fixed rate, and reports the job's own histogram of *ingest acknowledgement -> visible in hot
//! results* (the server stamps each batch at append and records the delay when the shard upserts the rows),
//! the job's throughput and lag, and the server's RSS. `results` measures hot-results reads at a fixed rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{IngestArgs, clap_lite::humantime_duration, ingest, scrape_rss};

/// The example job of the README and of issue #4, exactly as written there.
pub const EXAMPLE_JOB: &str = "CREATE JOB errors_per_minute AS
SELECT window_start, window_end, service, count(*) AS errors,
       avg(latency_ms) AS avg_ms, approx_percentile(latency_ms, 0.99) AS p99_ms
FROM http_requests
WHERE status >= 500
GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";

#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Events per second produced.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    pub duration: Duration,
    /// Load before measuring (the histogram is reset after it).
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    pub warmup: Duration,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Print the summary as JSON too.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ResultsArgs {
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    #[arg(long, default_value = "errors_per_minute")]
    pub job: String,
    /// Requests per second over all connections.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Query string, e.g. `key=checkout`; the path is `/v1/jobs/{job}/results/latest`.
    #[arg(long, default_value = "key=checkout")]
    pub query: String,
}

async fn job_status(client: &reqwest::Client, base: &str, query: &str) -> Result<Value> {
    let resp = client.get(format!("{base}/v1/jobs/errors_per_minute{query}")).send().await?;
    if !resp.status().is_success() {
        bail!("describe errors_per_minute: {}", resp.text().await.unwrap_or_default());
    }
    Ok(resp.json().await?)
}

pub async fn pipeline(args: PipelineArgs) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let base = args.server.trim_end_matches('/').to_string();
    crate::ensure_topic(&client, &base, "http_requests", args.partitions).await?;
    let resp = client.post(format!("{base}/v1/jobs")).json(&json!({ "sql": EXAMPLE_JOB })).send().await?;
    if !resp.status().is_success() && resp.status() != reqwest::StatusCode::CONFLICT {
        bail!("cannot create the example job: {}", resp.text().await.unwrap_or_default());
    }
    let load = |duration| IngestArgs {
        server: args.server.clone(),
        topic: "http_requests".into(),
        partitions: args.partitions,
        connections: args.connections,
        batch_size: args.batch_size,
        duration,
        rate: args.rate,
        schema: false,
        json: false,
        seed: 7,
    };
    println!("sluice bench pipeline: job errors_per_minute on http_requests at {} events/s", args.rate);
    if !args.warmup.is_zero() {
        println!("-- warm-up ({:?})", args.warmup);
        ingest(load(args.warmup)).await?;
    }
    let before = job_status(&client, &base, "?reset_latency=true").await?;
    let started = Instant::now();
    println!("-- measured run ({:?})", args.duration);
    ingest(load(args.duration)).await?;
    // Let the job catch up with what was acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = job_status(&client, &base, "").await?;
    while after["lag"].as_u64().unwrap_or(0) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = job_status(&client, &base, "").await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let processed =
        after["records_in"].as_u64().unwrap_or(0).saturating_sub(before["records_in"].as_u64().unwrap_or(0));
    let l = &after["latency_ms"];
    let rss = scrape_rss(&client, &format!("{base}/metrics")).await.unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "job processed        {processed} events in {secs:.1}s ({:.0} events/s), lag at end {}",
        processed as f64 / secs,
        after["lag"]
    );
    println!(
        "ingest ack -> hot results (ms, measured in the server over {} events)\n                     p50 {}  p99 {}  p99.9 {}  max {}",
        l["count"], l["p50"], l["p99"], l["p999"], l["max"]
    );
    println!(
        "server RSS           {rss:.0} MiB; job state entries {}, hot rows {}",
        after["state_entries"], after["hot_rows"]
    );
    if args.json {
        println!(
            "{}",
            json!({"rate": args.rate, "processed": processed, "seconds": secs, "latency_ms": l, "rss_mib": rss, "lag": after["lag"]})
        );
    }
    Ok(())
}

pub async fn results(args: ResultsArgs) -> Result<()> {
    if args.rate == 0 || args.connections == 0 {
        bail!("--rate and --connections must be at least 1");
    }
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.connections).timeout(Duration::from_secs(10)).build()?;
    let base = args.server.trim_end_matches('/').to_string();
    let url = Arc::new(format!("{base}/v1/jobs/{}/results/latest?{}", args.job, args.query));
    let probe = client.get(url.as_str()).send().await.with_context(|| format!("cannot reach {base}"))?;
    if !probe.status().is_success() {
        bail!("{}: {}", url, probe.text().await.unwrap_or_default());
    }
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate as f64);
    let deadline = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut service = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors = 0u64;
            let mut intended = Instant::now() + interval.mul_f64(c as f64 / 8.0);
            while intended < deadline {
                tokio::time::sleep_until(intended.into()).await;
                let sent = Instant::now();
                match client.get(url.as_str()).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        hist.saturating_record(intended.elapsed().as_micros().max(1) as u64);
                        service.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    _ => errors += 1,
                }
                intended += interval;
            }
            (hist, service, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut service = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = 0;
    for t in tasks {
        let (h, s, e) = t.await?;
        hist.add(h).expect("same bounds");
        service.add(s).expect("same bounds");
        errors += e;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let sms = |q: f64| service.value_at_quantile(q) as f64 / 1000.0;
    println!("sluice bench results: {} at {} requests/s for {:?}", url, args.rate, args.duration);
    println!(
        "{} requests, {errors} failed; latency (ms, from intended send time) p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        hist.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0
    );
    // The timer that paces requests has 1 ms granularity: from the actual send, the request itself.
    println!(
        "from the actual send: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        sms(0.5),
        sms(0.99),
        sms(0.999),
        service.max() as f64 / 1000.0
    );
    Ok(())
}
