//! `sluice bench store`: the store's write path and query targets, in process.
//!
//! 1. Writes `rows` HTTP-request events (about 300 bytes of JSON, 8 fields) spread over `hours` of event time into
//!    a raw table through the same path the sink uses (JSON -> rows builder -> buffer -> Parquet flushes), on one
//!    thread, and reports rows/s including every flush.
//! 2. Times the per-minute, per-service aggregate over the whole table (`time_bucket`, `count`, `avg`).
//! 3. Times the same question over a per-minute results table (what a job writes) covering the same hours.
//! 4. Runs a one-hour range query and reports how many files it read out of how many the table has.
//!
//! A data directory that already holds the rows is reused, so the queries can be re-run without writing again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::provider::SnapshotSource;
use crate::query::{QueryEngine, QueryOptions};
use crate::snapshot::TableSnapshot;
use crate::store::{Store, StoreOptions};
use crate::table::{Table, TableSpec};

pub const RAW_TABLE: &str = "http_requests";
pub const RESULTS_TABLE: &str = "http_requests_per_minute";
const SERVICES: [&str; 10] = ["api", "auth", "billing", "cart", "checkout", "search", "web", "mobile", "admin", "feed"];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
/// 2026-11-01T00:00:00Z.
const BASE_MS: i64 = 1_793_491_200_000;

#[derive(Debug, Clone)]
pub struct StoreBenchOptions {
    pub dir: PathBuf,
    pub rows: u64,
    pub hours: i64,
    pub query_runs: usize,
    pub flush_rows: usize,
    pub threads: usize,
    pub memory_limit_bytes: usize,
}

struct Source(Arc<Table>);

impl SnapshotSource for Source {
    fn snapshot(&self) -> TableSnapshot {
        self.0.snapshot()
    }
}

