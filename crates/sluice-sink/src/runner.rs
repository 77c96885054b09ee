//! The sink runner: one task per (sink, topic) that reads the topic from the writer's committed offsets and hands
//! it batches, one at a time.
//!
//! One batch in flight is the whole backpressure story: while the writer is busy nothing more is read, and the
//! records wait in the log. A failed write is counted, logged once, and retried after a backoff (100 ms doubling
//! to 10 s) from the writer's committed offsets, so a sink that loses its buffer loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use sluice_log::{LogError, LogStore};
use sluice_telemetry::trace;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::metrics;
use crate::{PartitionRecords, SinkBatch, SinkError, SinkWriter};

/// A test-only fault: `SLUICE_TEST_SINK_DELAY_MS=N` makes every sink sleep N ms before each batch write, so
/// end-to-end latency and its alert can be tested against the real binary. Read once; unset in production.
static TEST_WRITE_DELAY: std::sync::LazyLock<Option<Duration>> = std::sync::LazyLock::new(|| {
    let ms: u64 = std::env::var("SLUICE_TEST_SINK_DELAY_MS").ok()?.parse().ok()?;
    tracing::warn!(delay_ms = ms, "SLUICE_TEST_SINK_DELAY_MS is set: every sink write is delayed (test fault)");
    Some(Duration::from_millis(ms))
});

/// How a runner reads and batches.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Records per read of one partition.
    pub read_records: usize,
    /// Bytes per read of one partition.
    pub read_bytes: usize,
    /// Records per batch handed to the writer (a batch holds whole reads, so it may exceed this by one read).
    pub batch_records: usize,
    /// How long to wait for new data before calling [`SinkWriter::tick`]; also the tick period under load.
    pub buffer_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            read_records: 8192,
            read_bytes: 4 << 20,
            batch_records: 32768,
            buffer_timeout: Duration::from_millis(200),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What a runner is doing, for status pages and tests.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    pub sink: String,
    pub topic: String,
    /// `starting`, `running`, `retrying` (after an error), `stopped`.
    pub state: &'static str,
    /// Records applied since the runner started.
    pub records: u64,
    /// Records in the topic not applied yet, as of the last read.
    pub lag: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The next offset per partition the runner will read.
    pub offsets: BTreeMap<u32, u64>,
}

/// A running sink; dropping it leaves the task running, [`SinkHandle::stop`] ends it with a last flush.
pub struct SinkHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    status: Arc<Status<SinkStatus>>,
}

impl SinkHandle {
    pub fn status(&self) -> SinkStatus {
        self.status.get()
    }

