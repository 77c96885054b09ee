//! The HTTP API of Sluice (axum): ingest, reads, topic administration, the Confluent REST Proxy v2 produce
//! endpoint, health, readiness and metrics.
//!
//! Main items: [`start`] opens the data directory and serves a [`Config`], returning a [`RunningServer`];
//! [`AppState`] is what handlers share; [`router`] builds the routes; [`ApiError`] is the JSON error shape
//! (`{"error":{"code","message"}}`). Ingest parsing and limits live in [`ingest`]; the produce path every listener
//! shares (topic resolution, durable partitioned append) in `produce`. The Confluent Schema Registry
//! API (`/subjects`, `/schemas`, `/config`, `/compatibility`) serves [`sluice_schema::Registry`] from `schema_api`.

pub mod alerts;
pub mod error;
mod http;
pub mod ingest;
mod jobs_api;
mod metrics;
mod produce;
mod rest_proxy;
mod routes;
mod schema_api;
pub mod schemas;
mod search_api;
mod status;
mod store_api;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use sluice_config::{Config, FsyncSetting, Limits, PostgresConfig};
use sluice_log::{EmbeddedLog, FsyncPolicy, LogError, LogOptions, LogStore, StdStorage, Storage, TopicSpec};
use sluice_sink::search::SearchService;
use sluice_sink::store::TimeSeriesStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use routes::router;

/// What every handler shares.
pub struct AppState {
    log: OnceLock<Arc<dyn LogStore>>,
    pub limits: Limits,
    pub default_partitions: u32,
    pub auto_create_topics: bool,
    ready: AtomicBool,
    /// Spreads keyless events over partitions.
    round_robin: AtomicU64,
    /// Per-instance collectors (the log's per-partition gauges).
    pub registry: prometheus::Registry,
    /// The schema registry, once replayed from the log.
    schema_registry: OnceLock<Arc<sluice_schema::Registry>>,
    /// Encoders, decoders and dead letters built on the registry.
    codecs: OnceLock<Arc<schemas::Codecs>>,
    /// Stream jobs, once the log and registry are up.
    jobs: OnceLock<Arc<sluice_jobs::JobManager>>,
    /// The time-series store, when the binary wired one in.
    store: OnceLock<Arc<dyn TimeSeriesStore>>,
    /// The search indexes, when the binary wired them in.
    search: OnceLock<Arc<dyn SearchService>>,
    /// The data directory (for disk usage in the status).
    pub data_dir: std::path::PathBuf,
    /// The in-process alerts and the metric samples `GET /v1/status` is computed from.
    pub monitor: Arc<alerts::Monitor>,
    /// Produce bodies in memory, in KiB (`limits.max_inflight_bytes`).
    inflight: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(config: &Config) -> Self {
        AppState {
            log: OnceLock::new(),
            limits: config.limits.clone(),
            default_partitions: config.log.default_partitions,
            auto_create_topics: config.log.auto_create_topics,
            ready: AtomicBool::new(false),
            round_robin: AtomicU64::new(0),
            registry: prometheus::Registry::new(),
            schema_registry: OnceLock::new(),
            codecs: OnceLock::new(),
            jobs: OnceLock::new(),
            store: OnceLock::new(),
            search: OnceLock::new(),
            data_dir: config.data_dir.clone(),
            monitor: Arc::new(alerts::Monitor::new(config.alerts.clone())),
            inflight: Arc::new(tokio::sync::Semaphore::new(kib(config.limits.max_inflight_bytes.0) as usize)),
        }
    }

    /// Waits until a produce body of the request's declared length (or of `max_body_bytes` when it declares none)
    /// fits in `limits.max_inflight_bytes`; the permit is held until the events are durable.
    pub async fn reserve_body(&self, headers: &axum::http::HeaderMap) -> tokio::sync::OwnedSemaphorePermit {
        let max = self.limits.max_body_bytes.0;
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let want = kib(declared.unwrap_or(max).min(max)).max(1);
        let started = std::time::Instant::now();
        let permit = self.inflight.clone().acquire_many_owned(want).await.expect("the ingest budget is never closed");
        let waited = started.elapsed();
        if waited > std::time::Duration::from_millis(1) {
            metrics::INGEST_BUDGET_WAIT.observe(waited.as_secs_f64());
        }
        permit
    }

    /// Installs the log once recovery is done; requests that need it get 503 until then.
    pub fn set_log(&self, log: Arc<dyn LogStore>) {
        let _ = self.log.set(log);
    }

    /// The job manager, once started.
    pub fn jobs(&self) -> Option<&Arc<sluice_jobs::JobManager>> {
        self.jobs.get()
    }

    /// The time-series store, once started.
    pub fn store(&self) -> Option<&Arc<dyn TimeSeriesStore>> {
        self.store.get()
    }

