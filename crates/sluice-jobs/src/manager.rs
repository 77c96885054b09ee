//! The job manager: durable job definitions, one supervised runner per job, and the operations of the API and
//! CLI (create, list, describe, pause, resume, drop, replay, hot results).
//!
//! Definitions live in `{data_dir}/jobs/{name}/job.json` (written atomically), checkpoints beside them in
//! `checkpoints/`. A runner that fails is restarted from its last checkpoint with exponential backoff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sluice_log::{LogStore, now_ms, topics};
use sluice_schema::reader::ValueDecoder;
use sluice_stream::datum::Datum;
use sluice_stream::plan::{JobPlan, PlanBody};
use sluice_stream::sql::parse_job;
use tokio::sync::watch;

use crate::checkpoint::CheckpointStore;
use crate::error::JobError;
use crate::metrics;
use crate::runner::{self, CheckpointInfo, JobStats, PartitionProgress, RunnerConfig, StartPosition};
use sluice_hot::{HotResults, HotStore};

/// Settings shared by every job.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// `{data_dir}/jobs`.
    pub root: PathBuf,
    /// Tasks per job unless the job says otherwise (`WITH (parallelism = n)`).
    pub parallelism: usize,
    pub checkpoint_interval: Duration,
    /// Complete checkpoints kept per job.
    pub keep_checkpoints: usize,
    /// State entries a shard snapshots per step between processing (smaller: shorter pauses, more steps).
    pub snapshot_chunk: usize,
    /// Estimated keyed window state of all jobs together; a job that takes it over fails with an error.
    pub state_memory: u64,
    /// Where every windowed job's hot results live (in process unless the composition root picks another).
    pub hot: Arc<dyn HotStore>,
}

impl ManagerOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ManagerOptions {
            root: root.into(),
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            checkpoint_interval: Duration::from_secs(10),
            keep_checkpoints: 3,
            snapshot_chunk: runner::SNAPSHOT_CHUNK,
            state_memory: 128 << 20,
            hot: Arc::new(sluice_hot::memory::MemoryHotStore::new()),
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDefinition {
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub paused: bool,
    pub created_at_ms: i64,
    /// Where reading starts when the job has no checkpoint (new, or replayed).
    pub start: StartPosition,
    /// A shadow job made by `replay --into`: runs `sql` under `name`, writing to its own topics.
    #[serde(default)]
    pub shadow_of: Option<String>,
    /// Declared in the config file (re-created at start if missing).
    #[serde(default)]
    pub from_config: bool,
    /// Changes when the job is created or replayed in place: output it wrote before is not "already written".
    #[serde(default)]
    pub generation: u64,
}

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    Earliest,
    Offset(u64),
    Time(i64),
}

/// What `describe` and `list` report.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: String,
    pub sql: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub kind: &'static str,
    pub source: String,
    pub output_topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_topic: Option<String>,
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_of: Option<String>,
    pub created_at_ms: i64,
    pub records_in: u64,
    /// Changelog records written (rows and deletions) since the job started here.
    pub results_written: u64,
    pub lag: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    pub state_entries: u64,
    pub hot_rows: usize,
    pub partitions: Vec<PartitionProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Ingest acknowledgement -> visible in hot results, since the job started (or the last reset).
    pub latency_ms: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum RunState {
    Running,
    Paused,
    Failed(String),
}

struct JobHandle {
    def: Mutex<JobDefinition>,
    plan: Arc<JobPlan>,
    hot: Arc<dyn HotResults>,
    stats: Arc<JobStats>,
    state: Arc<Mutex<RunState>>,
    checkpoints: Arc<CheckpointStore>,
    runner: Mutex<Option<Running>>,
    dir: PathBuf,
}

