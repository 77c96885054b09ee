//! Errors of the log, with a kind that tells callers whether to retry and how to answer a client.

use std::io;
use std::path::Path;

/// What went wrong, independent of the adapter: it decides whether a caller retries and how a listener answers
/// (the server maps kinds to HTTP statuses; a Kafka listener would map them to Kafka error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such topic or partition.
    NotFound,
    /// The topic already exists.
    AlreadyExists,
    /// The request is malformed (a bad name, a bad partition count): retrying will not help.
    InvalidArgument,
    /// An offset outside what the partition holds.
    OutOfRange,
    /// A batch over the adapter's size limit.
    TooLarge,
    /// Out of space: retry after space is freed.
    ResourceExhausted,
    /// Not available right now (shutting down, partition fenced, broker unreachable): retry with backoff.
    Unavailable,
    /// The backend did not answer in time; the operation may or may not have happened.
    Timeout,
    /// The backend refused Sluice's own credentials (a configuration problem, not the client's).
    Unauthorized,
    /// Corruption or an unexpected error.
    Internal,
}

impl ErrorKind {
    /// Worth retrying the same call after a backoff.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic `{0}` not found")]
    TopicNotFound(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid topic `{topic}`: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error("partition {partition} not found: topic `{topic}` has {partitions} partitions")]
    PartitionNotFound { topic: String, partition: u32, partitions: u32 },
    #[error("offset {offset} is out of range for {topic}/{partition}: valid offsets are {start}..={end}")]
    OffsetOutOfRange { topic: String, partition: u32, offset: u64, start: u64, end: u64 },
    #[error("batch of {size} bytes exceeds the log's max batch size of {limit} bytes")]
    BatchTooLarge { size: u64, limit: u64 },
    #[error("disk full writing {path}: {source}")]
    DiskFull { path: String, source: io::Error },
    #[error("partition {topic}/{partition} stopped accepting writes after a failed fsync; restart to recover it")]
    Fenced { topic: String, partition: u32 },
    #[error("fsync of {path} failed, nothing in this batch was acknowledged: {source}")]
    SyncFailed { path: String, source: io::Error },
    #[error("corrupt batch in {path} at byte {position}: {reason}")]
    Corrupt { path: String, position: u64, reason: String },
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the log is closed")]
    Closed,
    #[error("log backend unavailable: {0}")]
    Unavailable(String),
    #[error("log backend did not answer {operation} within {timeout_ms} ms")]
    Timeout { operation: String, timeout_ms: u64 },
    #[error("log backend refused sluice's credentials: {0}")]
    Unauthorized(String),
}

impl LogError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::TopicNotFound(_) | LogError::PartitionNotFound { .. } => ErrorKind::NotFound,
            LogError::TopicExists(_) => ErrorKind::AlreadyExists,
            LogError::InvalidTopicName { .. } | LogError::InvalidTopic { .. } => ErrorKind::InvalidArgument,
            LogError::OffsetOutOfRange { .. } => ErrorKind::OutOfRange,
            LogError::BatchTooLarge { .. } => ErrorKind::TooLarge,
            LogError::DiskFull { .. } => ErrorKind::ResourceExhausted,
            LogError::Fenced { .. } | LogError::SyncFailed { .. } | LogError::Closed | LogError::Unavailable(_) => {
                ErrorKind::Unavailable
            }
            LogError::Timeout { .. } => ErrorKind::Timeout,
            LogError::Unauthorized(_) => ErrorKind::Unauthorized,
            LogError::Corrupt { .. } | LogError::Io { .. } => ErrorKind::Internal,
        }
    }

    /// A short stable code for APIs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            LogError::TopicNotFound(_) => "topic_not_found",
            LogError::TopicExists(_) => "topic_exists",
            LogError::InvalidTopicName { .. } => "invalid_topic_name",
            LogError::InvalidTopic { .. } => "invalid_topic",
            LogError::PartitionNotFound { .. } => "partition_not_found",
            LogError::OffsetOutOfRange { .. } => "offset_out_of_range",
            LogError::BatchTooLarge { .. } => "batch_too_large",
            LogError::DiskFull { .. } => "disk_full",
            LogError::Fenced { .. } => "partition_fenced",
            LogError::SyncFailed { .. } => "fsync_failed",
            LogError::Corrupt { .. } => "corrupt_data",
            LogError::Io { .. } => "io_error",
            LogError::Closed => "log_closed",
            LogError::Unavailable(_) => "log_unavailable",
            LogError::Timeout { .. } => "log_timeout",
            LogError::Unauthorized(_) => "log_unauthorized",
        }
    }
}

/// Maps an `io::Error` on `path` to a [`LogError`], telling "disk full" apart.
pub(crate) fn io_err(path: &Path) -> impl Fn(io::Error) -> LogError + '_ {
    move |source| {
        let path = path.display().to_string();
        if is_disk_full(&source) { LogError::DiskFull { path, source } } else { LogError::Io { path, source } }
    }
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) || e.kind() == io::ErrorKind::StorageFull
}
