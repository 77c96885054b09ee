//! [`EmbeddedStore`]: the embedded adapter of the time-series store port. It owns the tables, the query engine,
//! the background maintenance and one sink per table: every user topic feeds a raw table of the same name, and
//! every windowed job's changelog (`{job}.results`) feeds a results table named after the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::DataType;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use sluice_config::StoreConfig;
use sluice_jobs::JobManager;
use sluice_log::LogStore;
use sluice_log::topics::{self, TopicRole};
use sluice_schema::reader::ValueDecoder;
use sluice_sink::output::QueryOutput;
use sluice_sink::store::{ResultRow, TimeSeriesStore};
use sluice_sink::{PortError, PortErrorKind, RunnerOptions, SinkHandle, SinkRunner};
use sluice_stream::ValueKind;

use crate::error::StoreError;
use crate::manifest::TableKind;
use crate::provider::SnapshotSource;
use crate::query::{Dialect, QueryEngine, QueryError, QueryOptions};
use crate::sink::{Feed, TableSink};
use crate::snapshot::{TableSnapshot, time_type};
use crate::store::{Store, StoreOptions};
use crate::table::{Table, TableSpec};

/// How often the store looks for new topics and jobs to feed tables from.
const DISCOVER_EVERY: Duration = Duration::from_millis(500);

/// What the embedded store needs from the rest of the process.
pub struct StoreParts {
    pub data_dir: std::path::PathBuf,
    pub config: StoreConfig,
    pub log: Arc<dyn LogStore>,
    pub decoder: Arc<ValueDecoder>,
    pub jobs: Arc<JobManager>,
}

pub struct EmbeddedStore {
    store: Arc<Store>,
    engine: QueryEngine,
    config: StoreConfig,
    log: Arc<dyn LogStore>,
    decoder: Arc<ValueDecoder>,
    jobs: Arc<JobManager>,
    sinks: tokio::sync::Mutex<HashMap<String, SinkHandle>>,
    /// The reader schema id each raw table's declared columns were last taken from.
    declared_from: Mutex<HashMap<String, u32>>,
    stop: tokio::sync::watch::Sender<bool>,
    maintenance: Mutex<Option<crate::store::MaintenanceHandle>>,
}

