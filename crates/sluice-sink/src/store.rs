//! The time-series store port: what the HTTP server and the CLI need from the store, whichever adapter holds the
//! data (embedded Parquet + DataFusion now; PostgreSQL/TimescaleDB later).
//!
//! Everything crossing the port is typed data (Arrow batches, rows as JSON maps) and [`PortError`]s, so the server
//! never links the query engine and picks the wire format itself.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::PortError;
use crate::output::QueryOutput;

/// The time-series store port.
#[async_trait]
pub trait TimeSeriesStore: Send + Sync + 'static {
    /// Runs one read-only SQL query; the answer is typed (Arrow batches), the caller renders it.
    async fn query(&self, sql: &str) -> Result<QueryOutput, PortError>;

    /// One statement from a PostgreSQL client (the wire protocol listener): the same tables, plus what such
    /// clients query (`pg_catalog`, `information_schema`, their rewritten catalog queries). With `plan_only` the
    /// answer has the result schema and no rows (describing a prepared statement). An adapter on PostgreSQL runs
    /// it as it is.
    async fn query_postgres(&self, sql: &str, plan_only: bool) -> Result<QueryOutput, PortError>;

    /// Every table, as JSON objects (name, kind, columns, chunks, rows, bytes, retention...).
    async fn tables(&self) -> Result<Vec<Value>, PortError>;

    /// One table in detail.
    async fn table(&self, name: &str) -> Result<Value, PortError>;

    /// Sets (or with `None` clears) a table's retention; chunks wholly older are dropped soon after.
    async fn set_retention(&self, name: &str, retention: Option<Duration>) -> Result<Value, PortError>;

    /// Final result rows of `job` whose window intersects `[from, to)` and ends at or before `max_end`, ordered by
    /// window start then key, shaped like the hot path's rows. `None` when the store keeps no table for the job.
    async fn job_results(
        &self,
        job: &str,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        max_end: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<ResultRow>>, PortError>;

    /// Flushes every table's buffered rows to files (graceful shutdown).
    async fn shutdown(&self);
}

/// One stored job result row: its window, key text and the row as the job emitted it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub window_start: i64,
    pub window_end: i64,
    pub key: String,
    pub row: Map<String, Value>,
}
