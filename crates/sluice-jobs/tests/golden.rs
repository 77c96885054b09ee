//! Golden tests: each SQL job runs over a fixed input three ways — straight through, with very frequent
//! checkpoints, and crashed mid-way then restored at another parallelism — and all three must produce exactly
//! the same results, equal to results computed independently here (a brute-force model of the semantics:
//! per-partition lateness, window arithmetic, aggregates over raw value lists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sluice_jobs::{JobManager, ManagerOptions};
use sluice_log::{EmbeddedLog, LogOptions, LogStore, Record, StdStorage, TopicSpec};
use sluice_schema::reader::ValueDecoder;
use sluice_stream::datum::format_time;

const PARTITIONS: u32 = 4;
const PER_PARTITION: usize = 1_200;
/// A minute boundary, so windows line up with readable times.
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
struct Ev {
    ts: i64,
    service: String,
    user: String,
    status: i64,
    latency: i64,
    price: f64,
}

impl Ev {
    fn json(&self) -> Value {
        json!({"service": self.service, "user": self.user, "status": self.status, "latency": self.latency, "price": self.price})
    }
}

/// xorshift64*: a fixed generator, so the input is the same on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Per partition: mostly increasing times with jitter (out of order within a few seconds) and ~3% events that
/// are a minute or two late; then one sentinel far ahead so every window closes.
fn input() -> Vec<Vec<Ev>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((u64::from(p) + 1) * 7919));
        let mut base = T0 + i64::from(p) * 1_300;
        let mut evs = Vec::with_capacity(PER_PARTITION + 1);
        for _ in 0..PER_PARTITION {
            base += rng.below(400) as i64;
            let ts = if rng.below(100) < 3 {
                base - 20_000 - rng.below(100_000) as i64
            } else {
                base - rng.below(6_000) as i64
            };
            let status = [200, 200, 200, 404, 500, 503][rng.below(6) as usize];
            evs.push(Ev {
                ts,
                service: ["api", "web", "auth", "db", "cache"][rng.below(5) as usize].to_string(),
                user: format!("u{}", rng.below(25)),
                status,
                latency: 1 + rng.below(2_000) as i64,
                price: (rng.below(100_000) as f64) / 100.0 + 0.1,
            });
        }
        let end = evs.iter().map(|e| e.ts).max().unwrap() + 3_600_000;
        evs.push(Ev { ts: end, service: "zz".into(), user: "sentinel".into(), status: 599, latency: 1, price: 1.0 });
        out.push(evs);
    }
    out
}

async fn open_log(dir: &Path) -> Arc<dyn LogStore> {
    let root = dir.join("log");
    let (log, _) = tokio::task::spawn_blocking(move || {
        EmbeddedLog::open(root, Arc::new(StdStorage), LogOptions { retention: None, ..LogOptions::default() })
    })
    .await
    .unwrap()
    .unwrap();
    Arc::new(log)
}

async fn manager(dir: &Path, log: &Arc<dyn LogStore>, parallelism: usize, checkpoint_ms: u64) -> Arc<JobManager> {
    let registry = Arc::new(sluice_schema::Registry::open(log.clone()).await.unwrap());
    let mut opts = ManagerOptions::new(dir.join("jobs"));
    opts.parallelism = parallelism;
    opts.checkpoint_interval = Duration::from_millis(checkpoint_ms);
    // Tiny snapshot steps: every checkpoint is written incrementally while processing goes on, so the
    // copy-on-write path (entries changed or removed before their chunk) runs all the time.
    opts.snapshot_chunk = 7;
    JobManager::open(opts, log.clone(), Arc::new(ValueDecoder::new(registry))).await.unwrap()
}

/// Appends events `[from, to)` of every partition, a few records per batch as producers would.
async fn append(log: &Arc<dyn LogStore>, input: &[Vec<Ev>], frac: (f64, f64)) {
    for (p, evs) in input.iter().enumerate() {
        let (a, b) = ((evs.len() as f64 * frac.0) as usize, (evs.len() as f64 * frac.1) as usize);
        for chunk in evs[a..b].chunks(37) {
            let records = chunk
                .iter()
                .map(|e| Record {
                    timestamp: e.ts,
                    key: Some(Bytes::from(e.user.clone())),
                    headers: Vec::new(),
                    value: Bytes::from(serde_json::to_vec(&e.json()).unwrap()),
                })
                .collect();
            log.append("events", p as u32, records).await.unwrap();
        }
    }
}