    /// Asks the runner to stop after the batch in hand, calls [`SinkWriter::close`], and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once without a last flush (the writer's committed offsets still hold).
    pub fn abort(&self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub struct SinkRunner;

impl SinkRunner {
    /// Starts feeding `topic` into `writer` on the current runtime. `sink` names the sink in metrics and logs.
    pub fn spawn(
        sink: &str,
        topic: &str,
        log: Arc<dyn LogStore>,
        writer: Box<dyn SinkWriter>,
        opts: RunnerOptions,
    ) -> SinkHandle {
        let (stop, stop_rx) = watch::channel(false);
        let status = Arc::new(Status::new(SinkStatus {
            sink: sink.to_string(),
            topic: topic.to_string(),
            state: "starting",
            records: 0,
            lag: 0,
            errors: 0,
            last_error: None,
            offsets: BTreeMap::new(),
        }));
        let run = Run {
            sink: sink.to_string(),
            topic: topic.to_string(),
            log,
            writer,
            opts,
            stop: stop_rx,
            status: status.clone(),
        };
        let task = tokio::spawn(run.run());
        SinkHandle { stop, task, status }
    }
}

struct Run {
    sink: String,
    topic: String,
    log: Arc<dyn LogStore>,
    writer: Box<dyn SinkWriter>,
    opts: RunnerOptions,
    stop: watch::Receiver<bool>,
    status: Arc<Status<SinkStatus>>,
}

/// Why the inner loop ended.
enum Exit {
    Stop,
    /// The topic is gone: nothing more to do.
    TopicGone,
    Retry(SinkError),
}

impl Run {
    async fn run(mut self) {
        let mut backoff = self.opts.min_backoff;
        loop {
            match self.serve(&mut backoff).await {
                Exit::Stop => {
                    if let Err(e) = self.writer.close().await {
                        tracing::warn!(sink = %self.sink, topic = %self.topic, error = %e, "sink close failed; uncommitted rows are read again at start");
                    }
                    break;
                }
                Exit::TopicGone => {
                    tracing::info!(sink = %self.sink, topic = %self.topic, "topic deleted; sink stops");
                    break;
                }
                Exit::Retry(e) => {
                    metrics::ERRORS.with_label_values(&[self.sink.as_str(), e.kind]).inc();
                    sluice_telemetry::record_error("sink", e.kind, 1, &format!("{}/{}", self.sink, self.topic), &e);
                    tracing::warn!(sink = %self.sink, topic = %self.topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "sink write failed; retrying from its committed offsets");
                    self.status.update(|s| {
                        s.state = "retrying";
                        s.errors += 1;
                        s.last_error = Some(e.to_string());
                    });
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                    if *self.stop.borrow() {
                        // What the failed write left applied is not committed: drop it, then close.
                        let _ = self.writer.reset().await;
                        let _ = self.writer.close().await;
                        break;
                    }
                    continue;
                }
            }
        }
        self.status.update(|s| s.state = "stopped");
        // A stopped sink is behind nothing: a stale lag would keep the lag alert firing.
        let _ = metrics::LAG.remove_label_values(&[self.sink.as_str(), self.topic.as_str()]);
    }

    /// Reads from the committed offsets until told to stop or something fails.
    async fn serve(&mut self, backoff: &mut Duration) -> Exit {
        // Whatever the writer applied but did not commit (a previous runner over the same table, a failed
        // write) is read again from the committed offsets: drop it first, or it would be stored twice.
        if let Err(e) = self.writer.reset().await {
            return Exit::Retry(e);
        }
        let committed = match self.writer.committed().await {
            Ok(c) => c,
            Err(e) => return Exit::Retry(e),
        };
        let desc = match self.log.describe_topic(&self.topic).await {
            Ok(d) => d,
            Err(LogError::TopicNotFound(_)) => return Exit::TopicGone,
            Err(e) => return Exit::Retry(SinkError::new("log", e.to_string())),
        };
        let mut offsets: Vec<u64> = desc
            .partition_details
            .iter()
            .map(|p| committed.get(&p.partition).copied().unwrap_or(p.log_start_offset))
            .collect();
        let mut lags: Vec<u64> =
            desc.partition_details.iter().zip(&offsets).map(|(p, o)| p.high_watermark.saturating_sub(*o)).collect();
        let lag_gauge = metrics::LAG.with_label_values(&[self.sink.as_str(), self.topic.as_str()]);
        let records_counter = metrics::RECORDS.with_label_values(&[self.sink.as_str(), self.topic.as_str()]);
        let write_seconds = metrics::WRITE_SECONDS.with_label_values(&[self.sink.as_str()]);
        self.status.update(|s| {
            s.state = "running";
            s.offsets = offsets.iter().enumerate().map(|(p, o)| (p as u32, *o)).collect();
        });
        let n = offsets.len();
        let mut first = 0usize;
        let mut last_tick = Instant::now();
        loop {
            if *self.stop.borrow() {
                return Exit::Stop;
            }
            let mut parts = Vec::new();
            let mut total = 0usize;
            for i in 0..n {
                if total >= self.opts.batch_records {
                    break;
                }
                // Start each round at another partition so one busy partition cannot starve the rest.
                let p = (first + i) % n;
                match self
                    .log
                    .read(&self.topic, p as u32, offsets[p], self.opts.read_records, self.opts.read_bytes)
                    .await
                {
                    Ok(r) => {
                        lags[p] = r.high_watermark.saturating_sub(r.next_offset);
                        if r.records.is_empty() {
                            // Nothing to apply, but the read may have stepped over a gap.
                            offsets[p] = offsets[p].max(r.next_offset);
                        } else {
                            total += r.records.len();
                            parts.push(PartitionRecords {
                                partition: p as u32,
                                records: r.records,
                                next_offset: r.next_offset,
                            });
                        }
                    }
                    Err(LogError::OffsetOutOfRange { start, end, .. }) => {
                        let to = if offsets[p] < start { start } else { end };
                        tracing::warn!(sink = %self.sink, topic = %self.topic, partition = p, from = offsets[p], to, "sink offset out of range (retention?); skipping ahead");
                        offsets[p] = to;
                    }
                    Err(LogError::TopicNotFound(_)) => return Exit::TopicGone,
                    Err(e) => return Exit::Retry(SinkError::new("log", e.to_string())),
                }
            }
            first = (first + 1) % n.max(1);
            lag_gauge.set(lags.iter().sum::<u64>() as i64);
            if parts.is_empty() {
                let waits: Vec<_> = offsets
                    .iter()
                    .enumerate()
                    .map(|(p, &o)| {
                        let (log, topic, timeout) = (self.log.clone(), self.topic.clone(), self.opts.buffer_timeout);
                        Box::pin(async move { log.wait_for(&topic, p as u32, o, timeout).await })
                    })
                    .collect();
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = futures::future::select_all(waits), if !offsets.is_empty() => {}
                    _ = tokio::time::sleep(self.opts.buffer_timeout), if offsets.is_empty() => {}
                    _ = stop.wait_for(|s| *s) => return Exit::Stop,
                }
            } else {
                let batch = SinkBatch { topic: self.topic.clone(), parts };
                let next = batch.next_offsets();
                let len = batch.len() as u64;
                let started = Instant::now();
                if let Some(delay) = *TEST_WRITE_DELAY {
                    tokio::time::sleep(delay).await;
                }
                let (span, event_spans) = self.trace_batch(&batch);
                if let Err(e) = self.writer.write(batch).instrument(span).await {
                    return Exit::Retry(e);
                }
                drop(event_spans);
                write_seconds.observe(started.elapsed().as_secs_f64());
                *backoff = self.opts.min_backoff;
                records_counter.inc_by(len);
                for (p, o) in &next {
                    offsets[*p as usize] = *o;
                }
                self.status.update(|s| {
                    s.state = "running";
                    s.records += len;
                    s.offsets.extend(next);
                    s.lag = lags.iter().sum();
                });
            }
            if last_tick.elapsed() >= self.opts.buffer_timeout {
                last_tick = Instant::now();
                if let Err(e) = self.writer.tick().await {
                    return Exit::Retry(e);
                }
                self.status.update(|s| s.lag = lags.iter().sum());
            }
        }
    }
}

impl Run {
    /// The span of one batch write (`sink.write`) and, for each traced record in it (a sampled `traceparent`
    /// header, only while spans are exported), a `sink.event` span in that record's trace that lasts as long as
    /// the write: one event's path to each sink is one trace, and only traced events pay for it.
    fn trace_batch(&self, batch: &SinkBatch) -> (tracing::Span, Vec<tracing::Span>) {
        let span = tracing::info_span!("sink.write", sink = %self.sink, topic = %self.topic, records = batch.len());
        let traced = trace::traced_records(batch.parts.iter().flat_map(|p| &p.records).map(|r| &r.headers[..]));
        if traced.is_empty() {
            return (span, Vec::new());
        }
        trace::continue_batch(&span, traced.iter().map(|(_, tp)| tp));
        let events = traced
            .iter()
            .map(|(_, tp)| {
                let event = tracing::info_span!(parent: None, "sink.event", sink = %self.sink, topic = %self.topic);
                trace::set_parent(&event, tp);
                event
            })
            .collect();
        (span, events)
    }
}

/// The runner's status, shared with its handle; never held across an await.
struct Status<T>(Mutex<T>);

impl<T: Clone> Status<T> {
    fn new(v: T) -> Self {
        Status(Mutex::new(v))
    }

    fn get(&self) -> T {
        self.0.lock().clone()
    }

    fn update(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.0.lock())
    }
}
