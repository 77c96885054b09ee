//! One partition: its segments, a single writer thread that group-commits appends, and lock-light readers.
//!
//! Appends travel over a bounded channel to the partition's writer thread (backpressure: a full channel makes
//! producers wait). The writer takes everything queued, writes it, makes it durable with one fsync and only
//! then publishes the new high watermark and answers every producer in the group. Readers never see bytes past
//! the published length of a segment, so they never serve an unacknowledged record.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{LogError, is_disk_full};
use crate::format::{self, EncodedBatch, StoredRecord};
use crate::metrics;
use crate::options::{FsyncPolicy, LogOptions};
use crate::segment::{ScannedBatch, Segment, parse_segment_name};
use crate::storage::Storage;
use crate::{AppendAck, PartitionInfo, ReadResult};

pub(crate) enum WriterOp {
    Append {
        batch: EncodedBatch,
        reply: oneshot::Sender<Result<AppendAck, LogError>>,
    },
    /// Sync now if anything is unsynced (interval policy); answer once synced, when asked to.
    Flush(Option<oneshot::Sender<()>>),
}

/// State shared by the writer and the readers.
pub(crate) struct PartitionCore {
    pub topic: String,
    pub id: u32,
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub opts: Arc<LogOptions>,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    /// Next offset to be published: everything below it is acknowledged and readable.
    pub high_watermark: watch::Sender<u64>,
    pub fenced: AtomicBool,
}

/// A partition with its running writer.
pub(crate) struct Partition {
    pub core: Arc<PartitionCore>,
    tx: Option<mpsc::Sender<WriterOp>>,
    writer: Option<JoinHandle<()>>,
}

/// What recovery found in one partition.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub truncated_bytes: u64,
}

impl Partition {
    /// Creates the directory and first segment of a new partition (inside a topic directory being built).
    pub fn create_files(storage: &dyn Storage, dir: &std::path::Path) -> Result<(), LogError> {
        storage.create_dir_all(dir).map_err(crate::error::io_err(dir))?;
        Segment::create(storage, dir, 0)?;
        storage.sync_dir(dir).map_err(crate::error::io_err(dir))
    }

