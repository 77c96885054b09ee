//! Backpressure: a deliberately slow results consumer. A `LogStore` wrapper delays every append to the job's
//! results topic (500 ms each) while the test says so. While it is slow the job must throttle its reading (lag stays high;
//! input is admitted no faster than results drain) and keep what is in flight between reading and the results
//! topic under the bound its queues imply; memory follows. Once the consumer speeds up, lag must go to zero and
//! the folded changelog must hold exactly the expected counts: nothing lost, nothing counted twice.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sluice_jobs::{JobManager, ManagerOptions};
use sluice_log::{
    AppendAck, EmbeddedLog, FsyncPolicy, LogError, LogOptions, LogStore, ReadResult, Record, StdStorage,
    TopicDescription, TopicInfo, TopicSpec,
};
use sluice_schema::reader::ValueDecoder;
use sluice_stream::datum::format_time;

const PARTITIONS: u32 = 2;
const PARALLELISM: usize = 2;
const EVENTS: u64 = 250_000;
/// A second boundary, so 1 s windows line up with event numbers.
const T0: i64 = 1_800_000_000_000;
/// Per append to the results topic while slow.
const SLOW_MS: u64 = 500;
const SLOW_PHASE: Duration = Duration::from_secs(5);
const STALLED: Duration = Duration::from_millis(2_500);
/// Slow appends that must drain after the job first stops reading, before the slow phase may end.
const MIN_DRAINS: u64 = 3;
/// Bounds only a hang: the phases end on progress, whatever the machine's load.
const SLOW_DEADLINE: Duration = Duration::from_secs(120);

const JOB: &str = "bp";
const RESULTS: &str = "bp.results";
const SQL: &str = "CREATE JOB bp WITH (idle_timeout = 'off', hot_retention = '5s') AS
    SELECT window_start, window_end, user, count(*) AS n
    FROM events
    GROUP BY TUMBLE(event_time, INTERVAL '1' SECOND), user";

// The runner's queue sizes (private constants of `sluice_jobs::runner`, restated here): what the design lets be
// in flight between reading the source and the results topic.
/// Records per partition per read (`READ_MAX_RECORDS`): a task's read round, split into one delta per shard.
const READ_MAX_RECORDS: u64 = 2_000;
/// Deltas queued per shard, per task (`SHARD_QUEUE`).
const SHARD_QUEUE: u64 = 8;
/// Batches queued at the results writer (`WRITER_QUEUE`), each of at most `WRITER_BATCH` rows.
const WRITER_QUEUE: u64 = 8;
const WRITER_BATCH: u64 = 4_096;
/// Events per result row: every (window, user) of the input has one event.
const EVENTS_PER_ROW: u64 = 1;

/// Events read but not yet in the results topic, at most:
/// - every shard's queue full: `SHARD_QUEUE * tasks` deltas, each the part of one task's read round whose users
///   hash to that shard (a tenth more for hashing skew);
/// - every shard's unwritten changes: a shard stops absorbing deltas once a writer batch of rows changed, so it
///   holds at most one batch plus one delta, and twice that while it hands a batch to the writer;
/// - every task holding one read round and blocked sending another;
/// - the writer's queue full, one batch being appended and one more ready in every shard.
fn in_flight_bound() -> u64 {
    let (shard_queues, shard_state, source_tasks, writer) = in_flight_parts();
    shard_queues + shard_state + source_tasks + writer
}

/// The terms of [`in_flight_bound`]: shard queues, shard state, source tasks, writer.
fn in_flight_parts() -> (u64, u64, u64, u64) {
    let tasks = PARALLELISM as u64;
    let shards = PARALLELISM as u64;
    let round = READ_MAX_RECORDS * u64::from(PARTITIONS) / tasks;
    let shard_queues = shards * SHARD_QUEUE * tasks * (round / shards) * 11 / 10;
    let shard_state = shards * 2 * (WRITER_BATCH * EVENTS_PER_ROW + (round / shards) * 11 / 10);
    let source_tasks = tasks * 2 * round;
    let writer = (WRITER_QUEUE + 1 + shards) * WRITER_BATCH * EVENTS_PER_ROW;
    (shard_queues, shard_state, source_tasks, writer)
}

/// Event `i`: 1,000 events per 1 s window over 250 windows, partition `i % 2`; 100,000 users, each active every
/// 100 s, so every (window, user) is one result row.
fn event(i: u64) -> (u32, i64, String) {
    ((i % u64::from(PARTITIONS)) as u32, T0 + i as i64, format!("u{}", i % 100_000))
}