    /// The search indexes, once started.
    pub fn search(&self) -> Option<&Arc<dyn SearchService>> {
        self.search.get()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn log(&self) -> Result<&Arc<dyn LogStore>, ApiError> {
        self.log.get().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the server is still recovering its data directory",
            )
        })
    }

    /// Installs the schema registry once it has replayed; its routes answer 503 until then. Needs the log.
    pub fn set_schema_registry(&self, registry: Arc<sluice_schema::Registry>) {
        if let Some(log) = self.log.get() {
            let _ = self.codecs.set(Arc::new(schemas::Codecs::new(registry.clone(), log.clone())));
        }
        let _ = self.schema_registry.set(registry);
    }

    pub(crate) fn codecs(&self) -> Result<&Arc<schemas::Codecs>, ApiError> {
        self.codecs.get().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the schema registry is still replaying its log topic",
            )
        })
    }

    /// The schema registry, once ready.
    pub fn schema_registry(&self) -> Option<&Arc<sluice_schema::Registry>> {
        self.schema_registry.get()
    }

    pub(crate) fn schemas(&self) -> Result<&Arc<sluice_schema::Registry>, ApiError> {
        self.schema_registry.get().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the schema registry is still replaying its log topic",
            )
        })
    }

    pub(crate) fn next_round_robin(&self, n: u64) -> u64 {
        self.round_robin.fetch_add(n, Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    DataDir(std::io::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("schema registry: {0}")]
    Schema(#[from] sluice_schema::SchemaError),
    #[error("{0}")]
    Config(String),
}

/// The log options a config asks for.
pub fn log_options(config: &Config) -> LogOptions {
    let g = &config.log;
    LogOptions {
        fsync: match g.fsync {
            FsyncSetting::Always => FsyncPolicy::Always,
            FsyncSetting::Interval(d) => FsyncPolicy::Interval(d.0),
        },
        segment_bytes: g.segment_bytes.0,
        segment_max_age: g.segment_max_age.0,
        retention: g.retention.0,
        retention_bytes: (g.retention_bytes.0 > 0).then_some(g.retention_bytes.0),
        queue_depth: g.queue_depth,
        // A batch is at most one request's events, each at most max_event_bytes plus framing.
        max_batch_bytes: (config.limits.max_body_bytes.0 * 2).max(64 << 20),
        ..LogOptions::default()
    }
}

/// A server that is accepting connections.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, then closes the log (draining its writers).
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Waits for the server to stop (after `shutdown`, or on a fatal start-up error).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Config(format!("server task failed: {e}"))),
        }
    }

    /// A handle that triggers shutdown when dropped or sent to.
    pub fn take_shutdown(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

/// Binds the HTTP port (so `/healthz` answers at once), recovers the log under `config.data_dir`, creates the
/// topics the config declares, then reports ready. Returns once the port is bound; recovery continues in the
/// background and a failure there ends the server with an error (see [`RunningServer::wait`]).
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    start_with_storage(config, Arc::new(StdStorage)).await
}

/// [`start`] on a chosen storage backend for the log (tests inject faults with `SimStorage`).
pub async fn start_with_storage(config: Config, storage: Arc<dyn Storage>) -> Result<RunningServer, ServerError> {
    start_with(config, storage, None).await
}

/// What a store adapter gets to start its sinks: the config, the log, the decoder and the jobs.
pub struct StoreContext {
    pub config: Config,
    pub log: Arc<dyn LogStore>,
    pub decoder: Arc<sluice_schema::reader::ValueDecoder>,
    pub jobs: Arc<sluice_jobs::JobManager>,
}

/// Opens a time-series store once the log, registry and jobs are up (the binary passes the embedded one, so
/// this crate never links the query engine).
pub type StoreFactory =
    Box<dyn FnOnce(StoreContext) -> BoxFuture<'static, Result<Arc<dyn TimeSeriesStore>, String>> + Send>;

/// Opens the search indexes once the log, registry and jobs are up (the binary passes the embedded one, so this
/// crate never links the search engine).
pub type SearchFactory =
    Box<dyn FnOnce(StoreContext) -> BoxFuture<'static, Result<Arc<dyn SearchService>, String>> + Send>;

/// The adapters behind the log that the binary wires in.
#[derive(Default)]
pub struct Adapters {
    pub store: Option<StoreFactory>,
    pub search: Option<SearchFactory>,
}

/// [`start_with_storage`] plus a time-series store.
pub async fn start_with(
    config: Config,
    storage: Arc<dyn Storage>,
    store: Option<StoreFactory>,
) -> Result<RunningServer, ServerError> {
    start_with_adapters(config, storage, Adapters { store, search: None }).await
}

