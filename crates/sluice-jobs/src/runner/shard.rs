//! Keyed state shards: merge deltas, compute the watermark, fire and expire windows, write changed rows to the
//! hot results and the changelog, and snapshot their state incrementally at a barrier.

use super::*;

pub(super) struct Entry {
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
pub(super) struct SnapInProgress {
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

pub(super) fn encode_entry(buf: &mut Vec<u8>, b: ByEnd, key: &[Datum], e: &Entry) {
    let r = EntrySnapRef { window: b.window(), key, states: &e.states, emitted: e.emitted };
    // Encoding into a Vec cannot fail for these types.
    if let Ok(v) = postcard::to_extend(&r, std::mem::take(buf)) {
        *buf = v;
    }
}

/// Writes `e` into the snapshot in progress before it changes, if it is not there yet.
pub(super) fn capture(snap: &mut Option<SnapInProgress>, b: ByEnd, key: &[Datum], e: &mut Entry) {
    if let Some(s) = snap
        && e.snap < s.epoch
    {
        encode_entry(&mut s.buf, b, key, e);
        e.snap = s.epoch;
    }
}

/// Window order by end first: windows fire and expire in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ByEnd {
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

pub(super) struct Shard {
    id: usize,
    cfg: Arc<RunnerConfig>,
    plan: Arc<WindowedPlan>,
    tasks: usize,
    windows: BTreeMap<ByEnd, HashMap<Key, Entry>>,
    sessions: HashMap<Key, SessionSet>,
    entries: usize,
    /// `(max_ts, idle)` per source partition.
    partitions: Vec<(Option<i64>, bool)>,
    pub(super) watermark: Option<i64>,
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
    /// The watermark last written with the hot results.
    hot_watermark: Option<i64>,
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
    pub(super) fn new(
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
            hot_watermark: None,
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

    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<ShardMsg>,
        coord: mpsc::Sender<CoordMsg>,
        writer: mpsc::Sender<WriterMsg>,
    ) -> Result<(), JobError> {
        let buffer_timeout = Duration::from_millis(self.cfg.plan.options.buffer_timeout_ms.max(1) as u64);
        let mut tick = tokio::time::interval(buffer_timeout);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Restored rows go back to the hot results at once.
        self.emit_hot().await;
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
    async fn emit_hot(&mut self) {
        let mut removes: Vec<_> = self.hot_removed.drain(..).map(|(w, key)| (w.start, w.end, key_text(&key))).collect();
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
                removes.push((w.start, w.end, key_text(&key)));
            }
        }
        // Shard 0 publishes the job's watermark (see `advance_watermark`), for readers on other instances.
        let watermark = self.watermark.filter(|w| self.id == 0 && self.hot_watermark != Some(*w));
        let batch = HotBatch { removes, upserts: rows, watermark };
        if !batch.is_empty() {
            self.hot_watermark = self.hot_watermark.max(watermark);
            self.cfg.hot.write(batch).await;
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
        self.emit_hot().await;
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
            hot: Arc::new(sluice_hot::memory::MemoryHot::new(60_000)),
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
