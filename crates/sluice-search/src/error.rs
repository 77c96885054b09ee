use std::path::PathBuf;

use sluice_sink::PortErrorKind;

/// Errors of the embedded search index.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid index definition: {0}")]
    InvalidDefinition(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("no index on topic `{0}`")]
    NoIndex(String),
    #[error("search timed out after {0} ms")]
    Timeout(u64),
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("corrupt index manifest {path}: {message}")]
    CorruptManifest { path: PathBuf, message: String },
    #[error("{0}")]
    Internal(String),
}

impl SearchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SearchError::Io { path: path.into(), source }
    }

    /// A short, bounded label for metrics and API error codes.
    pub fn code(&self) -> &'static str {
        match self {
            SearchError::InvalidDefinition(_) => "invalid_index_definition",
            SearchError::InvalidQuery(_) => "invalid_query",
            SearchError::NoIndex(_) => "index_not_found",
            SearchError::Timeout(_) => "search_timeout",
            SearchError::Io { .. } => "io",
            SearchError::Index(_) => "index",
            SearchError::CorruptManifest { .. } => "corrupt_manifest",
            SearchError::Internal(_) => "internal",
        }
    }

    pub fn kind(&self) -> PortErrorKind {
        match self {
            SearchError::InvalidDefinition(_) | SearchError::InvalidQuery(_) => PortErrorKind::InvalidArgument,
            SearchError::NoIndex(_) => PortErrorKind::NotFound,
            SearchError::Timeout(_) => PortErrorKind::Timeout,
            _ => PortErrorKind::Internal,
        }
    }
}