struct Running {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// Owns every job of one Sluice process.
pub struct JobManager {
    opts: ManagerOptions,
    log: Arc<dyn LogStore>,
    decoder: Arc<ValueDecoder>,
    jobs: Mutex<BTreeMap<String, Arc<JobHandle>>>,
    /// Serialises create/drop/pause/resume/replay so two of them never race on one job's files.
    ops: tokio::sync::Mutex<()>,
    state_budget: Arc<runner::StateBudget>,
}

impl JobManager {
    /// Loads every stored job and starts those not paused.
    pub async fn open(
        opts: ManagerOptions,
        log: Arc<dyn LogStore>,
        decoder: Arc<ValueDecoder>,
    ) -> Result<Arc<JobManager>, JobError> {
        std::fs::create_dir_all(&opts.root).map_err(|e| JobError::io(&opts.root, e))?;
        let mgr = Arc::new(JobManager {
            state_budget: Arc::new(runner::StateBudget::new(opts.state_memory)),
            opts,
            log,
            decoder,
            jobs: Mutex::new(BTreeMap::new()),
            ops: Default::default(),
        });
        let mut names: Vec<PathBuf> = std::fs::read_dir(&mgr.opts.root)
            .map_err(|e| JobError::io(&mgr.opts.root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("job.json").is_file())
            .collect();
        names.sort();
        for dir in names {
            let def = match read_definition(&dir.join("job.json")) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "skipping a job whose definition does not load");
                    continue;
                }
            };
            let handle = match mgr.handle_for(def) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "skipping a job whose definition does not compile");
                    continue;
                }
            };
            let paused = handle.def.lock().paused;
            mgr.jobs.lock().insert(handle.plan.name.clone(), handle.clone());
            if paused {
                *handle.state.lock() = RunState::Paused;
            } else {
                mgr.start_runner(&handle);
            }
        }
        mgr.spawn_lag_refresher();
        Ok(mgr)
    }

    fn handle_for(&self, def: JobDefinition) -> Result<Arc<JobHandle>, JobError> {
        let plan = compile(&def)?;
        let dir = self.opts.root.join(&def.name);
        let checkpoints = Arc::new(CheckpointStore::open(dir.join("checkpoints"), self.opts.keep_checkpoints)?);
        // Stateless jobs write rows to a topic, not results: nothing to share.
        let hot: Arc<dyn HotResults> = match plan.body {
            PlanBody::Stateless(_) => Arc::new(sluice_hot::memory::MemoryHot::new(0)),
            _ => self.opts.hot.open(&def.name, plan.options.hot_retention_ms),
        };
        Ok(Arc::new(JobHandle {
            def: Mutex::new(def),
            plan: Arc::new(plan),
            hot,
            stats: Arc::new(JobStats::new()),
            state: Arc::new(Mutex::new(RunState::Paused)),
            checkpoints,
            runner: Mutex::new(None),
            dir,
        }))
    }

    fn start_runner(&self, job: &Arc<JobHandle>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        *job.state.lock() = RunState::Running;
        let parallelism = job.plan.options.parallelism.unwrap_or(self.opts.parallelism).max(1);
        let (log, decoder, interval) = (self.log.clone(), self.decoder.clone(), self.opts.checkpoint_interval);
        let chunk = self.opts.snapshot_chunk;
        let budget = self.state_budget.clone();
        let j = job.clone();
        let join = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let def = j.def.lock().clone();
                let cfg = RunnerConfig {
                    name: def.name.clone(),
                    plan: j.plan.clone(),
                    sql: def.sql.clone(),
                    run_id: format!("{}.{}", def.name, def.generation),
                    log: log.clone(),
                    decoder: decoder.clone(),
                    hot: j.hot.clone(),
                    checkpoints: j.checkpoints.clone(),
                    checkpoint_interval: interval,
                    snapshot_chunk: chunk,
                    parallelism,
                    stats: j.stats.clone(),
                    start: def.start.clone(),
                    state_budget: budget.clone(),
                };
                let started = std::time::Instant::now();
                match runner::run(cfg, stop_rx.clone()).await {
                    Ok(()) => return,
                    Err(_) if *stop_rx.borrow() => return,
                    Err(e) => {
                        tracing::error!(job = %def.name, error = %e, "job failed; restarting from its last checkpoint");
                        metrics::RESTARTS.with_label_values(&[&def.name]).inc();
                        sluice_telemetry::record_error("job", "failure", 1, &def.name, &e);
                        *j.state.lock() = RunState::Failed(e.to_string());
                        if started.elapsed() > Duration::from_secs(60) {
                            backoff = Duration::from_millis(200);
                        }
                        let mut stop = stop_rx.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        *j.state.lock() = RunState::Running;
                    }
                }
            }
        });
        *job.runner.lock() = Some(Running { stop: stop_tx, join });
    }

    /// Stops a job's runner (it takes a last checkpoint) and waits for it.
    async fn stop_runner(&self, job: &JobHandle) {
        let running = job.runner.lock().take();
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.join.await;
        }
    }

    /// Creates and starts a job from `CREATE JOB ...`.
    pub async fn create(&self, sql: &str) -> Result<JobStatus, JobError> {
        self.create_with(sql, false).await
    }

    /// Creates a job declared in the config file unless one of that name exists.
    pub async fn ensure(&self, sql: &str) -> Result<JobStatus, JobError> {
        let plan = parse_job(sql)?;
        if let Ok(s) = self.describe(&plan.name).await {
            if s.sql.trim() != sql.trim() {
                tracing::warn!(job = %plan.name, "the config file's definition differs from the stored job; keeping the stored one (drop it to apply)");
            }
            return Ok(s);
        }
        self.create_with(sql, true).await
    }

    async fn create_with(&self, sql: &str, from_config: bool) -> Result<JobStatus, JobError> {
        let _op = self.ops.lock().await;
        let plan = parse_job(sql)?;
        let start = if plan.options.start_from_latest { StartPosition::Latest } else { StartPosition::Earliest };
        let def = JobDefinition {
            name: plan.name.clone(),
            sql: sql.to_string(),
            paused: false,
            created_at_ms: now_ms(),
            start,
            shadow_of: None,
            from_config,
            generation: now_ms() as u64,
        };
        self.install(def).await
    }

    async fn install(&self, def: JobDefinition) -> Result<JobStatus, JobError> {
        let name = def.name.clone();
        validate_job_name(&name)?;
        if self.jobs.lock().contains_key(&name) {
            return Err(JobError::AlreadyExists { name });
        }
        let plan = compile(&def)?;
        // The source must exist now: a typo should fail the create, not the runner.
        let source = self.log.topic(&plan.source).await?;
        // Outputs written partition by partition need one partition per source partition.
        // (A windowed job's changelog is partitioned by key: any partition count does.)
        let per_partition = match &plan.body {
            PlanBody::Windowed(_) => runner::late_topic(&plan),
            PlanBody::Stateless(s) => s.output_topic.clone(),
        };
        for t in [plan.output_topic().to_string(), runner::late_topic(&plan)] {
            if t == plan.source {
                return Err(JobError::Invalid(format!("job {name} cannot write into its own source topic {t}")));
            }
        }
        {
            let t = per_partition;
            if let Ok(info) = self.log.topic(&t).await
                && info.partitions < source.partitions
            {
                return Err(JobError::Invalid(format!(
                    "output topic {t} has {} partitions; the job needs at least {} (one per partition of {})",
                    info.partitions, source.partitions, plan.source
                )));
            }
        }
        let dir = self.opts.root.join(&name);
        if dir.exists() {
            // Left over from a drop that crashed half-way: start clean.
            std::fs::remove_dir_all(&dir).map_err(|e| JobError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| JobError::io(&dir, e))?;
        write_definition(&dir, &def)?;
        let handle = self.handle_for(def)?;
        self.jobs.lock().insert(name.clone(), handle.clone());
        self.start_runner(&handle);
        self.describe(&name).await
    }

    pub async fn list(&self) -> Vec<JobStatus> {
        let jobs: Vec<Arc<JobHandle>> = self.jobs.lock().values().cloned().collect();
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            self.refresh_lag(&j).await;
            out.push(status(&j));
        }
        out
    }

    pub async fn describe(&self, name: &str) -> Result<JobStatus, JobError> {
        let j = self.get(name)?;
        self.refresh_lag(&j).await;
        Ok(status(&j))
    }

    /// Reads the source's end offsets, so lag is right while a job is paused, failed or waiting for data.
    async fn refresh_lag(&self, j: &JobHandle) {
        let Ok(desc) = self.log.describe_topic(&j.plan.source).await else { return };
        {
            let mut parts = j.stats.partitions.lock();
            if parts.is_empty() {
                if j.runner.lock().is_some() {
                    // Starting (or restarting after a replay): the runner fills these in a moment.
                    return;
                }
                // Not running (paused since start-up, or failed before reading): from the last checkpoint, else
                // from the start of the log.
                let windowed = matches!(j.plan.body, PlanBody::Windowed(_));
                let from = runner::checkpoint_offsets(&j.checkpoints, windowed);
                *parts = desc
                    .partition_details
                    .iter()
                    .map(|d| {
                        let offset = from
                            .as_ref()
                            .and_then(|o| o.get(d.partition as usize).copied())
                            .unwrap_or(d.log_start_offset);
                        PartitionProgress { partition: d.partition, offset, high_watermark: offset, idle: false }
                    })
                    .collect();
            }
            for p in parts.iter_mut() {
                if let Some(d) = desc.partition_details.get(p.partition as usize) {
                    p.high_watermark = p.high_watermark.max(d.high_watermark);
                }
            }
        }
        let lag = j.stats.lag();
        metrics::LAG.with_label_values(&[&j.plan.name]).set(lag as i64);
        let now = sluice_log::now_ms();
        let wm = j.stats.watermark.load(Ordering::Relaxed);
        if wm != i64::MIN {
            metrics::WATERMARK_DELAY.with_label_values(&[&j.plan.name]).set((now - wm).max(0) as f64 / 1000.0);
        }
        if let Some(at) = j.stats.last_checkpoint.lock().as_ref().map(|c| c.at_ms) {
            metrics::CHECKPOINT_AGE.with_label_values(&[&j.plan.name]).set((now - at).max(0) as f64 / 1000.0);
        }
    }

    /// Keeps the lag gauges current for scrapes, whatever the jobs are doing.
    fn spawn_lag_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(mgr) = weak.upgrade() else { return };
                let jobs: Vec<Arc<JobHandle>> = mgr.jobs.lock().values().cloned().collect();
                for j in jobs {
                    mgr.refresh_lag(&j).await;
                }
            }
        });
    }

    fn get(&self, name: &str) -> Result<Arc<JobHandle>, JobError> {
        self.jobs.lock().get(name).cloned().ok_or_else(|| JobError::NotFound { name: name.to_string() })
    }

    /// Where every job's hot results live, for readers of jobs another instance runs.
    pub fn hot_store(&self) -> &Arc<dyn HotStore> {
        &self.opts.hot
    }

    /// The hot results of a windowed job.
    pub fn results(&self, name: &str) -> Result<(Arc<dyn HotResults>, Option<i64>), JobError> {
        let j = self.get(name)?;
        if matches!(j.plan.body, PlanBody::Stateless(_)) {
            return Err(JobError::Invalid(format!(
                "job {name} has no windowed results: it writes rows to topic {}",
                j.plan.output_topic()
            )));
        }
        let wm = j.stats.watermark.load(Ordering::Relaxed);
        Ok((j.hot.clone(), (wm != i64::MIN).then_some(wm)))
    }

    /// The group key names of a windowed job as its changelog keys name them (in key order, see
    /// [`crate::changelog::key_fields`]), for readers of its changelog; `None` for an
    /// unknown or stateless job.
    pub fn result_keys(&self, name: &str) -> Option<Vec<String>> {
        let jobs = self.jobs.lock();
        match &jobs.get(name)?.plan.body {
            sluice_stream::plan::PlanBody::Windowed(w) => Some(crate::changelog::key_fields(w)),
            _ => None,
        }
    }

    /// The plans of every windowed job, by name: what readers of their changelogs expect to find.
    pub fn windowed_plans(&self) -> Vec<(String, Arc<JobPlan>)> {
        let jobs = self.jobs.lock();
        jobs.iter()
            .filter(|(_, j)| matches!(j.plan.body, PlanBody::Windowed(_)))
            .map(|(name, j)| (name.clone(), j.plan.clone()))
            .collect()
    }

    /// Clears a job's latency histogram (benchmarks measure after warm-up).
    pub fn reset_latency(&self, name: &str) -> Result<(), JobError> {
        self.get(name)?.stats.latency_us.lock().reset();
        Ok(())
    }

    pub async fn pause(&self, name: &str) -> Result<JobStatus, JobError> {
        let _op = self.ops.lock().await;
        let j = self.get(name)?;
        if *j.state.lock() == RunState::Paused {
            return Ok(status(&j));
        }
        self.stop_runner(&j).await;
        *j.state.lock() = RunState::Paused;
        let def = {
            let mut d = j.def.lock();
            d.paused = true;
            d.clone()
        };
        write_definition(&j.dir, &def)?;
        Ok(status(&j))
    }

    pub async fn resume(&self, name: &str) -> Result<JobStatus, JobError> {
        let _op = self.ops.lock().await;
        let j = self.get(name)?;
        if j.runner.lock().is_some() {
            return Ok(status(&j));
        }
        let def = {
            let mut d = j.def.lock();
            d.paused = false;
            d.clone()
        };
        write_definition(&j.dir, &def)?;
        self.start_runner(&j);
        Ok(status(&j))
    }

    /// Stops the job and deletes its definition and checkpoints. Its topics (results, late events) are kept:
    /// they hold data users may still read; delete them like any topic.
    pub async fn drop_job(&self, name: &str) -> Result<(), JobError> {
        let _op = self.ops.lock().await;
        let j = self.get(name)?;
        self.stop_runner(&j).await;
        // The definition goes first: a crash half-way leaves a directory without job.json, ignored at load.
        let def_path = j.dir.join("job.json");
        if def_path.exists() {
            std::fs::remove_file(&def_path).map_err(|e| JobError::io(&def_path, e))?;
        }
        std::fs::remove_dir_all(&j.dir).map_err(|e| JobError::io(&j.dir, e))?;
        self.jobs.lock().remove(name);
        metrics::forget(name);
        if let Err(e) = self.opts.hot.forget(name).await {
            tracing::warn!(job = name, error = %e, "the dropped job's hot results stay until they expire");
        }
        Ok(())
    }

    /// Reprocesses history from `from`: in place (state and checkpoints are reset; results are upserted again),
    /// or `into` a new shadow job with the same SQL and its own output topics, so both can be compared.
    pub async fn replay(&self, name: &str, from: ReplayFrom, into: Option<&str>) -> Result<JobStatus, JobError> {
        let start = match from {
            ReplayFrom::Earliest => StartPosition::Earliest,
            ReplayFrom::Offset(o) => StartPosition::Offset(o),
            ReplayFrom::Time(t) => StartPosition::Time(t),
        };
        let j = self.get(name)?;
        if let Some(new) = into {
            let _op = self.ops.lock().await;
            let def = JobDefinition {
                name: new.to_string(),
                sql: j.def.lock().sql.clone(),
                paused: false,
                created_at_ms: now_ms(),
                start,
                shadow_of: Some(name.to_string()),
                from_config: false,
                generation: now_ms() as u64,
            };
            return self.install(def).await;
        }
        let _op = self.ops.lock().await;
        self.stop_runner(&j).await;
        j.checkpoints.clear()?;
        j.hot.clear().await;
        j.stats.latency_us.lock().reset();
        j.stats.records_in.store(0, Ordering::Relaxed);
        j.stats.partitions.lock().clear();
        j.stats.watermark.store(i64::MIN, Ordering::Relaxed);
        let def = {
            let mut d = j.def.lock();
            d.start = start;
            d.paused = false;
            d.generation = now_ms() as u64;
            d.clone()
        };
        write_definition(&j.dir, &def)?;
        self.start_runner(&j);
        Ok(status(&j))
    }

    /// Aborts every runner without a last checkpoint, as a crash of the process would (recovery tests).
    #[doc(hidden)]
    pub fn crash(&self) {
        for j in self.jobs.lock().values() {
            if let Some(r) = j.runner.lock().take() {
                r.join.abort();
            }
        }
    }

    /// Stops every job, each taking a last checkpoint.
    pub async fn shutdown(&self) {
        let jobs: Vec<Arc<JobHandle>> = self.jobs.lock().values().cloned().collect();
        for j in jobs {
            self.stop_runner(&j).await;
        }
    }
}

