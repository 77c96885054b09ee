//! In-process benchmarks of the job runner: `sluice bench operator` (the example job's per-event work on
//! decoded events, one core) and `sluice bench checkpoint` (a checkpoint of a million keys of state while the job
//! runs). Both use the production code paths, not copies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use serde_json::Value;
use sluice_jobs::runner::WindowOperator;
use sluice_jobs::{JobManager, ManagerOptions};
use sluice_log::{EmbeddedLog, LogOptions, LogStore, Record, StdStorage, TopicSpec};
use sluice_stream::{AggState, Datum, PlanBody, RecordMeta, Window, parse_job};

use crate::pipeline::EXAMPLE_JOB;

#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Generated events per pass.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// Passes; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    /// Distinct keys of state (one open window each).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// Checkpoints measured.
    #[arg(long, default_value_t = 3)]
    pub checkpoints: usize,
    /// Where the temporary data directory goes.
    #[arg(long, default_value = "/var/tmp")]
    pub tmp: std::path::PathBuf,
}

/// The example job over pre-decoded events on one thread: extract, event time, filter, lateness, window
/// assignment, pre-aggregation, and the merge of the deltas into keyed state (what a shard does).
pub async fn operator(args: OperatorArgs) -> Result<()> {
    let plan = Arc::new(parse_job(EXAMPLE_JOB).map_err(|e| anyhow::anyhow!("{e}"))?);
    let PlanBody::Windowed(w) = &plan.body else { bail!("the example job is windowed") };
    let window = Arc::new(w.clone());
    let n = args.events.max(1);
    let body = crate::events::ndjson_batch(11, n);
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let raw: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(l).expect("generated JSON");
            serde_json::to_vec(&v["value"]).expect("value")
        })
        .collect();
    let decoded: Vec<Value> = raw.iter().map(|r| serde_json::from_slice(r).expect("value JSON")).collect();
    let t0 = 1_800_000_000_000i64;
    println!("sluice bench operator: the example job on {n} events, one thread, {} passes", args.passes);
    let mut rates = Vec::new();
    let mut with_parse = Vec::new();
    for pass in 0..args.passes.max(1) {
        for parse in [false, true] {
            let mut op = WindowOperator::new(plan.clone(), window.clone(), 1);
            let mut state: std::collections::HashMap<(Window, Box<[Datum]>), Vec<AggState>> = Default::default();
            let mut max_ts = None;
            let started = Instant::now();
            for i in 0..n {
                // Ten minutes of event time, 30 ms apart, as from one partition.
                let ts = t0 + (i as i64 % 20_000) * 30;
                let meta = RecordMeta { timestamp: ts, append_time: ts, key: None, partition: 0, offset: i as u64 };
                if parse {
                    let v: Value = serde_json::from_slice(&raw[i]).expect("value JSON");
                    op.process(&v, &meta, &mut max_ts);
                } else {
                    op.process(&decoded[i], &meta, &mut max_ts);
                }
                if i % 2_000 == 1_999 {
                    for (w, k, s) in op.pending.drain() {
                        match state.get_mut(&(w, k.clone())) {
                            Some(acc) => acc.iter_mut().zip(&s).for_each(|(a, b)| a.merge(b)),
                            None => {
                                state.insert((w, k), s);
                            }
                        }
                    }
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let rate = n as f64 / secs;
            std::hint::black_box(&state);
            if parse {
                with_parse.push(rate);
            } else {
                rates.push(rate);
            }
            println!(
                "pass {}: {:>10.0} events/s{}  ({} result groups)",
                pass + 1,
                rate,
                if parse { " including JSON parsing" } else { " on decoded events    " },
                state.len()
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("median on decoded events: {:.0} events/s per core", median(&mut rates));
    println!("median including JSON parsing of each value: {:.0} events/s per core", median(&mut with_parse));
    Ok(())
}

/// A job holding `keys` keys of state in one open window; reports checkpoint time, size and pauses.
pub async fn checkpoint(args: CheckpointArgs) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("sluice-bench-ckpt").tempdir_in(&args.tmp)?;
    let root = dir.path().join("log");
    let (log, _) = tokio::task::spawn_blocking(move || {
        EmbeddedLog::open(root, Arc::new(StdStorage), LogOptions { retention: None, ..LogOptions::default() })
    })
    .await??;
    let log: Arc<dyn LogStore> = Arc::new(log);
    log.create_topic(TopicSpec::new("keys", 2)).await?;
    println!("sluice bench checkpoint: writing {} events with distinct keys", args.keys);
    let t0 = 1_800_000_000_000i64;
    for p in 0..2u32 {
        let mut i = p as usize;
        while i < args.keys {
            let mut batch = Vec::with_capacity(5_000);
            while i < args.keys && batch.len() < 5_000 {
                batch.push(Record {
                    timestamp: t0 + (i as i64 % 1_000),
                    key: None,
                    headers: Vec::new(),
                    value: Bytes::from(format!("{{\"user\":\"user-{i}\",\"bytes\":{}}}", i % 977)),
                });
                i += 2;
            }
            log.append("keys", p, batch).await?;
        }
    }
    let registry = Arc::new(sluice_schema::Registry::open(log.clone()).await?);
    let mut opts = ManagerOptions::new(dir.path().join("jobs"));
    opts.parallelism = 2;
    opts.checkpoint_interval = Duration::from_secs(5);
    let mgr = JobManager::open(opts, log.clone(), Arc::new(sluice_schema::reader::ValueDecoder::new(registry))).await?;
    mgr.create(
        "CREATE JOB keyed WITH (out_of_orderness = '1h') AS SELECT window_start, user, count(*) AS n, sum(bytes) AS b \
         FROM keys GROUP BY TUMBLE(event_time, INTERVAL '1' HOUR), user",
    )
    .await?;
    let started = Instant::now();
    loop {
        let s = mgr.describe("keyed").await?;
        if s.records_in as usize >= args.keys && s.lag == 0 {
            println!(
                "processed {} events into {} keys of state in {:.1}s",
                s.records_in,
                s.state_entries,
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the job did not catch up in 10 minutes: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The changelog gets a row per key: let it drain, so checkpoints are measured on a settled job.
    let mut written = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = mgr.describe("keyed").await?.results_written;
        if now == written {
            break;
        }
        written = now;
    }
    println!("changelog settled at {written} records after {:.1}s", started.elapsed().as_secs_f64());
    let mut seen = mgr.describe("keyed").await?.last_checkpoint.map(|c| c.epoch);
    let mut measured = 0;
    while measured < args.checkpoints {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = mgr.describe("keyed").await?;
        let Some(c) = s.last_checkpoint else { continue };
        if Some(c.epoch) == seen {
            continue;
        }
        seen = Some(c.epoch);
        measured += 1;
        println!(
            "checkpoint {}: {} keys, {:.1} MiB, {:.0} ms to durable; longest snapshot step {:.1} ms, barrier \
             alignment {:.1} ms",
            c.epoch,
            s.state_entries,
            c.bytes as f64 / (1 << 20) as f64,
            c.duration_ms,
            c.max_pause_ms,
            c.align_ms
        );
    }
    mgr.shutdown().await;
    drop(dir);
    Ok(())
}