/// The log, with appends to the results topic delayed by `delay_ms`, and folded as they land: `durable` is the
/// number of events the results topic accounts for (the sum of `n` over the latest row of every key).
struct SlowResults {
    inner: Arc<dyn LogStore>,
    delay_ms: AtomicU64,
    appends: AtomicU64,
    durable: AtomicU64,
    /// Hash of a changelog key -> `n` of its latest row (hashes keep the test's own memory small).
    latest: Mutex<HashMap<u64, u64>>,
}

impl SlowResults {
    fn fold(&self, records: &[Record]) {
        let mut latest = self.latest.lock().unwrap();
        for r in records {
            let mut h = std::hash::DefaultHasher::new();
            r.key.as_deref().expect("changelog records have keys").hash(&mut h);
            let n = count_of(&r.value);
            let old = match n {
                Some(n) => latest.insert(h.finish(), n),
                None => latest.remove(&h.finish()),
            };
            self.durable.fetch_add(n.unwrap_or(0), Ordering::SeqCst);
            self.durable.fetch_sub(old.unwrap_or(0), Ordering::SeqCst);
        }
    }
}

/// `n` of a changelog value (`None` for a deletion), without a JSON parse per row (the final check parses).
fn count_of(value: &[u8]) -> Option<u64> {
    if value == b"null" {
        return None;
    }
    let at = value.windows(4).position(|w| w == b"\"n\":").expect("rows have n") + 4;
    let digits: String = value[at..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
    Some(digits.parse().expect("n is a count"))
}

#[async_trait]
impl LogStore for SlowResults {
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.inner.create_topic(spec).await
    }
    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.inner.delete_topic(name).await
    }
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.inner.list_topics().await
    }
    async fn topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.inner.topic(name).await
    }
    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, LogError> {
        self.inner.describe_topic(name).await
    }
    async fn append(&self, topic: &str, partition: u32, records: Vec<Record>) -> Result<AppendAck, LogError> {
        if topic != RESULTS {
            return self.inner.append(topic, partition, records).await;
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let ack = self.inner.append(topic, partition, records.clone()).await?;
        self.fold(&records);
        self.appends.fetch_add(1, Ordering::SeqCst);
        Ok(ack)
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, LogError> {
        self.inner.read(topic, partition, from, max_records, max_bytes).await
    }
    async fn offset_for_time(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<u64, LogError> {
        self.inner.offset_for_time(topic, partition, ts_ms).await
    }
    async fn flush(&self, topic: &str, partition: u32) -> Result<(), LogError> {
        self.inner.flush(topic, partition).await
    }
    async fn wait_for(&self, topic: &str, partition: u32, offset: u64, timeout: Duration) -> Result<u64, LogError> {
        self.inner.wait_for(topic, partition, offset, timeout).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn collector(&self) -> Option<Box<dyn prometheus::core::Collector>> {
        self.inner.collector()
    }
}

/// Resident set size of this process, bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// What the job's numbers and the results topic say at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    records_in: u64,
    lag: u64,
    durable: u64,
    appends: u64,
    checkpoint: u64,
    rss_mb: u64,
}

impl Sample {
    async fn take(mgr: &JobManager, log: &SlowResults, started: Instant) -> Sample {
        let s = mgr.describe(JOB).await.unwrap();
        Sample {
            at: started.elapsed(),
            records_in: s.records_in,
            lag: s.lag,
            // Read after `records_in`: what is in flight is never under-estimated.
            durable: log.durable.load(Ordering::SeqCst),
            appends: log.appends.load(Ordering::SeqCst),
            checkpoint: s.last_checkpoint.map_or(0, |c| c.epoch),
            rss_mb: rss_bytes() >> 20,
        }
    }

    /// Events read but not yet accounted for in the results topic.
    fn in_flight(&self) -> u64 {
        self.records_in.saturating_sub(self.durable)
    }
}

/// Every record of a topic.
async fn read_all(log: &dyn LogStore, topic: &str) -> Vec<sluice_log::StoredRecord> {
    let mut out = Vec::new();
    for p in 0..log.topic(topic).await.unwrap().partitions {
        let mut from = 0;
        loop {
            let r = log.read(topic, p, from, 10_000, 64 << 20).await.unwrap();
            if r.records.is_empty() {
                break;
            }
            from = r.next_offset;
            out.extend(r.records);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_results_consumer_throttles_the_job_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("log");
    let opts =
        LogOptions { retention: None, fsync: FsyncPolicy::Interval(Duration::from_secs(1)), ..LogOptions::default() };
    let (embedded, _) = tokio::task::spawn_blocking(move || EmbeddedLog::open(root, Arc::new(StdStorage), opts))
        .await
        .unwrap()
        .unwrap();
    let slow = Arc::new(SlowResults {
        inner: Arc::new(embedded),
        delay_ms: AtomicU64::new(SLOW_MS),
        appends: AtomicU64::new(0),
        durable: AtomicU64::new(0),
        latest: Mutex::new(HashMap::new()),
    });
    let log: Arc<dyn LogStore> = slow.clone();
    log.create_topic(TopicSpec::new("events", PARTITIONS)).await.unwrap();

    // The whole input is in the log before the job starts.
    let mut expected: BTreeMap<(i64, String), u64> = BTreeMap::new();
    let mut batches: Vec<Vec<Record>> = vec![Vec::new(); PARTITIONS as usize];
    for i in 0..EVENTS {
        let (p, ts, user) = event(i);
        *expected.entry((ts.div_euclid(1_000) * 1_000, user.clone())).or_default() += 1;
        let value = Bytes::from(format!(r#"{{"user":"{user}","bytes":{}}}"#, i % 1_500));
        let batch = &mut batches[p as usize];
        batch.push(Record { timestamp: ts, key: None, headers: Vec::new(), value });
        if batch.len() == 5_000 {
            log.append("events", p, std::mem::take(batch)).await.unwrap();
        }
    }
    for (p, batch) in batches.into_iter().enumerate() {
        if !batch.is_empty() {
            log.append("events", p as u32, batch).await.unwrap();
        }
    }
    assert!(expected.values().all(|&n| n == EVENTS_PER_ROW));

    let registry = Arc::new(sluice_schema::Registry::open(log.clone()).await.unwrap());
    let mut mopts = ManagerOptions::new(dir.path().join("jobs"));
    mopts.parallelism = PARALLELISM;
    // The first checkpoint starts 3 s into the slow phase: before it, the queues throttle the job; from then on an
    // aligned checkpoint waits for everything before its barrier to be written (slowly), reading stopped.
    mopts.checkpoint_interval = Duration::from_secs(3);
    let mgr = JobManager::open(mopts, log.clone(), Arc::new(ValueDecoder::new(registry))).await.unwrap();

    let bound = in_flight_bound();
    assert!(bound * 3 < EVENTS * 2, "the input must be much larger than what the job can hold ({bound})");
    let rss_before = rss_bytes() >> 20;
    let started = Instant::now();
    mgr.create(SQL).await.unwrap();

    // Slow: the job fills its queues, then stops reading (`records_in` stands still for a second) and from then
    // on reads only as results drain. The slow phase lasts SLOW_PHASE, at least STALLED past that first stop, and
    // until a few slow appends have drained since: a busy machine (a build beside the tests) fills the queues and
    // closes the first windows more slowly, so the phase ends on what happened, not on the clock alone.
    let mut slow_samples: Vec<Sample> = Vec::new();
    let mut stalled: Option<Sample> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = Sample::take(&mgr, &slow, started).await;
        assert!(
            s.in_flight() <= bound,
            "{} events in flight, more than the queues hold ({bound}): {s:?}",
            s.in_flight()
        );
        let n = slow_samples.len();
        if stalled.is_none() && n >= 4 && slow_samples[n - 4..].iter().all(|p| p.records_in == s.records_in) {
            assert!(s.lag > 0, "the job read everything while its results could not be written: {s:?}");
            stalled = Some(s);
        }
        slow_samples.push(s);
        match stalled {
            Some(st) if s.at >= SLOW_PHASE && s.at >= st.at + STALLED && s.appends >= st.appends + MIN_DRAINS => {
                break;
            }
            None => assert!(s.at < SLOW_DEADLINE, "the job never stopped reading: {s:?}"),
            Some(st) => assert!(s.at < SLOW_DEADLINE, "the results writer appended too little after {st:?}: {s:?}"),
        }
    }
    let stalled = stalled.unwrap();
    let end_slow = *slow_samples.last().unwrap();
    let rss_slow = slow_samples.iter().map(|s| s.rss_mb).max().unwrap();
    assert!(end_slow.appends > 0, "the results writer never appended: {end_slow:?}");
    assert!(end_slow.lag >= EVENTS / 4, "the job read most of its input while results could not keep up: {end_slow:?}");
    assert!(end_slow.records_in + end_slow.lag == EVENTS, "{end_slow:?}");
    // Once the queues are full, input is admitted only as results drain (plus what refills the freed queues).
    let (admitted, drained) = (end_slow.records_in - stalled.records_in, end_slow.durable - stalled.durable);
    let refill = in_flight_parts().0 + in_flight_parts().2;
    assert!(
        admitted <= drained + refill,
        "the job read {admitted} events while {drained} drained to the results (from {stalled:?} to {end_slow:?})"
    );
    let slow_rate = admitted as f64 / (end_slow.at - stalled.at).as_secs_f64();

    // Fast: lag goes to zero and every event is accounted for.
    slow.delay_ms.store(0, Ordering::SeqCst);
    let fast_start = Sample::take(&mgr, &slow, started).await;
    let deadline = Instant::now() + SLOW_DEADLINE;
    let caught_up = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = Sample::take(&mgr, &slow, started).await;
        assert!(s.in_flight() <= bound, "{} events in flight, more than the queues hold: {s:?}", s.in_flight());
        if s.records_in == EVENTS && s.lag == 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "lag did not recover within {SLOW_DEADLINE:?}: {s:?}");
    };
    let fast_rate =
        (caught_up.records_in - fast_start.records_in) as f64 / (caught_up.at - fast_start.at).as_secs_f64();
    eprintln!(
        "in-flight bound {bound}; slow phase: max in flight {}, admitted {slow_rate:.0} events/s, RSS {rss_before} -> \
         {rss_slow} MB; fast phase: {fast_rate:.0} events/s; end of slow phase {end_slow:?}; caught up {caught_up:?}",
        slow_samples.iter().map(Sample::in_flight).max().unwrap()
    );
    assert!(rss_slow < rss_before + 256, "RSS grew from {rss_before} MB to {rss_slow} MB while results were slow");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let s = Sample::take(&mgr, &slow, started).await;
        if s.durable == EVENTS {
            break s;
        }
        assert!(Instant::now() < deadline, "results did not drain within 30 s: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The checkpoint that began under backpressure completes once what preceded its barrier is written, and
    // stopping the job (which takes a last checkpoint) does not hang either.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Sample::take(&mgr, &slow, started).await.checkpoint == 0 {
        assert!(Instant::now() < deadline, "no checkpoint completed within 15 s of the results draining: {done:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = Sample::take(&mgr, &slow, started).await.checkpoint;
    let paused = tokio::time::timeout(Duration::from_secs(30), mgr.pause(JOB)).await.expect("pause hangs").unwrap();
    assert_eq!(paused.state, "paused");
    assert!(paused.last_checkpoint.as_ref().is_some_and(|c| c.epoch > before), "{paused:?}");
    tokio::time::timeout(Duration::from_secs(30), mgr.shutdown()).await.expect("shutdown hangs");

    // The changelog folded (last row per key wins, `null` deletes): exactly the expected rows and counts.
    let mut table: HashMap<Bytes, Bytes> = HashMap::new();
    for r in read_all(&*log, RESULTS).await {
        let key = r.key.expect("changelog records have keys");
        if &r.value[..] == b"null" {
            table.remove(&key);
        } else {
            table.insert(key, r.value);
        }
    }
    let windows: HashMap<String, i64> =
        expected.keys().map(|(start, _)| (format_time(*start).unwrap(), *start)).collect();
    let mut got: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for (key, value) in &table {
        let k: Key = serde_json::from_slice(key).unwrap();
        let row: Row = serde_json::from_slice(value).unwrap();
        let same = k.window_start == row.window_start && k.window_end == row.window_end && k.user == row.user;
        assert!(same, "changelog key {k:?} and row {row:?} disagree");
        let start = *windows.get(&row.window_start).unwrap_or_else(|| panic!("unexpected window in {row:?}"));
        assert_eq!(Some(row.window_end.as_str()), format_time(start + 1_000).as_deref(), "{row:?}");
        let user = row.user.clone();
        assert!(got.insert((start, user), row.n).is_none(), "two changelog keys for one window and user: {row:?}");
    }
    assert_eq!(got.len(), expected.len(), "rows in the folded changelog");
    let wrong: Vec<_> = expected.iter().filter(|(k, n)| got.get(*k) != Some(*n)).take(5).collect();
    assert!(wrong.is_empty(), "wrong counts, expected for example {wrong:?}");
    assert!(read_all(&*log, "bp.late").await.is_empty(), "no event is late in this input");
}

/// A changelog record's key and value.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    window_start: String,
    window_end: String,
    user: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    window_start: String,
    window_end: String,
    user: String,
    n: u64,
}