/// [`start_with_storage`] plus the adapters behind the log (time-series store, search).
pub async fn start_with_adapters(
    config: Config,
    storage: Arc<dyn Storage>,
    adapters: Adapters,
) -> Result<RunningServer, ServerError> {
    let lock = sluice_log::lock_data_dir(&config.data_dir).map_err(ServerError::DataDir)?;
    let listener = TcpListener::bind(config.http.addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.http.addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.http.addr, source })?;
    // Bound before anything starts, so a taken port fails the start at once; only the default port, when taken
    // (a real PostgreSQL on 5433, a second instance), turns the listener off with a warning.
    let pg = &config.postgres;
    let pg_listener = match pg.enabled {
        false => None,
        true => match TcpListener::bind(pg.listen).await {
            Ok(l) => Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && pg.listen == PostgresConfig::default().listen => {
                tracing::warn!(addr = %pg.listen, "postgres protocol off: the port is taken (set [postgres] listen)");
                None
            }
            Err(source) => return Err(ServerError::Bind { addr: pg.listen, source }),
        },
    };
    let state = Arc::new(AppState::new(&config));
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(state.clone());
    let st = state.clone();
    let sampler = alerts::spawn_sampler(state.monitor.clone(), state.registry.clone(), config.data_dir.clone());
    let task = tokio::spawn(async move {
        let _lock = lock;
        // The sampler stops with the server, whichever way it ends.
        let _sampler = alerts::AbortOnDrop(sampler);
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        let server = tokio::spawn(async move { serve.await });
        let opened = async {
            let log = open_embedded_log(&config, storage, &st).await?;
            start_consumers(&config, log.clone(), &st, adapters).await?;
            Ok::<_, ServerError>(log)
        };
        let log = match opened.await {
            Ok(log) => log,
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        // The PostgreSQL protocol answers from the store; it stops with the server.
        let _postgres = match (pg_listener, st.store()) {
            (Some(l), Some(store)) => {
                tracing::info!(addr = ?l.local_addr().ok(), "postgres protocol listening");
                Some(alerts::AbortOnDrop(tokio::spawn(sluice_pgwire::serve(l, store.clone()))))
            }
            _ => None,
        };
        tracing::info!(addr = %local_addr, data_dir = %config.data_dir.display(), "sluice is ready");
        let result = server.await;
        st.set_ready(false);
        // Jobs stop first, each with a last checkpoint, while the log still takes their writes.
        if let Some(jobs) = st.jobs() {
            jobs.shutdown().await;
        }
        // Then the store's sinks, with a last flush of what they buffered.
        if let Some(store) = st.store() {
            store.shutdown().await;
        }
        if let Some(search) = st.search() {
            search.shutdown().await;
        }
        // No request is in flight any more: make what was acknowledged under an fsync interval durable.
        log.close().await;
        tracing::info!("log closed");
        drop(log);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Bind { addr: local_addr, source: e }),
            Err(e) => Err(ServerError::Config(format!("http server task failed: {e}"))),
        }
    });
    Ok(RunningServer { local_addr, state, shutdown: Some(tx), task })
}

/// Opens the log adapter: the embedded log under the data directory, recovered before anything reads it.
async fn open_embedded_log(
    config: &Config,
    storage: Arc<dyn Storage>,
    state: &AppState,
) -> Result<Arc<dyn LogStore>, ServerError> {
    let root = config.data_dir.join("log");
    let opts = log_options(config);
    let started = std::time::Instant::now();
    let (log, reports) = tokio::task::spawn_blocking(move || EmbeddedLog::open(root, storage, opts))
        .await
        .map_err(|e| ServerError::Config(format!("log recovery task failed: {e}")))??;
    let truncated: u64 = reports.iter().map(|(_, _, r)| r.truncated_bytes).sum();
    tracing::info!(
        partitions = reports.len(),
        truncated_bytes = truncated,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log recovered"
    );
    let log: Arc<dyn LogStore> = Arc::new(log);
    if let Some(collector) = log.collector() {
        state.registry.register(collector).map_err(|e| ServerError::Config(e.to_string()))?;
    }
    Ok(log)
}

/// The hot-results adapter the config names.
async fn open_hot_store(config: &sluice_config::HotConfig) -> Result<Arc<dyn sluice_hot::HotStore>, ServerError> {
    Ok(match config.backend {
        sluice_config::HotBackend::Memory => Arc::new(sluice_hot::memory::MemoryHotStore::new()),
        sluice_config::HotBackend::Redis => {
            let opts = sluice_hot::redis::RedisOptions {
                url: config.url.clone(),
                prefix: config.prefix.clone(),
                ttl: config.ttl.0,
                timeout: config.timeout.0,
            };
            let store = sluice_hot::redis::RedisHotStore::connect(opts)
                .await
                .map_err(|e| ServerError::Config(format!("[hot] backend = \"redis\": {e}")))?;
            tracing::info!(prefix = %config.prefix, "hot results in redis");
            Arc::new(store)
        }
    })
}

