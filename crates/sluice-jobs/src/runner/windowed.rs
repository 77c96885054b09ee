//! A windowed job's wiring: restore from the newest good checkpoint, start the source tasks, shards and results
//! writer, and coordinate barrier-aligned checkpoints.

use super::*;

pub(super) fn restore_snapshot(cfg: &RunnerConfig, partitions: u32) -> Result<(u64, Option<Snapshot>), JobError> {
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

pub(super) async fn run_windowed(
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
    reload_hot(&cfg, &plan, Refill::Replace).await?;
    let late = late_topic(&cfg.plan);
    let written = written_source_offsets(&*cfg.log, &late, &cfg.run_id).await?;

    *cfg.stats.partitions.lock() = progress_from(&starts);

    cfg.stats.state_entries.store(0, Ordering::Relaxed);
    cfg.stats.watermark.store(restored_wm.unwrap_or(i64::MIN), Ordering::Relaxed);
    let (coord_tx, mut coord_rx) = mpsc::channel::<CoordMsg>(4 * (parallelism + shards) + 4);
    let (writer_tx, writer_rx) = mpsc::channel::<WriterMsg>(WRITER_QUEUE);
    let mut set: JoinSet<Result<(), JobError>> = JoinSet::new();

    // Hot results an external backend lost come back from the changelog while the job runs on.
    {
        let (cfg, plan) = (cfg.clone(), plan.clone());
        set.spawn(async move {
            // Rows emitted to the hot results reach the changelog within a buffer timeout or two: waiting that
            // long before reading it means nothing emitted before the loss is missed.
            let catch_up = Duration::from_millis(cfg.plan.options.buffer_timeout_ms.max(1) as u64 * 2);
            loop {
                cfg.hot.lost().await;
                tokio::time::sleep(catch_up).await;
                reload_hot(&cfg, &plan, Refill::KeepPresent).await?;
                metrics::HOT_REFILLS.with_label_values(&[&cfg.name]).inc();
            }
        });
    }

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

/// How a refill treats rows the hot results hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Refill {
    /// At a (re)start, before the shards run: the changelog is the newest there is.
    Replace,
    /// While the shards write: what they wrote since is newer than the changelog (which lags them).
    KeepPresent,
}

/// Refills the hot results from the changelog's recent rows after a (re)start or a loss: windows already final
/// and gone from state are still "the last N minutes" a reader expects. Rows still in state are upserted again
/// by the shards with their current values.
pub(super) async fn reload_hot(cfg: &RunnerConfig, plan: &WindowedPlan, mode: Refill) -> Result<(), JobError> {
    let topic = &plan.output_topic;
    let Ok(info) = cfg.log.topic(topic).await else { return Ok(()) };
    // Changelog records carry their window's end as event time; the hot results keep the last N minutes of
    // event time before the newest window, so start N minutes before the newest record.
    let last = last_records(&*cfg.log, topic).await?;
    let Some(newest) = last.iter().flatten().map(|r| r.timestamp).max() else { return Ok(()) };
    let since = newest.saturating_sub(cfg.plan.options.hot_retention_ms.max(0));
    let key_fields = changelog::key_fields(plan);
    let key_names: Vec<&str> = key_fields.iter().map(String::as_str).collect();
    // For `KeepPresent`, the newest version of each row (`None`: deleted), filled in at the end.
    let mut newest_rows: BTreeMap<(i64, i64, String), Option<Row>> = BTreeMap::new();
    for p in 0..info.partitions {
        let mut from = cfg.log.offset_for_time(topic, p, since).await?;
        loop {
            let r = cfg.log.read(topic, p, from, READ_MAX_RECORDS, READ_MAX_BYTES).await?;
            if r.records.is_empty() {
                break;
            }
            from = r.next_offset;
            let mut batch = HotBatch::default();
            for rec in &r.records {
                let Some((start, end, key)) = rec.key.as_deref().and_then(|k| changelog::identity(&key_names, k))
                else {
                    continue;
                };
                let row = match serde_json::from_slice::<Value>(&rec.value) {
                    Ok(Value::Object(map)) => Some(Arc::new(map)),
                    _ => None,
                };
                match (mode, row) {
                    (Refill::KeepPresent, row) => drop(newest_rows.insert((start, end, key), row)),
                    (Refill::Replace, Some(row)) => {
                        batch.upserts.push(ResultRow { window_start: start, window_end: end, key, row })
                    }
                    (Refill::Replace, None) => batch.removes.push((start, end, key)),
                }
            }
            cfg.hot.write(batch).await;
        }
    }
    let rows: Vec<ResultRow> = newest_rows
        .into_iter()
        .filter_map(|((window_start, window_end, key), row)| {
            Some(ResultRow { window_start, window_end, key, row: row? })
        })
        .collect();
    for chunk in rows.chunks(READ_MAX_RECORDS) {
        cfg.hot.fill(chunk.to_vec()).await;
    }
    cfg.hot.flush().await;
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

/// One barrier-aligned checkpoint; see the module docs.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "job.checkpoint", level = "info", skip_all, fields(job = %cfg.name, epoch))]
pub(super) async fn checkpoint(
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
