//! The SQL engine: read-only DataFusion queries over table snapshots, on a dedicated runtime, with limits.
//!
//! Queries run on the engine's own multi-thread tokio runtime so a CPU-heavy scan or aggregation never starves
//! the runtime that ingests and serves HTTP; `query` can be awaited from any runtime. Every query gets a fresh
//! `SessionContext` with only the tables it was given, `time_bucket`, the engine's one memory pool (all running
//! queries together stay under the configured limit; spilling disabled, so exceeding it fails the query that
//! asked for more instead of filling the disk) and `SQLOptions` that
//! refuse DDL, DML and other statements (`EXPLAIN`, `SHOW TABLES` and `DESCRIBE` work).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
    SchemaProvider, TableProvider,
};
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
use futures::StreamExt;
use sluice_sink::PortErrorKind;

use crate::provider::{ScanCounters, SnapshotSource, SnapshotTable};
use sluice_sink::output::{QueryOutput, QueryStats};

/// Limits and sizing of a [`QueryEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    /// Wall-clock limit of one query; the query is cancelled when it is reached.
    pub timeout: Duration,
    /// Memory all running queries together may reserve for their operators (hash tables, sorts, buffers).
    pub memory_limit_bytes: usize,
    /// Rows returned at most; the rest is dropped and the output marked `truncated`.
    pub max_rows: usize,
    /// Worker threads of the query runtime, also DataFusion's `target_partitions`.
    pub threads: usize,
}

impl Default for QueryOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        QueryOptions { timeout: Duration::from_secs(30), memory_limit_bytes: 256 << 20, max_rows: 100_000, threads }
    }
}

/// Why a query failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    /// The SQL is invalid, refers to unknown tables/columns, is not read-only, or fails on its data (a bad cast).
    #[error("{message}")]
    BadQuery { message: String },
    #[error("query exceeded the {} timeout", format_duration(*limit))]
    Timeout { limit: Duration },
    #[error("query exceeded the {} memory limit", format_bytes(*limit))]
    ResourcesExhausted { limit: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// A stable machine-readable code for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::BadQuery { .. } => "bad_query",
            QueryError::Timeout { .. } => "query_timeout",
            QueryError::ResourcesExhausted { .. } => "resources_exhausted",
            QueryError::Internal(_) => "internal",
        }
    }

    pub fn kind(&self) -> PortErrorKind {
        match self {
            QueryError::BadQuery { .. } => PortErrorKind::InvalidArgument,
            QueryError::Timeout { .. } => PortErrorKind::Timeout,
            QueryError::ResourcesExhausted { .. } => PortErrorKind::ResourceExhausted,
            QueryError::Internal(_) => PortErrorKind::Internal,
        }
    }

    fn from_datafusion(err: &DataFusionError, options: &QueryOptions) -> QueryError {
        let root = err.find_root();
        match root {
            DataFusionError::ResourcesExhausted(_) => {
                QueryError::ResourcesExhausted { limit: options.memory_limit_bytes }
            }
            DataFusionError::SQL(parser_error, _) => {
                // The parser's own text ("Expected: ..., found: ... at Line: 1, Column: 8") without the Debug
                // wrapping DataFusion adds.
                let text = match parser_error.as_ref() {
                    datafusion::sql::sqlparser::parser::ParserError::ParserError(s)
                    | datafusion::sql::sqlparser::parser::ParserError::TokenizerError(s) => s.clone(),
                    other => other.to_string(),
                };
                QueryError::BadQuery { message: format!("syntax error: {text}") }
            }
            DataFusionError::Plan(message)
                if ["DDL not supported", "DML not supported", "Statement not supported"]
                    .iter()
                    .any(|p| message.starts_with(p)) =>
            {
                QueryError::BadQuery { message: format!("only read-only queries are allowed ({message})") }
            }
            DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::Configuration(_)
            | DataFusionError::ArrowError(..) => {
                QueryError::BadQuery { message: plain_message(&root.strip_backtrace()) }
            }
            _ => QueryError::Internal(err.strip_backtrace()),
        }
    }
}

/// DataFusion's message without its capitalised category prefix, lowercase first (the API's error style).
fn plain_message(text: &str) -> String {
    const PREFIXES: [&str; 6] = [
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "Invalid or Unsupported Configuration: ",
        "Arrow error: ",
    ];
    let rest = PREFIXES.iter().find_map(|p| text.strip_prefix(p)).unwrap_or(text);
    let mut chars = rest.chars();
    match chars.next() {
        Some(c) if c.is_uppercase() && !chars.clone().next().is_some_and(|n| n.is_uppercase()) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => rest.to_string(),
    }
}

/// `30s`, `1m30s`, `200ms`.
fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// `512 MiB`, `1 GiB`, `1000 bytes`.
fn format_bytes(n: usize) -> String {
    for (unit, size) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    if n >= 1 << 20 {
        return format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20));
    }
    format!("{n} bytes")
}

