//! Sinks: the consumers of the log that feed the stores behind it, and the ports those stores are served through.
//!
//! Every sink follows the one exactly-once contract of the pipeline: it persists "next offset per source
//! partition" atomically with its own output, and resumes from its own offsets. [`runner::SinkRunner`] is the
//! part every sink shares (reading, batching, waiting, retries with backoff, lag and error metrics, stopping);
//! a sink only implements [`SinkWriter`]: "apply this batch", "these are my committed offsets".
//!
//! Backpressure is uniform: the runner reads the next batch only once the writer took the previous one, so a slow
//! sink slows its own reads and nothing else (the log is the buffer).
//!
//! Ports: [`store::TimeSeriesStore`] is what the HTTP server needs from a time-series store (SQL queries answered
//! as typed Arrow batches in an [`output::QueryOutput`], table administration, job results older than the hot
//! path); [`output`] renders answers as JSON, CSV, Arrow IPC or a text table for whichever listener asks. The embedded adapter lives in `sluice-tsdb`, so the
//! server and its tests never compile or link the query engine. [`search::SearchService`] is the search port;
//! its embedded adapter (tantivy) lives in `sluice-search`. Both answer [`PortError`]s with a backend-neutral
//! [`PortErrorKind`]; the server maps kinds to HTTP statuses.

pub mod metrics;
pub mod output;
pub mod partitioning;
mod port_error;
pub mod runner;
pub mod search;
pub mod store;

use std::collections::BTreeMap;

use async_trait::async_trait;
use sluice_log::StoredRecord;

pub use port_error::{PortError, PortErrorKind};
pub use runner::{RunnerOptions, SinkHandle, SinkRunner, SinkStatus};

/// Records of one partition, in offset order, and the offset to read from after them.
#[derive(Debug, Clone)]
pub struct PartitionRecords {
    pub partition: u32,
    pub records: Vec<StoredRecord>,
    pub next_offset: u64,
}

/// What the runner hands a writer: some records of one topic (at most one entry per partition).
#[derive(Debug, Clone)]
pub struct SinkBatch {
    pub topic: String,
    pub parts: Vec<PartitionRecords>,
}

impl SinkBatch {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.records.is_empty())
    }

    /// The next offset per partition after this batch.
    pub fn next_offsets(&self) -> BTreeMap<u32, u64> {
        self.parts.iter().map(|p| (p.partition, p.next_offset)).collect()
    }
}

/// An error of a sink; the runner logs it, counts it by `kind` and retries with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{kind} error in sink: {message}")]
pub struct SinkError {
    /// A short, bounded label for metrics: `io`, `decode`, `schema`, `internal`...
    pub kind: &'static str,
    pub message: String,
}

impl SinkError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        SinkError { kind, message: message.into() }
    }
}

/// The part of a sink that differs per store.
///
/// Contract: offsets returned by [`SinkWriter::committed`] are durable together with everything written before
/// them; records after them may or may not have been applied, and applying them again must not duplicate
/// anything (the writer persists offsets with its output, or writes idempotently under a deterministic id).
#[async_trait]
pub trait SinkWriter: Send + 'static {
    /// The next offset per source partition this sink has durably committed; reading resumes there. A partition
    /// missing from the map starts at the log start.
    async fn committed(&mut self) -> Result<BTreeMap<u32, u64>, SinkError>;

    /// Applies `batch` (visible to the sink's readers when this returns, durable by the sink's own policy).
    /// Taking long here is how a sink exerts backpressure.
    async fn write(&mut self, batch: SinkBatch) -> Result<(), SinkError>;

    /// Called about every buffer timeout, with or without data: for flushes and refreshes by age.
    async fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// After a failed `write` or `tick`: drop anything applied but not committed; the runner then rereads from
    /// [`SinkWriter::committed`].
    async fn reset(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// A last flush before the runner stops (graceful shutdown).
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
