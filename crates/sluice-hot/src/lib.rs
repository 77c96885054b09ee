//! The hot-results port: the newest minutes of every windowed job's results, which `GET /v1/jobs/{job}/results`
//! and `.../latest` answer from without touching the store.
//!
//! A job writes its changed rows here as soon as it has them (open windows included); readers ask for the rows
//! of a time range, or the newest window per key. Rows are evicted relative to the newest window end written,
//! never to a clock, so a backfill and a live stream keep the same "last N minutes of event time".
//!
//! Main types:
//! - [`HotStore`]: one per process, chosen at the composition root; opens the writable [`HotResults`] of a job
//!   this process runs and finds the readable [`HotReader`] of a job any process runs.
//! - [`HotResults`] / [`HotReader`]: the write and read sides of one job's rows; [`HotBatch`] is one write.
//! - Adapters: [`memory::MemoryHotStore`] (in-process, the default) and [`redis::RedisHotStore`] (shared by every
//!   instance, with TTLs; refilled from the job's changelog after Redis loses its data).
//! - [`HotError`]: backend-neutral failures with a [`HotErrorKind`].
//! - [`hot_conformance_suite!`]: the checks every adapter passes, one test each.

pub mod conformance;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use serde_json::{Map, Value};

/// One result row of a job, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub window_start: i64,
    pub window_end: i64,
    /// The group key as text; several keys joined by `,` (see `sluice_jobs::changelog::key_text`).
    pub key: String,
    pub row: Row,
}

/// A row's columns, shared between the index and the readers.
pub type Row = Arc<Map<String, Value>>;

/// One write: removals first, then upserts (the last of duplicates wins), then eviction.
#[derive(Debug, Clone, Default)]
pub struct HotBatch {
    /// `(window_start, window_end, key)` of rows to drop (a session window merged into another).
    pub removes: Vec<(i64, i64, String)>,
    pub upserts: Vec<ResultRow>,
    /// The job's watermark, when the writer knows it (readers on other instances show it).
    pub watermark: Option<i64>,
}

impl HotBatch {
    pub fn upserts(rows: Vec<ResultRow>) -> Self {
        HotBatch { upserts: rows, ..HotBatch::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.upserts.is_empty() && self.watermark.is_none()
    }
}

/// Rows read, with what a reader needs to combine them with the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HotAnswer {
    pub rows: Vec<Row>,
    /// Windows ending at or before this are evicted (or never kept): a reader gets them from the store.
    /// `None` before any row was written.
    pub cutoff: Option<i64>,
    /// The job's watermark as last written.
    pub watermark: Option<i64>,
}

/// The read side of one job's hot results.
#[async_trait::async_trait]
pub trait HotReader: Send + Sync + std::fmt::Debug {
    /// Rows of windows intersecting `[from, to)` (unbounded where `None`; nothing when `from >= to`) that end
    /// after the eviction cutoff, of one key or all, ordered by window start, then key, then window end; at most
    /// `limit`. The cutoff is read together with the rows, so a reader can get every older window from the store
    /// without a gap or an overlap.
    async fn recent(
        &self,
        key: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        limit: usize,
    ) -> Result<HotAnswer, HotError>;

    /// Per key, the row of its newest window (largest start, then largest end): of one key, or of every key
    /// ordered by key.
    async fn latest(&self, key: Option<&str>) -> Result<HotAnswer, HotError>;
}

/// The write side of one job's hot results (its reads included). Writes are applied in call order; an external
/// adapter may apply them a moment later (see [`flush`](Self::flush)) and never fails the job: when the backend
/// is unreachable, writes are dropped and [`lost`](Self::lost) asks the job to refill once it is back.
#[async_trait::async_trait]
pub trait HotResults: HotReader {
    async fn write(&self, batch: HotBatch);

    /// Inserts rows absent from the hot results, leaving present ones alone: a refill from the changelog while
    /// the job keeps writing newer versions. Rows past the eviction cutoff are skipped as in `write`.
    async fn fill(&self, rows: Vec<ResultRow>);

    /// Drops every row and the newest window end seen (a replay starts over).
    async fn clear(&self);

    /// Returns once every write made before the call is visible to readers (or was dropped as unreachable).
    async fn flush(&self);

    /// Resolves when rows were lost (the backend restarted empty, or expired them) and are back in reach: the
    /// job then refills from its changelog with [`fill`](Self::fill). Never resolves for the in-process adapter.
    async fn lost(&self);

    /// Rows held, as last seen (exact in process; after the last write for an external adapter).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where every job's hot results live: one per process.
#[async_trait::async_trait]
pub trait HotStore: Send + Sync + std::fmt::Debug {
    /// The writable hot results of a job this process runs, evicting rows `retention_ms` older than the newest
    /// window end. Opening the same job again shares the rows.
    fn open(&self, job: &str, retention_ms: i64) -> Arc<dyn HotResults>;

    /// The readable hot results of a job another process may run; `None` when no process wrote them.
    async fn find(&self, job: &str) -> Result<Option<Arc<dyn HotReader>>, HotError>;

    /// Deletes a dropped job's rows.
    async fn forget(&self, job: &str) -> Result<(), HotError>;

    /// `memory` or `redis`, for status and logs.
    fn backend(&self) -> &'static str;
}

/// What went wrong, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotErrorKind {
    /// The backend cannot be reached (or refused the connection): retry later.
    Unavailable,
    /// The backend did not answer in time.
    Timeout,
    /// The backend answered with something this version cannot read.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HotError {
    #[error("hot results unavailable: {0}")]
    Unavailable(String),
    #[error("hot results did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("hot results: {0}")]
    Internal(String),
}

impl HotError {
    pub fn kind(&self) -> HotErrorKind {
        match self {
            HotError::Unavailable(_) => HotErrorKind::Unavailable,
            HotError::Timeout { .. } => HotErrorKind::Timeout,
            HotError::Internal(_) => HotErrorKind::Internal,
        }
    }

    pub fn code(&self) -> &'static str {
        match self.kind() {
            HotErrorKind::Unavailable => "hot_unavailable",
            HotErrorKind::Timeout => "hot_timeout",
            HotErrorKind::Internal => "hot_internal",
        }
    }
}