/// Parses a definition; a shadow job gets its own name and default topics.
fn compile(def: &JobDefinition) -> Result<JobPlan, JobError> {
    let mut plan = parse_job(&def.sql)?;
    if plan.name != def.name {
        let old = plan.name.clone();
        plan.name = def.name.clone();
        match &mut plan.body {
            PlanBody::Windowed(w) => w.output_topic = topics::results(&def.name),
            PlanBody::Stateless(s) => s.output_topic = topics::output(&def.name),
        }
        plan.options.late_topic = None;
        tracing::debug!(job = %def.name, of = %old, "shadow job writes to its own topics");
    }
    Ok(plan)
}

fn validate_job_name(name: &str) -> Result<(), JobError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(JobError::Invalid(format!(
            "job name {name:?} must be 1-200 ASCII letters, digits, '_' or '-', not starting with '_'"
        )))
    }
}

fn status(j: &JobHandle) -> JobStatus {
    let def = j.def.lock().clone();
    let (state, error) = match &*j.state.lock() {
        RunState::Running => ("running", None),
        RunState::Paused => ("paused", None),
        RunState::Failed(e) => ("failed", Some(e.clone())),
    };
    let (kind, columns, late_topic) = match &j.plan.body {
        PlanBody::Windowed(w) => {
            ("windowed", w.output.iter().map(|(n, _)| n.clone()).collect(), Some(runner::late_topic(&j.plan)))
        }
        PlanBody::Stateless(s) => (
            "stateless",
            s.projections
                .iter()
                .map(|p| match p {
                    sluice_stream::plan::Projection::Column { name, .. } => name.clone(),
                    sluice_stream::plan::Projection::Star => "*".to_string(),
                })
                .collect(),
            None,
        ),
    };
    let wm = j.stats.watermark.load(Ordering::Relaxed);
    let latency_ms = {
        let h = j.stats.latency_us.lock();
        let ms = |v: u64| v as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    };
    let partitions = j.stats.partitions.lock().clone();
    let lag = j.stats.lag();
    JobStatus {
        name: def.name.clone(),
        sql: def.sql.clone(),
        state,
        error,
        kind,
        source: j.plan.source.clone(),
        output_topic: j.plan.output_topic().to_string(),
        late_topic,
        columns,
        shadow_of: def.shadow_of.clone(),
        created_at_ms: def.created_at_ms,
        records_in: j.stats.records_in.load(Ordering::Relaxed),
        results_written: j.stats.results_written.load(Ordering::Relaxed),
        lag,
        watermark: (wm != i64::MIN).then(|| Datum::Time(wm).to_key_text()),
        state_entries: j.stats.state_entries.load(Ordering::Relaxed),
        hot_rows: j.hot.len(),
        partitions,
        last_checkpoint: j.stats.last_checkpoint.lock().clone(),
        latency_ms,
    }
}