/// Runs SQL over table snapshots on a dedicated runtime.
pub struct QueryEngine {
    // An Option so Drop can move the runtime out and shut it down without blocking (dropping a runtime
    // inside another runtime's async context would panic).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    // One thread that only runs query deadlines.
    timer_runtime: Option<tokio::runtime::Runtime>,
    timer: tokio::runtime::Handle,
    options: QueryOptions,
    // Shared by all queries: the object store registry and the Parquet metadata cache.
    base_env: Arc<RuntimeEnv>,
    // Built at the first PostgreSQL-protocol query.
    pg_catalog: std::sync::OnceLock<Arc<PgCatalog>>,
}

/// What PostgreSQL clients' catalog queries read, kept from one query to the next so a table keeps its OID
/// (psql looks a table up by name, then asks for its columns by OID). It lists every table by name and schema
/// (empty stand-ins: catalog queries read no data).
struct PgCatalog {
    public: Arc<MemorySchemaProvider>,
    schema: Arc<dyn SchemaProvider>,
}

impl PgCatalog {
    fn new() -> Result<PgCatalog, DataFusionError> {
        let list = Arc::new(MemoryCatalogProviderList::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let public = Arc::new(MemorySchemaProvider::new());
        catalog.register_schema("public", public.clone())?;
        list.register_catalog("datafusion".into(), catalog);
        let list: Arc<dyn CatalogProviderList> = list;
        let statics = Arc::new(PgCatalogStaticTables::try_new()?);
        let schema = Arc::new(PgCatalogSchemaProvider::try_new(list, statics, EmptyContextProvider)?);
        Ok(PgCatalog { public, schema })
    }

    /// Mirrors the tables of this query.
    async fn sync(&self, tables: &[(String, SchemaRef)]) -> Result<(), DataFusionError> {
        let current: std::collections::HashSet<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
        for name in self.public.table_names() {
            if !current.contains(name.as_str()) {
                self.public.deregister_table(&name)?;
            }
        }
        for (name, schema) in tables {
            let same = self.public.table(name).await.ok().flatten().is_some_and(|t| t.schema() == *schema);
            if !same {
                self.public.deregister_table(name)?;
                self.public.register_table(name.clone(), Arc::new(EmptyTable::new(schema.clone())))?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("options", &self.options).finish()
    }
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        for runtime in [self.runtime.take(), self.timer_runtime.take()].into_iter().flatten() {
            runtime.shutdown_background();
        }
    }
}

/// Aborts the query task when the caller stops waiting (a client that went away).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QueryEngine {
    /// Starts the query runtime (`options.threads` workers, at least 1).
    pub fn new(options: QueryOptions) -> Result<Self, QueryError> {
        let options = QueryOptions { threads: options.threads.max(1), ..options };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .thread_name("sluice-query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query runtime: {e}")))?;
        let timer_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-query-timer")
            .enable_time()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query timer: {e}")))?;
        let base_env = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(options.memory_limit_bytes)))
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        Ok(QueryEngine {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            timer: timer_runtime.handle().clone(),
            timer_runtime: Some(timer_runtime),
            options,
            base_env,
            pg_catalog: std::sync::OnceLock::new(),
        })
    }

    fn pg_catalog(&self) -> Result<Arc<PgCatalog>, QueryError> {
        if let Some(c) = self.pg_catalog.get() {
            return Ok(c.clone());
        }
        let built = Arc::new(PgCatalog::new().map_err(|e| QueryError::Internal(format!("pg_catalog: {e}")))?);
        Ok(self.pg_catalog.get_or_init(|| built).clone())
    }

    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    /// Runs one read-only SQL statement over `tables` (registered under their exact names; quote names with
    /// `.`, `-` or capitals: `SELECT * FROM "orders.late"`).
    pub async fn query(
        &self,
        sql: &str,
        tables: Vec<(String, Arc<dyn SnapshotSource>)>,
    ) -> Result<QueryOutput, QueryError> {
        self.query_as(sql, tables, Dialect::Sluice).await
    }

    /// [`query`](Self::query) in a dialect: PostgreSQL clients also get `pg_catalog` and their catalog queries
    /// rewritten; with `plan_only` the answer has the schema and no rows (a prepared statement's description).
    pub async fn query_as(
        &self,
        sql: &str,
        tables: Vec<(String, Arc<dyn SnapshotSource>)>,
        dialect: Dialect,
    ) -> Result<QueryOutput, QueryError> {
        let options = self.options.clone();
        let base_env = self.base_env.clone();
        let sql = sql.to_owned();
        let pg = match dialect {
            Dialect::Sluice => None,
            Dialect::Postgres { .. } => Some(self.pg_catalog()?),
        };
        let task = self.handle.spawn(async move { run(&sql, tables, &options, base_env, dialect, pg).await });
        let _abort_query = AbortOnDrop(task.abort_handle());
        // The deadline runs on the timer runtime: the caller's runtime may have no time driver, and the query
        // runtime's workers may all be inside a long CPU-bound poll that would delay the timer.
        let timeout = self.options.timeout;
        // `sleep` registers with the current runtime's timer when called, so call it inside the timer's task.
        let deadline = self.timer.spawn(async move { tokio::time::sleep(timeout).await });
        let _abort_deadline = AbortOnDrop(deadline.abort_handle());
        match futures::future::select(task, deadline).await {
            futures::future::Either::Left((Ok(result), _)) => result,
            futures::future::Either::Left((Err(e), _)) if e.is_panic() => {
                Err(QueryError::Internal("the query panicked".into()))
            }
            futures::future::Either::Left((Err(_), _)) => {
                Err(QueryError::Internal("the query was cancelled (engine shutting down)".into()))
            }
            // Dropping `_abort_query` aborts the task: DataFusion stops at its next yield point and frees its
            // memory; the caller gets its answer now either way.
            futures::future::Either::Right(_) => Err(QueryError::Timeout { limit: timeout }),
        }
    }
}