/// Every record of a topic, per partition in offset order.
async fn read_all(log: &Arc<dyn LogStore>, topic: &str) -> Vec<Vec<sluice_log::StoredRecord>> {
    let n = log.topic(topic).await.map(|t| t.partitions).unwrap_or(0);
    let mut out = Vec::new();
    for p in 0..n {
        let mut recs = Vec::new();
        let mut from = 0;
        loop {
            let r = log.read(topic, p, from, 10_000, 64 << 20).await.unwrap();
            if r.records.is_empty() {
                break;
            }
            from = r.next_offset;
            recs.extend(r.records);
        }
        out.push(recs);
    }
    out
}

/// The changelog folded into a table: last write per key wins, `null` deletes.
async fn results_table(log: &Arc<dyn LogStore>, topic: &str) -> BTreeMap<String, Value> {
    let mut table = BTreeMap::new();
    for part in read_all(log, topic).await {
        for r in part {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            if v.is_null() {
                table.remove(&key);
            } else {
                table.insert(key, v);
            }
        }
    }
    table
}

/// The late-events topic as (source partition, source offset) pairs in topic order; duplicates would show.
async fn late_offsets(log: &Arc<dyn LogStore>, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in read_all(log, topic).await {
        for r in part {
            // `{run}/{partition}/{offset}`: the run names the job's definition.
            let h = r.headers.iter().find(|(k, _)| k == "sluice.source_offset").unwrap();
            let text = String::from_utf8(h.1.to_vec()).unwrap();
            let mut parts = text.rsplitn(3, '/');
            let (offset, partition) = (parts.next().unwrap(), parts.next().unwrap());
            out.push(format!("{partition}/{offset}"));
        }
    }
    out
}

// ---- the model -------------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Win {
    Tumble(i64),
    Hop { size: i64, slide: i64 },
    Session(i64),
}

struct ModelOut {
    /// (window start, window end, key) -> events in it.
    groups: BTreeMap<(i64, i64, String), Vec<Ev>>,
    /// "partition/offset" of too-late events, in partition then offset order.
    late: Vec<String>,
}

fn model(
    input: &[Vec<Ev>],
    win: Win,
    delay: i64,
    lateness: i64,
    filter: &dyn Fn(&Ev) -> bool,
    key: &dyn Fn(&Ev) -> String,
) -> ModelOut {
    let mut groups: BTreeMap<(i64, i64, String), Vec<Ev>> = BTreeMap::new();
    let mut sessions: BTreeMap<String, Vec<Ev>> = BTreeMap::new();
    let mut late = Vec::new();
    for (p, evs) in input.iter().enumerate() {
        let mut max_ts = i64::MIN;
        for (offset, e) in evs.iter().enumerate() {
            max_ts = max_ts.max(e.ts);
            if !filter(e) {
                continue;
            }
            let wm = max_ts - delay;
            match win {
                Win::Session(_) => {
                    if e.ts >= wm - lateness {
                        sessions.entry(key(e)).or_default().push(e.clone());
                    } else {
                        late.push(format!("{p}/{offset}"));
                    }
                }
                Win::Tumble(size) | Win::Hop { size, .. } => {
                    let slide = match win {
                        Win::Hop { slide, .. } => slide,
                        _ => size,
                    };
                    let mut any = false;
                    // Every aligned start s (multiple of slide) with s <= ts < s + size.
                    let mut s = e.ts.div_euclid(slide) * slide;
                    while s + size > e.ts {
                        if s + size + lateness > wm {
                            groups.entry((s, s + size, key(e))).or_default().push(e.clone());
                            any = true;
                        }
                        s -= slide;
                    }
                    if !any {
                        late.push(format!("{p}/{offset}"));
                    }
                }
            }
        }
    }
    if let Win::Session(gap) = win {
        for (k, mut evs) in sessions {
            evs.sort_by_key(|e| e.ts);
            let mut cur: Option<(i64, i64, Vec<Ev>)> = None;
            for e in evs {
                match &mut cur {
                    Some((_, end, members)) if e.ts <= *end => {
                        *end = (*end).max(e.ts + gap);
                        members.push(e);
                    }
                    _ => {
                        if let Some((s, end, m)) = cur.take() {
                            groups.insert((s, end, k.clone()), m);
                        }
                        cur = Some((e.ts, e.ts + gap, vec![e]));
                    }
                }
            }
            if let Some((s, end, m)) = cur {
                groups.insert((s, end, k.clone()), m);
            }
        }
    }
    late.sort_by_key(|s| {
        let (p, o) = s.split_once('/').unwrap();
        (p.parse::<u32>().unwrap(), o.parse::<u64>().unwrap())
    });
    ModelOut { groups, late }
}

