//! Process-level crash test of stream jobs: the real binary runs a windowed count job over 1,000,000 generated
//! events whose exact per-(window, service) counts are known (all produced before the job starts), is SIGKILLed
//! at random moments at least 20 times once the job runs (while it works through the backlog and, when it is
//! fast, after it caught up; every fifth kill comes within 100 ms of the restart, during restore and replay; the
//! last one once the search index holds part of the topic),
//! and after the last restart the job's results changelog, folded into a table (last record per key wins), must
//! equal the expected counts exactly: every window final, no count off by one event, no extra rows. Every
//! `final` record ever written must carry the exact count too. The store, fed through the same kills, must then
//! hold every raw event exactly once and every final window result exactly once, and the search index, also
//! built through the kills, must find every event exactly once.
//!
//! `SLUICE_TEST_KILL_ROUNDS` raises the number of kills (this test never does fewer than 20);
//! `SLUICE_TEST_SEED` changes the generated events and the kill timings.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{KillOnDrop, free_port, kill_rounds, spawn_server_with_env, wait_ready};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TOPIC: &str = "clicks";
const JOB: &str = "clicks_per_minute";
const PARTITIONS: u32 = 4;
const EVENTS: u64 = 1_000_000;
const BATCH: u64 = 5_000;
const SERVICES: [&str; 5] = ["api", "auth", "billing", "search", "web"];
const STATUSES: [u16; 5] = [200, 200, 201, 404, 500];
/// 2025-01-01T00:00:00Z: a minute boundary, so the 20 minutes of event time are 20 (+1, see JITTER_MS) windows.
const BASE_MS: i64 = 1_735_689_600_000;
const SPAN_MS: i64 = 20 * 60_000;
const WINDOW_MS: i64 = 60_000;
/// Event times go up with the event number, plus up to this much: out of order within every partition, and
/// across window boundaries, but never by more than `OUT_OF_ORDERNESS`, so no event is late.
const JITTER_MS: i64 = 5_000;
const OUT_OF_ORDERNESS: &str = "30s";
/// One event per sentinel key, an hour after the data: its time moves every partition's watermark past every
/// real window, so all of them become final. The sentinel's own window stays open (partial).
const SENTINEL_MS: i64 = BASE_MS + SPAN_MS + 3_600_000;
const SENTINEL_SERVICE: &str = "sentinel";
const SENTINELS: u64 = 64;
const MIN_KILLS: usize = 20;
/// Small store flushes and eager compaction, so kills land in the middle of both.
const SERVER_ENV: [(&str, &str); 8] = [
    ("SLUICE__STREAM__CHECKPOINT_INTERVAL", "200ms"),
    ("SLUICE__STREAM__PARALLELISM", "2"),
    ("SLUICE__STORE__FLUSH_ROWS", "40000"),
    ("SLUICE__STORE__FLUSH_INTERVAL", "300ms"),
    ("SLUICE__STORE__COMPACT_MIN_FILES", "3"),
    // Frequent index commits, so kills land between them; pages big enough to read every hit back.
    ("SLUICE__SEARCH__REFRESH_INTERVAL", "200ms"),
    ("SLUICE__SEARCH__MAX_LIMIT", "100000"),
    ("SLUICE__SEARCH__QUERY_TIMEOUT", "60s"),
];

fn window_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(WINDOW_MS)
}

