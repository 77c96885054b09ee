//! One running job: source tasks, keyed state shards, the results writer and the checkpoint coordinator.
//!
//! ```text
//!  source task 0 (partitions p % P == 0) ─┐  deltas, hashed by key   ┌─ shard 0 ─┐
//!  source task 1 (partitions p % P == 1) ─┼────────────────────────▶ ├─ shard 1 ─┼─▶ hot results (immediately)
//!  ...                                    ┘  (bounded channels)      └─ ...     ┘─▶ results writer ─▶ changelog topic
//! ```
//!
//! - A **source task** reads its partitions, decodes, filters, assigns windows and pre-aggregates into a small
//!   delta per (window, key), sent to the shard owning the key after every read round. Lateness is decided here
//!   against the *partition's* watermark, a function of that partition's prefix only, so which events count is
//!   the same whatever the interleaving, parallelism or restarts.
//! - A **shard** merges deltas into its keyed state, computes the job watermark (minimum over partitions, idle
//!   ones excluded), fires windows whose end it passed, upserts changed rows into the hot results at once and
//!   hands them to the writer at least every buffer timeout.
//! - **Checkpoints** are barrier-aligned: the coordinator asks every task for a barrier; a task flushes its delta,
//!   sends the barrier with its offsets to every shard and waits; once every shard has every barrier, tasks go on
//!   while each shard snapshots its state. A checkpoint is written only after the writer has made every row
//!   emitted before the barrier durable, so a restored job never misses a result; rows emitted after it are
//!   emitted again, identically, on replay (upserts by window and key).
//! - Every queue is bounded: a slow writer stops the shards, which stop the tasks, which stop reading.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_log::{
    LogError, LogStore, ReadResult, Record, StoredRecord, TopicSpec, now_ms, partitioner::partition_for_key, topics,
};
use sluice_schema::reader::ValueDecoder;
use sluice_stream::agg::AggState;
use sluice_stream::datum::Datum;
use sluice_stream::plan::{JobPlan, PlanBody, RecordMeta, StatelessPlan, WindowedPlan};
use sluice_stream::{Lateness, SessionChange, SessionSet, Window, WindowSpec};
use sluice_telemetry::trace;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::changelog::{self, ResultKind, key_text};
use crate::checkpoint::CheckpointStore;
use crate::error::JobError;
use crate::hot::{HotResults, ResultRow};
use crate::metrics;

/// Header naming the source offset an output or late record came from (`{partition}/{offset}` of the source).
pub const SOURCE_OFFSET_HEADER: &str = "sluice.source_offset";

const READ_MAX_RECORDS: usize = 2_000;
const READ_MAX_BYTES: usize = 4 << 20;
/// Deltas a task may have queued at one shard: bounds memory between the stages.
const SHARD_QUEUE: usize = 8;
const WRITER_QUEUE: usize = 8;
/// Changelog records per append.
const WRITER_BATCH: usize = 4_096;
const SNAPSHOT_VERSION: u32 = 2;

type Key = Box<[Datum]>;
/// `(partition, max event time, idle)` of each partition of a task, shared by the deltas to every shard.
type Progress = Arc<Vec<(u32, Option<i64>, bool)>>;

/// Where a job with no checkpoint starts reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    Earliest,
    Latest,
    /// The first record with event time `>=` this (ms).
    Time(i64),
    /// This offset in every partition (clamped to what the log holds).
    Offset(u64),
}

/// Live numbers of a running job, read by `describe` and the metrics.
pub struct JobStats {
    pub partitions: Mutex<Vec<PartitionProgress>>,
    pub watermark: AtomicI64,
    pub state_entries: AtomicU64,
    pub records_in: AtomicU64,
    /// Changelog records appended (rows and deletions).
    pub results_written: AtomicU64,
    pub last_checkpoint: Mutex<Option<CheckpointInfo>>,
    /// Ingest acknowledgement -> visible in hot results, microseconds.
    pub latency_us: Mutex<hdrhistogram::Histogram<u64>>,
}

impl JobStats {
    pub fn new() -> Self {
        JobStats {
            partitions: Mutex::new(Vec::new()),
            watermark: AtomicI64::new(i64::MIN),
            state_entries: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            results_written: AtomicU64::new(0),
            last_checkpoint: Mutex::new(None),
            latency_us: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            ),
        }
    }

    /// Records not yet processed, summed over partitions.
    pub fn lag(&self) -> u64 {
        self.partitions.lock().iter().map(|p| p.high_watermark.saturating_sub(p.offset)).sum()
    }
}

impl Default for JobStats {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PartitionProgress {
    pub partition: u32,
    /// Next offset to process.
    pub offset: u64,
    pub high_watermark: u64,
    pub idle: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    pub epoch: u64,
    pub at_ms: i64,
    pub bytes: u64,
    pub duration_ms: f64,
    /// Longest time a shard stopped processing to snapshot its state (one incremental step).
    pub max_pause_ms: f64,
    /// From the barrier request until every shard held every barrier: source tasks wait this long.
    pub align_ms: f64,
}

/// The keyed window state of all jobs against `stream.state_memory`, in estimated bytes
/// ([`entry_bytes`] per entry). Shards add what they hold and take it back when they stop.
#[derive(Debug)]
pub(crate) struct StateBudget {
    limit: u64,
    used: AtomicU64,
}

impl StateBudget {
    pub(crate) fn new(limit: u64) -> Self {
        StateBudget { limit, used: AtomicU64::new(0) }
    }

    /// Moves this holder's share from `old` to `new` bytes; the new total.
    fn update(&self, old: u64, new: u64) -> u64 {
        if new >= old {
            self.used.fetch_add(new - old, Ordering::Relaxed) + (new - old)
        } else {
            self.used.fetch_sub(old - new, Ordering::Relaxed) - (old - new)
        }
    }
}

/// Estimated memory of one (window, key) entry of `plan`: the maps' nodes, the key and each aggregate's state
/// (sketches at a typical size, not their worst case).
fn entry_bytes(plan: &WindowedPlan) -> u64 {
    use sluice_stream::AggFunc;
    let aggs: u64 = plan
        .aggregates
        .iter()
        .map(|a| match a.func {
            AggFunc::Count => 16,
            AggFunc::Sum | AggFunc::Avg | AggFunc::Min | AggFunc::Max => 48,
            AggFunc::CountDistinct => 512,
            AggFunc::ApproxPercentile => 1024,
        })
        .sum();
    // Hash and BTree nodes, the window, the dirty sets, and ~32 bytes per key value.
    160 + 48 * plan.keys.len() as u64 + aggs
}

/// What a runner needs; built by the manager.
pub(crate) struct RunnerConfig {
    pub name: String,
    pub plan: Arc<JobPlan>,
    /// The job's SQL text, fingerprinted into checkpoints.
    pub sql: String,
    /// Names this definition's run (job name and generation) in the source headers of what it writes.
    pub run_id: String,
    pub log: Arc<dyn LogStore>,
    pub decoder: Arc<ValueDecoder>,
    pub hot: Arc<HotResults>,
    pub checkpoints: Arc<CheckpointStore>,
    pub checkpoint_interval: Duration,
    /// Entries per incremental snapshot step.
    pub snapshot_chunk: usize,
    pub parallelism: usize,
    pub stats: Arc<JobStats>,
    pub start: StartPosition,
    pub state_budget: Arc<StateBudget>,
}

/// The checkpoint payload: source positions, per-partition event-time progress and every shard's state.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    /// The job's SQL: a checkpoint of another definition is never restored into this one.
    sql_fingerprint: u64,
    partitions: Vec<PartitionSnap>,
    /// The highest shard watermark at the barrier: restored as the floor below which state stays expired.
    watermark: Option<i64>,
    shards: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PartitionSnap {
    offset: u64,
    max_ts: Option<i64>,
}

/// One (window, key) of a shard snapshot. A shard's snapshot is these, postcard-encoded back to back (written
/// incrementally, see [`Shard::snapshot_step`]); session sets are rebuilt from the windows at restore.
#[derive(Deserialize)]
struct EntrySnap {
    window: Window,
    key: Vec<Datum>,
    states: Vec<AggState>,
    emitted: bool,
}

/// [`EntrySnap`] as written, borrowing the live state (same encoding: slices and vectors are both sequences).
#[derive(Serialize)]
struct EntrySnapRef<'a> {
    window: Window,
    key: &'a [Datum],
    states: &'a [AggState],
    emitted: bool,
}

fn decode_entries(mut bytes: &[u8]) -> Result<Vec<EntrySnap>, JobError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (e, rest) = postcard::take_from_bytes::<EntrySnap>(bytes)
            .map_err(|e| JobError::Corrupt(format!("checkpoint state entry {}: {e}", out.len())))?;
        out.push(e);
        bytes = rest;
    }
    Ok(out)
}

/// A hash that stays the same across builds and toolchains (checkpoints outlive binaries).
pub(crate) fn fingerprint(sql: &str) -> u64 {
    let a = crc32c::crc32c(sql.as_bytes());
    let b = crc32c::crc32c_append(0x9E37_79B9, sql.as_bytes());
    (u64::from(a) << 32) | u64::from(b)
}

