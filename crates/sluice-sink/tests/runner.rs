//! The runner against the embedded log and a model writer that fails on purpose: whatever fails, the writer's
//! committed output ends with every record exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use sluice_log::{EmbeddedLog, LogOptions, LogStore, Record, StdStorage, TopicSpec};
use sluice_sink::{RunnerOptions, SinkBatch, SinkError, SinkRunner, SinkWriter};

/// "Durable" state of the model sink: committed values and offsets, updated together on commit.
#[derive(Default)]
struct Durable {
    values: Vec<(u32, u64)>,
    offsets: BTreeMap<u32, u64>,
    commits: usize,
}

/// Buffers writes and commits every third batch or on tick; fails every fifth write (after buffering half of it,
/// the way a real sink fails part-way).
struct ModelWriter {
    durable: Arc<Mutex<Durable>>,
    buffer: Vec<(u32, u64)>,
    pending_offsets: BTreeMap<u32, u64>,
    writes: usize,
    fail_every: usize,
    slow: Duration,
}

impl ModelWriter {
    fn new(durable: &Arc<Mutex<Durable>>, fail_every: usize, slow: Duration) -> Self {
        ModelWriter {
            durable: durable.clone(),
            buffer: vec![],
            pending_offsets: BTreeMap::new(),
            writes: 0,
            fail_every,
            slow,
        }
    }

    fn commit(&mut self) {
        let mut d = self.durable.lock();
        d.values.append(&mut self.buffer);
        d.offsets.extend(std::mem::take(&mut self.pending_offsets));
        d.commits += 1;
    }
}

#[async_trait]
impl SinkWriter for ModelWriter {
    async fn committed(&mut self) -> Result<BTreeMap<u32, u64>, SinkError> {
        Ok(self.durable.lock().offsets.clone())
    }

    async fn write(&mut self, batch: SinkBatch) -> Result<(), SinkError> {
        self.writes += 1;
        if !self.slow.is_zero() {
            tokio::time::sleep(self.slow).await;
        }
        let fail = self.fail_every > 0 && self.writes.is_multiple_of(self.fail_every);
        for part in &batch.parts {
            let n = if fail { part.records.len() / 2 } else { part.records.len() };
            self.buffer.extend(part.records[..n].iter().map(|r| (part.partition, r.offset)));
        }
        if fail {
            return Err(SinkError::new("io", "injected failure"));
        }
        self.pending_offsets.extend(batch.next_offsets());
        if self.writes.is_multiple_of(3) {
            self.commit();
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        if !self.buffer.is_empty() || !self.pending_offsets.is_empty() {
            self.commit();
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), SinkError> {
        self.buffer.clear();
        self.pending_offsets.clear();
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.commit();
        Ok(())
    }
}

async fn log_with(topic: &str, partitions: u32, per_partition: u64) -> (tempfile::TempDir, Arc<dyn LogStore>) {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = EmbeddedLog::open(dir.path(), Arc::new(StdStorage), LogOptions::default()).unwrap();
    let log: Arc<dyn LogStore> = Arc::new(log);
    log.create_topic(TopicSpec::new(topic, partitions)).await.unwrap();
    for p in 0..partitions {
        let mut left = per_partition;
        while left > 0 {
            let n = left.min(700);
            let records = (0..n)
                .map(|i| Record { timestamp: i as i64, key: None, headers: vec![], value: Bytes::from(format!("{i}")) })
                .collect();
            log.append(topic, p, records).await.unwrap();
            left -= n;
        }
    }
    (dir, log)
}

fn opts() -> RunnerOptions {
    RunnerOptions {
        read_records: 500,
        batch_records: 1200,
        buffer_timeout: Duration::from_millis(20),
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RunnerOptions::default()
    }
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

fn assert_exactly_once(d: &Durable, partitions: u32, per_partition: u64) {
    let mut seen = d.values.clone();
    seen.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..partitions).flat_map(|p| (0..per_partition).map(move |o| (p, o))).collect();
    assert_eq!(seen.len(), expected.len(), "every record once");
    assert_eq!(seen, expected);
    for p in 0..partitions {
        assert_eq!(d.offsets.get(&p), Some(&per_partition));
    }
}

#[tokio::test]
async fn failures_and_restarts_apply_every_record_once() {
    let (_dir, log) = log_with("t", 3, 5000).await;
    let durable = Arc::new(Mutex::new(Durable::default()));
    let writer = |fail_every| ModelWriter::new(&durable, fail_every, Duration::ZERO);
    // First runner: fails every fifth write, and is aborted (a crash: no close) part-way.
    let h = SinkRunner::spawn("model", "t", log.clone(), Box::new(writer(5)), opts());
    wait_until(|| h.status().errors > 0 && durable.lock().values.len() > 4000).await;
    h.abort();
    // Second runner resumes from the committed offsets.
    let h = SinkRunner::spawn("model", "t", log.clone(), Box::new(writer(7)), opts());
    wait_until(|| durable.lock().values.len() >= 15000).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.stop().await;
    assert_exactly_once(&durable.lock(), 3, 5000);
}

#[tokio::test]
async fn a_slow_writer_holds_reading_back() {
    let (_dir, log) = log_with("t", 2, 3000).await;
    let durable = Arc::new(Mutex::new(Durable::default()));
    let w = ModelWriter::new(&durable, 0, Duration::from_millis(100));
    let h = SinkRunner::spawn("model", "t", log.clone(), Box::new(w), opts());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let s = h.status();
    // Two or three batches of at most ~1,700 records got through; the rest waits in the log.
    assert!(s.records <= 3 * 1700, "read {} records in 250 ms against a 100 ms writer", s.records);
    assert!(s.lag > 0, "the backlog is visible as lag");
    wait_until(|| h.status().records == 6000).await;
    h.stop().await;
    assert_exactly_once(&durable.lock(), 2, 3000);
}

#[tokio::test]
async fn a_deleted_topic_stops_the_runner() {
    let (_dir, log) = log_with("t", 1, 10).await;
    let durable = Arc::new(Mutex::new(Durable::default()));
    let w = ModelWriter::new(&durable, 0, Duration::ZERO);
    let h = SinkRunner::spawn("model", "t", log.clone(), Box::new(w), opts());
    wait_until(|| h.status().records == 10).await;
    log.delete_topic("t").await.unwrap();
    wait_until(|| h.is_finished()).await;
    assert_eq!(h.status().state, "stopped");
}
