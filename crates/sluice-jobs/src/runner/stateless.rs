//! Stateless jobs: filter/project/enrich into another topic, partition p to partition p. Exactly-once without a
//! state snapshot: each output record names its source offset, and a restart resumes after the last one written.

use super::*;

pub(super) async fn run_stateless(
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

pub(super) async fn stateless_task(
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
