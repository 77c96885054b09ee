//! Errors of the stream building blocks.

/// What a caller can do about a [`StreamError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad job definition or argument (window size, precision, quantile): retrying will not help.
    User,
    /// The input cannot be processed as given (a timestamp outside the representable window range, a
    /// non-finite value): route it to the side output and carry on.
    Data,
    /// A state snapshot is damaged or from an incompatible version: restore from an older checkpoint.
    Corrupt,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    #[error("window size must be > 0, got {size}")]
    InvalidSize { size: i64 },
    #[error("window slide must be > 0, got {slide}")]
    InvalidSlide { slide: i64 },
    #[error("window slide must be <= size, got slide {slide} and size {size}")]
    SlideLargerThanSize { slide: i64, size: i64 },
    #[error("a hop of {size} ms every {slide} ms puts each event in more than {max} windows; use a longer slide")]
    TooManyHopWindows { size: i64, slide: i64, max: i64 },
    #[error("session gap must be > 0, got {gap}")]
    InvalidGap { gap: i64 },
    #[error("timestamp {ts} has a window outside the representable range of i64 milliseconds")]
    TimestampOutOfRange { ts: i64 },
    #[error("watermark delay must be >= 0, got {delay}")]
    InvalidDelay { delay: i64 },
    #[error("idle timeout must be > 0, got {timeout}")]
    InvalidIdleTimeout { timeout: i64 },
    #[error("a watermark tracker needs at least one partition, got {partitions}")]
    NoPartitions { partitions: usize },
    #[error("partition {partition} is out of range, the tracker has {partitions} partitions")]
    PartitionOutOfRange { partition: usize, partitions: usize },
    #[error("relative accuracy must be in [{min}, {max}], got {alpha}")]
    InvalidAccuracy { alpha: f64, min: f64, max: f64 },
    #[error("max bucket count must be in [{min}, {max}], got {max_buckets}")]
    InvalidMaxBuckets { max_buckets: usize, min: usize, max: usize },
    #[error("value {value} is not finite")]
    NonFiniteValue { value: f64 },
    #[error("quantile must be in [0, 1], got {q}")]
    InvalidQuantile { q: f64 },
    #[error("hyperloglog precision must be in [{min}, {max}], got {precision}")]
    InvalidPrecision { precision: u8, min: u8, max: u8 },
    #[error("cannot merge {what} with different parameters: {ours} vs {theirs}")]
    IncompatibleMerge { what: &'static str, ours: String, theirs: String },
    #[error("corrupt {what} snapshot: {reason}")]
    CorruptSnapshot { what: &'static str, reason: String },
}

impl StreamError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StreamError::TimestampOutOfRange { .. } | StreamError::NonFiniteValue { .. } => ErrorKind::Data,
            StreamError::CorruptSnapshot { .. } => ErrorKind::Corrupt,
            _ => ErrorKind::User,
        }
    }
}