fn seed() -> u64 {
    std::env::var("SLUICE_TEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format("%H:%M:%S").to_string())
}

/// (window start, service) -> count.
type Counts = BTreeMap<(i64, String), u64>;

/// Produces every event (and the sentinels last); returns the expected counts and the events per partition.
async fn produce_all(http: &reqwest::Client, base: &str, rng: &mut impl Rng) -> (Counts, Vec<u64>) {
    let mut expected = Counts::new();
    let mut per_partition = vec![0u64; PARTITIONS as usize];
    let url = format!("{base}/v1/topics/{TOPIC}/events");
    let mut post = async |body: String, n: u64| -> Vec<u32> {
        let r = http.post(&url).body(body).send().await.expect("produce");
        let status = r.status();
        let body: Value = r.json().await.expect("produce response");
        assert!(status.is_success(), "produce failed: {status} {body}");
        assert_eq!(body["accepted"].as_u64(), Some(n), "every event accepted: {}", body["error"]);
        let parts: Vec<u32> =
            body["results"].as_array().unwrap().iter().map(|r| r["partition"].as_u64().unwrap() as u32).collect();
        for &p in &parts {
            per_partition[p as usize] += 1;
        }
        parts
    };
    let mut i = 0u64;
    while i < EVENTS {
        let n = BATCH.min(EVENTS - i);
        let mut body = String::with_capacity(n as usize * 96);
        for j in i..i + n {
            let ts = BASE_MS + (j as i64) * SPAN_MS / EVENTS as i64 + rng.random_range(0..JITTER_MS);
            let service = SERVICES[rng.random_range(0..SERVICES.len())];
            let status = STATUSES[rng.random_range(0..STATUSES.len())];
            let key = rng.random_range(0..1_000);
            *expected.entry((window_start(ts), service.to_string())).or_default() += 1;
            writeln!(
                body,
                r#"{{"key":"u{key}","value":{{"service":"{service}","status":{status}}},"timestamp":{ts}}}"#
            )
            .unwrap();
        }
        post(body, n).await;
        i += n;
    }
    // The sentinels, last in every partition (each partition is written in request order).
    let mut body = String::new();
    for s in 0..SENTINELS {
        writeln!(
            body,
            r#"{{"key":"sentinel-{s}","value":{{"service":"{SENTINEL_SERVICE}","status":200}},"timestamp":{SENTINEL_MS}}}"#
        )
        .unwrap();
    }
    let parts = post(body, SENTINELS).await;
    for p in 0..PARTITIONS {
        assert!(parts.contains(&p), "no sentinel reached partition {p}: pick other sentinel keys ({parts:?})");
    }
    (expected, per_partition)
}

/// One record of the results changelog.
struct Change {
    partition: u32,
    offset: u64,
    key: String,
    kind: String,
    value: Value,
}

/// The results changelog as read so far, and the table it folds into (last record per key wins).
#[derive(Default)]
struct Changelog {
    next: Vec<u64>,
    records: Vec<Change>,
    /// Changelog key -> index of its last record.
    table: HashMap<String, usize>,
}

impl Changelog {
    /// Reads every record appended since the last call; returns how many.
    async fn catch_up(&mut self, http: &reqwest::Client, base: &str) -> Result<usize, String> {
        self.next.resize(PARTITIONS as usize, 0);
        let mut n = 0;
        for p in 0..PARTITIONS {
            loop {
                let url = format!(
                    "{base}/v1/topics/{JOB}.results/events?partition={p}&offset={}&limit=10000",
                    self.next[p as usize]
                );
                let r = http.get(url).send().await.map_err(|e| e.to_string())?;
                let status = r.status();
                let body: Value = r.json().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("reading the changelog: {status} {body}"));
                }
                let events = body["events"].as_array().ok_or("no events array")?;
                if events.is_empty() {
                    break;
                }
                for e in events {
                    let offset = e["offset"].as_u64().ok_or("event without offset")?;
                    assert_eq!(offset, self.next[p as usize], "changelog offsets are dense");
                    self.next[p as usize] = offset + 1;
                    let key = e["key"].as_str().ok_or_else(|| format!("changelog record without key: {e}"))?;
                    let kind = e["headers"]["sluice.result"].as_str().unwrap_or("<none>");
                    self.table.insert(key.to_string(), self.records.len());
                    self.records.push(Change {
                        partition: p,
                        offset,
                        key: key.to_string(),
                        kind: kind.to_string(),
                        value: e["value"].clone(),
                    });
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The folded table: (window start, service) -> (kind, n) of the last record per key. Panics on a record
    /// whose key or value does not have the job's shape.
    fn folded(&self) -> BTreeMap<(i64, String), (String, Option<u64>)> {
        let mut out = BTreeMap::new();
        for &i in self.table.values() {
            let c = &self.records[i];
            let (start, service) = parse_key(&c.key);
            let n = if c.value.is_null() {
                None
            } else {
                assert_eq!(c.value["service"].as_str(), Some(service.as_str()), "row {} under key {}", c.value, c.key);
                assert_eq!(c.value["window_start"].as_str().map(parse_time), Some(start), "row {}", c.value);
                assert_eq!(c.value["window_end"].as_str().map(parse_time), Some(start + WINDOW_MS), "row {}", c.value);
                Some(c.value["n"].as_u64().unwrap_or_else(|| panic!("row without integer n: {}", c.value)))
            };
            out.insert((start, service), (c.kind.clone(), n));
        }
        out
    }

    fn history(&self, start: i64, service: &str) -> String {
        let mut s = String::new();
        for c in self.records.iter().filter(|c| parse_key(&c.key) == (start, service.to_string())) {
            let _ = write!(s, " {}/{}:{}={}", c.partition, c.offset, c.kind, c.value["n"]);
        }
        s
    }
}

fn parse_time(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("time {s:?}: {e}")).timestamp_millis()
}

/// A changelog key `{"window_end","window_start","service"}` -> (window start, service).
fn parse_key(key: &str) -> (i64, String) {
    let k: Value = serde_json::from_str(key).unwrap_or_else(|e| panic!("changelog key {key:?}: {e}"));
    let start = parse_time(k["window_start"].as_str().expect("window_start"));
    assert_eq!(parse_time(k["window_end"].as_str().expect("window_end")), start + WINDOW_MS, "key {key}");
    (start, k["service"].as_str().expect("service").to_string())
}

async fn describe(http: &reqwest::Client, base: &str) -> Option<Value> {
    let r = http.get(format!("{base}/v1/jobs/{JOB}")).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Next offsets of the job's partitions, summed (0 when unknown).
/// `GET /v1/tables/{table}`; `None` before the table exists.
async fn index_documents(http: &reqwest::Client, base: &str) -> Option<u64> {
    let r = http.get(format!("{base}/v1/topics/{TOPIC}/index")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().await.ok()?["documents"].as_u64()
}

async fn store_table(http: &reqwest::Client, base: &str, table: &str) -> Option<Value> {
    let r = http.get(format!("{base}/v1/tables/{table}")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// `POST /v1/query`; `None` while the server is not answering.
async fn query(http: &reqwest::Client, base: &str, sql: &str) -> Option<Value> {
    let r = http.post(format!("{base}/v1/query")).json(&json!({ "sql": sql })).send().await.ok()?;
    let status = r.status();
    let v: Value = r.json().await.ok()?;
    assert!(status.is_success(), "query {sql}: {v}");
    Some(v)
}

fn offsets_sum(status: &Value) -> u64 {
    status["partitions"].as_array().map_or(0, |ps| ps.iter().filter_map(|p| p["offset"].as_u64()).sum())
}

fn caught_up(status: &Value, per_partition: &[u64]) -> bool {
    let Some(ps) = status["partitions"].as_array() else { return false };
    status["lag"].as_u64() == Some(0)
        && ps.len() == per_partition.len()
        && ps.iter().all(|p| {
            let i = p["partition"].as_u64().unwrap_or(u64::MAX) as usize;
            per_partition.get(i).is_some_and(|&n| p["offset"].as_u64() == Some(n))
        })
}

fn brief(status: &Value) -> String {
    format!(
        "state={} records_in={} offsets={} lag={} watermark={} checkpoint={}",
        status["state"],
        status["records_in"],
        offsets_sum(status),
        status["lag"],
        status["watermark"],
        status["last_checkpoint"]["epoch"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_results_exact_after_sigkills() {
    let started = Instant::now();
    let rounds = kill_rounds().max(MIN_KILLS);
    let seed = seed();
    eprintln!("seed {seed} (SLUICE_TEST_SEED), {rounds} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();

    let mut server = KillOnDrop(spawn_server_with_env(dir.path(), port, &SERVER_ENV));
    wait_ready(&http, &base).await;
    let r = http.post(format!("{base}/v1/topics")).json(&json!({"name": TOPIC, "partitions": PARTITIONS})).send();
    assert!(r.await.unwrap().status().is_success());
    let (expected, per_partition) = produce_all(&http, &base, &mut rng).await;
    let total: u64 = per_partition.iter().sum();
    assert_eq!(total, EVENTS + SENTINELS);
    assert_eq!(expected.values().sum::<u64>(), EVENTS);
    let last_end = expected.keys().map(|(w, _)| w + WINDOW_MS).max().unwrap();
    let sentinel_window = window_start(SENTINEL_MS);
    eprintln!(
        "produced {total} events ({per_partition:?} per partition) in {:.1}s; {} expected rows over {} windows",
        started.elapsed().as_secs_f64(),
        expected.len(),
        expected.keys().map(|(w, _)| w).collect::<std::collections::BTreeSet<_>>().len(),
    );

    let sql = format!(
        "CREATE JOB {JOB} WITH (out_of_orderness = '{OUT_OF_ORDERNESS}', idle_timeout = 'off') AS \
         SELECT window_start, window_end, service, count(*) AS n FROM {TOPIC} \
         GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service"
    );
    let r = http.post(format!("{base}/v1/jobs")).json(&json!({ "sql": sql })).send().await.unwrap();
    let status = r.status();
    assert_eq!(status.as_u16(), 201, "create job: {}", r.text().await.unwrap_or_default());
    let job_started = Instant::now();
    // The search index is defined once the history is there, so it is built through the kills.
    let def = json!({"fields": {"service": {"type": "keyword"}, "status": {"type": "number"}}});
    let r = http.put(format!("{base}/v1/topics/{TOPIC}/index")).json(&def).send().await.unwrap();
    assert!(r.status().is_success(), "create index: {}", r.text().await.unwrap_or_default());

    // Kill at random moments; note where the job was each time.
    let (mut at_startup, mut mid_stream, mut after_catch_up) = (0, 0, 0);
    // Kills that found the raw table part-written (some rows in files, not all).
    let mut store_mid_way = 0;
    let mut search_mid_way = 0;
    let mut kill_log = String::new();
    for round in 0..rounds {
        // Mostly 100-700 ms; every fifth kill comes sooner, while the job restores its checkpoint and replays.
        let sleep = if round % 5 == 4 { rng.random_range(0..100) } else { rng.random_range(100..700) };
        tokio::time::sleep(Duration::from_millis(sleep)).await;
        if round == rounds - 1 {
            // The index's threads run at a lower priority and may not commit between quick kills while the job
            // and the store take the cores: the last kill waits until the index holds part of the topic.
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline && !index_documents(&http, &base).await.is_some_and(|d| d > 0 && d < total)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let seen = describe(&http, &base).await;
        let table = store_table(&http, &base, TOPIC).await;
        let indexed = index_documents(&http, &base).await;
        server.0.kill().expect("SIGKILL the server");
        server.0.wait().unwrap();
        let what = match &seen {
            Some(s) if caught_up(s, &per_partition) => {
                after_catch_up += 1;
                "caught up"
            }
            Some(s) if s["records_in"].as_u64().unwrap_or(0) > 0 => {
                mid_stream += 1;
                "processing"
            }
            _ => {
                at_startup += 1;
                "restoring, nothing read yet"
            }
        };
        let stored = table.as_ref().and_then(|t| t["rows"].as_u64());
        if stored.is_some_and(|r| r > 0 && r < total) {
            store_mid_way += 1;
        }
        if indexed.is_some_and(|d| d > 0 && d < total) {
            search_mid_way += 1;
        }
        let line = format!(
            "kill {round:>2} after {sleep:>3} ms ({what}): {}; store: {:?} rows in files, {:?} buffered; \
             search: {indexed:?} documents",
            seen.as_ref().map_or_else(|| "no status".to_string(), brief),
            stored,
            table.as_ref().and_then(|t| t["buffered_rows"].as_u64()),
        );
        eprintln!("{line}");
        kill_log.push_str(&line);
        kill_log.push('\n');
        server = KillOnDrop(spawn_server_with_env(dir.path(), port, &SERVER_ENV));
        wait_ready(&http, &base).await;
    }
    eprintln!(
        "{rounds} kills in {:.1}s: {at_startup} restoring, {mid_stream} processing, {after_catch_up} caught up",
        job_started.elapsed().as_secs_f64()
    );

    // After the last restart: wait until the job has read everything and every real window is final in the
    // changelog, and the changelog has stopped growing.
    let mut log = Changelog::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut status = Value::Null;
    let mut settled = false;
    let mut quiet_polls = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(s) = describe(&http, &base).await else { continue };
        status = s;
        let new = match log.catch_up(&http, &base).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("changelog read failed: {e}");
                continue;
            }
        };
        quiet_polls = if new == 0 { quiet_polls + 1 } else { 0 };
        let folded = log.folded();
        let all_final = expected.keys().all(|k| folded.get(k).is_some_and(|(kind, _)| kind == "final"));
        let sentinel_done =
            folded.get(&(sentinel_window, SENTINEL_SERVICE.to_string())).map(|(_, n)| *n) == Some(Some(SENTINELS));
        if caught_up(&status, &per_partition) && all_final && sentinel_done && quiet_polls >= 2 {
            settled = true;
            break;
        }
        if caught_up(&status, &per_partition) && quiet_polls >= 20 {
            // Everything read and 5 s without a new changelog record: nothing more is coming.
            break;
        }
    }
    eprintln!(
        "after the last restart: settled={settled} in {:.1}s, {} changelog records; {}",
        job_started.elapsed().as_secs_f64(),
        log.records.len(),
        brief(&status)
    );

    // The folded table against the expected counts, every row.
    let folded = log.folded();
    let (mut wrong_count, mut missing, mut not_final, mut unexpected) = (0, 0, 0, 0);
    let mut report = String::new();
    let note = |report: &mut String, line: String| {
        if report.lines().count() < 60 {
            report.push_str(&line);
            report.push('\n');
        }
    };
    // "final" means final: every final record ever written carries the exact count, even one a replay later
    // re-opens with partial rows (the ADR allows extra partial rows after a crash, not wrong final ones).
    let (mut bad_finals, mut reopened) = (0, 0);
    let mut finals_seen: HashMap<&str, bool> = HashMap::new();
    for c in &log.records {
        if c.kind == "final" {
            finals_seen.insert(&c.key, true);
            let (w, service) = parse_key(&c.key);
            let want = expected.get(&(w, service.clone()));
            if want.is_none() || c.value["n"].as_u64() != want.copied() {
                bad_finals += 1;
                let line = format!(
                    "  final record {}/{} for window {} {service} has n={}, expected {want:?}",
                    c.partition,
                    c.offset,
                    fmt_ms(w),
                    c.value["n"]
                );
                note(&mut report, line);
            }
        } else if finals_seen.get(c.key.as_str()) == Some(&true) {
            finals_seen.insert(&c.key, false);
            reopened += 1;
        }
    }
    eprintln!("{reopened} times a final row was followed by partial rows again (replay after a kill)");
    for ((w, service), &n) in &expected {
        let got = folded.get(&(*w, service.clone()));
        let problem = match got {
            Some((kind, Some(g))) if *g == n && kind == "final" => continue,
            Some((kind, Some(g))) if *g == n => {
                not_final += 1;
                format!("right count, but the last record is {kind:?}, not \"final\"")
            }
            Some((_, Some(g))) => {
                wrong_count += 1;
                format!("count off by {:+}", *g as i64 - n as i64)
            }
            _ => {
                missing += 1;
                "missing".to_string()
            }
        };
        let history = log.history(*w, service);
        note(
            &mut report,
            format!(
                "  window {} {service}: expected final n={n}, got {got:?}: {problem}; changelog:{history}",
                fmt_ms(*w)
            ),
        );
    }
    let sentinel_key = (sentinel_window, SENTINEL_SERVICE.to_string());
    let sentinel_ok = folded.get(&sentinel_key) == Some(&("partial".to_string(), Some(SENTINELS)));
    if !sentinel_ok {
        unexpected += 1;
        let got = folded.get(&sentinel_key);
        note(
            &mut report,
            format!("  sentinel row (window {}): expected partial n={SENTINELS}, got {got:?}", fmt_ms(sentinel_window)),
        );
    }
    for ((w, service), got) in &folded {
        if expected.contains_key(&(*w, service.clone())) || (*w, service) == (sentinel_key.0, &sentinel_key.1) {
            continue;
        }
        unexpected += 1;
        let history = log.history(*w, service);
        note(&mut report, format!("  unexpected row: window {} {service}: {got:?}; changelog:{history}", fmt_ms(*w)));
    }
    let got_sum: u64 = folded.iter().filter(|((w, _), _)| *w < last_end).filter_map(|(_, (_, n))| *n).sum();
    if wrong_count + missing + not_final + unexpected + bad_finals > 0 {
        // One letter per service: the kind of each window's last record (F final, P partial, D deleted, - none).
        let mut kinds = String::new();
        for w in expected.keys().map(|(w, _)| *w).collect::<std::collections::BTreeSet<_>>() {
            let letters: String = SERVICES
                .iter()
                .map(|s| match folded.get(&(w, s.to_string())).map(|(k, _)| k.as_str()) {
                    Some("final") => 'F',
                    Some("partial") => 'P',
                    Some("deleted") => 'D',
                    Some(_) => '?',
                    None => '-',
                })
                .collect();
            let _ = write!(kinds, " {}={letters}", fmt_ms(w));
        }
        panic!(
            "the folded results differ from the expected counts (seed {seed}, settled={settled}): of {} expected rows \
             {wrong_count} have a wrong count, {missing} are missing, {not_final} have the right count but do not end \
             with a final record; {unexpected} unexpected or wrong other rows; {bad_finals} final records with a \
             wrong count. Events counted: {got_sum} of {EVENTS}. \
             {} changelog records, next offsets {:?}; job: {}\nlast record per window:{kinds}\n{report}kills:\n{kill_log}",
            expected.len(),
            log.records.len(),
            log.next,
            brief(&status),
        );
    }
    assert!(mid_stream > 0, "no kill landed while the job was processing: make the input larger");
    assert!(store_mid_way > 0, "no kill landed while the store was part-way through the topic");
    assert!(settled, "the job never settled (lag 0, all windows final, quiet changelog): {status}");
    assert_eq!(got_sum, EVENTS);
    assert_eq!(status["state"], "running", "job status: {status}");
    assert!(status["error"].is_null(), "job status: {status}");

    // No event was late (the test keeps every event within the job's out-of-orderness).
    for p in 0..PARTITIONS {
        let url = format!("{base}/v1/topics/{JOB}.late/events?partition={p}&offset=0&limit=10");
        let r: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(r["events"].as_array().map(Vec::len), Some(0), "late events in partition {p}: {r}");
    }

    // The store, fed by its own sinks through the same kills: every raw event once (by partition and offset),
    // and every final window once with its exact count.
    let raw_sql = format!(
        "SELECT count(*) AS n, count(DISTINCT \"partition\" * 1000000000 + \"offset\") AS distinct_ids FROM {TOPIC}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let raw = loop {
        let r = query(&http, &base, &raw_sql).await;
        if r.as_ref().is_some_and(|r| r["rows"][0]["n"].as_u64() == Some(total)) || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let raw = raw.expect("the store answers");
    assert_eq!(raw["rows"][0]["n"].as_u64(), Some(total), "raw rows in the store: {raw}");
    assert_eq!(raw["rows"][0]["distinct_ids"].as_u64(), Some(total), "each event once: {raw}");
    let results_sql = format!(
        "SELECT CAST(window_start AS BIGINT) AS w, service, n FROM {JOB} WHERE window_start < to_timestamp_millis({last_end})"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let r = query(&http, &base, &results_sql).await.expect("the store answers");
        let rows: Counts = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| ((r["w"].as_i64().unwrap(), r["service"].as_str().unwrap().to_string()), r["n"].as_u64().unwrap()))
            .collect();
        let len = r["rows"].as_array().unwrap().len();
        if (rows == expected && len == expected.len()) || Instant::now() > deadline {
            break (rows, len);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stored.1, expected.len(), "one stored row per final window and key");
    assert!(stored.0 == expected, "stored results differ from the expected counts");

    // The search index, built through the same kills: every event found exactly once, by (partition, offset).
    let deadline = Instant::now() + Duration::from_secs(180);
    while index_documents(&http, &base).await != Some(total) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut ids = std::collections::HashSet::new();
    let (mut hits, mut cursor) = (0u64, None::<String>);
    let mut per_status: BTreeMap<u64, u64> = BTreeMap::new();
    loop {
        let mut url = format!("{base}/v1/search?topic={TOPIC}&q=*&limit=100000&highlight=false");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let asked = Instant::now();
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        eprintln!("search page of {} hits in {:?}", page["hits"].as_array().map_or(0, Vec::len), asked.elapsed());
        assert_eq!(page["total"].as_u64(), Some(total), "documents in the index: {}", page["total"]);
        for h in page["hits"].as_array().unwrap() {
            hits += 1;
            ids.insert((h["partition"].as_u64().unwrap(), h["offset"].as_u64().unwrap()));
            *per_status.entry(h["event"]["status"].as_u64().unwrap()).or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(hits, total, "hits over every page");
    assert_eq!(ids.len() as u64, total, "each event found once");
    for p in 0..PARTITIONS {
        let n = ids.iter().filter(|(pp, _)| *pp == p as u64).count() as u64;
        assert_eq!(n, per_partition[p as usize], "partition {p}: every offset found");
    }
    // The index answers term queries with the same counts as the events it holds.
    let r: Value = http
        .get(format!("{base}/v1/search?topic={TOPIC}&q=status:500&limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["total"].as_u64(), per_status.get(&500).copied(), "status:500 count: {r}");
    assert!(search_mid_way > 0, "no kill landed while the index was part-way through the topic");
    drop(server);
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
}