impl EmbeddedStore {
    /// Opens every table under `{data_dir}/store`, starts maintenance and (when enabled) the sinks.
    pub async fn start(parts: StoreParts) -> Result<Arc<EmbeddedStore>, StoreError> {
        let StoreParts { data_dir, config, log, decoder, jobs } = parts;
        let opts = store_options(&config);
        let root = data_dir.join("store");
        let store = tokio::task::spawn_blocking(move || Store::open(root, opts))
            .await
            .map_err(|e| StoreError::Internal(format!("store open task failed: {e}")))??;
        let store = Arc::new(store);
        let threads = if config.query_threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.query_threads
        };
        let engine = QueryEngine::new(QueryOptions {
            timeout: config.query_timeout.0,
            memory_limit_bytes: config.query_memory_limit.0 as usize,
            max_rows: config.query_max_rows,
            threads,
        })
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let maintenance = store.start_maintenance(Duration::from_secs(1));
        let (stop, _) = tokio::sync::watch::channel(false);
        let this = Arc::new(EmbeddedStore {
            store,
            engine,
            config,
            log,
            decoder,
            jobs,
            sinks: tokio::sync::Mutex::new(HashMap::new()),
            declared_from: Mutex::new(HashMap::new()),
            stop,
            maintenance: Mutex::new(Some(maintenance)),
        });
        if this.config.enabled {
            this.discover().await;
            let weak = Arc::downgrade(&this);
            let mut stop = this.stop.subscribe();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(DISCOVER_EVERY) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    let Some(this) = weak.upgrade() else { return };
                    this.discover().await;
                }
            });
        }
        Ok(this)
    }

    /// Starts a sink for every topic and windowed job that has none (or whose sink stopped), and refreshes the
    /// declared columns of schema-bound tables when their schema gained a version.
    async fn discover(self: &Arc<Self>) {
        let topics = match self.log.list_topics().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "store cannot list topics");
                return;
            }
        };
        let mut sinks = self.sinks.lock().await;
        if *self.stop.borrow() {
            // Shut down while listing: starting sinks now would outlive the last flush.
            return;
        }
        let mut wanted = Vec::new();
        for t in topics {
            let Some((table, feed)) = self.feed_for(&t.name) else { continue };
            let running = sinks.get(&table).is_some_and(|h| !h.is_finished());
            wanted.push((table, t.name, feed, running));
        }
        // Opening tables and adding columns wait for the table's maintenance lock: off the async workers.
        let this = self.clone();
        let opened = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .filter_map(|(table, topic, feed, running)| {
                    if let Feed::Raw { .. } = feed
                        && let Err(e) = this.refresh_declared(&table, &topic)
                    {
                        tracing::warn!(table = %table, error = %e, "store cannot add the schema's columns");
                    }
                    if running {
                        if let Feed::Results { .. } = feed {
                            this.expect_result_columns(&table);
                        }
                        return None;
                    }
                    match this.open_table(&table, &topic, &feed) {
                        Ok(tab) => Some((table, topic, feed, tab)),
                        Err(e) => {
                            tracing::warn!(table = %table, error = %e, "store cannot open the table");
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (table, topic, feed, tab) in opened {
            let writer = Box::new(TableSink::new(tab, feed));
            let handle = SinkRunner::spawn("store", &topic, self.log.clone(), writer, RunnerOptions::default());
            tracing::info!(table = %table, topic = %topic, "store sink started");
            sinks.insert(table, handle);
        }
    }

    /// The table a topic feeds and how, or `None` for topics the store leaves alone (internal, dead letters,
    /// changelogs of dropped or stateless jobs).
    fn feed_for(&self, topic: &str) -> Option<(String, Feed)> {
        match topics::role(topic) {
            TopicRole::Internal | TopicRole::DeadLetters { .. } => None,
            TopicRole::Results { job } => {
                let keys = self.jobs.result_keys(job)?;
                Some((job.to_string(), Feed::Results { key_names: Arc::new(keys) }))
            }
            TopicRole::Events => Some((topic.to_string(), Feed::Raw { decoder: self.decoder.clone() })),
        }
    }

    fn open_table(&self, table: &str, topic: &str, feed: &Feed) -> Result<Arc<Table>, StoreError> {
        let t = self.ensure_table(table, topic, feed)?;
        if let Feed::Results { .. } = feed {
            self.expect_result_columns(table);
        }
        Ok(t)
    }

    /// Opens the results table of every windowed job that has none yet, so a query right after `CREATE JOB`
    /// finds the table and its columns before the sink's next discovery round.
    fn ensure_job_tables(&self) {
        if !self.config.enabled {
            return;
        }
        for (job, plan) in self.jobs.windowed_plans() {
            let topic = topics::results(&job);
            if plan.output_topic() != topic || self.store.table(&job).is_some() {
                continue;
            }
            let Some((table, feed)) = self.feed_for(&topic) else { continue };
            if let Err(e) = self.open_table(&table, &topic, &feed) {
                tracing::warn!(table = %table, error = %e, "store cannot open the table");
            }
        }
    }

    /// Tells a job's results table the columns its plan will emit, typed from the plan and from what the store
    /// knows of the source topic's fields (its schema, else its raw table's inferred columns).
    fn expect_result_columns(&self, job: &str) {
        let Some(table) = self.store.table(job) else { return };
        let Some((_, plan)) = self.jobs.windowed_plans().into_iter().find(|(n, _)| n == job) else { return };
        let mut known: HashMap<String, DataType> = HashMap::new();
        if let Some(s) = self.decoder.reader_schema(&plan.source) {
            known.extend(avro_columns(&s.schema));
        } else if let Some(raw) = self.store.table(&plan.source) {
            let schema = raw.snapshot().schema;
            known.extend(schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())));
        }
        let field = |path: &[String]| known.get(&path.join(".")).and_then(value_kind);
        let Some(kinds) = plan.result_kinds(&field) else { return };
        let columns: Vec<(String, DataType)> = kinds
            .into_iter()
            // The window bounds are the table's own key columns.
            .filter(|(name, _)| name != "window_start" && name != "window_end")
            .map(|(name, kind)| (name, kind.map_or(DataType::Utf8, data_type)))
            .collect();
        table.expect(&columns);
    }

    fn ensure_table(&self, table: &str, topic: &str, feed: &Feed) -> Result<Arc<Table>, StoreError> {
        if let Some(t) = self.store.table(table) {
            return Ok(t);
        }
        let (kind, width, rows) = match feed {
            Feed::Raw { .. } => (TableKind::Raw, self.config.chunk_width.0, self.config.chunk_rows),
            Feed::Results { .. } => {
                (TableKind::Results, self.config.results_chunk_width.0, self.config.results_chunk_rows)
            }
        };
        let per_table = self.config.tables.iter().find(|t| t.name == table);
        let width = per_table.and_then(|t| t.chunk_width).map_or(width, |w| w.0);
        let retention = per_table.and_then(|t| t.retention).unwrap_or(self.config.retention).0;
        let declared = match feed {
            Feed::Raw { .. } => self.decoder.reader_schema(topic).map(|s| avro_columns(&s.schema)).unwrap_or_default(),
            Feed::Results { .. } => Vec::new(),
        };
        let spec = TableSpec {
            kind,
            chunk_width_ms: width.as_millis().min(i64::MAX as u128) as i64,
            chunk_rows: Some(rows),
            retention_ms: retention.map(|r| r.as_millis().min(i64::MAX as u128) as i64),
            declared,
        };
        self.store.ensure_table(table, spec)
    }

    fn refresh_declared(&self, table: &str, topic: &str) -> Result<(), StoreError> {
        let Some(schema) = self.decoder.reader_schema(topic) else { return Ok(()) };
        if self.declared_from.lock().get(table) == Some(&schema.id) {
            return Ok(());
        }
        if let Some(t) = self.store.table(table) {
            t.declare(&avro_columns(&schema.schema))?;
        }
        self.declared_from.lock().insert(table.to_string(), schema.id);
        Ok(())
    }

    fn sources(&self) -> Vec<(String, Arc<dyn SnapshotSource>)> {
        self.store
            .tables()
            .into_iter()
            .map(|t| (t.name().to_string(), Arc::new(TableSource(t)) as Arc<dyn SnapshotSource>))
            .collect()
    }
}

