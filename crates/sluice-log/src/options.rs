//! Tunables of the embedded log.

use std::time::Duration;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after fsync (group-committed: concurrent producers share one fsync).
    Always,
    /// Acknowledge after the write; fsync at least this often. A crash can lose up to this much acknowledged data.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub fsync: FsyncPolicy,
    /// A segment is rolled before it would grow past this many bytes.
    pub segment_bytes: u64,
    /// A segment is rolled once its first batch is this old (checked on append).
    pub segment_max_age: Duration,
    /// Bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted by `append`.
    pub max_batch_bytes: u64,
    /// Default retention by age of the newest append in a segment; `None` keeps forever.
    pub retention: Option<Duration>,
    /// Default retention by partition size; `None` means no limit.
    pub retention_bytes: Option<u64>,
    /// Appends queued per partition before producers wait (backpressure).
    pub queue_depth: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 << 20,
            segment_max_age: Duration::from_secs(3600),
            index_interval_bytes: 4096,
            max_batch_bytes: 64 << 20,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            queue_depth: 256,
        }
    }
}

impl LogOptions {
    pub(crate) fn max_batch_bytes(&self) -> u64 {
        self.max_batch_bytes
    }
}