    /// Opens a partition, recovering its tail, and starts its writer thread.
    pub fn open(
        storage: Arc<dyn Storage>,
        opts: Arc<LogOptions>,
        topic: &str,
        id: u32,
        dir: PathBuf,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let mut bases: Vec<u64> = storage
            .list_dir(&dir)
            .map_err(crate::error::io_err(&dir))?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .collect();
        bases.sort_unstable();
        let mut report = RecoveryReport::default();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let (seg, dropped) = Segment::open(&*storage, &dir, base, opts.index_interval_bytes, last)?;
            report.truncated_bytes += dropped;
            segments.push(Arc::new(seg));
        }
        if segments.is_empty() {
            // A crash between creating the directory and its first segment; start empty.
            segments.push(Arc::new(Segment::create(&*storage, &dir, 0)?));
            storage.sync_dir(&dir).map_err(crate::error::io_err(&dir))?;
        }
        if report.truncated_bytes > 0 {
            metrics::RECOVERY_TRUNCATED_BYTES.inc_by(report.truncated_bytes);
            tracing::warn!(
                topic,
                partition = id,
                dropped_bytes = report.truncated_bytes,
                "recovery truncated a torn or corrupt tail"
            );
        }
        report.segments = segments.len();
        let active = segments.last().expect("at least one segment").clone();
        let (hw, pos) = {
            let st = active.state.read();
            (st.next_offset, st.len)
        };
        let core = Arc::new(PartitionCore {
            topic: topic.to_string(),
            id,
            dir,
            storage,
            opts: opts.clone(),
            segments: RwLock::new(segments),
            high_watermark: watch::Sender::new(hw),
            fenced: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        let writer = Writer { core: core.clone(), active, pos, next_offset: hw, pending: Vec::new(), dirty: false };
        let handle = std::thread::Builder::new()
            .name(format!("log-{topic}-{id}"))
            .spawn(move || writer.run(rx))
            .map_err(|source| LogError::Io { path: "writer thread".into(), source })?;
        Ok((Partition { core, tx: Some(tx), writer: Some(handle) }, report))
    }

    pub async fn append(&self, batch: EncodedBatch) -> Result<AppendAck, LogError> {
        if batch.bytes.len() as u64 > self.core.opts.max_batch_bytes() {
            return Err(LogError::BatchTooLarge {
                size: batch.bytes.len() as u64,
                limit: self.core.opts.max_batch_bytes(),
            });
        }
        let tx = self.tx.as_ref().ok_or(LogError::Closed)?;
        let (reply, rx) = oneshot::channel();
        tx.send(WriterOp::Append { batch, reply }).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Asks the writer to sync soon; used by the interval flusher. Never waits.
    pub fn request_flush(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(WriterOp::Flush(None));
        }
    }

    /// Waits until everything acknowledged so far is durable (a no-op under `fsync = "always"`).
    pub async fn sync(&self) -> Result<(), LogError> {
        let tx = self.tx.as_ref().ok_or(LogError::Closed)?;
        let (reply, rx) = oneshot::channel();
        tx.send(WriterOp::Flush(Some(reply))).await.map_err(|_| LogError::Closed)?;
        // The writer drops the reply when the sync failed and fenced the partition.
        rx.await.map_err(|_| LogError::Fenced { topic: self.core.topic.clone(), partition: self.core.id })
    }

    /// Stops the writer after it has handled everything queued.
    pub fn shutdown(&mut self) {
        self.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PartitionCore {
    fn log_start(segs: &[Arc<Segment>]) -> u64 {
        segs.first().map_or(0, |s| s.base_offset)
    }

    fn out_of_range(&self, offset: u64, start: u64, end: u64) -> LogError {
        LogError::OffsetOutOfRange { topic: self.topic.clone(), partition: self.id, offset, start, end }
    }

    /// Reads acknowledged records from `from`, at most `max_records` and about `max_bytes` (at least one batch).
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadResult, LogError> {
        let hw = *self.high_watermark.borrow();
        let segs = self.segments.read().clone();
        let start = Self::log_start(&segs);
        if from < start || from > hw {
            return Err(self.out_of_range(from, start, hw));
        }
        let mut records: Vec<StoredRecord> = Vec::new();
        let mut next = from;
        let mut bytes = 0usize;
        let mut i = segs.partition_point(|s| s.base_offset <= from).saturating_sub(1);
        'segments: while i < segs.len() && next < hw && records.len() < max_records {
            let seg = &segs[i];
            if next < seg.base_offset {
                // The previous segment ends before this one starts: recovery found a corrupt batch in a sealed
                // segment it had to scan. Report it rather than silently skip the missing offsets.
                if !records.is_empty() {
                    break;
                }
                let prev = &segs[i - 1];
                return Err(LogError::Corrupt {
                    path: prev.log_path.display().to_string(),
                    position: prev.len(),
                    reason: format!("offsets {next}..{} are missing (unreadable segment tail)", seg.base_offset),
                });
            }
            let (mut pos, mut base, len) = seg.seek_offset(next);
            while pos < len {
                if base >= hw {
                    // Published after `hw` was read: leave it to the next read, so that this one never returns
                    // records at or past the high watermark it reports.
                    break 'segments;
                }
                let (h, batch) = match seg.read_batch(pos, base, len) {
                    Ok(b) => b,
                    // Serve what is good first; the next read reports the corruption.
                    Err(e) if !records.is_empty() => {
                        tracing::error!(error = %e, "read stopped at a corrupt batch");
                        break 'segments;
                    }
                    Err(e) => return Err(e),
                };
                pos += h.total_len();
                base = h.next_offset();
                if h.next_offset() <= next {
                    continue;
                }
                let before = records.len();
                format::decode_records(&h, &batch, next, &mut records).map_err(|e| LogError::Corrupt {
                    path: seg.log_path.display().to_string(),
                    position: pos - h.total_len(),
                    reason: e.to_string(),
                })?;
                if records.len() > max_records {
                    records.truncate(max_records.max(before));
                }
                next = records.last().map_or(h.next_offset(), |r| r.offset + 1);
                bytes += batch.len();
                if records.len() >= max_records || bytes >= max_bytes {
                    break 'segments;
                }
            }
            i += 1;
        }
        Ok(ReadResult { records, next_offset: next, high_watermark: hw, log_start_offset: start })
    }

    /// The first offset whose record has event time `>= ts`, or the high watermark when there is none.
    pub fn offset_for_time(&self, ts: i64) -> Result<u64, LogError> {
        let hw = *self.high_watermark.borrow();
        let segs = self.segments.read().clone();
        for seg in &segs {
            if seg.state.read().max_ts < ts {
                continue;
            }
            let (mut pos, mut base, len) = seg.seek_time(ts);
            while pos < len {
                let (h, batch) = seg.read_batch(pos, base, len)?;
                pos += h.total_len();
                base = h.next_offset();
                if h.max_timestamp < ts {
                    continue;
                }
                let mut recs = Vec::with_capacity(h.record_count as usize);
                format::decode_records(&h, &batch, 0, &mut recs).map_err(|e| LogError::Corrupt {
                    path: seg.log_path.display().to_string(),
                    position: pos - h.total_len(),
                    reason: e.to_string(),
                })?;
                if let Some(r) = recs.iter().find(|r| r.timestamp >= ts) {
                    return Ok(r.offset.min(hw));
                }
            }
        }
        Ok(hw)
    }

    pub fn info(&self) -> PartitionInfo {
        let segs = self.segments.read();
        PartitionInfo {
            partition: self.id,
            log_start_offset: Self::log_start(&segs),
            high_watermark: *self.high_watermark.borrow(),
            size_bytes: segs.iter().map(|s| s.len()).sum(),
            segments: segs.len(),
            writable: !self.fenced.load(Ordering::Acquire),
        }
    }

    /// Deletes whole segments (never the active one) whose newest append is older than `max_age`, and oldest
    /// segments while the rest still hold at least `max_bytes`.
    pub fn apply_retention(
        &self,
        now_ms: i64,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<usize, LogError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write();
            let mut total: u64 = segs.iter().map(|s| s.len()).sum();
            let mut n = 0;
            while n + 1 < segs.len() {
                let seg = &segs[n];
                let st = seg.state.read();
                // A retention too long to subtract from now never expires anything.
                let cutoff =
                    max_age.and_then(|a| i64::try_from(a.as_millis()).ok()).and_then(|a| now_ms.checked_sub(a));
                let too_old = cutoff.is_some_and(|c| st.max_append_time < c);
                let too_big = max_bytes.is_some_and(|b| total - st.len >= b);
                if !(too_old || too_big) {
                    break;
                }
                metrics::SEGMENTS_DELETED.with_label_values(&[if too_old { "age" } else { "size" }]).inc();
                total -= st.len;
                n += 1;
            }
            segs.drain(..n).collect()
        };
        for seg in &removed {
            // Readers holding the segment keep their open handle; the files go once they drop it.
            self.storage.remove_file(&seg.log_path).map_err(crate::error::io_err(&seg.log_path))?;
            let _ = self.storage.remove_file(&seg.index_path);
        }
        if !removed.is_empty() {
            self.storage.sync_dir(&self.dir).map_err(crate::error::io_err(&self.dir))?;
            tracing::info!(topic = %self.topic, partition = self.id, segments = removed.len(), "retention deleted segments");
        }
        Ok(removed.len())
    }
}

struct Pending {
    scanned: ScannedBatch,
    reply: oneshot::Sender<Result<AppendAck, LogError>>,
}

struct Writer {
    core: Arc<PartitionCore>,
    active: Arc<Segment>,
    /// Bytes written to the active segment (acknowledged or not).
    pos: u64,
    next_offset: u64,
    /// Written, not yet published.
    pending: Vec<Pending>,
    /// Published but not yet synced (interval policy only).
    dirty: bool,
}

/// Most batches one group commit takes, so one fsync never waits behind an unbounded queue.
const MAX_GROUP: usize = 256;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriterOp>) {
        let mut last_sync = Instant::now();
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(op) = rx.blocking_recv() {
            group.push(op);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            let mut flush = false;
            let mut waiters = Vec::new();
            for op in group.drain(..) {
                match op {
                    WriterOp::Flush(reply) => {
                        flush = true;
                        waiters.extend(reply);
                    }
                    WriterOp::Append { batch, reply } => self.write(batch, reply),
                }
            }
            let sync = match self.core.opts.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(every) => flush || last_sync.elapsed() >= every,
            };
            if self.publish(sync) && sync {
                last_sync = Instant::now();
            }
            // Dropped unanswered when fenced: the caller sees the channel close.
            for w in waiters {
                if !self.core.fenced.load(Ordering::Acquire) {
                    let _ = w.send(());
                }
            }
        }
        // Channel closed: make whatever is published durable before the thread ends.
        self.publish(true);
    }

    fn fenced_error(&self) -> LogError {
        LogError::Fenced { topic: self.core.topic.clone(), partition: self.core.id }
    }

    fn write(&mut self, mut batch: EncodedBatch, reply: oneshot::Sender<Result<AppendAck, LogError>>) {
        if self.core.fenced.load(Ordering::Acquire) {
            let _ = reply.send(Err(self.fenced_error()));
            return;
        }
        let len = batch.bytes.len() as u64;
        if self.needs_roll(len, batch.append_time)
            && let Err(e) = self.roll()
        {
            let _ = reply.send(Err(e));
            return;
        }
        batch.set_base_offset(self.next_offset);
        match self.active.file.write_all_at(&batch.bytes, self.pos) {
            Ok(()) => {
                let hdr: [u8; format::HEADER_LEN] = batch.bytes[..format::HEADER_LEN].try_into().expect("header");
                let header = format::parse_header(&hdr).expect("encoded by us");
                self.pending.push(Pending { scanned: ScannedBatch { header, pos: self.pos }, reply });
                self.pos += len;
                self.next_offset += batch.record_count as u64;
            }
            Err(e) => {
                let path = self.active.log_path.display().to_string();
                let full = is_disk_full(&e);
                let kind = if full { "disk_full" } else { "io" };
                metrics::WRITE_ERRORS.with_label_values(&[kind]).inc();
                sluice_telemetry::record_error("log", kind, 1, &path, &format_args!("write failed: {e}"));
                // Cut off whatever part of the batch reached the file so the next append starts clean.
                let clean = self.active.file.set_len(self.pos).is_ok();
                if !clean || !full {
                    self.fence(&format!("write failed: {e}"));
                }
                let err = if full { LogError::DiskFull { path, source: e } } else { LogError::Io { path, source: e } };
                let _ = reply.send(Err(err));
            }
        }
    }

    fn needs_roll(&self, len: u64, now_ms: i64) -> bool {
        if self.pos == 0 {
            return false;
        }
        if self.pos + len > self.core.opts.segment_bytes {
            return true;
        }
        let first = self.active.state.read().first_append_time;
        first.is_some_and(|t| now_ms - t >= self.core.opts.segment_max_age.as_millis() as i64)
    }

    /// Seals the active segment (synced, index written) and starts a new one at the next offset.
    fn roll(&mut self) -> Result<(), LogError> {
        if !self.publish(true) {
            return Err(self.fenced_error());
        }
        let storage = &*self.core.storage;
        let mut new_file = false;
        let result = self.active.write_index(storage).and_then(|()| {
            new_file = true;
            let seg = Segment::create(storage, &self.core.dir, self.next_offset)?;
            storage.sync_dir(&self.core.dir).map_err(crate::error::io_err(&self.core.dir))?;
            Ok(seg)
        });
        match result {
            Ok(seg) => {
                let seg = Arc::new(seg);
                self.core.segments.write().push(seg.clone());
                self.active = seg;
                self.pos = 0;
                metrics::SEGMENTS_ROLLED.inc();
                Ok(())
            }
            Err(e) => {
                // The old segment stays active. A failed index write is harmless (recovery ignores an index that
                // does not match its segment), but once the new segment file may exist it can outlive a restart,
                // and recovery takes it (empty, the newest) as the active segment starting at this offset: any
                // batch appended to the old segment from here on would be lost at restart and its offsets handed
                // out again. So stop taking writes until restart, as after a failed fsync.
                tracing::error!(topic = %self.core.topic, partition = self.core.id, error = %e, "segment roll failed");
                if new_file {
                    self.fence(&format!("segment roll failed: {e}"));
                }
                Err(e)
            }
        }
    }

    /// Makes written batches visible and acknowledges them, after an fsync when `sync`. Returns false when the
    /// partition is (or just became) fenced.
    fn publish(&mut self, sync: bool) -> bool {
        if sync && (self.dirty || !self.pending.is_empty()) {
            let started = Instant::now();
            let result = self.active.file.sync_data();
            metrics::FSYNC_SECONDS.observe(started.elapsed().as_secs_f64());
            if let Err(e) = result {
                metrics::WRITE_ERRORS.with_label_values(&["fsync"]).inc();
                let segment = self.active.log_path.display().to_string();
                sluice_telemetry::record_error("log", "fsync", 1, &segment, &format_args!("fsync failed: {e}"));
                self.fence(&format!("fsync failed: {e}"));
                let path = self.active.log_path.display().to_string();
                for p in self.pending.drain(..) {
                    let source = std::io::Error::new(e.kind(), e.to_string());
                    let _ = p.reply.send(Err(LogError::SyncFailed { path: path.clone(), source }));
                }
                return false;
            }
            metrics::GROUP_COMMIT_BATCHES.observe(self.pending.len() as f64);
            self.dirty = false;
        }
        if self.pending.is_empty() {
            return !self.core.fenced.load(Ordering::Acquire);
        }
        let batches: Vec<ScannedBatch> = self.pending.iter().map(|p| p.scanned).collect();
        self.active.commit(&batches, self.core.opts.index_interval_bytes);
        self.core.high_watermark.send_replace(self.next_offset);
        let bytes: u64 = batches.iter().map(|b| b.header.total_len()).sum();
        metrics::APPENDED_BYTES.inc_by(bytes);
        for p in self.pending.drain(..) {
            let h = &p.scanned.header;
            metrics::APPENDED_RECORDS.inc_by(h.record_count as u64);
            let _ = p.reply.send(Ok(AppendAck { base_offset: h.base_offset, record_count: h.record_count }));
        }
        self.dirty = !sync;
        true
    }

    /// After a failed fsync the kernel may have dropped the dirty pages and marked them clean, so nothing
    /// written since the last good sync can be trusted: stop taking writes until recovery reruns at restart.
    fn fence(&self, why: &str) {
        if !self.core.fenced.swap(true, Ordering::AcqRel) {
            tracing::error!(topic = %self.core.topic, partition = self.core.id, reason = why,
                "partition stopped accepting writes until restart");
        }
    }
}