struct TableSource(Arc<Table>);

impl SnapshotSource for TableSource {
    fn snapshot(&self) -> TableSnapshot {
        self.0.snapshot()
    }
}

fn store_options(c: &StoreConfig) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.table.flush_rows = c.flush_rows;
    o.table.flush_bytes = c.flush_memory.0 as usize;
    o.table.flush_interval = c.flush_interval.0;
    o.table.compact_min_files = c.compact_min_files;
    o
}

/// Columns of an Avro record schema as the store types them: nested records flatten to dotted names, unions
/// with null become nullable, arrays, maps and other unions hold JSON text.
pub fn avro_columns(schema: &apache_avro::Schema) -> Vec<(String, DataType)> {
    use apache_avro::Schema as S;
    sluice_schema::reader::flatten_fields(schema)
        .into_iter()
        .map(|(name, s)| {
            let ty = match s {
                S::Boolean => DataType::Boolean,
                S::Int | S::Long | S::TimeMillis | S::TimeMicros => DataType::Int64,
                S::Float | S::Double => DataType::Float64,
                S::TimestampMillis
                | S::TimestampMicros
                | S::TimestampNanos
                | S::LocalTimestampMillis
                | S::LocalTimestampMicros
                | S::LocalTimestampNanos => time_type(),
                _ => DataType::Utf8,
            };
            (name, ty)
        })
        .collect()
}

fn value_kind(dt: &DataType) -> Option<ValueKind> {
    Some(match dt {
        DataType::Boolean => ValueKind::Bool,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ValueKind::Int,
        DataType::Float32 | DataType::Float64 => ValueKind::Float,
        DataType::Utf8 | DataType::LargeUtf8 => ValueKind::Text,
        DataType::Timestamp(..) => ValueKind::Time,
        _ => return None,
    })
}

fn data_type(kind: ValueKind) -> DataType {
    match kind {
        ValueKind::Bool => DataType::Boolean,
        ValueKind::Int => DataType::Int64,
        ValueKind::Float => DataType::Float64,
        ValueKind::Text => DataType::Utf8,
        ValueKind::Time => time_type(),
    }
}

fn api_error(e: StoreError) -> PortError {
    match e {
        StoreError::UnknownTable(t) => PortError::not_found("table_not_found", format!("table `{t}` not found")),
        e @ (StoreError::InvalidSetting { .. } | StoreError::InvalidName { .. }) => {
            PortError::invalid(e.code(), e.to_string())
        }
        e @ StoreError::WrongKind { .. } => PortError::new(PortErrorKind::Conflict, e.code(), e.to_string()),
        e => PortError::new(PortErrorKind::Internal, e.code(), e.to_string()),
    }
}

fn query_error(e: QueryError) -> PortError {
    PortError::new(e.kind(), e.code(), e.to_string())
}

