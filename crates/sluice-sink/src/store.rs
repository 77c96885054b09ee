//! The time-series store port: what the HTTP server and the CLI need from the store, whichever adapter holds the
//! data (embedded Parquet + DataFusion now; PostgreSQL/TimescaleDB later).
//!
//! Everything crossing the port is plain data (rendered bytes, JSON), so the server never links the query engine.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::PortError;

/// How a query answer is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFormat {
    /// `{"columns":[{"name","type"}],"rows":[{...}]}`
    Json,
    /// RFC 4180 with a header row.
    Csv,
    /// Arrow IPC stream format.
    ArrowIpc,
}

impl QueryFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            QueryFormat::Json => "application/json",
            QueryFormat::Csv => "text/csv; charset=utf-8",
            QueryFormat::ArrowIpc => "application/vnd.apache.arrow.stream",
        }
    }

    /// Picks a format from an `Accept` header; JSON unless CSV or Arrow is asked for.
    pub fn from_accept(accept: &str) -> QueryFormat {
        let accept = accept.to_ascii_lowercase();
        if accept.contains("application/vnd.apache.arrow.stream") || accept.contains("application/vnd.apache.arrow") {
            QueryFormat::ArrowIpc
        } else if accept.contains("text/csv") {
            QueryFormat::Csv
        } else {
            QueryFormat::Json
        }
    }
}

/// A rendered query answer.
#[derive(Debug, Clone)]
pub struct QueryAnswer {
    pub format: QueryFormat,
    pub body: Vec<u8>,
    pub rows: usize,
    /// True when the answer was cut at the configured row limit.
    pub truncated: bool,
    pub elapsed: Duration,
}

/// The time-series store port.
#[async_trait]
pub trait TimeSeriesStore: Send + Sync + 'static {
    /// Runs one read-only SQL query.
    async fn query(&self, sql: &str, format: QueryFormat) -> Result<QueryAnswer, PortError>;

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