fn event_json(i: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    // A cheap deterministic mix so values vary without a random generator on the hot path.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let service = SERVICES[(h >> 7) as usize % SERVICES.len()];
    let status = match (h >> 17) % 100 {
        0..=1 => 500,
        2..=4 => 404,
        5..=9 => 201,
        _ => 200,
    };
    let latency = ((h >> 23) % 250_000) as f64 / 1000.0;
    let _ = write!(
        out,
        r#"{{"service":"{service}","method":"{}","path":"/api/v1/items/{}","status":{status},"latency_ms":{latency},"bytes":{},"region":"{}","user_agent":"Mozilla/5.0 (X11; Linux x86_64) sluice-bench/1.0","trace_id":"{:016x}"}}"#,
        METHODS[(h >> 31) as usize % METHODS.len()],
        (h >> 37) % 5000,
        (h >> 41) % 100_000,
        REGIONS[(h >> 53) as usize % REGIONS.len()],
        h
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark and returns a printable report.
pub async fn run(opts: StoreBenchOptions, progress: impl Fn(u64) + Send + 'static) -> Result<String, StoreError> {
    let mut so = StoreOptions::default();
    so.table.flush_rows = opts.flush_rows;
    so.table.flush_interval = Duration::from_secs(3600);
    let dir = opts.dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(dir, so))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
    let mut report = String::new();
    let span_ms = opts.hours * 3_600_000;
    let raw = store.ensure_table(RAW_TABLE, TableSpec::raw())?;
    let have = raw.info().rows;
    if have >= opts.rows {
        report.push_str(&format!("write: reusing {have} rows already in {}\n", opts.dir.display()));
    } else {
        let (rows, hours) = (opts.rows, opts.hours);
        let table = raw.clone();
        let (elapsed, bytes) = tokio::task::spawn_blocking(move || -> Result<(Duration, u64), StoreError> {
            let started = Instant::now();
            let mut buf = Vec::with_capacity(512);
            let mut bytes = 0u64;
            let mut i = 0u64;
            let step = (hours * 3_600_000) as f64 / rows as f64;
            while i < rows {
                let n = (rows - i).min(32_768);
                let mut b = table.builder();
                let mut offsets = BTreeMap::new();
                for j in i..i + n {
                    event_json(j, &mut buf);
                    bytes += buf.len() as u64;
                    let t = BASE_MS + (j as f64 * step) as i64;
                    let (p, o) = ((j % 4) as u32, j / 4);
                    b.raw_row(t, t + 3, p, o, None, None, &buf)?;
                    offsets.insert(p, o + 1);
                }
                table.write(b, offsets)?;
                i += n;
                progress(i);
            }
            table.flush()?;
            Ok((started.elapsed(), bytes))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let secs = elapsed.as_secs_f64();
        report.push_str(&format!(
            "write: {} rows ({:.0} bytes of JSON each) in {secs:.1}s = {:.0} rows/s on one thread, flushes included\n",
            opts.rows,
            bytes as f64 / opts.rows as f64,
            opts.rows as f64 / secs
        ));
        let table = raw.clone();
        let started = Instant::now();
        let merged = tokio::task::spawn_blocking(move || table.compact())
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
        report.push_str(&format!("compact: {merged} chunks in {:.1}s\n", started.elapsed().as_secs_f64()));
    }
    let info = raw.info();
    report.push_str(&format!(
        "table {RAW_TABLE}: {} rows, {} chunks, {} files, {:.1} MiB on disk\n",
        info.rows,
        info.chunks.len(),
        info.chunks.iter().map(|c| c.files).sum::<usize>(),
        info.bytes as f64 / (1 << 20) as f64
    ));

    // The per-minute results a job would have written for the same hours.
    let results = store.ensure_table(RESULTS_TABLE, TableSpec::results())?;
    if results.info().rows == 0 {
        let table = results.clone();
        let minutes = opts.hours * 60;
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let mut b = table.builder();
            for m in 0..minutes {
                let start = BASE_MS + m * 60_000;
                for (k, s) in SERVICES.iter().enumerate() {
                    let row = format!(
                        r#"{{"window_start":"{}","window_end":"{}","service":"{s}","n":{},"avg_latency_ms":{}}}"#,
                        fmt_ms(start),
                        fmt_ms(start + 60_000),
                        3000 + k as i64 * 7 + m % 13,
                        125.0 + (m % 17) as f64 / 8.0
                    );
                    b.result_row(start, start + 60_000, s, Some(row.as_bytes()))?;
                }
            }
            table.write(b, BTreeMap::from([(0, 1)]))?;
            table.flush()?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
    }

    let engine = QueryEngine::new(QueryOptions {
        timeout: Duration::from_secs(600),
        memory_limit_bytes: opts.memory_limit_bytes,
        max_rows: 10_000_000,
        threads: opts.threads,
    })
    .map_err(|e| StoreError::Internal(e.to_string()))?;
    let tables = || -> Vec<(String, Arc<dyn SnapshotSource>)> {
        vec![
            (RAW_TABLE.to_string(), Arc::new(Source(raw.clone())) as Arc<dyn SnapshotSource>),
            (RESULTS_TABLE.to_string(), Arc::new(Source(results.clone())) as Arc<dyn SnapshotSource>),
        ]
    };
    let mut time = async |name: &str, sql: &str, runs: usize| -> Result<(), StoreError> {
        let mut ms = Vec::new();
        let mut out = None;
        for _ in 0..runs {
            let started = Instant::now();
            let o = engine.query(sql, tables()).await.map_err(|e| StoreError::Internal(e.to_string()))?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            out = Some(o);
        }
        let o = out.expect("at least one run");
        let runs_text: Vec<String> = ms.iter().map(|m| format!("{m:.1}")).collect();
        report.push_str(&format!(
            "{name}: median {:.1} ms over {runs} runs [{}]; {} rows; files read {} of {}\n  {sql}\n",
            median(ms.clone()),
            runs_text.join(", "),
            o.num_rows(),
            o.stats.files_scanned,
            o.stats.files_total
        ));
        Ok(())
    };
    time(
        "raw aggregate",
        &format!(
            "SELECT time_bucket('1 minute', event_time) AS m, service, count(*), avg(latency_ms) FROM {RAW_TABLE} \
             GROUP BY 1, 2"
        ),
        opts.query_runs,
    )
    .await?;
    time(
        "results table",
        &format!("SELECT window_start AS m, service, n, avg_latency_ms FROM {RESULTS_TABLE}"),
        opts.query_runs.max(20),
    )
    .await?;
    let hour = BASE_MS + (span_ms / 2 / 3_600_000) * 3_600_000;
    time(
        "one-hour range",
        &format!(
            "SELECT service, count(*), avg(latency_ms) FROM {RAW_TABLE} WHERE event_time >= '{}' AND event_time < '{}' \
             GROUP BY service",
            fmt_ms(hour),
            fmt_ms(hour + 3_600_000)
        ),
        opts.query_runs,
    )
    .await?;
    Ok(report)
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