/// Exact sum of doubles, correctly rounded (prices are >= 0.01, so 2^-60 fixed point is exact).
fn exact_sum(xs: impl Iterator<Item = f64>) -> f64 {
    let scale = 2f64.powi(60);
    let fixed: i128 = xs.map(|x| (x * scale) as i128).sum();
    (fixed as f64) / scale
}

fn percentile_ok(got: f64, vals: &[i64], q: f64) -> bool {
    let mut v: Vec<f64> = vals.iter().map(|x| *x as f64).collect();
    v.sort_by(f64::total_cmp);
    // Nearest rank (percentile_disc): element ceil(q * n) - 1, within the sketch's 1% (2% with rounding room).
    let x = v[((q * v.len() as f64).ceil() as usize).max(1) - 1];
    got >= x * 0.98 - 1e-9 && got <= x * 1.02 + 1e-9
}

fn key_of(start: i64, end: i64, cols: &[(&str, Value)]) -> String {
    let mut m = Map::new();
    m.insert("window_start".into(), json!(format_time(start).unwrap()));
    m.insert("window_end".into(), json!(format_time(end).unwrap()));
    for (k, v) in cols {
        m.insert((*k).to_string(), v.clone());
    }
    serde_json::to_string(&m).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

// ---- running a job three ways ----------------------------------------------------------------------------------

/// Runs `sql` over the input in a fresh data directory; `crash_at` crashes after that fraction of the input and
/// restores at parallelism 3. Returns (results table, late offsets) once `done` accepts the table.
async fn run_once(
    sql: &str,
    job: &str,
    parallelism: usize,
    checkpoint_ms: u64,
    crash: bool,
    done: &dyn Fn(&BTreeMap<String, Value>) -> bool,
) -> (BTreeMap<String, Value>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path()).await;
    log.create_topic(TopicSpec::new("events", PARTITIONS)).await.unwrap();
    let input = input();
    let out_topic = format!("{job}.results");
    let mgr = manager(dir.path(), &log, parallelism, checkpoint_ms).await;
    if crash {
        append(&log, &input, (0.0, 0.6)).await;
        mgr.create(sql).await.unwrap();
        // Crash once something was checkpointed and results were written after it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = mgr.describe(job).await.unwrap();
            if s.last_checkpoint.is_some() && s.records_in > 1_000 {
                break;
            }
            assert!(Instant::now() < deadline, "no checkpoint within 30 s: {s:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        mgr.crash();
        drop(mgr);
        append(&log, &input, (0.6, 1.0)).await;
        let mgr = manager(dir.path(), &log, 3, checkpoint_ms).await;
        let r = wait_done(&log, &out_topic, done).await;
        let late = late_offsets(&log, &format!("{job}.late")).await;
        mgr.shutdown().await;
        return (r, late);
    }
    append(&log, &input, (0.0, 1.0)).await;
    mgr.create(sql).await.unwrap();
    let r = wait_done(&log, &out_topic, done).await;
    let late = late_offsets(&log, &format!("{job}.late")).await;
    mgr.shutdown().await;
    (r, late)
}

async fn wait_done(
    log: &Arc<dyn LogStore>,
    topic: &str,
    done: &dyn Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = results_table(log, topic).await;
        if done(&t) {
            // Stable: nothing changes it afterwards (no double counting by a late re-emission).
            tokio::time::sleep(Duration::from_millis(400)).await;
            let again = results_table(log, topic).await;
            assert_eq!(t, again, "results changed after matching the model");
            return t;
        }
        if Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs three ways and checks each against `check` and all against each other.
async fn golden(sql: &str, job: &str, model: ModelOut, check: impl Fn(&BTreeMap<String, Value>) -> Result<(), String>) {
    let ok = |t: &BTreeMap<String, Value>| check(t).is_ok();
    let straight = run_once(sql, job, 2, 3_600_000, false, &ok).await;
    if let Err(e) = check(&straight.0) {
        panic!("{job}, straight through: {e}");
    }
    assert_eq!(straight.1, model.late, "{job}: late events differ from the model");
    let frequent = run_once(sql, job, 2, 15, false, &ok).await;
    if let Err(e) = check(&frequent.0) {
        panic!("{job}, frequent checkpoints: {e}");
    }
    let crashed = run_once(sql, job, 1, 15, true, &ok).await;
    if let Err(e) = check(&crashed.0) {
        panic!("{job}, crashed and restored at parallelism 3: {e}");
    }
    assert_eq!(straight.0, frequent.0, "{job}: straight and checkpointed runs differ");
    assert_eq!(straight.0, crashed.0, "{job}: straight and crashed runs differ");
    assert_eq!(frequent.1, model.late, "{job}: late events (checkpointed run)");
    assert_eq!(crashed.1, model.late, "{job}: late events (crashed run) must be written exactly once");
}

fn compare(
    expected: &BTreeMap<String, Map<String, Value>>,
    got: &BTreeMap<String, Value>,
    approx: &[&str],
) -> Result<(), String> {
    if expected.len() != got.len() {
        let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).take(3).collect();
        let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).take(3).collect();
        return Err(format!("{} rows, expected {}; missing {missing:?}, extra {extra:?}", got.len(), expected.len()));
    }
    for (k, want) in expected {
        let Some(have) = got.get(k) else { return Err(format!("missing row {k}")) };
        for (col, w) in want {
            let h = &have[col];
            let same = match (w.as_f64(), h.as_f64()) {
                (Some(a), Some(b)) if approx.contains(&col.as_str()) || w.is_f64() => close(a, b),
                _ => w == h,
            };
            if !same {
                return Err(format!("row {k} column {col}: got {h}, expected {w}"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_with_several_aggregates() {
    let sql = "CREATE JOB g_tumble WITH (out_of_orderness = '5s', idle_timeout = 'off') AS
        SELECT window_start, window_end, service, count(*) AS n, sum(latency) AS total, min(latency) AS lo,
               max(latency) AS hi, avg(price) AS avg_price, approx_percentile(latency, 0.9) AS p90
        FROM events WHERE status >= 400 GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";
    let input = input();
    let m = model(&input, Win::Tumble(60_000), 5_000, 0, &|e| e.status >= 400, &|e| e.service.clone());
    let mut expected = BTreeMap::new();
    let mut p90 = BTreeMap::new();
    for ((s, e, k), evs) in &m.groups {
        let key = key_of(*s, *e, &[("service", json!(k))]);
        let lat: Vec<i64> = evs.iter().map(|e| e.latency).collect();
        let mut row = Map::new();
        row.insert("window_start".into(), json!(format_time(*s).unwrap()));
        row.insert("window_end".into(), json!(format_time(*e).unwrap()));
        row.insert("service".into(), json!(k));
        row.insert("n".into(), json!(evs.len()));
        row.insert("total".into(), json!(lat.iter().sum::<i64>()));
        row.insert("lo".into(), json!(lat.iter().min()));
        row.insert("hi".into(), json!(lat.iter().max()));
        row.insert("avg_price".into(), json!(exact_sum(evs.iter().map(|e| e.price)) / evs.len() as f64));
        p90.insert(key.clone(), lat);
        expected.insert(key, row);
    }
    assert!(m.late.len() > 10, "the input must exercise late events");
    golden(sql, "g_tumble", m, |t| {
        compare(&expected, t, &["avg_price"])?;
        for (k, lat) in &p90 {
            let got = t[k]["p90"].as_f64().ok_or("p90 missing")?;
            if !percentile_ok(got, lat, 0.9) {
                return Err(format!("{k}: p90 {got} not within 2% of the exact quantile"));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_with_count_distinct() {
    let sql = "CREATE JOB g_hop WITH (out_of_orderness = '3s', idle_timeout = 'off') AS
        SELECT window_start, window_end, count(*) AS n, count(DISTINCT user) AS users
        FROM events GROUP BY HOP(event_time, INTERVAL '30' SECOND, INTERVAL '2' MINUTE)";
    let input = input();
    let m = model(&input, Win::Hop { size: 120_000, slide: 30_000 }, 3_000, 0, &|_| true, &|_| String::new());
    let mut expected = BTreeMap::new();
    for ((s, e, _), evs) in &m.groups {
        let users: BTreeSet<&str> = evs.iter().map(|e| e.user.as_str()).collect();
        let mut row = Map::new();
        row.insert("n".into(), json!(evs.len()));
        row.insert("users".into(), json!(users.len()));
        expected.insert(key_of(*s, *e, &[]), row);
    }
    golden(sql, "g_hop", m, |t| compare(&expected, t, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_per_user() {
    let sql = "CREATE JOB g_session WITH (out_of_orderness = '5s', idle_timeout = 'off') AS
        SELECT window_start, window_end, user, count(*) AS n, max(latency) AS worst
        FROM events WHERE service IN ('api', 'auth', 'zz') GROUP BY SESSION(event_time, INTERVAL '20' SECOND), user";
    let input = input();
    let filter = |e: &Ev| ["api", "auth", "zz"].contains(&e.service.as_str());
    let m = model(&input, Win::Session(20_000), 5_000, 0, &filter, &|e| e.user.clone());
    let mut expected = BTreeMap::new();
    for ((s, e, k), evs) in &m.groups {
        // The sentinel's own session never closes (nothing comes after it): only final sessions are written.
        if k == "sentinel" {
            continue;
        }
        let mut row = Map::new();
        row.insert("n".into(), json!(evs.len()));
        row.insert("worst".into(), json!(evs.iter().map(|e| e.latency).max()));
        expected.insert(key_of(*s, *e, &[("user", json!(k))]), row);
    }
    golden(sql, "g_session", m, |t| compare(&expected, t, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_with_allowed_lateness() {
    let sql = "CREATE JOB g_late WITH (out_of_orderness = '1s', allowed_lateness = '30s', idle_timeout = 'off') AS
        SELECT window_start, window_end, count(*) AS n, sum(latency) AS total
        FROM events GROUP BY TUMBLE(event_time, INTERVAL '10' SECOND)";
    let input = input();
    let m = model(&input, Win::Tumble(10_000), 1_000, 30_000, &|_| true, &|_| String::new());
    let mut expected = BTreeMap::new();
    for ((s, e, _), evs) in &m.groups {
        let mut row = Map::new();
        row.insert("n".into(), json!(evs.len()));
        row.insert("total".into(), json!(evs.iter().map(|e| e.latency).sum::<i64>()));
        expected.insert(key_of(*s, *e, &[]), row);
    }
    assert!(!m.late.is_empty());
    golden(sql, "g_late", m, |t| compare(&expected, t, &[])).await;
}

/// Out-of-order input within the bound: nothing is late, every event counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_within_bound_loses_nothing() {
    let sql = "CREATE JOB g_ooo WITH (out_of_orderness = '10m', idle_timeout = 'off') AS
        SELECT window_start, window_end, service, count(*) AS n FROM events
        GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";
    let input = input();
    let m = model(&input, Win::Tumble(60_000), 600_000, 0, &|_| true, &|e| e.service.clone());
    assert!(m.late.is_empty(), "a 10 minute bound covers every late event of the input");
    let total: usize = m.groups.values().map(Vec::len).sum();
    assert_eq!(total, input.iter().map(Vec::len).sum::<usize>());
    let mut expected = BTreeMap::new();
    for ((s, e, k), evs) in &m.groups {
        let mut row = Map::new();
        row.insert("n".into(), json!(evs.len()));
        expected.insert(key_of(*s, *e, &[("service", json!(k))]), row);
    }
    golden(sql, "g_ooo", m, |t| compare(&expected, t, &[])).await;
}

/// A stateless filter/project job: every matching event exactly once, in source order per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_only_job_writes_each_row_once() {
    let sql = "CREATE JOB g_filter AS INSERT INTO errors
        SELECT service, user, latency * 2 AS double_latency, upper(service) AS svc FROM events WHERE status = 500";
    let input = input();
    let expected: Vec<Vec<Value>> = input
        .iter()
        .map(|evs| {
            evs.iter()
                .filter(|e| e.status == 500)
                .map(|e| json!({"service": e.service, "user": e.user, "double_latency": e.latency * 2, "svc": e.service.to_uppercase()}))
                .collect()
        })
        .collect();
    for (parallelism, ckpt, crash) in [(2, 3_600_000, false), (2, 15, false), (1, 15, true)] {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path()).await;
        log.create_topic(TopicSpec::new("events", PARTITIONS)).await.unwrap();
        let mgr = manager(dir.path(), &log, parallelism, ckpt).await;
        let want: usize = expected.iter().map(Vec::len).sum();
        let count = |parts: &Vec<Vec<sluice_log::StoredRecord>>| parts.iter().map(Vec::len).sum::<usize>();
        let mgr = if crash {
            append(&log, &input, (0.0, 0.5)).await;
            mgr.create(sql).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while count(&read_all(&log, "errors").await) < want / 4 {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            mgr.crash();
            drop(mgr);
            append(&log, &input, (0.5, 1.0)).await;
            manager(dir.path(), &log, 3, ckpt).await
        } else {
            append(&log, &input, (0.0, 1.0)).await;
            mgr.create(sql).await.unwrap();
            mgr
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&read_all(&log, "errors").await) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = read_all(&log, "errors").await;
        for (p, recs) in got.iter().enumerate() {
            let values: Vec<Value> = recs.iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
            assert_eq!(values, expected[p], "partition {p} (parallelism {parallelism}, crash {crash})");
        }
        mgr.shutdown().await;
    }
}
