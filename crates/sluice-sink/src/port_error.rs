//! The error of the store and search ports: what went wrong as a backend-neutral [`PortErrorKind`], a stable
//! code and a message. Listeners map the kind to their protocol (the HTTP server to a status, a PostgreSQL
//! listener to an SQLSTATE); no adapter knows HTTP.

/// What went wrong, whichever adapter answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// The request is wrong (bad SQL, a bad setting, a bad query string): retrying will not help.
    InvalidArgument,
    /// No such table, index or topic.
    NotFound,
    /// The request contradicts what exists (retention on a table of the wrong kind).
    Conflict,
    /// The request ran past its deadline.
    Timeout,
    /// The request needed more than its budget (query memory).
    ResourceExhausted,
    /// The adapter cannot serve right now (shutting down, backend unreachable): retry later.
    Unavailable,
    /// A bug or corruption.
    Internal,
}

/// An error of the store or search port.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub kind: PortErrorKind,
    /// A short stable code for clients and metrics (`table_not_found`, `query_timeout`, ...).
    pub code: &'static str,
    pub message: String,
}

impl PortError {
    pub fn new(kind: PortErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        PortError { kind, code, message: message.into() }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        PortError::new(PortErrorKind::InvalidArgument, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        PortError::new(PortErrorKind::NotFound, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        PortError::new(PortErrorKind::Internal, "internal", message)
    }
}

impl From<sluice_log::LogError> for PortError {
    fn from(e: sluice_log::LogError) -> Self {
        use sluice_log::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => PortErrorKind::NotFound,
            K::AlreadyExists => PortErrorKind::Conflict,
            K::InvalidArgument | K::OutOfRange | K::TooLarge => PortErrorKind::InvalidArgument,
            K::Timeout => PortErrorKind::Timeout,
            K::ResourceExhausted | K::Unavailable | K::Unauthorized => PortErrorKind::Unavailable,
            K::Internal => PortErrorKind::Internal,
        };
        PortError::new(kind, e.code(), e.to_string())
    }
}
