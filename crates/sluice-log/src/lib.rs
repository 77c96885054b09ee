//! The durable partitioned log: the first stage every event passes through.
//!
//! - [`LogStore`] is the log *port*: topics of partitions, append a batch to a partition, read by offset or by
//!   event time, wait for new data. Every consumer (stream jobs, sinks, `sluice tail`) reads through it.
//! - [`EmbeddedLog`] is the default adapter: per partition, append-only segment files of CRC-checked record
//!   batches ([`format`]), a sparse offset/time index, group-committed fsync, retention by age and size, and
//!   recovery that cuts a torn tail at open. A Kafka adapter will sit beside it behind the same trait.
//! - [`storage`] is the file I/O the embedded log uses: [`StdStorage`] for real files, [`SimStorage`] to inject
//!   crashes and faults in tests.
//! - [`partitioner`] picks a partition for a key exactly as Kafka's default partitioner does (murmur2).
//! - [`topics`] names the topics Sluice creates for itself (schemas, job results, dead letters) and their roles.
//! - [`conformance`] is the test suite every adapter must pass.

pub mod conformance;
mod embedded;
mod error;
pub mod format;
mod metrics;
mod options;
mod partition;
pub mod partitioner;
mod segment;
pub mod storage;
pub mod topics;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use embedded::{EmbeddedLog, lock_data_dir};
pub use error::{ErrorKind, LogError};
pub use format::{Record, StoredRecord};
pub use options::{FsyncPolicy, LogOptions};
pub use partition::RecoveryReport;
pub use storage::{SimStorage, StdStorage, Storage, StorageFile, replace_file};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Overrides the log's default retention by age; `Some(Duration::MAX)` keeps the topic forever.
    pub retention: Option<Duration>,
    /// Overrides the log's default retention by partition size.
    pub retention_bytes: Option<u64>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        TopicSpec { name: name.into(), partitions, retention: None, retention_bytes: None }
    }
}

/// A topic as it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    /// Effective retention by age in ms (`None`: kept forever).
    pub retention_ms: Option<u64>,
    /// Effective retention by size per partition (`None`: no limit).
    pub retention_bytes: Option<u64>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    pub log_start_offset: u64,
    /// The next offset to be written: everything below it is acknowledged.
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: usize,
    /// False once a failed fsync has fenced the partition (until restart).
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    #[serde(flatten)]
    pub info: TopicInfo,
    pub partition_details: Vec<PartitionInfo>,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub base_offset: u64,
    pub record_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Vec<StoredRecord>,
    /// The offset to read from next.
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// The log port. The embedded adapter ([`EmbeddedLog`]) is the default; every adapter passes [`conformance`].
///
/// Contract: `append` returns only once the batch is as durable as the adapter's policy promises, and the
/// offsets it returns are where a later `read` finds the records; records of one partition keep append order.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError>;
    async fn delete_topic(&self, name: &str) -> Result<(), LogError>;
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError>;
    async fn topic(&self, name: &str) -> Result<TopicInfo, LogError>;
    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, LogError>;
    /// Appends `records` (at least one) to one partition as one batch.
    async fn append(&self, topic: &str, partition: u32, records: Vec<Record>) -> Result<AppendAck, LogError>;
    /// Reads acknowledged records from offset `from`; an empty result at the high watermark.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, LogError>;
    /// The first offset whose event time is `>= ts_ms`, or the high watermark when none is.
    async fn offset_for_time(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<u64, LogError>;
    /// Waits until everything acknowledged on this partition is durable, whatever the durability policy (for
    /// writes that must never be lost, like schema registry changes, under an fsync interval).
    async fn flush(&self, topic: &str, partition: u32) -> Result<(), LogError>;
    /// Waits until the high watermark passes `offset` or `timeout` elapses; returns the high watermark.
    async fn wait_for(&self, topic: &str, partition: u32, offset: u64, timeout: Duration) -> Result<u64, LogError>;
    /// Makes everything acknowledged durable and stops taking writes: later appends and topic changes answer
    /// [`LogError::Closed`]. Called once at shutdown, after every writer has stopped (an append racing it may be
    /// acknowledged under the adapter's ordinary durability policy only).
    async fn close(&self);
    /// Metrics the adapter exports itself (per-partition gauges), registered once by the composition root.
    fn collector(&self) -> Option<Box<dyn prometheus::core::Collector>>;
}

/// Checks a topic name against Kafka's rules, so every name is valid on both adapters.
pub fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let bad = |reason| Err(LogError::InvalidTopicName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