/// Starts everything that reads the log (the schema registry, jobs, the store and search sinks), then reports
/// ready. Holds the log only as the port, whichever adapter it is.
async fn start_consumers(
    config: &Config,
    shared: Arc<dyn LogStore>,
    state: &Arc<AppState>,
    adapters: Adapters,
) -> Result<(), ServerError> {
    ensure_topics(config, &*shared).await?;
    let schemas = sluice_schema::Registry::open(shared.clone()).await?;
    let schemas = Arc::new(schemas);
    state.set_log(shared.clone());
    state.set_schema_registry(schemas.clone());
    let mut opts = sluice_jobs::ManagerOptions::new(config.data_dir.join("jobs"));
    if config.stream.parallelism > 0 {
        opts.parallelism = config.stream.parallelism;
    }
    opts.checkpoint_interval = config.stream.checkpoint_interval.0;
    opts.keep_checkpoints = config.stream.keep_checkpoints;
    opts.state_memory = config.stream.state_memory.0;
    opts.hot = open_hot_store(&config.hot).await?;
    let decoder = Arc::new(sluice_schema::reader::ValueDecoder::new(schemas));
    let jobs = sluice_jobs::JobManager::open(opts, shared.clone(), decoder.clone())
        .await
        .map_err(|e| ServerError::Config(format!("stream jobs: {e}")))?;
    for j in &config.jobs {
        jobs.ensure(&j.sql).await.map_err(|e| ServerError::Config(format!("job in the config file: {e}")))?;
    }
    let _ = state.jobs.set(jobs.clone());
    if let Some(factory) = adapters.store {
        let ctx =
            StoreContext { config: config.clone(), log: shared.clone(), decoder: decoder.clone(), jobs: jobs.clone() };
        let store = factory(ctx).await.map_err(|e| ServerError::Config(format!("time-series store: {e}")))?;
        let _ = state.store.set(store);
    }
    if let Some(factory) = adapters.search {
        let ctx = StoreContext { config: config.clone(), log: shared, decoder, jobs };
        let search = factory(ctx).await.map_err(|e| ServerError::Config(format!("search: {e}")))?;
        let _ = state.search.set(search);
    }
    state.set_ready(true);
    Ok(())
}

/// Creates the topics declared in the config that do not exist yet.
async fn ensure_topics(config: &Config, log: &dyn LogStore) -> Result<(), ServerError> {
    for t in &config.topics {
        let partitions = t.partitions.unwrap_or(config.log.default_partitions);
        match log.topic(&t.name).await {
            Ok(info) if info.partitions != partitions => {
                return Err(ServerError::Config(format!(
                    "topic `{}` has {} partitions on disk but the config declares {partitions}; partition counts cannot change",
                    t.name, info.partitions
                )));
            }
            Ok(_) => {}
            Err(LogError::TopicNotFound(_)) => {
                let spec = TopicSpec {
                    name: t.name.clone(),
                    partitions,
                    retention: t.retention.map(|r| r.0.unwrap_or(std::time::Duration::MAX)),
                    retention_bytes: t.retention_bytes.map(|b| b.0).filter(|&b| b > 0),
                };
                log.create_topic(spec).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// True when `dir` looks like a Sluice data directory (for tools that open it offline).
pub fn is_data_dir(dir: &Path) -> bool {
    dir.join("log").join("topics").is_dir()
}

/// Bytes to whole KiB, rounded up (the unit of the ingest budget's permits).
fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX >> 3)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    fn headers(len: Option<u64>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(len) = len {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(&len.to_string()).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn produce_bodies_wait_for_room_in_the_ingest_budget() {
        let mut config = Config::default();
        config.limits.max_body_bytes = sluice_config::ByteSize(64 << 10);
        config.limits.max_inflight_bytes = sluice_config::ByteSize(100 << 10);
        let state = Arc::new(AppState::new(&config));
        let first = state.reserve_body(&headers(Some(60 << 10))).await;
        // A second 60 KiB body does not fit next to the first; a small one does.
        let waiting = tokio::spawn({
            let state = state.clone();
            async move { state.reserve_body(&headers(Some(60 << 10))).await }
        });
        let small = state.reserve_body(&headers(Some(100))).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second body must wait");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(second.num_permits(), 60);
        // A body without a declared length reserves max_body_bytes.
        drop((second, small));
        assert_eq!(state.reserve_body(&headers(None)).await.num_permits(), 64);
        assert_eq!(state.reserve_body(&headers(Some(10 << 20))).await.num_permits(), 64);
    }
}