#[async_trait]
impl TimeSeriesStore for EmbeddedStore {
    async fn query(&self, sql: &str) -> Result<QueryOutput, PortError> {
        let started = Instant::now();
        self.ensure_job_tables();
        let out = self.engine.query(sql, self.sources()).await;
        let outcome = out.as_ref().map_or_else(|e| e.code(), |_| "ok");
        crate::metrics::QUERY_SECONDS.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
        out.map_err(query_error)
    }

    async fn query_postgres(&self, sql: &str, plan_only: bool) -> Result<QueryOutput, PortError> {
        let started = Instant::now();
        self.ensure_job_tables();
        let out = self.engine.query_as(sql, self.sources(), Dialect::Postgres { plan_only }).await;
        if !plan_only {
            let outcome = out.as_ref().map_or_else(|e| e.code(), |_| "ok");
            crate::metrics::QUERY_SECONDS.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
        }
        out.map_err(query_error)
    }

    async fn tables(&self) -> Result<Vec<Value>, PortError> {
        Ok(self.store.list().into_iter().filter_map(|i| serde_json::to_value(i).ok()).collect())
    }

    async fn table(&self, name: &str) -> Result<Value, PortError> {
        let t = self
            .store
            .table(name)
            .ok_or_else(|| PortError::not_found("table_not_found", format!("table `{name}` not found")))?;
        serde_json::to_value(t.info()).map_err(|e| PortError::internal(e.to_string()))
    }

    async fn set_retention(&self, name: &str, retention: Option<Duration>) -> Result<Value, PortError> {
        let t = self
            .store
            .table(name)
            .ok_or_else(|| PortError::not_found("table_not_found", format!("table `{name}` not found")))?;
        let ms = retention.map(|r| r.as_millis().min(i64::MAX as u128) as i64);
        let t2 = t.clone();
        tokio::task::spawn_blocking(move || {
            t2.set_retention(ms)?;
            t2.apply_retention(sluice_log::now_ms())
        })
        .await
        .map_err(|e| PortError::internal(e.to_string()))?
        .map_err(api_error)?;
        serde_json::to_value(t.info()).map_err(|e| PortError::internal(e.to_string()))
    }

    async fn job_results(
        &self,
        job: &str,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        max_end: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<ResultRow>>, PortError> {
        let limit = limit.min(self.engine.options().max_rows);
        let Some(table) = self.store.table(job) else { return Ok(None) };
        if table.kind() != TableKind::Results {
            return Ok(None);
        }
        let columns = match self.jobs.describe(job).await {
            Ok(status) => status.columns,
            Err(_) => return Ok(None),
        };
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let ts = |ms: i64| format!("to_timestamp_millis({ms})");
        let mut sql = format!(
            "SELECT *, CAST(window_start AS BIGINT) AS \"__ws\", CAST(window_end AS BIGINT) AS \"__we\" FROM \"{}\" WHERE true",
            job.replace('"', "\"\"")
        );
        if let Some(t) = to {
            sql.push_str(&format!(" AND window_start < {}", ts(t)));
        }
        if let Some(f) = from {
            sql.push_str(&format!(" AND window_end > {}", ts(f)));
        }
        if let Some(e) = max_end {
            sql.push_str(&format!(" AND window_end <= {}", ts(e)));
        }
        if let Some(k) = key {
            sql.push_str(&format!(" AND _key = {}", quote(k)));
        }
        sql.push_str(&format!(" ORDER BY window_start, _key, window_end LIMIT {limit}"));
        let out = self
            .engine
            .query(&sql, vec![(job.to_string(), Arc::new(TableSource(table)) as _)])
            .await
            .map_err(query_error)?;
        let rows = sluice_sink::output::batches_to_json_rows(&out.batches, &[]);
        let mut result = Vec::with_capacity(rows.len());
        for mut r in rows {
            let (Some(ws), Some(we)) = (r.get("__ws").and_then(Value::as_i64), r.get("__we").and_then(Value::as_i64))
            else {
                continue;
            };
            let key = r.get("_key").and_then(Value::as_str).unwrap_or_default().to_string();
            let row = columns.iter().map(|c| (c.clone(), r.remove(c).unwrap_or(Value::Null))).collect();
            result.push(ResultRow { window_start: ws, window_end: we, key, row });
        }
        Ok(Some(result))
    }

    async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let sinks: Vec<SinkHandle> = self.sinks.lock().await.drain().map(|(_, h)| h).collect();
        for h in sinks {
            h.stop().await;
        }
        let maintenance = self.maintenance.lock().take();
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(m) = maintenance {
                m.stop();
            }
            store.flush_all()
        })
        .await;
    }
}