fn read_definition(path: &Path) -> Result<JobDefinition, JobError> {
    let bytes = std::fs::read(path).map_err(|e| JobError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| JobError::Corrupt(format!("{}: {e}", path.display())))
}

/// Writes `job.json` atomically: temp file, fsync, rename, fsync the directory.
fn write_definition(dir: &Path, def: &JobDefinition) -> Result<(), JobError> {
    let bytes = serde_json::to_vec_pretty(def).map_err(|e| JobError::Corrupt(e.to_string()))?;
    sluice_log::replace_file(dir, "job.json", &bytes).map_err(|e| JobError::io(&dir.join("job.json"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, sql: &str) -> JobDefinition {
        JobDefinition {
            name: name.into(),
            sql: sql.into(),
            paused: false,
            created_at_ms: 0,
            start: StartPosition::Earliest,
            shadow_of: None,
            from_config: false,
            generation: 0,
        }
    }

    /// The SQL front end picks default topic names on its own; they must be the log's names for the sinks to
    /// find them.
    #[test]
    fn default_topics_follow_the_logs_naming_rules() {
        let windowed = "CREATE JOB epm AS SELECT window_start, service, count(*) AS n FROM logs \
                        GROUP BY TUMBLE(event_time, INTERVAL '1' MINUTE), service";
        for name in ["epm", "epm_shadow"] {
            let plan = compile(&def(name, windowed)).unwrap();
            assert_eq!(plan.output_topic(), topics::results(name));
            assert_eq!(crate::runner::late_topic(&plan), topics::late(name));
        }
        let stateless = "CREATE JOB clean AS SELECT service FROM logs WHERE status >= 500";
        for name in ["clean", "clean_shadow"] {
            assert_eq!(compile(&def(name, stateless)).unwrap().output_topic(), topics::output(name));
        }
    }
}
