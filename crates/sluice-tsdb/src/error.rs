//! Errors of the storage engine. Messages are lowercase and name the thing at fault and the limit it broke; `code`
//! gives a stable machine-readable tag the HTTP layer maps to a status.

use std::path::PathBuf;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("io error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet error on {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("corrupt manifest {}: {reason}", path.display())]
    CorruptManifest { path: PathBuf, reason: String },
    #[error("table {table:?}: committed file {} is missing", path.display())]
    MissingFile { table: String, path: PathBuf },
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error("invalid table name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("table {table:?} is a {actual} table, not a {expected} table")]
    WrongKind { table: String, actual: &'static str, expected: &'static str },
    #[error("invalid json value at partition {partition} offset {offset}: {reason}")]
    InvalidJson { partition: u32, offset: u64, reason: String },
    #[error("invalid json row for key {key:?}: {reason}")]
    InvalidResultRow { key: String, reason: String },
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting { name: &'static str, reason: String },
    /// A background task failed or another component reported an error.
    #[error("internal error: {0}")]
    Internal(String),
    /// A failpoint fired (tests only): the operation stopped at `step` as if the process had crashed there.
    #[error("injected failure at {step}: {source}")]
    Injected {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// A stable tag for the HTTP layer: `unknown_table` (404), `invalid_table_name`, `wrong_table_kind`,
    /// `invalid_row`, `invalid_setting` (400/409), `data_corrupt`, `storage_error` (500).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::UnknownTable(_) => "unknown_table",
            StoreError::InvalidName { .. } => "invalid_table_name",
            StoreError::WrongKind { .. } => "wrong_table_kind",
            StoreError::InvalidJson { .. } | StoreError::InvalidResultRow { .. } => "invalid_row",
            StoreError::InvalidSetting { .. } => "invalid_setting",
            StoreError::Internal(_) => "internal",
            StoreError::CorruptManifest { .. } | StoreError::MissingFile { .. } => "data_corrupt",
            StoreError::Io { .. } | StoreError::Parquet { .. } | StoreError::Arrow(_) | StoreError::Injected { .. } => {
                "storage_error"
            }
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>) -> impl FnOnce(parquet::errors::ParquetError) -> StoreError {
        let path = path.into();
        move |source| StoreError::Parquet { path, source }
    }

    pub(crate) fn is_injected(&self) -> bool {
        matches!(self, StoreError::Injected { .. })
    }
}