/// How a statement is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/v1/query`: DataFusion's SQL with `time_bucket`.
    Sluice,
    /// The PostgreSQL wire protocol: the same, plus `pg_catalog` and the rewrites psql, Grafana and BI tools need.
    Postgres { plan_only: bool },
}

async fn run(
    sql: &str,
    tables: Vec<(String, Arc<dyn SnapshotSource>)>,
    options: &QueryOptions,
    base_env: Arc<RuntimeEnv>,
    dialect: Dialect,
    pg: Option<Arc<PgCatalog>>,
) -> Result<QueryOutput, QueryError> {
    let started = Instant::now();
    let df_err = |e: DataFusionError| QueryError::from_datafusion(&e, options);
    let config = SessionConfig::new().with_target_partitions(options.threads).with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, base_env);
    ctx.register_udf(crate::udf::time_bucket_udf());
    let counters = Arc::new(ScanCounters::default());
    let mut schemas = Vec::with_capacity(tables.len());
    for (name, source) in tables {
        let table = SnapshotTable::new(source).with_counters(counters.clone());
        schemas.push((name.clone(), table.schema()));
        ctx.register_table(TableReference::bare(name), Arc::new(table)).map_err(df_err)?;
    }

    let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = match dialect {
        Dialect::Sluice => ctx.sql_with_options(sql, read_only).await.map_err(df_err)?,
        Dialect::Postgres { plan_only } => {
            // The functions and type names clients use, then the long-lived catalog in place of a fresh one.
            datafusion_pg_catalog::setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
                .map_err(|e| df_err(*e))?;
            if let Some(pg) = &pg {
                pg.sync(&schemas).await.map_err(df_err)?;
                if let Some(catalog) = ctx.catalog("datafusion") {
                    catalog.register_schema("pg_catalog", pg.schema.clone()).map_err(df_err)?;
                }
            }
            let parser = datafusion_pg_catalog::sql::PostgresCompatibilityParser::new();
            let mut statements = parser.parse(sql).map_err(|e| QueryError::BadQuery { message: e.to_string() })?;
            if statements.len() != 1 {
                return Err(QueryError::BadQuery {
                    message: format!("expected one statement, got {}", statements.len()),
                });
            }
            let statement = DfStatement::Statement(Box::new(statements.remove(0)));
            let plan = ctx.state().statement_to_plan(statement).await.map_err(df_err)?;
            read_only.verify_plan(&plan).map_err(df_err)?;
            if plan_only {
                let schema = Arc::new(plan.schema().as_arrow().clone());
                let stats = QueryStats { files_total: 0, files_scanned: 0, rows: 0, elapsed_ms: 0 };
                return Ok(QueryOutput { schema, batches: Vec::new(), truncated: false, stats });
            }
            ctx.execute_logical_plan(plan).await.map_err(df_err)?
        }
    };
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = frame.execute_stream().await.map_err(df_err)?;

    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err)?;
        if batch.num_rows() == 0 {
            continue;
        }
        let room = options.max_rows - rows;
        if batch.num_rows() > room {
            // Keep what fits and stop reading: dropping the stream cancels the rest of the query.
            if room > 0 {
                batches.push(batch.slice(0, room));
            }
            rows += room;
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    drop(stream);

    let stats = QueryStats {
        files_total: counters.files_total(),
        files_scanned: counters.files_scanned(),
        rows: rows as u64,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    Ok(QueryOutput { schema, batches, truncated, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limits() {
        assert_eq!(
            QueryError::Timeout { limit: Duration::from_secs(30) }.to_string(),
            "query exceeded the 30s timeout"
        );
        assert_eq!(
            QueryError::Timeout { limit: Duration::from_millis(200) }.to_string(),
            "query exceeded the 200ms timeout"
        );
        assert_eq!(
            QueryError::ResourcesExhausted { limit: 512 << 20 }.to_string(),
            "query exceeded the 512 MiB memory limit"
        );
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(format_bytes(3 << 30), "3 GiB");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(QueryError::Timeout { limit: Duration::ZERO }.kind(), PortErrorKind::Timeout);
        assert_eq!(QueryError::ResourcesExhausted { limit: 1 }.code(), "resources_exhausted");
    }
}
