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
//!
//! Modules: `windowed` (wiring and the checkpoint coordinator), `source` (source tasks), `shard` (keyed
//! state), `writer` (the results writer), `stateless` (jobs without state). This module holds what they
//! share: the job's configuration and numbers, start positions, reading and the messages between stages.

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
use crate::metrics;
use sluice_hot::{HotBatch, HotResults, ResultRow, Row};

mod shard;
mod source;
mod stateless;
mod windowed;
mod writer;

pub use shard::SNAPSHOT_CHUNK;
pub use source::{Outcome, PendingDelta, WindowOperator};
pub(crate) use windowed::checkpoint_offsets;

use shard::Shard;
use source::SourceTask;
use stateless::run_stateless;
use windowed::run_windowed;
use writer::{append_with_retry, run_writer};

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
    pub hot: Arc<dyn HotResults>,
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