fn key_shard(window_key: &[Datum], shards: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    window_key.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Runs the job until `stop` turns true (then takes a last checkpoint) or it fails.
pub(crate) async fn run(cfg: RunnerConfig, stop: watch::Receiver<bool>) -> Result<(), JobError> {
    let topic = cfg.plan.source.clone();
    let info = cfg.log.topic(&topic).await?;
    let partitions = info.partitions;
    match &cfg.plan.body {
        PlanBody::Windowed(w) => {
            let w = w.clone();
            // The changelog is partitioned by key (any count will do); late events go partition to partition.
            if let Err(LogError::TopicNotFound(_)) = cfg.log.topic(&w.output_topic).await {
                ensure_topic(&*cfg.log, &w.output_topic, partitions).await?;
            }
            ensure_topic(&*cfg.log, &late_topic(&cfg.plan), partitions).await?;
            run_windowed(cfg, w, partitions, stop).await
        }
        PlanBody::Stateless(s) => {
            let s = s.clone();
            ensure_topic(&*cfg.log, &s.output_topic, partitions).await?;
            run_stateless(cfg, s, partitions, stop).await
        }
    }
}

pub(crate) fn late_topic(plan: &JobPlan) -> String {
    plan.options.late_topic.clone().unwrap_or_else(|| topics::late(&plan.name))
}

async fn ensure_topic(log: &dyn LogStore, name: &str, min_partitions: u32) -> Result<(), JobError> {
    match log.topic(name).await {
        Ok(t) if t.partitions >= min_partitions => Ok(()),
        Ok(t) => Err(JobError::Invalid(format!(
            "output topic {name} has {} partitions, the job needs at least {min_partitions} (one per source partition)",
            t.partitions
        ))),
        Err(LogError::TopicNotFound(_)) => match log.create_topic(TopicSpec::new(name, min_partitions)).await {
            Ok(_) | Err(LogError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Where each partition starts when there is no checkpoint.
async fn start_offsets(
    log: &dyn LogStore,
    topic: &str,
    partitions: u32,
    start: &StartPosition,
) -> Result<Vec<u64>, JobError> {
    let desc = log.describe_topic(topic).await?;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let d = &desc.partition_details[p as usize];
        out.push(match start {
            StartPosition::Earliest => d.log_start_offset,
            StartPosition::Latest => d.high_watermark,
            StartPosition::Offset(o) => (*o).clamp(d.log_start_offset, d.high_watermark),
            StartPosition::Time(ts) => log.offset_for_time(topic, p, *ts).await?,
        });
    }
    Ok(out)
}

/// The last record of every partition of `topic`, by partition.
async fn last_records(log: &dyn LogStore, topic: &str) -> Result<Vec<Option<StoredRecord>>, JobError> {
    let desc = log.describe_topic(topic).await?;
    let mut out = Vec::with_capacity(desc.partition_details.len());
    for d in &desc.partition_details {
        let last = if d.high_watermark > d.log_start_offset {
            log.read(topic, d.partition, d.high_watermark - 1, 1, READ_MAX_BYTES).await?.records.pop()
        } else {
            None
        };
        out.push(last);
    }
    Ok(out)
}

/// Per partition of `topic`, the source offset of the last record this run wrote there (from its header), so
/// output already written is not written again after a crash.
async fn written_source_offsets(log: &dyn LogStore, topic: &str, run: &str) -> Result<Vec<Option<u64>>, JobError> {
    let last = last_records(log, topic).await?;
    Ok((0u32..).zip(&last).map(|(p, r)| r.as_ref().and_then(|r| source_offset_of(r, run, p))).collect())
}

/// The source offset in a record this run of this job wrote (`{run}/{partition}/{offset}`); `None` for records of
/// anyone else (another job sharing the topic, an earlier definition, or before an in-place replay).
fn source_offset_of(r: &StoredRecord, run: &str, partition: u32) -> Option<u64> {
    let (_, v) = r.headers.iter().rfind(|(k, _)| k == SOURCE_OFFSET_HEADER)?;
    let text = std::str::from_utf8(v).ok()?;
    let (rest, offset) = text.rsplit_once('/')?;
    let (who, p) = rest.rsplit_once('/')?;
    if who != run || p.parse::<u32>().ok()? != partition {
        return None;
    }
    offset.parse().ok()
}

/// Replaces any source header the record already carries (it may come from another job's output).
fn with_source_header(
    mut headers: Vec<(String, Bytes)>,
    run: &str,
    partition: u32,
    offset: u64,
) -> Vec<(String, Bytes)> {
    headers.retain(|(k, _)| k != SOURCE_OFFSET_HEADER);
    headers.push((SOURCE_OFFSET_HEADER.to_string(), Bytes::from(format!("{run}/{partition}/{offset}"))));
    headers
}

/// Decodes a stored value to JSON (Avro through the topic's latest schema).
struct Decode {
    decoder: Arc<ValueDecoder>,
    topic: String,
    buf: Vec<u8>,
}

impl Decode {
    fn value(&mut self, reader: Option<&sluice_schema::RegisteredSchema>, raw: &[u8]) -> Option<Value> {
        if sluice_schema::reader::value_format(raw) == sluice_schema::reader::ValueFormat::Json {
            return serde_json::from_slice(raw).ok();
        }
        self.buf.clear();
        self.decoder.decode(raw, reader, &mut self.buf).ok()?;
        serde_json::from_slice(&self.buf).ok()
    }

    fn reader(&self) -> Option<Arc<sluice_schema::RegisteredSchema>> {
        self.decoder.reader_schema(&self.topic)
    }
}

/// One page of a source partition from `from`; `Err(to)` when retention removed `from` (carry on at `to`).
async fn read_source(cfg: &RunnerConfig, partition: u32, from: u64) -> Result<Result<ReadResult, u64>, JobError> {
    match cfg.log.read(&cfg.plan.source, partition, from, READ_MAX_RECORDS, READ_MAX_BYTES).await {
        Ok(r) => Ok(Ok(r)),
        Err(LogError::OffsetOutOfRange { start, end, .. }) => {
            let to = if from < start { start } else { end };
            tracing::warn!(job = %cfg.name, partition, from, to, "source offset out of range (retention?); skipping");
            Ok(Err(to))
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves once any of `parts` (`(partition, next offset)`) has new data or `timeout` passes; never with none.
async fn wait_for_data(cfg: &RunnerConfig, parts: impl Iterator<Item = (u32, u64)>, timeout: Duration) {
    let waits: Vec<_> = parts
        .map(|(partition, offset)| {
            let (log, topic) = (cfg.log.clone(), cfg.plan.source.clone());
            Box::pin(async move { log.wait_for(&topic, partition, offset, timeout).await })
        })
        .collect();
    if waits.is_empty() {
        std::future::pending::<()>().await;
    }
    let _ = futures::future::select_all(waits).await;
}

fn meta_of(rec: &StoredRecord, partition: u32) -> RecordMeta<'_> {
    RecordMeta {
        timestamp: rec.timestamp,
        append_time: rec.append_time,
        key: rec.key.as_deref(),
        partition,
        offset: rec.offset,
    }
}

/// Counts one processed page in the job's metrics and stats.
fn count_page(cfg: &RunnerConfig, partition: u32, read: usize, filtered: u64, undecodable: u64) {
    let job = &cfg.name;
    metrics::RECORDS_IN.with_label_values(&[job]).inc_by(read as u64);
    if filtered > 0 {
        metrics::RECORDS_FILTERED_OUT.with_label_values(&[job]).inc_by(filtered);
    }
    if undecodable > 0 {
        metrics::DECODE_ERRORS.with_label_values(&[job]).inc_by(undecodable);
        tracing::warn!(job = %job, partition, count = undecodable, "skipped records that do not decode");
        sluice_telemetry::record_error(
            "job",
            "decode",
            undecodable,
            job,
            &format_args!("{undecodable} records of partition {partition} do not decode (skipped, dead-lettered)"),
        );
    }
    cfg.stats.records_in.fetch_add(read as u64, Ordering::Relaxed);
}

/// Times one batch in `operator` (one of [`metrics::OPERATORS`]) of the job.
fn observe_operator(job: &str, operator: &str, started: Instant) {
    metrics::OPERATOR_SECONDS.with_label_values(&[job, operator]).observe(started.elapsed().as_secs_f64());
}

/// Sends to the job's next stage; the time spent waiting because it is full counts as backpressure.
async fn send_or_wait<T>(tx: &mpsc::Sender<T>, msg: T, job: &str) -> Result<(), JobError> {
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(JobError::Stopped),
        Err(mpsc::error::TrySendError::Full(msg)) => {
            let started = Instant::now();
            let sent = tx.send(msg).await.map_err(|_| JobError::Stopped);
            metrics::BACKPRESSURE_SECONDS.with_label_values(&[job]).inc_by(started.elapsed().as_secs_f64());
            sent
        }
    }
}

/// The job's partition progress at the start of a run.
fn progress_from(starts: &[u64]) -> Vec<PartitionProgress> {
    (0u32..)
        .zip(starts)
        .map(|(partition, &offset)| PartitionProgress { partition, offset, high_watermark: offset, idle: false })
        .collect()
}

/// Per-partition reading state of a source task.
struct PartState {
    partition: u32,
    offset: u64,
    high_watermark: u64,
    max_ts: Option<i64>,
    last_active: i64,
    idle: bool,
    /// Source offsets up to this one already have their late/output records written.
    written_up_to: Option<u64>,
}

enum TaskCtl {
    Barrier { epoch: u64, release: oneshot::Receiver<()> },
}

/// What a task reports to the coordinator at a barrier.
struct TaskBarrier {
    partitions: Vec<(u32, PartitionSnap)>,
}

enum ShardMsg {
    Delta(Delta),
    Barrier { epoch: u64 },
}

struct Delta {
    entries: Vec<(Window, Key, Vec<AggState>)>,
    /// `(partition, max_ts, idle)` of every partition of the task.
    progress: Progress,
    /// Run-length `(append_time, events)` of the events in `entries`, for the end-to-end latency.
    ingest: Vec<(i64, u32)>,
}

enum CoordMsg {
    TaskBarrier {
        epoch: u64,
        barrier: TaskBarrier,
    },
    Aligned {
        epoch: u64,
    },
    Snapshot {
        epoch: u64,
        bytes: Vec<u8>,
        watermark: Option<i64>,
        pause: Duration,
        flushed: oneshot::Receiver<Result<(), JobError>>,
    },
}

enum WriterMsg {
    Rows(Vec<Record>),
    Flush(oneshot::Sender<Result<(), JobError>>),
}

fn restore_snapshot(cfg: &RunnerConfig, partitions: u32) -> Result<(u64, Option<Snapshot>), JobError> {
    match cfg.checkpoints.latest()? {
        None => Ok((0, None)),
        Some((epoch, bytes)) => {
            let snap: Snapshot = postcard::from_bytes(&bytes)
                .map_err(|e| JobError::Corrupt(format!("checkpoint {epoch} does not decode: {e}")))?;
            if snap.version != SNAPSHOT_VERSION {
                return Err(JobError::Corrupt(format!(
                    "checkpoint {epoch} has format version {}, this build reads {SNAPSHOT_VERSION}",
                    snap.version
                )));
            }
            if snap.partitions.len() != partitions as usize {
                return Err(JobError::Invalid(format!(
                    "source topic {} has {partitions} partitions but checkpoint {epoch} has {}; replay the job",
                    cfg.plan.source,
                    snap.partitions.len()
                )));
            }
            Ok((epoch, Some(snap)))
        }
    }
}

async fn run_windowed(
    cfg: RunnerConfig,
    plan: WindowedPlan,
    partitions: u32,
    mut stop: watch::Receiver<bool>,
) -> Result<(), JobError> {
    let cfg = Arc::new(cfg);
    let plan = Arc::new(plan);
    let (mut epoch, snap) = restore_snapshot(&cfg, partitions)?;
    if let Some(s) = &snap
        && s.sql_fingerprint != cfg_fingerprint(&cfg)
    {
        return Err(JobError::Invalid("checkpoint belongs to another definition of this job".into()));
    }
    let parallelism = cfg.parallelism.clamp(1, partitions.max(1) as usize);
    let shards = parallelism;

    // Partition starting points and event-time progress.
    // The watermark restores as it was at the barrier: windows expired then stay expired (replayed events for
    // them are dropped as late, exactly as in the first run); it cannot exceed what replayed events need.
    let restored_wm = snap.as_ref().and_then(|s| s.watermark);
    let (starts, max_ts): (Vec<u64>, Vec<Option<i64>>) = match &snap {
        Some(s) => (s.partitions.iter().map(|p| p.offset).collect(), s.partitions.iter().map(|p| p.max_ts).collect()),
        None => {
            (start_offsets(&*cfg.log, &cfg.plan.source, partitions, &cfg.start).await?, vec![None; partitions as usize])
        }
    };
    // Redistribute the state over this run's shards (the parallelism may have changed).
    let mut shard_snaps: Vec<Vec<EntrySnap>> = (0..shards).map(|_| Vec::new()).collect();
    if let Some(s) = snap {
        for bytes in &s.shards {
            for e in decode_entries(bytes)? {
                let i = key_shard(&e.key, shards);
                shard_snaps[i].push(e);
            }
        }
    }
    reload_hot(&cfg, &plan).await?;
    let late = late_topic(&cfg.plan);
    let written = written_source_offsets(&*cfg.log, &late, &cfg.run_id).await?;

    *cfg.stats.partitions.lock() = progress_from(&starts);

    cfg.stats.state_entries.store(0, Ordering::Relaxed);
    cfg.stats.watermark.store(restored_wm.unwrap_or(i64::MIN), Ordering::Relaxed);
    let (coord_tx, mut coord_rx) = mpsc::channel::<CoordMsg>(4 * (parallelism + shards) + 4);
    let (writer_tx, writer_rx) = mpsc::channel::<WriterMsg>(WRITER_QUEUE);
    let mut set: JoinSet<Result<(), JobError>> = JoinSet::new();

    // Results writer.
    {
        let log = cfg.log.clone();
        let topic = plan.output_topic.clone();
        let name = cfg.name.clone();
        let stats = cfg.stats.clone();
        set.spawn(async move { run_writer(log, topic, name, stats, writer_rx).await });
    }

    // Shards.
    let mut shard_txs = Vec::with_capacity(shards);
    for (i, ss) in shard_snaps.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<ShardMsg>(SHARD_QUEUE * parallelism);
        shard_txs.push(tx);
        let mut shard = Shard::new(i, cfg.clone(), plan.clone(), parallelism, partitions, &max_ts, ss)?;
        shard.watermark = restored_wm;
        let coord = coord_tx.clone();
        let writer = writer_tx.clone();
        set.spawn(async move { shard.run(rx, coord, writer).await });
    }
    drop(writer_tx);

    // Source tasks.
    let mut task_ctls = Vec::with_capacity(parallelism);
    for t in 0..parallelism {
        let (ctl_tx, ctl_rx) = mpsc::channel::<TaskCtl>(1);
        task_ctls.push(ctl_tx);
        let parts = (0..partitions)
            .filter(|p| *p as usize % parallelism == t)
            .map(|p| PartState {
                partition: p,
                offset: starts[p as usize],
                high_watermark: starts[p as usize],
                max_ts: max_ts[p as usize],
                last_active: now_ms(),
                idle: false,
                written_up_to: written.get(p as usize).copied().flatten(),
            })
            .collect();
        let task = SourceTask {
            cfg: cfg.clone(),
            parts,
            shard_txs: shard_txs.clone(),
            coord: coord_tx.clone(),
            decode: Decode { decoder: cfg.decoder.clone(), topic: cfg.plan.source.clone(), buf: Vec::new() },
            op: WindowOperator::new(cfg.plan.clone(), plan.clone(), shards),
            late_topic: late.clone(),
            stop: stop.clone(),
        };
        set.spawn(async move { task.run(ctl_rx).await });
    }
    drop(shard_txs);
    drop(coord_tx);
    metrics::RUNNING.with_label_values(&[&cfg.name]).set(1);

    let mut ticker = tokio::time::interval(cfg.checkpoint_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut checkpointed_at: Option<u64> = None;
    let result = loop {
        tokio::select! {
            _ = ticker.tick() => {
                // Nothing read since the last checkpoint of this run: the state on disk is as good (an idle job
                // with a large state would otherwise rewrite it every interval).
                let read = cfg.stats.records_in.load(Ordering::Relaxed);
                if checkpointed_at == Some(read) {
                    continue;
                }
                epoch += 1;
                if let Err(e) = checkpoint(&cfg, epoch, parallelism, shards, &task_ctls, &mut coord_rx, &mut set, partitions).await {
                    break Err(e);
                }
                checkpointed_at = Some(read);
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    epoch += 1;
                    let r = checkpoint(&cfg, epoch, parallelism, shards, &task_ctls, &mut coord_rx, &mut set, partitions).await;
                    break r;
                }
            }
            // A stage ended before stop: that is a failure (or a panic).
            Some(done) = set.join_next() => break Err(stage_ended(done)),
        }
    };
    drop(task_ctls);
    set.abort_all();
    while set.join_next().await.is_some() {}
    metrics::RUNNING.with_label_values(&[&cfg.name]).set(0);
    result
}

/// Refills the hot results from the changelog's recent rows after a (re)start: windows already final and gone
/// from state are still "the last N minutes" a reader expects. Rows still in state are upserted again by the
/// shards right after, with their current values.
async fn reload_hot(cfg: &RunnerConfig, plan: &WindowedPlan) -> Result<(), JobError> {
    let topic = &plan.output_topic;
    let Ok(info) = cfg.log.topic(topic).await else { return Ok(()) };
    // Changelog records carry their window's end as event time; the hot results keep the last N minutes of
    // event time before the newest window, so start N minutes before the newest record.
    let last = last_records(&*cfg.log, topic).await?;
    let Some(newest) = last.iter().flatten().map(|r| r.timestamp).max() else { return Ok(()) };
    let since = newest.saturating_sub(cfg.plan.options.hot_retention_ms.max(0));
    let key_names: Vec<&str> = plan.keys.iter().map(|(n, _)| n.as_str()).collect();
    for p in 0..info.partitions {
        let mut from = cfg.log.offset_for_time(topic, p, since).await?;
        loop {
            let r = cfg.log.read(topic, p, from, READ_MAX_RECORDS, READ_MAX_BYTES).await?;
            if r.records.is_empty() {
                break;
            }
            from = r.next_offset;
            let mut rows = Vec::new();
            for rec in &r.records {
                let Some((start, end, key)) = rec.key.as_deref().and_then(|k| changelog::identity(&key_names, k))
                else {
                    continue;
                };
                match serde_json::from_slice::<Value>(&rec.value) {
                    Ok(Value::Object(map)) => {
                        rows.push(ResultRow { window_start: start, window_end: end, key, row: Arc::new(map) })
                    }
                    _ => cfg.hot.remove(start, end, &key),
                }
            }
            if !rows.is_empty() {
                cfg.hot.upsert(rows);
            }
        }
    }
    Ok(())
}

/// Source offsets of the job's last checkpoint (for the lag of a job that is not running).
pub(crate) fn checkpoint_offsets(store: &CheckpointStore, windowed: bool) -> Option<Vec<u64>> {
    let (_, bytes) = store.latest().ok()??;
    if windowed {
        let snap: Snapshot = postcard::from_bytes(&bytes).ok()?;
        Some(snap.partitions.iter().map(|p| p.offset).collect())
    } else {
        postcard::from_bytes(&bytes).ok()
    }
}

fn stage_ended(done: Result<Result<(), JobError>, tokio::task::JoinError>) -> JobError {
    match done {
        Ok(Ok(())) => JobError::Stopped,
        Ok(Err(e)) => e,
        Err(e) => JobError::Invalid(format!("job task panicked: {e}")),
    }
}

fn cfg_fingerprint(cfg: &RunnerConfig) -> u64 {
    fingerprint(&cfg.sql)
}

/// The span of one page of source records (`job.process`) and, for each traced record in it (a sampled
/// `traceparent` header, only while spans are exported), a `job.event` span in that record's trace, by offset.
/// Both last until the page is processed and its outputs appended; only traced records pay for theirs.
fn trace_page(job: &str, partition: u32, records: &[StoredRecord]) -> (tracing::Span, Vec<(u64, tracing::Span)>) {
    let span = tracing::info_span!("job.process", job = %job, partition, records = records.len());
    let traced = trace::traced_records(records.iter().map(|r| &r.headers[..]));
    if traced.is_empty() {
        return (span, Vec::new());
    }
    trace::continue_batch(&span, traced.iter().map(|(_, tp)| tp));
    let events = traced
        .into_iter()
        .map(|(i, tp)| {
            let event = tracing::info_span!(parent: None, "job.event", job = %job, partition);
            trace::set_parent(&event, &tp);
            (records[i].offset, event)
        })
        .collect();
    (span, events)
}

/// Carries the trace of a traced input record to the record written for it: its `job.event` span becomes the
/// parent of the next stage's spans.
fn forward_trace(
    mut headers: Vec<(String, Bytes)>,
    traced: &[(u64, tracing::Span)],
    offset: u64,
) -> Vec<(String, Bytes)> {
    if let Some(tp) = traced.iter().find(|(o, _)| *o == offset).and_then(|(_, span)| trace::traceparent_of(span)) {
        headers.push((trace::TRACEPARENT_HEADER.to_string(), Bytes::from(tp.to_string())));
    }
    headers
}

/// One barrier-aligned checkpoint; see the module docs.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "job.checkpoint", level = "info", skip_all, fields(job = %cfg.name, epoch))]
async fn checkpoint(
    cfg: &RunnerConfig,
    epoch: u64,
    tasks: usize,
    shards: usize,
    task_ctls: &[mpsc::Sender<TaskCtl>],
    coord_rx: &mut mpsc::Receiver<CoordMsg>,
    stages: &mut JoinSet<Result<(), JobError>>,
    partitions: u32,
) -> Result<(), JobError> {
    let started = Instant::now();
    let mut releases = Vec::with_capacity(tasks);
    for ctl in task_ctls {
        let (tx, rx) = oneshot::channel();
        releases.push(tx);
        ctl.send(TaskCtl::Barrier { epoch, release: rx }).await.map_err(|_| JobError::Stopped)?;
    }
    let mut parts = vec![PartitionSnap { offset: 0, max_ts: None }; partitions as usize];
    let (mut barriers, mut aligned) = (0, 0);
    let mut snaps: Vec<Vec<u8>> = Vec::with_capacity(shards);
    let mut flushes = Vec::with_capacity(shards);
    let mut max_pause = Duration::ZERO;
    let mut align = Duration::ZERO;
    let mut watermark: Option<i64> = None;
    while barriers < tasks || aligned < shards || snaps.len() < shards {
        // A stage that ends now would never send its part: fail the checkpoint (and the run) instead of waiting.
        let msg = tokio::select! {
            m = coord_rx.recv() => m.ok_or(JobError::Stopped)?,
            Some(done) = stages.join_next() => return Err(stage_ended(done)),
        };
        match msg {
            CoordMsg::TaskBarrier { epoch: e, barrier } if e == epoch => {
                barriers += 1;
                for (p, s) in barrier.partitions {
                    parts[p as usize] = s;
                }
            }
            CoordMsg::Aligned { epoch: e } if e == epoch => {
                aligned += 1;
                if aligned == shards {
                    align = started.elapsed();
                    for r in releases.drain(..) {
                        let _ = r.send(());
                    }
                }
            }
            CoordMsg::Snapshot { epoch: e, bytes, watermark: w, pause, flushed } if e == epoch => {
                watermark = watermark.max(w);
                max_pause = max_pause.max(pause);
                snaps.push(bytes);
                flushes.push(flushed);
            }
            _ => {}
        }
    }
    for f in flushes {
        tokio::select! {
            r = f => r.map_err(|_| JobError::Stopped)??,
            Some(done) = stages.join_next() => return Err(stage_ended(done)),
        }
    }
    let snap = Snapshot {
        version: SNAPSHOT_VERSION,
        sql_fingerprint: cfg_fingerprint(cfg),
        partitions: parts,
        watermark,
        shards: snaps,
    };
    let bytes = postcard::to_stdvec(&snap).map_err(|e| JobError::Corrupt(format!("checkpoint encoding: {e}")))?;
    let len = bytes.len() as u64;
    let store = cfg.checkpoints.clone();
    let written = tokio::task::spawn_blocking(move || store.write(epoch, &bytes))
        .await
        .map_err(|e| JobError::Invalid(format!("checkpoint writer panicked: {e}")))?;
    if let Err(e) = written {
        metrics::CHECKPOINT_FAILURES.with_label_values(&[&cfg.name]).inc();
        sluice_telemetry::record_error("job", "checkpoint", 1, &cfg.name, &e);
        tracing::warn!(job = %cfg.name, epoch, error = %e, "checkpoint failed; the previous one stays in use");
        return Ok(());
    }
    let took = started.elapsed();
    metrics::CHECKPOINT_SECONDS.with_label_values(&[&cfg.name]).observe(took.as_secs_f64());
    metrics::CHECKPOINT_PAUSE_SECONDS.with_label_values(&[&cfg.name]).observe(max_pause.as_secs_f64());
    metrics::CHECKPOINT_BYTES.with_label_values(&[&cfg.name]).set(len as i64);
    *cfg.stats.last_checkpoint.lock() = Some(CheckpointInfo {
        epoch,
        at_ms: now_ms(),
        bytes: len,
        duration_ms: took.as_secs_f64() * 1e3,
        max_pause_ms: max_pause.as_secs_f64() * 1e3,
        align_ms: align.as_secs_f64() * 1e3,
    });
    tracing::debug!(job = %cfg.name, epoch, bytes = len, ms = took.as_millis() as u64, "checkpoint written");
    Ok(())
}

struct SourceTask {
    cfg: Arc<RunnerConfig>,
    parts: Vec<PartState>,
    shard_txs: Vec<mpsc::Sender<ShardMsg>>,
    coord: mpsc::Sender<CoordMsg>,
    decode: Decode,
    op: WindowOperator,
    late_topic: String,
    stop: watch::Receiver<bool>,
}

/// A task's pre-aggregation for one read round, per shard.
pub struct PendingDelta {
    maps: Vec<HashMap<(Window, Key), Vec<AggState>>>,
    ingest: Vec<Vec<(i64, u32)>>,
}

impl PendingDelta {
    fn new(shards: usize) -> Self {
        PendingDelta { maps: (0..shards).map(|_| HashMap::new()).collect(), ingest: vec![Vec::new(); shards] }
    }

    /// (window, key) aggregates pending, over all shards.
    pub fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every pending (window, key) aggregate, as the task does when it sends its deltas.
    pub fn drain(&mut self) -> impl Iterator<Item = (Window, Box<[Datum]>, Vec<AggState>)> + '_ {
        self.ingest.iter_mut().for_each(Vec::clear);
        self.maps.iter_mut().flat_map(|m| m.drain().map(|((w, k), s)| (w, k, s)))
    }

    /// Drops what is pending (benchmarks: as if it had been sent).
    pub fn clear(&mut self) {
        self.maps.iter_mut().for_each(HashMap::clear);
        self.ingest.iter_mut().for_each(Vec::clear);
    }
}

/// What [`WindowOperator::process`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Added to at least one window.
    Accepted,
    /// Rejected by `WHERE`.
    Filtered,
    /// Too late for every window it belongs to: goes to the late-events topic.
    Late,
    /// Its time has no representable window (far outside i64 ms): dropped and counted as late.
    Dropped,
}

/// The per-event work of a windowed job's source task, without I/O: extract columns, advance the partition's
/// event-time clock, filter, classify lateness against the partition's watermark, assign windows and
/// pre-aggregate into a [`PendingDelta`] per shard. Public for benchmarks.
pub struct WindowOperator {
    plan: Arc<JobPlan>,
    window: Arc<WindowedPlan>,
    shards: usize,
    row: Vec<Datum>,
    pub pending: PendingDelta,
}

impl WindowOperator {
    /// `plan.body` must be `window`'s plan.
    pub fn new(plan: Arc<JobPlan>, window: Arc<WindowedPlan>, shards: usize) -> Self {
        let shards = shards.max(1);
        WindowOperator { plan, window, shards, row: Vec::new(), pending: PendingDelta::new(shards) }
    }

    /// Processes one decoded event of a partition whose largest event time so far is `max_ts` (updated).
    pub fn process(&mut self, value: &Value, meta: &RecordMeta, max_ts: &mut Option<i64>) -> Outcome {
        let opts = &self.plan.options;
        self.plan.extract(value, meta, &mut self.row);
        // No usable event time: the record's timestamp, which is the ingest time when the producer gave none
        // (never the wall clock here: a replay must put the event in the same window). Event time advances before
        // the filter: it is the progress of the source, whatever the job keeps.
        let ts = self.window.event_time(&self.row).unwrap_or(meta.timestamp);
        let m = max_ts.map_or(ts, |m| m.max(ts));
        *max_ts = Some(m);
        if !self.plan.passes(&self.row) {
            return Outcome::Filtered;
        }
        let part_wm = m.saturating_sub(opts.out_of_orderness_ms);
        let lateness = opts.allowed_lateness_ms.max(0);
        let key: Key = self.window.key_values(&self.row).into_boxed_slice();
        let shard = key_shard(&key, self.shards);
        let mut accepted = false;
        let mut representable = true;
        match self.window.window {
            WindowSpec::Session { gap } => {
                // Sessions: lateness by the event's own time (strict), so an accepted event can never touch a
                // session already dropped from state.
                if i128::from(ts) >= i128::from(part_wm) - i128::from(lateness) {
                    match ts.checked_add(gap) {
                        Some(end) => {
                            let states = self.pending.maps[shard]
                                .entry((Window::new(ts, end), key))
                                .or_insert_with(|| new_states(&self.window));
                            update_states(&self.window, states, &self.row);
                            accepted = true;
                        }
                        None => representable = false,
                    }
                }
            }
            spec => match spec.assign(ts) {
                Ok(windows) => {
                    for w in windows {
                        if Lateness::classify(w.end, Some(part_wm), lateness) == Lateness::TooLate {
                            continue;
                        }
                        let states = self.pending.maps[shard]
                            .entry((w, key.clone()))
                            .or_insert_with(|| new_states(&self.window));
                        update_states(&self.window, states, &self.row);
                        accepted = true;
                    }
                }
                Err(_) => representable = false,
            },
        }
        if accepted {
            let ingest = &mut self.pending.ingest[shard];
            match ingest.last_mut() {
                Some((t, n)) if *t == meta.append_time => *n += 1,
                _ => ingest.push((meta.append_time, 1)),
            }
            Outcome::Accepted
        } else if representable {
            Outcome::Late
        } else {
            Outcome::Dropped
        }
    }
}

impl SourceTask {
    async fn run(mut self, mut ctl: mpsc::Receiver<TaskCtl>) -> Result<(), JobError> {
        let buffer_timeout = Duration::from_millis(self.cfg.plan.options.buffer_timeout_ms.max(1) as u64);
        let mut progress_sent: Option<Progress> = None;
        loop {
            if let Ok(TaskCtl::Barrier { epoch, release }) = ctl.try_recv() {
                self.barrier(epoch, release, &mut progress_sent).await?;
            }
            if *self.stop.borrow() {
                // The coordinator takes the last checkpoint; keep answering barriers until it is done.
                match ctl.recv().await {
                    Some(TaskCtl::Barrier { epoch, release }) => {
                        self.barrier(epoch, release, &mut progress_sent).await?;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            let mut got = 0usize;
            for i in 0..self.parts.len() {
                got += self.read_partition(i).await?;
            }
            let now = now_ms();
            let mut idle_changed = false;
            if let Some(timeout) = self.cfg.plan.options.idle_timeout_ms {
                for p in &mut self.parts {
                    let idle = p.offset >= p.high_watermark && now - p.last_active >= timeout;
                    if idle != p.idle {
                        p.idle = idle;
                        idle_changed = true;
                    }
                }
            }
            self.publish_stats();
            if got > 0 || idle_changed || progress_sent.is_none() {
                self.flush(&mut progress_sent).await?;
            }
            if got == 0 {
                // Caught up: wait for new data, a control message or the stop signal.
                let parts: Vec<(u32, u64)> = self.parts.iter().map(|p| (p.partition, p.offset)).collect();
                tokio::select! {
                    _ = wait_for_data(&self.cfg, parts.into_iter(), buffer_timeout) => {}
                    m = ctl.recv() => match m {
                        Some(TaskCtl::Barrier { epoch, release }) => self.barrier(epoch, release, &mut progress_sent).await?,
                        None => return Ok(()),
                    },
                    _ = self.stop.changed() => {}
                }
            }
        }
    }

    fn publish_stats(&self) {
        let mut stats = self.cfg.stats.partitions.lock();
        for p in &self.parts {
            if let Some(s) = stats.get_mut(p.partition as usize) {
                s.offset = p.offset;
                s.high_watermark = p.high_watermark.max(p.offset);
                s.idle = p.idle;
            }
        }
    }

    async fn barrier(
        &mut self,
        epoch: u64,
        release: oneshot::Receiver<()>,
        progress_sent: &mut Option<Progress>,
    ) -> Result<(), JobError> {
        self.flush(progress_sent).await?;
        for tx in &self.shard_txs {
            tx.send(ShardMsg::Barrier { epoch }).await.map_err(|_| JobError::Stopped)?;
        }
        let partitions =
            self.parts.iter().map(|p| (p.partition, PartitionSnap { offset: p.offset, max_ts: p.max_ts })).collect();
        self.coord
            .send(CoordMsg::TaskBarrier { epoch, barrier: TaskBarrier { partitions } })
            .await
            .map_err(|_| JobError::Stopped)?;
        // Wait until every shard has every barrier: nothing of the next epoch may reach a shard before that.
        release.await.map_err(|_| JobError::Stopped)
    }

    async fn flush(&mut self, progress_sent: &mut Option<Progress>) -> Result<(), JobError> {
        let progress: Progress = Arc::new(self.parts.iter().map(|p| (p.partition, p.max_ts, p.idle)).collect());
        let changed = progress_sent.as_ref().is_none_or(|s| **s != *progress);
        for (i, tx) in self.shard_txs.iter().enumerate() {
            let map = std::mem::take(&mut self.op.pending.maps[i]);
            let ingest = std::mem::take(&mut self.op.pending.ingest[i]);
            if map.is_empty() && !changed {
                continue;
            }
            let entries = map.into_iter().map(|((w, k), s)| (w, k, s)).collect();
            send_or_wait(tx, ShardMsg::Delta(Delta { entries, progress: progress.clone(), ingest }), &self.cfg.name)
                .await?;
        }
        *progress_sent = Some(progress);
        Ok(())
    }

    /// Reads and processes one page of partition `i`; returns the records read.
    async fn read_partition(&mut self, i: usize) -> Result<usize, JobError> {
        let (partition, offset) = (self.parts[i].partition, self.parts[i].offset);
        let started = Instant::now();
        let read = match read_source(&self.cfg, partition, offset).await? {
            Ok(r) => r,
            Err(to) => {
                self.parts[i].offset = to;
                return Ok(0);
            }
        };
        self.parts[i].high_watermark = read.high_watermark;
        if read.records.is_empty() {
            if read.next_offset > offset {
                self.parts[i].offset = read.next_offset;
            }
            return Ok(0);
        }
        let n = read.records.len();
        let (span, _traced) = trace_page(&self.cfg.name, partition, &read.records);
        observe_operator(&self.cfg.name, "read", started);
        let started = Instant::now();
        self.parts[i].last_active = now_ms();
        self.parts[i].idle = false;
        let reader = self.decode.reader();
        let mut late: Vec<Record> = Vec::new();
        let (mut filtered, mut undecodable) = (0u64, 0u64);
        for rec in &read.records {
            let Some(value) = self.decode.value(reader.as_deref(), &rec.value) else {
                undecodable += 1;
                continue;
            };
            match self.op.process(&value, &meta_of(rec, partition), &mut self.parts[i].max_ts) {
                Outcome::Accepted => {}
                Outcome::Dropped => metrics::LATE_EVENTS.with_label_values(&[&self.cfg.name]).inc(),
                Outcome::Filtered => filtered += 1,
                Outcome::Late if self.parts[i].written_up_to.is_none_or(|w| rec.offset > w) => {
                    let headers = with_source_header(rec.headers.clone(), &self.cfg.run_id, partition, rec.offset);
                    late.push(Record {
                        timestamp: rec.timestamp,
                        key: rec.key.clone(),
                        headers,
                        value: rec.value.clone(),
                    });
                }
                // Already in the late topic from before a restart; still counts as late for this run.
                Outcome::Late => metrics::LATE_EVENTS.with_label_values(&[&self.cfg.name]).inc(),
            }
        }
        observe_operator(&self.cfg.name, "process", started);
        if !late.is_empty() {
            let count = late.len() as u64;
            append_with_retry(&*self.cfg.log, &self.late_topic, partition, late).instrument(span).await?;
            metrics::LATE_EVENTS.with_label_values(&[&self.cfg.name]).inc_by(count);
        }
        count_page(&self.cfg, partition, n, filtered, undecodable);
        self.parts[i].offset = read.next_offset;
        Ok(n)
    }
}

fn new_states(plan: &WindowedPlan) -> Vec<AggState> {
    plan.aggregates.iter().map(AggState::new).collect()
}

fn update_states(plan: &WindowedPlan, states: &mut [AggState], row: &[Datum]) {
    for (s, call) in states.iter_mut().zip(&plan.aggregates) {
        s.update(call, row);
    }
}

fn merge_states(into: &mut [AggState], from: &[AggState]) {
    for (a, b) in into.iter_mut().zip(from) {
        a.merge(b);
    }
}

struct Entry {
    states: Vec<AggState>,
    /// A row for this (window, key) is in the changelog (so a HAVING that now rejects it must delete it).
    emitted: bool,
    /// Changed since the changelog last saw it.
    dirty: bool,
    /// The last snapshot epoch that holds this entry, or the epoch in progress when it was created (then it is
    /// not part of that snapshot): copy-on-write for incremental snapshots.
    snap: u64,
}

/// A shard snapshot being written a chunk at a time while the shard keeps processing. Every entry that existed
/// at the barrier is written exactly once with its barrier-time value: by a chunk, or just before anything
/// changes or removes it ([`capture`]).
struct SnapInProgress {
    epoch: u64,
    buf: Vec<u8>,
    /// The shard's watermark at the barrier.
    watermark: Option<i64>,
    /// Windows before this one are completely written.
    cursor: Option<ByEnd>,
    flushed: Option<oneshot::Receiver<Result<(), JobError>>>,
    longest_step: Duration,
}

/// Entries a snapshot step writes by default: a few milliseconds of work, so processing never pauses for long.
pub const SNAPSHOT_CHUNK: usize = 8_192;

fn encode_entry(buf: &mut Vec<u8>, b: ByEnd, key: &[Datum], e: &Entry) {
    let r = EntrySnapRef { window: b.window(), key, states: &e.states, emitted: e.emitted };
    // Encoding into a Vec cannot fail for these types.
    if let Ok(v) = postcard::to_extend(&r, std::mem::take(buf)) {
        *buf = v;
    }
}

/// Writes `e` into the snapshot in progress before it changes, if it is not there yet.
fn capture(snap: &mut Option<SnapInProgress>, b: ByEnd, key: &[Datum], e: &mut Entry) {
    if let Some(s) = snap
        && e.snap < s.epoch
    {
        encode_entry(&mut s.buf, b, key, e);
        e.snap = s.epoch;
    }
}

/// Window order by end first: windows fire and expire in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ByEnd {
    end: i64,
    start: i64,
}

impl ByEnd {
    fn of(w: Window) -> Self {
        ByEnd { end: w.end, start: w.start }
    }
    fn window(self) -> Window {
        Window::new(self.start, self.end)
    }
}

struct Shard {
    id: usize,
    cfg: Arc<RunnerConfig>,
    plan: Arc<WindowedPlan>,
    tasks: usize,
    windows: BTreeMap<ByEnd, HashMap<Key, Entry>>,
    sessions: HashMap<Key, SessionSet>,
    entries: usize,
    /// `(max_ts, idle)` per source partition.
    partitions: Vec<(Option<i64>, bool)>,
    watermark: Option<i64>,
    /// Windows ending at or before this have been marked for their final record.
    fired_up_to: Option<i64>,
    /// Changed since the hot results last saw them.
    hot_dirty: HashSet<(ByEnd, Key)>,
    /// Changed (or fired) since the changelog last saw them.
    cl_dirty: HashSet<(ByEnd, Key)>,
    /// Merged-away sessions to delete from the changelog (`true`: it has a row).
    removed: Vec<(Window, Key, bool)>,
    /// ... and from the hot results.
    hot_removed: Vec<(Window, Key)>,
    pending_ingest: Vec<(i64, u32)>,
    snap: Option<SnapInProgress>,
    /// `entries` as last added to the job's stats (and to the state budget).
    reported_entries: u64,
    /// [`entry_bytes`] of the plan.
    entry_bytes: u64,
    barriers: usize,
    last_changelog: Instant,
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.cfg.state_budget.update(self.reported_entries * self.entry_bytes, 0);
    }
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: usize,
        cfg: Arc<RunnerConfig>,
        plan: Arc<WindowedPlan>,
        tasks: usize,
        partitions: u32,
        max_ts: &[Option<i64>],
        restored: Vec<EntrySnap>,
    ) -> Result<Self, JobError> {
        let eb = entry_bytes(&plan);
        let mut s = Shard {
            id,
            cfg,
            plan,
            tasks,
            windows: BTreeMap::new(),
            sessions: HashMap::new(),
            entries: 0,
            partitions: (0..partitions as usize).map(|p| (max_ts.get(p).copied().flatten(), false)).collect(),
            watermark: None,
            fired_up_to: None,
            hot_dirty: HashSet::new(),
            cl_dirty: HashSet::new(),
            hot_removed: Vec::new(),
            removed: Vec::new(),
            pending_ingest: Vec::new(),
            snap: None,
            reported_entries: 0,
            entry_bytes: eb,
            barriers: 0,
            last_changelog: Instant::now(),
        };
        let gap = match s.plan.window {
            WindowSpec::Session { gap } => Some(gap),
            _ => None,
        };
        for e in restored {
            let key: Key = e.key.into_boxed_slice();
            if let Some(gap) = gap {
                let set = match s.sessions.get_mut(&key) {
                    Some(set) => set,
                    None => s
                        .sessions
                        .entry(key.clone())
                        .or_insert(SessionSet::new(gap).map_err(|e| JobError::Corrupt(format!("session gap: {e}")))?),
                };
                set.restore(e.window).map_err(|e| JobError::Corrupt(format!("checkpoint sessions: {e}")))?;
            }
            s.hot_dirty.insert((ByEnd::of(e.window), key.clone()));
            s.windows
                .entry(ByEnd::of(e.window))
                .or_default()
                .insert(key, Entry { states: e.states, emitted: e.emitted, dirty: false, snap: 0 });
            s.entries += 1;
        }
        Ok(s)
    }

    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<ShardMsg>,
        coord: mpsc::Sender<CoordMsg>,
        writer: mpsc::Sender<WriterMsg>,
    ) -> Result<(), JobError> {
        let buffer_timeout = Duration::from_millis(self.cfg.plan.options.buffer_timeout_ms.max(1) as u64);
        let mut tick = tokio::time::interval(buffer_timeout);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Restored rows go back to the hot results at once.
        self.emit_hot();
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    let mut next = Some(m);
                    // Drain what is queued (bounded) before emitting, so a busy shard emits once per burst; a full
                    // batch of changed rows ends the burst, so unwritten changes stay bounded by count.
                    let mut n = 0;
                    while let Some(m) = next.take() {
                        match m {
                            ShardMsg::Delta(d) => {
                                let started = Instant::now();
                                self.apply(d);
                                observe_operator(&self.cfg.name, "merge", started);
                            }
                            ShardMsg::Barrier { epoch } => {
                                self.barriers += 1;
                                if self.barriers == self.tasks {
                                    self.barriers = 0;
                                    self.align(epoch, &coord, &writer).await?;
                                }
                                break;
                            }
                        }
                        n += 1;
                        if n < 64 && self.cl_dirty.len() < WRITER_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    let started = Instant::now();
                    self.after_batch(&writer, false).await?;
                    observe_operator(&self.cfg.name, "emit", started);
                    self.snapshot_step(&coord).await?;
                }
                _ = tick.tick() => self.after_batch(&writer, false).await?,
                // Nothing queued: carry on with a snapshot in progress.
                _ = std::future::ready(()), if self.snap.is_some() => {
                    self.snapshot_step(&coord).await?;
                    // Steps are CPU work: let the coordinator and the source tasks run between them.
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Writes the next chunk of a snapshot in progress; hands the snapshot to the coordinator when complete.
    async fn snapshot_step(&mut self, coord: &mpsc::Sender<CoordMsg>) -> Result<(), JobError> {
        let chunk = self.cfg.snapshot_chunk.max(1);
        let Shard { snap, windows, .. } = self;
        let Some(s) = snap.as_mut() else { return Ok(()) };
        let started = Instant::now();
        let mut written = 0;
        let mut complete = true;
        let range = match s.cursor {
            Some(c) => windows.range_mut(c..),
            None => windows.range_mut(..),
        };
        'windows: for (b, slot) in range {
            for (key, e) in slot.iter_mut() {
                if e.snap < s.epoch {
                    encode_entry(&mut s.buf, *b, key, e);
                    e.snap = s.epoch;
                    written += 1;
                    if written >= chunk {
                        s.cursor = Some(*b);
                        complete = false;
                        break 'windows;
                    }
                }
            }
        }
        s.longest_step = s.longest_step.max(started.elapsed());
        if complete {
            let s = snap.take().expect("in progress");
            let flushed = s.flushed.expect("set at the barrier");
            coord
                .send(CoordMsg::Snapshot {
                    epoch: s.epoch,
                    bytes: s.buf,
                    watermark: s.watermark,
                    pause: s.longest_step,
                    flushed,
                })
                .await
                .map_err(|_| JobError::Stopped)?;
        }
        Ok(())
    }

    fn apply(&mut self, d: Delta) {
        for (p, max_ts, idle) in d.progress.iter() {
            if let Some(slot) = self.partitions.get_mut(*p as usize) {
                *slot = (*max_ts, *idle);
            }
        }
        let lateness = self.cfg.plan.options.allowed_lateness_ms.max(0);
        let session = matches!(self.plan.window, WindowSpec::Session { .. });
        for (w, key, states) in d.entries {
            // Only possible when an idle partition let the watermark pass its own: the state is gone.
            let expired = match self.watermark {
                Some(wm) if session => i128::from(w.start) < i128::from(wm) - i128::from(lateness),
                Some(wm) => Lateness::classify(w.end, Some(wm), lateness) == Lateness::TooLate,
                None => false,
            };
            if expired {
                metrics::LATE_EVENTS.with_label_values(&[&self.cfg.name]).inc();
                continue;
            }
            if session {
                self.apply_session(w, key, states);
            } else {
                self.merge_into(w, key, &states);
            }
        }
        self.pending_ingest.extend(d.ingest);
    }

    fn merge_into(&mut self, w: Window, key: Key, states: &[AggState]) {
        let born = self.snap.as_ref().map_or(0, |s| s.epoch);
        let slot = self.windows.entry(ByEnd::of(w)).or_default();
        match slot.get_mut(&key) {
            Some(e) => {
                capture(&mut self.snap, ByEnd::of(w), &key, e);
                merge_states(&mut e.states, states);
                e.dirty = true;
            }
            None => {
                slot.insert(key.clone(), Entry { states: states.to_vec(), emitted: false, dirty: true, snap: born });
                self.entries += 1;
            }
        }
        self.hot_dirty.insert((ByEnd::of(w), key.clone()));
        self.cl_dirty.insert((ByEnd::of(w), key));
    }

    /// Removes a session merged into another. `by` is the event that caused it.
    fn take_entry(&mut self, w: Window, key: &Key, by: i64) -> Option<Entry> {
        let b = ByEnd::of(w);
        let slot = self.windows.get_mut(&b)?;
        let mut e = slot.remove(key)?;
        capture(&mut self.snap, b, key, &mut e);
        if slot.is_empty() {
            self.windows.remove(&b);
        }
        self.entries -= 1;
        self.hot_dirty.remove(&(b, key.clone()));
        // A session that may have been final at some point, here or in a run before a restart, gets a deletion:
        // only possible when late events are allowed, or when the event exactly touches the session's end (an
        // accepted event is never earlier than the watermark, which is at most the end of an unfired session).
        let lateness = self.cfg.plan.options.allowed_lateness_ms.max(0);
        let maybe_final =
            lateness > 0 || by >= w.end || self.watermark.is_some_and(|wm| w.end <= wm.saturating_add(lateness));
        self.removed.push((w, key.clone(), e.emitted || maybe_final));
        self.hot_removed.push((w, key.clone()));
        Some(e)
    }

    fn apply_session(&mut self, proto: Window, key: Key, states: Vec<AggState>) {
        let Some(gap) = (match self.plan.window {
            WindowSpec::Session { gap } => Some(gap),
            _ => None,
        }) else {
            return;
        };
        let set = match self.sessions.get_mut(&key) {
            Some(s) => s,
            None => match SessionSet::new(gap) {
                Ok(s) => self.sessions.entry(key.clone()).or_insert(s),
                Err(_) => return,
            },
        };
        let Ok(change) = set.insert(proto.start) else { return };
        match change {
            SessionChange::Unchanged(w) | SessionChange::Created(w) => self.merge_into(w, key, &states),
            SessionChange::Extended { from, into } => {
                let mut acc = self
                    .take_entry(from, &key, proto.start)
                    .map(|e| e.states)
                    .unwrap_or_else(|| new_states(&self.plan));
                merge_states(&mut acc, &states);
                self.merge_into(into, key, &acc);
            }
            SessionChange::Merged { from, into } => {
                let mut acc = new_states(&self.plan);
                for w in from {
                    if let Some(e) = self.take_entry(w, &key, proto.start) {
                        merge_states(&mut acc, &e.states);
                    }
                }
                merge_states(&mut acc, &states);
                self.merge_into(into, key, &acc);
            }
        }
    }

    fn advance_watermark(&mut self) {
        let delay = self.cfg.plan.options.out_of_orderness_ms;
        // Every partition idle: the clock closes the last windows (see `watermark::candidate`).
        if let Some(c) = sluice_stream::watermark::candidate(self.partitions.iter().copied(), delay, now_ms()) {
            self.watermark = Some(self.watermark.map_or(c, |w| w.max(c)));
        }
        if self.id == 0
            && let Some(w) = self.watermark
        {
            self.cfg.stats.watermark.store(w, Ordering::Relaxed);
            metrics::WATERMARK.with_label_values(&[&self.cfg.name]).set(w as f64 / 1000.0);
        }
    }

    /// Windows the watermark passed since the last call get their `final` changelog record, changed or not.
    fn mark_fired(&mut self) {
        let Some(wm) = self.watermark else { return };
        if self.fired_up_to.is_some_and(|f| f >= wm) {
            return;
        }
        let lo = self.fired_up_to.map_or(i64::MIN, |f| f.saturating_add(1));
        let range = ByEnd { end: lo, start: i64::MIN }..=ByEnd { end: wm, start: i64::MAX };
        for (b, slot) in self.windows.range_mut(range) {
            for (key, e) in slot.iter_mut() {
                e.dirty = true;
                self.cl_dirty.insert((*b, key.clone()));
            }
        }
        self.fired_up_to = Some(wm);
    }

    /// Upserts every changed row into the hot results and records the end-to-end latency.
    fn emit_hot(&mut self) {
        for (w, key) in self.hot_removed.drain(..) {
            self.cfg.hot.remove(w.start, w.end, &key_text(&key));
        }
        let mut rows = Vec::with_capacity(self.hot_dirty.len());
        for (b, key) in self.hot_dirty.drain() {
            let Some(e) = self.windows.get(&b).and_then(|m| m.get(&key)) else { continue };
            let w = b.window();
            if let Some(map) = self.plan.result_row(w, &key, &e.states) {
                rows.push(ResultRow {
                    window_start: w.start,
                    window_end: w.end,
                    key: key_text(&key),
                    row: Arc::new(map),
                });
            } else {
                self.cfg.hot.remove(w.start, w.end, &key_text(&key));
            }
        }
        if !rows.is_empty() {
            self.cfg.hot.upsert(rows);
        }
        if !self.pending_ingest.is_empty() {
            let now = now_ms();
            let mut hist = self.cfg.stats.latency_us.lock();
            let prom = metrics::LATENCY.with_label_values(&[&self.cfg.name]);
            for (t, n) in self.pending_ingest.drain(..) {
                let us = ((now - t).max(0) as u64).saturating_mul(1000).max(1);
                let _ = hist.record_n(us, u64::from(n));
                prom.observe(us as f64 / 1e6);
            }
        }
    }

    async fn after_batch(&mut self, writer: &mpsc::Sender<WriterMsg>, force: bool) -> Result<(), JobError> {
        self.advance_watermark();
        self.mark_fired();
        self.emit_hot();
        let timeout = Duration::from_millis(self.cfg.plan.options.buffer_timeout_ms.max(1) as u64);
        let lateness = self.cfg.plan.options.allowed_lateness_ms.max(0);
        let expire_before = self.watermark.map(|w| w.saturating_sub(lateness));
        let must_expire =
            expire_before.is_some_and(|x| self.windows.first_key_value().is_some_and(|(b, _)| b.end <= x));
        // A full batch of changed rows goes out at once: the state's unwritten changes stay bounded by count
        // (and a slow writer stops this shard from taking more input), not only by the buffer timeout.
        let full = self.cl_dirty.len() >= WRITER_BATCH;
        if force || must_expire || full || self.last_changelog.elapsed() >= timeout {
            self.write_changelog(writer).await?;
            self.last_changelog = Instant::now();
        }
        if let Some(x) = expire_before {
            self.expire(x);
        }
        // Shards add their changes, so the job's number is the sum over shards.
        let now = self.entries as u64;
        let before = self.reported_entries;
        self.cfg.stats.state_entries.fetch_add(now.wrapping_sub(before), Ordering::Relaxed);
        self.reported_entries = now;
        let total = self.cfg.state_budget.update(before * self.entry_bytes, now * self.entry_bytes);
        if now > before && total > self.cfg.state_budget.limit {
            return Err(JobError::StateMemory {
                job: self.cfg.name.clone(),
                used_mib: (now * self.entry_bytes) >> 20,
                entries: now,
                limit_mib: self.cfg.state_budget.limit >> 20,
            });
        }
        Ok(())
    }

    /// Sends every changed row (and deletions) to the writer.
    async fn write_changelog(&mut self, writer: &mpsc::Sender<WriterMsg>) -> Result<(), JobError> {
        let wm = self.watermark;
        let session = matches!(self.plan.window, WindowSpec::Session { .. });
        let mut out = Vec::new();
        for (w, key, emitted) in self.removed.drain(..) {
            if emitted {
                out.push(changelog::record(&self.plan, w, &key, None, ResultKind::Deleted));
            }
        }
        // Only what changed since the last flush: the cost follows the changes, not the size of the state.
        let changed: Vec<(ByEnd, Key)> = self.cl_dirty.drain().collect();
        let mut open_sessions = Vec::new();
        for (b, key) in changed {
            let fired = wm.is_some_and(|w| b.end <= w);
            // Open sessions can still merge away: only final sessions go to the changelog.
            if session && !fired {
                open_sessions.push((b, key));
                continue;
            }
            let Shard { windows, snap, plan, .. } = &mut *self;
            let Some(e) = windows.get_mut(&b).and_then(|m| m.get_mut(&key)) else { continue };
            if !e.dirty {
                continue;
            }
            capture(snap, b, &key, e);
            e.dirty = false;
            match plan.result_row(b.window(), &key, &e.states) {
                Some(map) => {
                    let kind = if fired { ResultKind::Final } else { ResultKind::Partial };
                    out.push(changelog::record(plan, b.window(), &key, Some(&map), kind));
                    e.emitted = true;
                }
                // A final rejection is always written: a row from before a restart may be in the changelog.
                None if e.emitted || fired => {
                    out.push(changelog::record(plan, b.window(), &key, None, ResultKind::Deleted));
                    e.emitted = false;
                }
                None => {}
            }
            if out.len() >= WRITER_BATCH {
                send_or_wait(writer, WriterMsg::Rows(std::mem::take(&mut out)), &self.cfg.name).await?;
            }
        }
        self.cl_dirty.extend(open_sessions);
        if !out.is_empty() {
            send_or_wait(writer, WriterMsg::Rows(out), &self.cfg.name).await?;
        }
        Ok(())
    }

    /// Drops state of windows past `end + allowed lateness` (their final rows were written just before).
    fn expire(&mut self, before: i64) {
        let session = matches!(self.plan.window, WindowSpec::Session { .. });
        // Sessions expire strictly before, matching the strict lateness rule of the source tasks.
        while let Some((b, _)) = self.windows.first_key_value() {
            let gone = if session { b.end < before } else { b.end <= before };
            if !gone {
                break;
            }
            let (b, slot) = self.windows.pop_first().expect("first exists");
            self.entries -= slot.len();
            for (key, mut e) in slot {
                capture(&mut self.snap, b, &key, &mut e);
                if session && let Some(set) = self.sessions.get_mut(&key) {
                    set.close_before(b.end);
                    if set.is_empty() {
                        self.sessions.remove(&key);
                    }
                }
            }
        }
    }

    async fn align(
        &mut self,
        epoch: u64,
        coord: &mpsc::Sender<CoordMsg>,
        writer: &mpsc::Sender<WriterMsg>,
    ) -> Result<(), JobError> {
        // Source tasks may go on at once: nothing after the barrier is applied here before the snapshot starts
        // (this shard is busy until then; their deltas wait in the bounded queue).
        coord.send(CoordMsg::Aligned { epoch }).await.map_err(|_| JobError::Stopped)?;
        // Everything before the barrier reaches the writer, then the flush marker: the checkpoint waits for it.
        self.after_batch(writer, true).await?;
        let (tx, flushed) = oneshot::channel();
        writer.send(WriterMsg::Flush(tx)).await.map_err(|_| JobError::Stopped)?;
        self.snap = Some(SnapInProgress {
            epoch,
            watermark: self.watermark,
            buf: Vec::with_capacity(self.entries * 48),
            cursor: None,
            flushed: Some(flushed),
            longest_step: Duration::ZERO,
        });
        self.snapshot_step(coord).await
    }
}

async fn run_writer(
    log: Arc<dyn LogStore>,
    topic: String,
    job: String,
    stats: Arc<JobStats>,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> Result<(), JobError> {
    let partitions = log.topic(&topic).await?.partitions;
    while let Some(msg) = rx.recv().await {
        match msg {
            WriterMsg::Rows(rows) => {
                let mut by_part: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
                for r in rows {
                    let kind = r.headers.first().map(|(_, v)| v.clone());
                    if let Some(k) = kind {
                        let kind = std::str::from_utf8(&k).unwrap_or("row").to_string();
                        metrics::RESULTS.with_label_values(&[&job, &kind]).inc();
                    }
                    let p = partition_for_key(r.key.as_deref().unwrap_or_default(), partitions);
                    by_part.entry(p).or_default().push(r);
                }
                for (p, batch) in by_part {
                    let n = batch.len() as u64;
                    append_with_retry(&*log, &topic, p, batch).await?;
                    stats.results_written.fetch_add(n, Ordering::Relaxed);
                }
            }
            WriterMsg::Flush(done) => {
                let _ = done.send(Ok(()));
            }
        }
    }
    Ok(())
}

/// Appends, retrying transient failures with backoff: results must not be dropped, and the job's input stays
/// where it is meanwhile (backpressure).
async fn append_with_retry(log: &dyn LogStore, topic: &str, p: u32, batch: Vec<Record>) -> Result<(), JobError> {
    let mut delay = Duration::from_millis(50);
    for attempt in 0..8 {
        match log.append(topic, p, batch.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 7 && e.kind().is_transient() => {
                tracing::warn!(topic, partition = p, error = %e, "results append failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

// ---------------------------------------------------------------------------------------------------------------
// Stateless jobs: filter/project/enrich into another topic, partition p to partition p. Exactly-once without a
// state snapshot: each output record names its source offset, and a restart resumes after the last one written.

async fn run_stateless(
    cfg: RunnerConfig,
    plan: StatelessPlan,
    partitions: u32,
    mut stop: watch::Receiver<bool>,
) -> Result<(), JobError> {
    let cfg = Arc::new(cfg);
    let plan = Arc::new(plan);
    // Offsets from the last checkpoint (only positions; there is no state), else the start position.
    let ckpt: Option<Vec<u64>> = match cfg.checkpoints.latest()? {
        Some((_, b)) => postcard::from_bytes::<Vec<u64>>(&b).ok().filter(|v| v.len() == partitions as usize),
        None => None,
    };
    let mut starts = match ckpt {
        Some(v) => v,
        None => start_offsets(&*cfg.log, &cfg.plan.source, partitions, &cfg.start).await?,
    };
    for (start, written) in
        starts.iter_mut().zip(written_source_offsets(&*cfg.log, &plan.output_topic, &cfg.run_id).await?)
    {
        if let Some(o) = written {
            *start = (*start).max(o + 1);
        }
    }
    *cfg.stats.partitions.lock() = progress_from(&starts);
    let parallelism = cfg.parallelism.clamp(1, partitions.max(1) as usize);
    let offsets: Arc<Vec<AtomicU64>> = Arc::new(starts.iter().map(|o| AtomicU64::new(*o)).collect());
    let mut set: JoinSet<Result<(), JobError>> = JoinSet::new();
    for t in 0..parallelism {
        let cfg = cfg.clone();
        let plan = plan.clone();
        let offsets = offsets.clone();
        let stop = stop.clone();
        let parts: Vec<u32> = (0..partitions).filter(|p| *p as usize % parallelism == t).collect();
        set.spawn(async move { stateless_task(cfg, plan, parts, offsets, stop).await });
    }
    metrics::RUNNING.with_label_values(&[&cfg.name]).set(1);
    let mut ticker = tokio::time::interval(cfg.checkpoint_interval);
    ticker.tick().await;
    let mut epoch = cfg.checkpoints.list()?.last().copied().unwrap_or(0);
    let save = |epoch: u64| {
        let v: Vec<u64> = offsets.iter().map(|o| o.load(Ordering::Acquire)).collect();
        let store = cfg.checkpoints.clone();
        let span = tracing::info_span!("job.checkpoint", job = %cfg.name, epoch);
        async move {
            let bytes = postcard::to_stdvec(&v).unwrap_or_default();
            match tokio::task::spawn_blocking(move || store.write(epoch, &bytes)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(epoch, error = %e, "checkpoint failed"),
                Err(e) => tracing::warn!(epoch, error = %e, "checkpoint failed"),
            }
        }
        .instrument(span)
    };
    let result = loop {
        tokio::select! {
            _ = ticker.tick() => { epoch += 1; save(epoch).await; }
            _ = stop.changed() => if *stop.borrow() {
                // Tasks see the same signal; wait for them, then record where they stopped.
                let mut r = Ok(());
                while let Some(done) = set.join_next().await {
                    if let Ok(Err(e)) = done { r = Err(e); }
                }
                epoch += 1;
                save(epoch).await;
                break r;
            },
            Some(done) = set.join_next() => break Err(stage_ended(done)),
        }
    };
    set.abort_all();
    while set.join_next().await.is_some() {}
    metrics::RUNNING.with_label_values(&[&cfg.name]).set(0);
    result
}

async fn stateless_task(
    cfg: Arc<RunnerConfig>,
    plan: Arc<StatelessPlan>,
    parts: Vec<u32>,
    offsets: Arc<Vec<AtomicU64>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), JobError> {
    let mut decode = Decode { decoder: cfg.decoder.clone(), topic: cfg.plan.source.clone(), buf: Vec::new() };
    let mut row = Vec::new();
    let timeout = Duration::from_millis(cfg.plan.options.buffer_timeout_ms.max(1) as u64);
    let job = cfg.name.clone();
    while !*stop.borrow() {
        let mut got = 0;
        for &p in &parts {
            let from = offsets[p as usize].load(Ordering::Acquire);
            let started = Instant::now();
            let read = match read_source(&cfg, p, from).await? {
                Ok(r) => r,
                Err(to) => {
                    offsets[p as usize].store(to, Ordering::Release);
                    continue;
                }
            };
            if let Some(s) = cfg.stats.partitions.lock().get_mut(p as usize) {
                s.high_watermark = read.high_watermark;
                s.offset = from;
            }
            if read.records.is_empty() {
                continue;
            }
            got += read.records.len();
            let (span, traced) = trace_page(&job, p, &read.records);
            observe_operator(&job, "read", started);
            let started = Instant::now();
            let reader = decode.reader();
            let mut out = Vec::new();
            let (mut filtered, mut bad) = (0u64, 0u64);
            for rec in &read.records {
                let Some(value) = decode.value(reader.as_deref(), &rec.value) else {
                    bad += 1;
                    continue;
                };
                cfg.plan.extract(&value, &meta_of(rec, p), &mut row);
                if !cfg.plan.passes(&row) {
                    filtered += 1;
                    continue;
                }
                let v = plan.project(&value, &row);
                out.push(Record {
                    timestamp: rec.timestamp,
                    key: rec.key.clone(),
                    headers: forward_trace(
                        with_source_header(Vec::new(), &cfg.run_id, p, rec.offset),
                        &traced,
                        rec.offset,
                    ),
                    value: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                });
            }
            observe_operator(&job, "process", started);
            if !out.is_empty() {
                let n = out.len() as u64;
                let started = Instant::now();
                append_with_retry(&*cfg.log, &plan.output_topic, p, out).instrument(span.clone()).await?;
                observe_operator(&job, "emit", started);
                metrics::RESULTS.with_label_values(&[&job, "row"]).inc_by(n);
            }
            count_page(&cfg, p, read.records.len(), filtered, bad);
            offsets[p as usize].store(read.next_offset, Ordering::Release);
            if let Some(s) = cfg.stats.partitions.lock().get_mut(p as usize) {
                s.offset = read.next_offset;
            }
        }
        if got == 0 {
            let waiting = parts.iter().map(|&p| (p, offsets[p as usize].load(Ordering::Acquire)));
            tokio::select! {
                _ = wait_for_data(&cfg, waiting, timeout) => {}
                _ = stop.changed() => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_log::{EmbeddedLog, LogOptions, StdStorage};

    async fn shard_for(sql: &str, dir: &std::path::Path, chunk: usize) -> (Shard, Arc<WindowedPlan>) {
        shard_with_budget(sql, dir, chunk, u64::MAX).await
    }

    async fn shard_with_budget(
        sql: &str,
        dir: &std::path::Path,
        chunk: usize,
        budget: u64,
    ) -> (Shard, Arc<WindowedPlan>) {
        let (log, _) = EmbeddedLog::open(dir.join("log"), Arc::new(StdStorage), LogOptions::default()).unwrap();
        let log: Arc<dyn LogStore> = Arc::new(log);
        let registry = Arc::new(sluice_schema::Registry::open(log.clone()).await.unwrap());
        let plan = Arc::new(sluice_stream::parse_job(sql).unwrap());
        let PlanBody::Windowed(w) = &plan.body else { panic!("windowed") };
        let w = Arc::new(w.clone());
        let cfg = Arc::new(RunnerConfig {
            name: "t".into(),
            plan: plan.clone(),
            sql: sql.into(),
            run_id: "t.0".into(),
            log,
            decoder: Arc::new(ValueDecoder::new(registry)),
            hot: Arc::new(HotResults::new(60_000)),
            checkpoints: Arc::new(CheckpointStore::open(dir.join("ckpt"), 2).unwrap()),
            checkpoint_interval: Duration::from_secs(3600),
            snapshot_chunk: chunk,
            parallelism: 1,
            stats: Arc::new(JobStats::new()),
            start: StartPosition::Earliest,
            state_budget: Arc::new(StateBudget::new(budget)),
        });
        (Shard::new(0, cfg, w.clone(), 1, 1, &[None], Vec::new()).unwrap(), w)
    }

    fn delta(plan: &WindowedPlan, window: Window, keys: std::ops::Range<i64>) -> Delta {
        let entries = keys
            .map(|k| {
                let mut states = new_states(plan);
                update_states(plan, &mut states, &[Datum::Int(k)]);
                (window, vec![Datum::Int(k)].into_boxed_slice(), states)
            })
            .collect();
        Delta { entries, progress: Arc::new(vec![(0, Some(window.start), false)]), ingest: Vec::new() }
    }

    fn counts(entries: &[EntrySnap]) -> BTreeMap<(i64, i64), i64> {
        entries
            .iter()
            .map(|e| {
                let Datum::Int(k) = e.key[0] else { panic!("int key") };
                let Datum::Int(n) = e.states[0].finish() else { panic!("count") };
                ((e.window.start, k), n)
            })
            .collect()
    }

    /// An incremental snapshot holds exactly the state at its barrier, however the state changes between its
    /// steps: entries updated, created, merged away (sessions) and expired before their chunk.
    #[tokio::test]
    async fn incremental_snapshot_holds_the_barrier_time_state() {
        let dir = tempfile::tempdir().unwrap();
        let sql = "CREATE JOB t WITH (out_of_orderness = '0s') AS SELECT window_start, k, count(*) AS n FROM src \
                   GROUP BY TUMBLE(event_time, INTERVAL '1' SECOND), k";
        let (mut shard, plan) = shard_for(sql, dir.path(), 3).await;
        let (w0, w1) = (Window::new(0, 1000), Window::new(1000, 2000));
        shard.apply(delta(&plan, w0, 0..40));
        shard.apply(delta(&plan, w1, 0..40));
        let expected: BTreeMap<(i64, i64), i64> = (0..40).flat_map(|k| [((0, k), 1), ((1000, k), 1)]).collect();

        let (coord_tx, mut coord_rx) = mpsc::channel(4);
        let (_flush_tx, flush_rx) = oneshot::channel();
        shard.snap = Some(SnapInProgress {
            epoch: 1,
            watermark: None,
            buf: Vec::new(),
            cursor: None,
            flushed: Some(flush_rx),
            longest_step: Duration::ZERO,
        });
        shard.snapshot_step(&coord_tx).await.unwrap();
        // Between steps: every entry changes, new keys and a new window arrive, and w0 expires.
        shard.apply(delta(&plan, w0, 0..50));
        shard.apply(delta(&plan, w1, 0..50));
        shard.apply(delta(&plan, Window::new(5000, 6000), 0..5));
        shard.snapshot_step(&coord_tx).await.unwrap();
        shard.expire(1000);
        while shard.snap.is_some() {
            shard.snapshot_step(&coord_tx).await.unwrap();
        }
        let Some(CoordMsg::Snapshot { bytes, epoch: 1, .. }) = coord_rx.recv().await else { panic!("snapshot") };
        let entries = decode_entries(&bytes).unwrap();
        assert_eq!(entries.len(), 80, "each barrier-time entry exactly once");
        assert_eq!(counts(&entries), expected);
        // The live state moved on.
        assert_eq!(shard.entries, 55);
    }
    /// The budget counts every shard's entries; the shard that takes the total over it fails its job with an
    /// error naming the setting, and a stopped shard gives its share back.
    #[tokio::test]
    async fn state_over_the_budget_fails_the_job_and_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let sql = "CREATE JOB t AS SELECT window_start, k, count(*) AS n FROM src \
                   GROUP BY TUMBLE(event_time, INTERVAL '1' SECOND), k";
        let plan = sluice_stream::parse_job(sql).unwrap();
        let PlanBody::Windowed(w) = &plan.body else { panic!("windowed") };
        let per = entry_bytes(w);
        let (mut shard, plan) = shard_with_budget(sql, dir.path(), 64, per * 100).await;
        let budget = shard.cfg.state_budget.clone();
        let (writer, _rx) = mpsc::channel(64);
        shard.apply(delta(&plan, Window::new(0, 1000), 0..60));
        shard.after_batch(&writer, false).await.unwrap();
        assert_eq!(budget.used.load(Ordering::Relaxed), per * 60);
        shard.apply(delta(&plan, Window::new(0, 1000), 60..120));
        let err = shard.after_batch(&writer, false).await.unwrap_err();
        assert_eq!(err.code(), "job_state_memory");
        assert!(err.to_string().contains("120 entries") && err.to_string().contains("stream.state_memory"), "{err}");
        drop(shard);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }
}
