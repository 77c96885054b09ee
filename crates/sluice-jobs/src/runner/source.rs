//! Source tasks: read their partitions, decode, filter, assign windows and pre-aggregate per shard; and
//! [`WindowOperator`], the same steps for one thread (benchmarks).

use super::*;

pub(super) struct SourceTask {
    pub(super) cfg: Arc<RunnerConfig>,
    pub(super) parts: Vec<PartState>,
    pub(super) shard_txs: Vec<mpsc::Sender<ShardMsg>>,
    pub(super) coord: mpsc::Sender<CoordMsg>,
    pub(super) decode: Decode,
    pub(super) op: WindowOperator,
    pub(super) late_topic: String,
    pub(super) stop: watch::Receiver<bool>,
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
    pub(super) async fn run(mut self, mut ctl: mpsc::Receiver<TaskCtl>) -> Result<(), JobError> {
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
